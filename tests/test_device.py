import pytest
import torch

from skbert._device import resolve_device, resolve_dtype
from support import HAS_CUDA


def test_auto_device_prefers_cuda_then_cpu():
    expected = "cuda" if HAS_CUDA else "cpu"
    if not HAS_CUDA and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="is not a device"):
        resolve_device("gpu please")
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32  # conftest: a CPU without native bfloat16
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
    fast.transform(texts)
    assert fast.n_encoded_ == 2  # float32 entries are not served to a bfloat16 encoder


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
    full = BertEmbedder(tiny_bert, precision="float32").fit_transform(texts)
    quantized = BertEmbedder(tiny_bert, precision="int8")
    got = quantized.fit_transform(texts)
    assert quantized.precision_ == "int8" and quantized.n_encoded_ == 3  # not served float32 entries
    cos = (full * got).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.98 and not np.allclose(full, got)
    model = load_model(tiny_bert, None, torch.device("cpu"), torch.float32, quantize=True).model
    kinds = {name: type(module).__module__ for name, module in model.named_modules()}
    assert "quantized" in kinds["encoder.layer.0.attention.self.query"]
    assert "quantized" in kinds["encoder.layer.0.intermediate.dense"]
    assert kinds["encoder.layer.0.output.dense"] == "torch.nn.modules.linear"  # kept in float32
    with pytest.raises(ValueError, match="CPU only"):
        resolve_dtype("int8", torch.device("cuda"))
