"""Packed, padding-free batches against padded ones, on the CPU reference attention."""

import re

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert._batching import TextTokenizer, make_windows
from skbert._packing import ATTENTION, pack, use_packed

pytestmark = pytest.mark.filterwarnings("ignore:.*were truncated")
RTOL, ATOL = 1e-5, 2e-6
#: 1-token and empty texts, a maximum-length one (62 words + [CLS]/[SEP] = 64) and longer ones.
TEXTS = ["a", "", "the river bank was muddy", " ".join(["money"] * 62), "we sat on the bank " * 30, "   ",
         "She paid the loan at the bank."]


@pytest.mark.parametrize("long_text", ["truncate", "head_tail", "chunk"])
@pytest.mark.parametrize("pooling, layers", [("mean_max", "all"), ("cls", -1), ("last", 0), ("pooler", -1),
                                             (("max", "mean"), (1, 2))])
@pytest.mark.parametrize("include_special", [False, True])
def test_packed_equals_padded(tiny_bert, long_text, pooling, layers, include_special):
    params = dict(pooling=pooling, layers=layers, include_special_tokens=include_special, long_text=long_text,
                  precision="float32", cache=None, batch_size=4)
    padded = BertEmbedder(tiny_bert, attention="padded", **params).fit_transform(TEXTS)
    packed = BertEmbedder(tiny_bert, attention="packed", **params).fit_transform(TEXTS)
    assert_allclose(packed, padded, rtol=RTOL, atol=ATOL)


def test_packed_cached_statistics_equal_padded_ones_and_share_entries(tiny_bert):
    packed = BertEmbedder(tiny_bert, attention="packed", pooling="mean_max", layers="all", precision="float32")
    first = packed.fit_transform(TEXTS)
    padded = BertEmbedder(tiny_bert, attention="padded", pooling="mean_max", layers="all", precision="float32")
    got, report = padded.fit(TEXTS).transform_with_report(TEXTS)
    assert report.n_encoded == 0  # the numbers agree, so the key does not depend on the layout
    assert_allclose(got, first, rtol=0, atol=0)
    fresh = BertEmbedder(tiny_bert, attention="padded", pooling="mean_max", layers="all", precision="float32",
                         cache=None).fit_transform(TEXTS)
    assert_allclose(first, fresh, rtol=RTOL, atol=ATOL)


def test_pack_restarts_positions_and_keeps_the_padded_layouts_masks(tiny_bert):
    from transformers import AutoTokenizer

    from skbert._batching import collate
    from skbert._packing import unpack

    tokenized = TextTokenizer(AutoTokenizer.from_pretrained(tiny_bert))(["the bank", "", "a b c"])
    windows = make_windows(tokenized, 64, "truncate", 0)
    batch = pack(tokenized, windows)
    assert batch.cu_seqlens.tolist() == [0, 4, 6, 11] and int(batch.max_length) == 5
    assert batch.positions[0].tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4]
    assert batch.ids.shape == (1, 11) and not batch.token_types.any() and batch.n_tokens == 11
    padded = collate(tokenized, windows, 0)
    for name in ("attention_mask", "content_mask", "bounds"):  # reduced in the padded layout, by the same code
        assert torch.equal(getattr(batch, name), getattr(padded, name))
    # unpacking puts every packed token where the padded batch has it, and zeros in the padding
    unpacked = unpack(batch.ids.unsqueeze(-1).float(), batch)[..., 0]
    assert torch.equal(unpacked, (padded.input_ids * padded.attention_mask).float())


