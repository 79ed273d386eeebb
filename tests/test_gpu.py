"""GPU runs agree with the CPU; skipped where there is no CUDA."""

import pickle

import numpy as np

from skbert import BertEmbedder
from support import TEXTS, gpu


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@gpu
def test_gpu_auto_precision_matches_cpu(tiny_bert):
    cpu = BertEmbedder(tiny_bert, pooling="mean_max", layers="all", device="cpu").fit_transform(TEXTS)
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", layers="all", device="auto")
    got = embedder.fit_transform(TEXTS)
    assert embedder.device_.startswith("cuda") and embedder.precision_ in ("bfloat16", "float16")
    assert got.dtype == np.float32
    assert _cosine(got, cpu).min() > 0.999


@gpu
def test_gpu_float32_matches_cpu_closely(tiny_bert):
    cpu = BertEmbedder(tiny_bert, pooling=("cls", "mean", "max"), device="cpu").fit_transform(TEXTS)
    gpu_out = BertEmbedder(tiny_bert, pooling=("cls", "mean", "max"), device="cuda", precision="float32")
    np.testing.assert_allclose(gpu_out.fit_transform(TEXTS), cpu, rtol=1e-3, atol=1e-4)


@gpu
def test_gpu_fitted_pickle_has_no_cuda_tensors(tiny_bert):
    embedder = BertEmbedder(tiny_bert, device="auto").fit(TEXTS)
    blob = pickle.dumps(embedder)
    assert b"torch" not in blob
    assert pickle.loads(blob).transform(TEXTS).shape == (len(TEXTS), 32)


@gpu
def test_gpu_packed_padded_and_cpu_float32_agree(tiny_bert):
    """The varlen kernel (packed), padded batches and the CPU reference, all in float32 here."""
    texts = TEXTS + ["river bank " * 40, "a"]
    params = dict(pooling=("cls", "mean", "max", "last"), layers="all", precision="float32", cache=None)
    cpu = BertEmbedder(tiny_bert, device="cpu", attention="padded", **params).fit_transform(texts)
    for attention in ("packed", "padded"):
        got = BertEmbedder(tiny_bert, device="cuda", attention=attention, **params).fit_transform(texts)
        np.testing.assert_allclose(got, cpu, rtol=1e-3, atol=1e-4)
    assert BertEmbedder(tiny_bert, device="cuda")._encoding_options(BertEmbedder(tiny_bert, device="cuda")
                                                                     .fit(["a"])._load())["packed"]


@gpu
def test_gpu_sentence_pairs_packed_and_padded_match_the_cpu(tiny_bert):
    """Pairs (token types, per-side statistics) through the varlen kernel and padded batches, float32."""
    pairs = [(a, b) for a, b in zip(TEXTS, reversed(TEXTS))] + [("bank " * 40, "river " * 30)]
    params = dict(pairs=True, pooling="mean_max", segments=("joint", "a", "b"), precision="float32", cache=None)
    cpu = BertEmbedder(tiny_bert, device="cpu", attention="padded", **params).fit_transform(pairs)
    for attention in ("packed", "padded"):
        got = BertEmbedder(tiny_bert, device="cuda", attention=attention, **params).fit_transform(pairs)
        np.testing.assert_allclose(got, cpu, rtol=1e-3, atol=1e-4)
