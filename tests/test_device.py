import pytest
import torch

from skbert._device import resolve_device, resolve_dtype
from support import HAS_CUDA


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    """Each machine simulated (the expectation is the rule, not a copy of the code)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr("skbert._device._mps_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected if expected != "cuda" else "cuda:0")
    assert resolve_device("auto", "int8") == torch.device("cpu")  # int8 runs on the CPU whatever there is


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="is not a device"):
        resolve_device("gpu please")
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)  # a CPU without native bfloat16
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("float32", cpu) == torch.float32
    with pytest.warns(UserWarning, match="precision='bfloat16' on this CPU is emulated"):
        assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr("skbert._device._cpu_supports", lambda *names: False)
    with pytest.warns(UserWarning, match="precision='float16' on this CPU is emulated"):
        assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError, match="precision='int4'"):
        resolve_dtype("int4", cpu)


def test_auto_picks_bfloat16_on_a_cpu_that_computes_it_natively(monkeypatch, tiny_bert):
    import warnings

    from skbert import BertEmbedder

    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    texts = ["the river bank", "money in the bank"]
    fast = BertEmbedder(tiny_bert, device="cpu").fit(texts)
    assert fast.precision_ == "bfloat16"
    exact = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(texts)
    exact.transform(texts)
    assert fast.transform_with_report(texts)[1].n_encoded == 2  # float32 entries are not served to a bfloat16 encoder


def test_half_precision_compute_still_outputs_float32(tiny_bert):
    import warnings

    from numpy.testing import assert_allclose

    from skbert import BertEmbedder

    texts = ["the river bank", "money in the bank", ""]
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit_transform(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated (and slow) on CPUs without native bfloat16
        half = BertEmbedder(tiny_bert, device="cpu", precision="bfloat16").fit_transform(texts)
    assert half.dtype == "float32"
    cos = (full * half).sum(1) / (abs(full**2).sum(1) ** 0.5 * abs(half**2).sum(1) ** 0.5)
    assert_allclose(cos, 1.0, atol=5e-3)


def test_int8_is_cpu_only_close_to_float32_and_cached_apart(tiny_bert):
    import numpy as np

    from skbert import BertEmbedder
    from skbert._models import load_model

    texts = ["the river bank", "money in the bank", "we sat at the water and the fish"]
    # float32 on the CPU, where int8 runs: entries it could be (wrongly) served, and the reference it is
    # compared with (on a GPU machine "auto" would put this one on CUDA, under other keys)
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit_transform(texts)
    quantized = BertEmbedder(tiny_bert, precision="int8")  # device="auto": the CPU, whatever accelerator there is
    got, report = quantized.fit(texts).transform_with_report(texts)
    assert (quantized.device_, quantized.precision_) == ("cpu", "int8")
    assert report.n_encoded == 3  # not served float32 entries
    cos = (full * got).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.98 and not np.allclose(full, got)
    model = load_model(tiny_bert, None, torch.device("cpu"), torch.float32, quantize=True).model
    kinds = {name: type(module).__module__ for name, module in model.named_modules()}
    assert "quantized" in kinds["encoder.layer.0.attention.self.query"]
    assert "quantized" in kinds["encoder.layer.0.intermediate.dense"]
    assert kinds["encoder.layer.0.output.dense"] == "torch.nn.modules.linear"  # kept in float32
    with pytest.raises(ValueError, match="CPU only"):
        resolve_dtype("int8", torch.device("cuda"))


# ---- faked CUDA devices (CI has none): precision by the chosen device's capability -----------


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two CUDA devices: cuda:0 with compute capability (7, 0) (a V100: bfloat16 emulated), cuda:1
    with the capability given to the returned setter (default (9, 0), an H100)."""
    capabilities = {0: (7, 0), 1: (9, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capabilities[index or 0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on a V100 too
    return capabilities


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_follows_the_chosen_devices_capability(fake_cuda, capability, expected):
    fake_cuda[1] = capability
    assert resolve_dtype("auto", torch.device("cuda:1")) == expected
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16  # the current device, cuda:0 (7.0)
    assert resolve_dtype("float32", torch.device("cuda:1")) == torch.float32


def test_bfloat16_on_a_card_that_emulates_it_warns(fake_cuda):
    with pytest.warns(UserWarning, match=r"cuda:0 \(compute capability \(7, 0\)\) is emulated"):
        assert resolve_dtype("bfloat16", torch.device("cuda:0")) == torch.bfloat16
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bfloat16", torch.device("cuda:1")) == torch.bfloat16
        assert resolve_dtype("float16", torch.device("cuda:0")) == torch.float16


def test_int8_means_the_cpu_with_device_auto_also_after_unpickling(fake_cuda, tiny_bert):
    import pickle

    from skbert import BertEmbedder

    assert resolve_device("auto", "int8") == torch.device("cpu")
    assert resolve_device("auto", "auto").type == "cuda"
    embedder = BertEmbedder(tiny_bert, precision="int8").fit(["a"])  # CUDA "available": still the CPU
    assert (embedder.device_, embedder.precision_) == ("cpu", "int8")
    restored = pickle.loads(pickle.dumps(embedder))
    assert (restored.device_, restored.precision_) == ("cpu", "int8")
    assert restored.transform(["a river bank"]).shape == (1, 32)
    with pytest.raises(ValueError, match="precision='int8' runs on the CPU only"):
        BertEmbedder(tiny_bert, precision="int8", device="cuda:1").fit(["a"])


# ---- batches: a row cap, and a budget that stays lowered after running out of memory --------
# On the CPU (device="cpu"): the spy counts the rows of padded batches, which a GPU's packed batches
# (one row each) would hide.


def _spy_on_forward(embedder, monkeypatch, fail_above=None):
    model = embedder._load().model
    real_forward, rows = model.forward, []

    def forward(*args, **kwargs):
        n = kwargs["input_ids"].shape[0]
        rows.append(n)
        if fail_above is not None and n > fail_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return rows


def test_output_bytes_cap_the_rows_of_a_batch(tiny_bert, monkeypatch):
    from skbert import BertEmbedder, _encoding

    texts = [f"a river bank {i}" for i in range(50)]
    embedder = BertEmbedder(tiny_bert, device="cpu", cache=None, layers="all", token_budget=10**6,
                            precision="float32").fit(["a"])
    want = embedder.transform(texts)  # float32: torch eager, whose forward the spy sees
    row_bytes = 4 * 32 * (3 * 4) + 4 * 2  # cls, last, mean for 4 hidden states, float32; content count and flag
    monkeypatch.setattr(_encoding, "OUTPUT_BYTES_PER_BATCH", 8 * row_bytes)
    rows = _spy_on_forward(embedder, monkeypatch)
    got = embedder.transform(texts)
    assert max(rows) == 8 and sum(rows) == 50
    from numpy.testing import assert_allclose

    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_output_bytes_count_what_is_shipped_sixteen_bits_for_a_sixteen_bit_store(tiny_bert, monkeypatch):
    """A float16 store's entries are narrowed on the device, so a batch holds twice the rows of a float32 one."""
    from skbert import BertEmbedder, _encoding

    texts = [f"a river bank {i}" for i in range(50)]
    embedder = BertEmbedder(tiny_bert, device="cpu", cache="memory", token_budget=10**6).fit(["a"])
    entry_bytes = 2 * 32 * (4 * 4 + 1) + 4 * 2  # every kind of 4 hidden states and the pooler, float16; count, flag
    monkeypatch.setattr(_encoding, "OUTPUT_BYTES_PER_BATCH", 8 * entry_bytes)
    rows = []
    real = _encoding.window_statistics

    def spy(*args, **kwargs):
        values, extras = real(*args, **kwargs)
        rows.append(len(values))
        assert values.dtype == torch.float16 and kwargs["check"]
        return values, extras

    monkeypatch.setattr(_encoding, "window_statistics", spy)
    embedder.transform(texts)
    assert max(rows) == 8 and sum(rows) == 50


def test_after_an_out_of_memory_error_the_lowered_budget_sticks(tiny_bert, monkeypatch):
    from skbert import BertEmbedder, _encoding

    texts = [f"the river bank number {i}" for i in range(64)]  # equal lengths
    embedder = BertEmbedder(tiny_bert, device="cpu", cache=None, batch_size=16, precision="float32").fit(["a"])
    want = embedder.transform(texts)
    rows = _spy_on_forward(embedder, monkeypatch, fail_above=4)
    before = _encoding.TOTALS.n_oom_splits
    got = embedder.transform(texts)
    assert _encoding.TOTALS.n_oom_splits - before == 2  # 16 -> 8 -> 4 once; never again
    assert rows[:3] == [16, 8, 4] and max(rows[3:]) <= 4 and sum(r for r in rows if r <= 4) == 64
    from numpy.testing import assert_allclose

    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cuda_is_one_device_by_its_number_whatever_becomes_current_later(fake_cuda, monkeypatch):
    """"cuda" is the current device, by number: "cuda" and "cuda:1" are one device (one copy of the weights),
    and a later torch.cuda.set_device does not move a device already resolved."""
    current = [1]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert resolve_device("cuda") == resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    resolved = resolve_device("cuda")
    current[0] = 0  # set_device(0)
    assert resolved == torch.device("cuda", 1) and resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # not started: asking would start it
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("CUDA started to resolve a device"))
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)


def test_a_process_forked_after_cuda_ran_runs_auto_on_the_cpu_and_refuses_an_explicit_gpu(monkeypatch):
    """torch marks such a child (``torch.cuda._is_in_bad_fork``): CUDA cannot start there. The real fork on a
    GPU machine is tests/test_gpu.py's."""
    import warnings

    from skbert import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    monkeypatch.setattr(_device, "_FORK_WARNED", False)
    monkeypatch.setattr(_device, "_mps_available", lambda: False)

    def no_cuda_call(*args, **kwargs):
        raise AssertionError("CUDA touched in a forked child")

    monkeypatch.setattr(torch.cuda, "current_device", no_cuda_call)
    monkeypatch.setattr(torch.cuda, "get_device_capability", no_cuda_call)
    with pytest.warns(UserWarning, match="forked from one that had already used CUDA.*runs on the CPU"):
        assert resolve_device("auto") == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert resolve_device("auto") == torch.device("cpu")
    for explicit in ("cuda", "cuda:0", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="forked.*'spawn' or 'forkserver'.*joblib's default backend"):
            resolve_device(explicit)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)  # the parent itself