def test_padded_and_packed_calls_in_threads_on_one_model_give_the_serial_results(tiny_bert):
    """Nothing about the shared model changes per call: a padded forward beside a packed one keeps its mask."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"{k} " + t for k in range(4) for t in TEXTS]
    padded = BertEmbedder(tiny_bert, attention="padded", cache=None, batch_size=4, precision="float32").fit(texts)
    packed = BertEmbedder(tiny_bert, attention="packed", cache=None, batch_size=4, precision="float32").fit(texts)
    model = padded._load().model
    assert packed._load().model is model
    routed = model.config._attn_implementation
    want_padded, want_packed = padded.transform(texts), packed.transform(texts)
    with ThreadPoolExecutor(2) as pool:
        got_padded = pool.submit(lambda: [padded.transform(texts) for _ in range(40)])
        got_packed = pool.submit(lambda: [packed.transform(texts) for _ in range(40)])
        got_padded, got_packed = got_padded.result(), got_packed.result()
    assert all(np.array_equal(got, want_padded) for got in got_padded)
    assert all(np.array_equal(got, want_packed) for got in got_packed)
    assert model.config._attn_implementation == routed  # set once at loading, never per call


def test_a_padded_batch_through_the_routed_model_is_masked_as_by_sdpa(tiny_bert):
    from transformers import AutoModel

    loaded = BertEmbedder(tiny_bert, precision="float32").fit(["a"])._load()
    assert loaded.model.config._attn_implementation == ATTENTION  # routed once, at loading
    plain = AutoModel.from_pretrained(tiny_bert, attn_implementation="sdpa").eval()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        want = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        got = loaded.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


CUDA_OK = dict(device_type="cuda", dtype=torch.bfloat16, capability=(9, 0), head_dim=64, exact=True, kernel=True,
               transformers_ok=True)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"dtype": torch.float16, "capability": (8, 0)}, None),
    ({"device_type": "cpu", "dtype": torch.float32, "capability": None}, None),  # the per-window reference
    ({"dtype": torch.float32}, "float16 or bfloat16, not float32"),
    ({"dtype": torch.float16, "capability": (7, 5)}, r"compute capability 8.0 or higher; this GPU has \(7, 5\)"),
    ({"dtype": torch.float16, "capability": (7, 0)}, "compute capability 8.0"),
    ({"head_dim": 20}, "multiples of 8 up to 256, not 20"),
    ({"head_dim": 512}, "not 512"),
    ({"kernel": False}, "no variable-length attention kernel"),
    ({"exact": False}, "not exact for this model's family"),
    ({"transformers_ok": False}, "needs transformers >= 5"),
    ({"device_type": "mps", "capability": None}, "runs on CUDA"),
])
def test_packing_runs_only_where_the_kernel_runs_for_this_model(change, reason):
    from skbert._packing import packing_blocker

    blocker = packing_blocker(**{**CUDA_OK, **change})
    if reason is None:
        assert blocker is None
    else:
        assert re.search(reason, blocker)


def test_auto_packs_on_cuda_only_and_packed_where_it_cannot_run_warns_and_runs_padded():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert use_packed("auto", "cuda", None) and not use_packed("auto", "cpu", None)
        assert use_packed("packed", "cpu", None) and not use_packed("padded", "cuda", None)
        assert not use_packed("auto", "cuda", "FlashAttention needs ...")  # auto: silently padded
    with pytest.warns(UserWarning, match="attention='packed': FlashAttention needs it; batches run padded"):
        assert not use_packed("packed", "cuda", "FlashAttention needs it")


def test_the_packing_decision_is_made_once_from_the_loaded_devices_capability(tiny_bert, monkeypatch):
    """A float32, float16-on-a-T4 and bfloat16-on-an-H100 model on a faked CUDA device."""
    from transformers import AutoConfig

    from skbert import _models

    config = AutoConfig.from_pretrained(tiny_bert)
    for capability, dtype, packs in (((9, 0), torch.float32, False), ((7, 5), torch.float16, False),
                                     ((9, 0), torch.bfloat16, True), ((8, 0), torch.float16, True)):
        monkeypatch.setattr("skbert._device.cuda_capability", lambda device, c=capability: c)
        blocker = _models._packing_blocker(config, torch.device("cuda", 0), dtype)
        assert (blocker is None) == packs
        assert use_packed("auto", "cuda", blocker) == packs


def test_packing_needs_transformers_5(tiny_bert, monkeypatch):
    import transformers
    from transformers import AutoConfig

    from skbert import _models

    monkeypatch.setattr(transformers, "__version__", "4.57.0")
    blocker = _models._packing_blocker(AutoConfig.from_pretrained(tiny_bert), torch.device("cpu"), torch.float32)
    assert blocker == "packed attention needs transformers >= 5"
    assert not use_packed("auto", "cuda", blocker)
    with pytest.warns(UserWarning, match="attention='packed': packed attention needs transformers >= 5"):
        assert not use_packed("packed", "cpu", blocker)


def test_packed_batches_run_no_padding(tiny_bert, monkeypatch):
    embedder = BertEmbedder(tiny_bert, attention="packed", cache=None, batch_size=3).fit(TEXTS)
    model = embedder._load().model
    real_forward, shapes = model.forward, []

    def forward(*args, **kwargs):
        shapes.append((tuple(kwargs["input_ids"].shape), kwargs.get("cu_seq_lens_q"), kwargs["attention_mask"]))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    embedder.transform(TEXTS)
    packed = [(shape, cu) for shape, cu, _ in shapes if cu is not None]
    assert all(shape[0] == 1 and cu[-1] == shape[1] for shape, cu in packed)
    assert all(mask is None for _, cu, mask in shapes if cu is None)  # windows of one length: padded, no padding
    real_tokens = sum(shape[0] * shape[1] for shape, _, _ in shapes)
    tokenized = TextTokenizer(embedder._load().tokenizer)(TEXTS)
    assert real_tokens == sum(min(len(t.ids), 64) for t in tokenized)  # every token once, no padding


@pytest.mark.parametrize("long_text", ["truncate", "chunk"])
def test_token_vectors_run_packed_as_they_run_padded(tiny_bert, long_text):
    """Every runtime hands back its hidden states in the padded layout: token vectors need no special case."""
    params = dict(layers=(1, -1), long_text=long_text, precision="float32", cache=None, batch_size=3)
    padded = BertEmbedder(tiny_bert, attention="padded", **params).fit(TEXTS)
    packed = BertEmbedder(tiny_bert, attention="packed", **params).fit(TEXTS)
    assert packed._options(packed._load()).runtime.packed
    for got, want in zip(packed.transform_tokens(TEXTS), padded.transform_tokens(TEXTS)):
        assert got.tokens == want.tokens
        assert_allclose(got.vectors, want.vectors, rtol=RTOL, atol=ATOL)


def test_a_varlen_kernel_without_scale_counts_as_none_and_unpacked_states_refuse_a_wrong_layer(tiny_bert,
                                                                                             monkeypatch):
    """torch's first public varlen_attn took no ``scale``, which the packed attention passes."""
    import torch.nn.attention.varlen as varlen
    from transformers import AutoTokenizer

    from skbert._packing import UnpackedStates, varlen_kernel

    assert varlen_kernel() is varlen.varlen_attn
    monkeypatch.setattr(varlen, "varlen_attn", lambda q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False: None)
    assert varlen_kernel() is None
    tokenized = TextTokenizer(AutoTokenizer.from_pretrained(tiny_bert))(["the bank", "a b c"])
    batch = pack(tokenized, make_windows(tokenized, 64, "truncate", 0))
    states = UnpackedStates([torch.ones(1, batch.n_tokens, 4)] * 3, batch)
    assert states[-1].shape == (2, 5, 4) and len(states) == 3
    with pytest.raises(IndexError):
        states[3]


