"""GPU runs agree with the CPU float32 reference; skipped where there is no CUDA.

Each test runs its whole logic on the CPU too (``device="cpu"``), so the code it
exercises, and the test itself, are checked on every run, GPU or not.
"""

import pickle

import numpy as np
import pytest

from skbert import BertEmbedder
from skbert._packing import use_packed
from support import HAS_CUDA, TEXTS

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")])]


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _reference(tiny_bert, texts, **params):
    return BertEmbedder(tiny_bert, device="cpu", precision="float32", attention="padded", cache=None,
                        **params).fit_transform(texts)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_precision_matches_the_cpu_float32_reference(tiny_bert, device):
    params = dict(pooling="mean_max", layers="all")
    embedder = BertEmbedder(tiny_bert, device=device, **params)
    got = embedder.fit_transform(TEXTS)
    assert embedder.device_.startswith(device) and got.dtype == np.float32
    if device == "cuda":
        assert embedder.precision_ in ("bfloat16", "float16")
    assert _cosine(got, _reference(tiny_bert, TEXTS, **params)).min() > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_the_cpu_reference_closely(tiny_bert, device):
    params = dict(pooling=("cls", "mean", "max"))
    got = BertEmbedder(tiny_bert, device=device, precision="float32", **params).fit_transform(TEXTS)
    np.testing.assert_allclose(got, _reference(tiny_bert, TEXTS, **params), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_a_fitted_pickle_holds_no_tensors_and_runs_again(tiny_bert, device):
    embedder = BertEmbedder(tiny_bert, device=device, precision="float32").fit(TEXTS)
    blob = pickle.dumps(embedder)
    assert b"torch._utils" not in blob and b"torch.storage" not in blob  # no tensor, no module
    np.testing.assert_allclose(pickle.loads(blob).transform(TEXTS), embedder.transform(TEXTS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_padded_and_the_cpu_reference_agree(tiny_bert, device):
    """Packed batches (the varlen kernel on CUDA, window by window on a CPU), padded ones and
    the CPU reference, all in float32."""
    texts = TEXTS + ["river bank " * 40, "a"]
    params = dict(pooling=("cls", "mean", "max", "last"), layers="all")
    cpu = _reference(tiny_bert, texts, **params)
    for attention in ("packed", "padded"):
        got = BertEmbedder(tiny_bert, device=device, attention=attention, precision="float32", cache=None,
                           **params).fit_transform(texts)
        np.testing.assert_allclose(got, cpu, rtol=1e-3, atol=1e-4)
    embedder = BertEmbedder(tiny_bert, device=device).fit(["a"])
    assert embedder._options(embedder._load()).packed == use_packed("auto", embedder._load().device)
    if device == "cuda":
        assert embedder._options(embedder._load()).packed  # "auto" packs where the varlen kernel runs


@pytest.mark.parametrize("device", DEVICES)
def test_sentence_pairs_packed_and_padded_match_the_cpu_reference(tiny_bert, device):
    """Pairs (token types, per-side statistics) packed and padded, float32."""
    pairs = [(a, b) for a, b in zip(TEXTS, reversed(TEXTS))] + [("bank " * 40, "river " * 30)]
    params = dict(pairs=True, pooling="mean_max", segments=("joint", "a", "b"))
    cpu = _reference(tiny_bert, pairs, **params)
    for attention in ("packed", "padded"):
        got = BertEmbedder(tiny_bert, device=device, attention=attention, precision="float32", cache=None,
                           **params).fit_transform(pairs)
        np.testing.assert_allclose(got, cpu, rtol=1e-3, atol=1e-4)
