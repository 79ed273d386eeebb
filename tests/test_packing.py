"""Packed, padding-free batches against padded ones, on the CPU reference attention."""

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


def test_pack_restarts_positions_and_marks_each_windows_content(tiny_bert):
    from transformers import AutoTokenizer

    tokenized = TextTokenizer(AutoTokenizer.from_pretrained(tiny_bert))(["the bank", "", "a b c"])
    windows = make_windows(tokenized, 64, "truncate", 0)
    batch = pack(tokenized, windows)
    assert batch["cu_seqlens"].tolist() == [0, 4, 6, 11] and int(batch["max_length"]) == 5
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4]
    assert batch["content_mask"].tolist() == [0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0]
    assert batch["input_ids"].shape == (1, 11) and not batch["token_type_ids"].any()


def test_the_shared_model_runs_padded_as_before_after_a_packed_forward(tiny_bert):
    padded = BertEmbedder(tiny_bert, attention="padded", cache=None).fit(TEXTS)
    before = padded.transform(TEXTS)
    BertEmbedder(tiny_bert, attention="packed", cache=None).fit(TEXTS).transform(TEXTS)
    model = padded._load().model
    assert model.config._attn_implementation != ATTENTION  # switched back after the forward
    assert_allclose(padded.transform(TEXTS), before, rtol=0, atol=0)


def test_packing_is_chosen_where_the_varlen_kernel_runs(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_packed("auto", cpu) and use_packed("packed", cpu) and not use_packed("padded", cuda)
    assert use_packed("auto", cuda)  # torch 2.13 ships the kernel
    monkeypatch.setattr("skbert._packing.varlen_kernel", lambda: None)
    assert not use_packed("auto", cuda)


def test_packed_batches_run_no_padding(tiny_bert, monkeypatch):
    embedder = BertEmbedder(tiny_bert, attention="packed", cache=None, batch_size=3).fit(TEXTS)
    model = embedder._load().model
    real_forward, shapes = model.forward, []

    def forward(*args, **kwargs):
        shapes.append((tuple(kwargs["input_ids"].shape), kwargs.get("cu_seq_lens_q")))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    embedder.transform(TEXTS)
    assert all(shape[0] == 1 and cu is not None and cu[-1] == shape[1] for shape, cu in shapes)
    real_tokens = sum(shape[1] for shape, _ in shapes)
    tokenized = TextTokenizer(embedder._load().tokenizer)(TEXTS)
    assert real_tokens == sum(min(len(t.ids), 64) for t in tokenized)  # every token once, no padding


def test_packing_needs_transformers_5(tiny_bert, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.0")
    assert not use_packed("auto", torch.device("cuda"))
    with pytest.raises(ValueError, match="attention='packed' needs transformers >= 5"):
        BertEmbedder(tiny_bert, attention="packed").fit(["a"]).transform(["a"])