def test_a_batch_without_padding_runs_padded_with_no_mask(tiny_bert, monkeypatch):
    """Packing takes nothing out of windows of one length: such a batch runs padded, with no mask, and gives what
    the packed batch gives."""
    from transformers import AutoTokenizer

    from skbert._batching import PaddedBatch
    from skbert._models import load_model
    from skbert._packing import PackedBatch
    from skbert._runtimes import TorchPacked

    loaded = load_model(tiny_bert, None, torch.device("cpu"), torch.float32)
    tokenized = TextTokenizer(AutoTokenizer.from_pretrained(tiny_bert))(["the bank", "a river", "a b c"])
    windows = make_windows(tokenized, 64, "truncate", 0)
    runtime = TorchPacked(loaded)
    even, uneven = runtime.batch(tokenized, windows[:2]), runtime.batch(tokenized, windows)
    assert isinstance(even, PaddedBatch) and not even.has_padding and isinstance(uneven, PackedBatch)
    masks = []
    forward = loaded.model.forward
    monkeypatch.setattr(loaded.model, "forward", lambda **kw: masks.append(kw["attention_mask"]) or forward(**kw))
    with torch.inference_mode():
        alone = runtime.hidden_states(even, None)
        packed = runtime.hidden_states(pack(tokenized, windows[:2]), None)
    assert masks[0] is None
    for a, b in zip(alone, packed):
        assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
