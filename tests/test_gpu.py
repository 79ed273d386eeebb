"""GPU runs agree with the CPU float32 reference; skipped where there is no CUDA.

Each test runs its whole logic on the CPU too (``device="cpu"``), so the code it
exercises, and the test itself, are checked on every run, GPU or not.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

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
@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_chunked_long_texts_match_the_cpu_reference(tiny_bert, device, precision):
    """Long texts cut into overlapping windows, combined across windows: float32 closely, 16 bits by cosine."""
    texts = TEXTS + ["the river bank was muddy and we sat on it " * 12, "money " * 150]
    params = dict(pooling=("cls", "mean", "max", "last"), layers=(-1, 1), long_text="chunk", stride=8)
    cpu = _reference(tiny_bert, texts, **params)
    got = BertEmbedder(tiny_bert, device=device, precision=precision, cache=None, **params).fit_transform(texts)
    if precision == "float32":
        np.testing.assert_allclose(got, cpu, rtol=1e-3, atol=1e-4)
    assert _cosine(got, cpu).min() > 0.999


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
    loaded = embedder._load()
    packed = embedder._options(loaded).runtime.packed
    assert packed == use_packed("auto", loaded.device.type, loaded.packing_blocker)
    if device == "cuda" and torch.cuda.get_device_capability(loaded.device) >= (8, 0):
        assert packed  # "auto" packs where the varlen kernel runs: 16 bits, sm80+


@pytest.mark.parametrize("device", DEVICES)
def test_16_bit_packed_and_padded_agree_with_the_cpu_reference(tiny_bert, device):
    """The varlen kernel itself (16-bit only) against padded batches and the CPU float32 reference."""
    texts = TEXTS + ["river bank " * 40, "a"]
    params = dict(pooling=("cls", "mean", "max", "pooler"), layers=-1)
    cpu = _reference(tiny_bert, texts, **params)
    precision = "bfloat16" if device == "cuda" else "float32"  # the CPU runs the per-window reference
    results = {}
    for attention in ("packed", "padded"):
        embedder = BertEmbedder(tiny_bert, device=device, attention=attention, precision=precision, cache=None,
                                **params).fit(texts)
        assert embedder._options(embedder._load()).runtime.packed == (attention == "packed")
        results[attention] = embedder.transform(texts)
        assert _cosine(results[attention], cpu).min() > 0.999
        assert np.array_equal(embedder.transform(texts), results[attention])  # no atomics: the same run to run
    assert _cosine(results["packed"], results["padded"]).min() > 0.999


_FORKED_GPU_CHILD = """
import multiprocessing, sys, warnings
import numpy as np
from skbert import BertEmbedder

texts = ["The river bank was muddy.", "She paid the loan at the bank.", "money money money"] * 4
auto = BertEmbedder(sys.argv[1], cache=None).fit(texts)
explicit = BertEmbedder(sys.argv[1], cache=None, device="cuda").fit(texts)
assert auto.device_.startswith("cuda"), auto.device_
want = auto.transform(texts)  # CUDA is initialised in the parent

def child(_):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = auto.transform(texts)
    try:
        explicit.transform(texts)
        error = ""
    except ValueError as exc:
        error = str(exc)
    return got, [str(w.message) for w in caught], error

with multiprocessing.get_context("fork").Pool(1) as pool:
    got, messages, error = pool.apply_async(child, (0,)).get(timeout=120)
cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
assert cosine.min() > 0.999, cosine
assert sum("already used CUDA" in m for m in messages) == 1, messages
assert "spawn" in error and "forkserver" in error and "loky" in error, error
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or not sys.platform.startswith("linux"), reason="needs a CUDA GPU and fork")
def test_a_child_forked_after_cuda_ran_embeds_on_the_cpu_and_an_explicit_gpu_is_refused_clearly(tiny_bert):
    """The CPU-run reference of the decision is tests/test_device.py's faked fork."""
    done = subprocess.run([sys.executable, "-c", _FORKED_GPU_CHILD, tiny_bert], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


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