def test_a_budget_lowered_by_an_out_of_memory_error_holds_for_the_models_next_calls(tiny_bert, monkeypatch):
    """The next call starts below the size that failed: no second error, the same vectors."""
    from numpy.testing import assert_allclose

    from skbert import BertEmbedder, _encoding, _models

    monkeypatch.setattr(_models, "_REGISTRY", {})  # a model of this test's own: its ceiling is lowered below
    texts = [f"the river bank number {i}" for i in range(64)]  # equal lengths
    embedder = BertEmbedder(tiny_bert, device="cpu", cache=None, batch_size=16, precision="float32").fit(["a"])
    want = embedder.transform(texts)
    rows = _spy_on_forward(embedder, monkeypatch, fail_above=4)
    embedder.transform(texts)  # 16 -> 8 -> 4
    rows.clear()
    before = _encoding.TOTALS.n_oom_splits
    got = BertEmbedder(tiny_bert, device="cpu", cache=None, batch_size=16, precision="float32").fit(["a"]).transform(
        texts)  # another estimator on the same loaded model: a later call
    assert _encoding.TOTALS.n_oom_splits == before and max(rows) == 4 and sum(rows) == 64
    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_token_vectors_cap_the_padded_tokens_of_a_batch_by_the_bytes_they_hand_back(tiny_bert, monkeypatch):
    """One vector per token and selected layer comes back: a batch holds at most OUTPUT_BYTES_PER_BATCH of them."""
    from numpy.testing import assert_allclose

    from skbert import BertEmbedder, _encoding

    texts = [f"a river bank {i}" for i in range(40)]
    embedder = BertEmbedder(tiny_bert, device="cpu", cache=None, layers="all", token_budget=10**6,
                            precision="float32").fit(["a"])
    want = embedder.transform_tokens(texts)
    token_bytes = 4 * 4 * 32  # 4 hidden states of width 32, float32
    monkeypatch.setattr(_encoding, "OUTPUT_BYTES_PER_BATCH", 30 * token_bytes)
    model = embedder._load().model
    real_forward, shapes = model.forward, []

    def forward(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    got = embedder.transform_tokens(texts)
    assert len(shapes) > 1 and max(rows * longest for rows, longest in shapes) <= 30
    assert sum(rows for rows, _ in shapes) == len(texts)
    for a, b in zip(got, want):
        assert a.tokens == b.tokens
        assert_allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6)


def test_a_fitted_estimator_keeps_the_gpu_fit_chose_whatever_thread_or_current_device(fake_cuda, tiny_bert,
                                                                                      monkeypatch):
    """CUDA's current device is per thread: calls run where fit chose (device_), not where each call's
    thread points; a refit chooses again."""
    from skbert import BertEmbedder, _embedder

    current, asked = [1], []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(_embedder, "load_model", lambda name, revision, device, dtype, quantize: asked.append(device))
    for device in ("auto", "cuda"):
        embedder = BertEmbedder(tiny_bert, device=device, precision="float32")
        embedder._load(refit=True)
        assert asked[-1] == torch.device("cuda", 1)
        embedder.device_ = "cuda:1"  # as fit records it
        current[0] = 0  # another thread, or set_device(0)
        embedder._load()
        assert asked[-1] == torch.device("cuda", 1)
        embedder._load(refit=True)
        assert asked[-1] == torch.device("cuda", 0)
        current[0] = 1
    explicit = BertEmbedder(tiny_bert, device="cuda:0", precision="float32")
    explicit.device_ = "cuda:0"
    explicit._load()
    assert asked[-1] == torch.device("cuda", 0)
