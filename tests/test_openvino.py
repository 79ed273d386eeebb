"""The OpenVINO runtime: the same statistics as torch eager float32 within 16-bit tolerance, its own cache
entries, and torch's result with a warning wherever it cannot run."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert import _openvino
from support import TEXTS, minilm

pytest.importorskip("openvino")

PAIRS = [(a, b) for a, b in zip(TEXTS, reversed(TEXTS))]
LONG = "the river bank was muddy and we sat on it " * 12


@pytest.fixture
def openvino_on(monkeypatch):
    """OpenVINO asked for, on a machine without a GPU (OpenVINO is the CPU's runtime: ``device="auto"``
    means the CPU here, as it does where OpenVINO is used, whatever accelerator runs the tests), and
    "auto" as on a CPU without native bfloat16 (OpenVINO's float32, compared with eager float32 below),
    whatever CPU runs the tests."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("skbert._device._mps_available", lambda: False)
    monkeypatch.setenv("SKBERT_RUNTIME", "openvino")
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)


def fresh_models(monkeypatch):
    """Models loaded anew for this test, with no network converted or failed yet (a model keeps its own)."""
    from skbert import _models

    monkeypatch.setattr(_models, "_REGISTRY", {})


def fail_on_second_batch(monkeypatch) -> list:
    """OpenVINO's networks raise on the second batch they run; returns the list of their runs."""
    real, calls = _openvino.forward, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("cannot run this shape")
        return real(*args, **kwargs)

    monkeypatch.setattr(_openvino, "forward", failing)
    return calls


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_auto_on_a_cpu_runs_openvino_and_matches_eager_float32(tiny_bert, openvino_on):
    params = dict(pooling=("cls", "mean", "max", "pooler"), layers=-1, cache=None)
    embedder = BertEmbedder(tiny_bert, **params).fit(TEXTS)
    assert embedder.runtime_ == "openvino"
    got = embedder.transform(TEXTS + [LONG])
    want = BertEmbedder(tiny_bert, precision="float32", **params).fit(TEXTS).transform(TEXTS + [LONG])
    assert_allclose(got, want, rtol=1e-4, atol=2e-5)  # "auto" is float32 here (the fixture): OpenVINO's f32


@pytest.mark.parametrize("params", [
    dict(pairs=True, pooling="mean_max", segments=("joint", "a", "b")),
    dict(long_text="chunk", pooling="mean_max", layers="all"),
    dict(long_text="head_tail", pooling="mean", layers=(1, 2)),
    dict(pooling="mean", layers=1),  # a model cut after layer 1, converted on its own
])
def test_pairs_long_texts_and_depths_through_openvino(tiny_bert, openvino_on, params):
    texts = PAIRS if params.get("pairs") else TEXTS + [LONG]
    got = BertEmbedder(tiny_bert, cache=None, **params).fit(texts[:1]).transform(texts)
    want = BertEmbedder(tiny_bert, cache=None, precision="float32", **params).fit(texts[:1]).transform(texts)
    assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_token_vectors_and_the_cache_through_openvino(tiny_bert, openvino_on, monkeypatch):
    embedder = BertEmbedder(tiny_bert, layers=(0, 2)).fit(TEXTS)
    records = embedder.transform_tokens(TEXTS)
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    reference = BertEmbedder(tiny_bert, layers=(0, 2), precision="float32").fit(TEXTS)
    for got, want in zip(records, reference.transform_tokens(TEXTS)):
        assert got.tokens == want.tokens
        assert_allclose(got.vectors, want.vectors, rtol=1e-4, atol=2e-5)
    # entries from one runtime are never served to the other: the runtime is part of the key
    torch_eager = BertEmbedder(tiny_bert).fit(TEXTS)
    torch_eager.transform(TEXTS)
    monkeypatch.setenv("SKBERT_RUNTIME", "openvino")
    assert embedder.transform_with_report(TEXTS)[1].n_encoded == len(set(TEXTS))
    assert embedder.transform_with_report(TEXTS)[1].n_encoded == 0


def test_a_model_openvino_cannot_convert_warns_and_gives_the_torch_result(tiny_bert_no_pooler, openvino_on,
                                                                          monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::something")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    fresh_models(monkeypatch)
    with pytest.warns(UserWarning, match="could not run this model through OpenVINO.*unsupported operation.*torch"):
        embedder = BertEmbedder(tiny_bert_no_pooler, cache=None).fit(TEXTS)
    assert embedder.runtime_ == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the failure is remembered
        got = embedder.transform(TEXTS)
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    assert_allclose(got, BertEmbedder(tiny_bert_no_pooler, cache=None).fit(TEXTS).transform(TEXTS), rtol=0, atol=0)


def test_an_unpickled_estimator_names_the_runtime_of_the_machine_it_runs_on(tiny_bert, openvino_on, monkeypatch):
    blob = pickle.dumps(BertEmbedder(tiny_bert, cache=None).fit(TEXTS))
    assert pickle.loads(blob).runtime_ == "openvino"
    installed = _openvino.available
    monkeypatch.setattr(_openvino, "available", lambda: False)  # a machine without OpenVINO
    restored = pickle.loads(blob)
    assert restored.runtime_ == "torch"
    eager = BertEmbedder(tiny_bert, cache=None).fit(TEXTS)
    assert eager.runtime_ == "torch"
    assert_allclose(restored.transform(TEXTS), eager.transform(TEXTS), rtol=0, atol=0)  # and runs it
    monkeypatch.setattr(_openvino, "available", installed)
    assert pickle.loads(pickle.dumps(eager)).runtime_ == "openvino"  # fitted without, restored where it is
    assert pickle.loads(pickle.dumps(BertEmbedder(tiny_bert, precision="float32").fit(TEXTS))).runtime_ == "torch"
    assert not hasattr(pickle.loads(pickle.dumps(BertEmbedder(tiny_bert))), "runtime_")  # unfitted stays so


def test_explicit_precisions_and_a_missing_runtime_stay_in_torch(tiny_bert, openvino_on, monkeypatch):
    monkeypatch.delenv("SKBERT_RUNTIME")
    assert BertEmbedder(tiny_bert).fit(["a"]).runtime_ == "openvino"  # the default where it is installed
    assert BertEmbedder(tiny_bert, precision="float32").fit(["a"]).runtime_ == "torch"  # the reference
    assert BertEmbedder(tiny_bert, attention="packed").fit(["a"]).runtime_ == "torch"  # a torch path
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    assert BertEmbedder(tiny_bert).fit(["a"]).runtime_ == "torch"
    monkeypatch.delenv("SKBERT_RUNTIME")
    monkeypatch.setattr(_openvino, "available", lambda: False)  # not installed
    assert BertEmbedder(tiny_bert).fit(["a"]).runtime_ == "torch"


@minilm
def test_minilm_bfloat16_through_openvino_stays_within_cosine_0_9999_of_float32(openvino_on, monkeypatch):
    """Where the CPU multiplies bfloat16 natively, OpenVINO computes in it: real texts stay close."""
    import pandas as pd

    from support import DATA, MINILM_ID

    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: True)
    fresh_models(monkeypatch)
    texts = pd.read_csv(DATA)["text"].str.slice(0, 600).tolist()[:64]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bfloat16 emulated on an AVX2-only CPU: slow, still correct
        embedder = BertEmbedder(MINILM_ID, cache=None, max_length=256).fit(texts[:1])
        assert embedder.runtime_ == "openvino" and embedder.precision_ == "bfloat16"
        got = embedder.transform(texts)
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    want = BertEmbedder(MINILM_ID, cache=None, max_length=256, precision="float32").fit(texts[:1]).transform(texts)
    assert _cosine(got, want).min() >= 0.9999


def test_the_streaming_command_runs_through_openvino(tiny_bert, openvino_on, tmp_path, capsys):
    import pandas as pd

    from skbert._cli import main

    pd.DataFrame({"text": TEXTS * 3}).to_parquet(tmp_path / "in.parquet")
    assert main(["embed", str(tmp_path / "in.parquet"), "--model", tiny_bert, "--chunk-rows", "7", "--quiet",
                 "-o", str(tmp_path / "out")]) == 0
    got = pd.read_parquet(tmp_path / "out")
    want = BertEmbedder(tiny_bert, cache=None, precision="float32").fit(["a"]).transform(TEXTS * 3)
    assert_allclose(np.stack(got.sort_values(["row"])["embedding"].to_numpy()), want, rtol=1e-4, atol=2e-5)


def test_the_cost_of_converting_is_reported(tiny_bert, openvino_on, monkeypatch):
    """fit reports the whole model's conversion (once per loaded model), a call at a new depth its cut model's."""
    fresh_models(monkeypatch)
    first = BertEmbedder(tiny_bert, cache=None, layers=1).fit(["a"])
    again = BertEmbedder(tiny_bert, cache=None, layers=1).fit(["a"])
    assert first.runtime_ == "openvino" and first.runtime_setup_s_ > 0.05 > again.runtime_setup_s_
    _, report = first.transform_with_report(TEXTS)  # layers=1: a network cut after the first layer
    _, later = first.transform_with_report(TEXTS)
    assert report.runtime_setup_s > 0.05 > later.runtime_setup_s
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    eager = BertEmbedder(tiny_bert, cache=None, layers=1).fit(["a"])
    assert eager.runtime_setup_s_ < 0.05 and eager.transform_with_report(TEXTS)[1].runtime_setup_s == 0


def test_a_failure_while_running_finishes_the_call_in_torch(tiny_bert, openvino_on, monkeypatch):
    """OpenVINO failing on the second batch: one warning, every row right, and later calls in torch."""
    fresh_models(monkeypatch)
    embedder = BertEmbedder(tiny_bert, cache=None, batch_size=2).fit(TEXTS)
    assert embedder.runtime_ == "openvino"
    calls = fail_on_second_batch(monkeypatch)
    with pytest.warns(UserWarning, match="OpenVINO failed while running.*cannot run this shape.*torch eager"):
        got = embedder.transform(TEXTS)
    want = BertEmbedder(tiny_bert, cache=None, precision="float32").fit(TEXTS).transform(TEXTS)
    assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    assert len(calls) == 2  # nothing more went to OpenVINO
    assert BertEmbedder(tiny_bert, cache=None).fit(TEXTS).runtime_ == "torch"
    BertEmbedder(tiny_bert, cache=None, layers=1).fit(TEXTS).transform(TEXTS)  # another depth: torch too
    assert len(calls) == 2


def test_only_a_few_cut_networks_are_kept(tiny_bert, openvino_on, monkeypatch):
    """Each depth's network holds its own weights: beyond MAX_CUT_NETWORKS the least recently used cut one
    goes (and is converted again if asked for), the whole model's stays, and every result is right."""
    fresh_models(monkeypatch)
    monkeypatch.setattr(_openvino, "MAX_CUT_NETWORKS", 1)
    texts = TEXTS[:4]
    for layers, kept in ((1, [1, 3]), (2, [2, 3]), (1, [1, 3]), (-1, [1, 3])):
        embedder = BertEmbedder(tiny_bert, cache=None, layers=layers).fit(texts)
        got = embedder.transform(texts)
        want = BertEmbedder(tiny_bert, cache=None, layers=layers, precision="float32").fit(texts).transform(texts)
        assert_allclose(got, want, rtol=1e-4, atol=2e-5)
        assert sorted(embedder._load().derived.networks) == kept


def test_calls_that_stop_at_the_same_layer_share_one_network(tiny_bert, openvino_on, monkeypatch):
    """layers=0 runs the first layer as layers=1 does (transformers records no hidden state without one):
    one cut network serves both."""
    fresh_models(monkeypatch)
    for layers in (0, 1):
        embedder = BertEmbedder(tiny_bert, cache=None, layers=layers).fit(TEXTS)
        embedder.transform(TEXTS)
    assert sorted(embedder._load().derived.networks) == [1, 3]


def test_a_depth_whose_network_does_not_convert_runs_the_whole_models_network(tiny_bert, openvino_on, monkeypatch):
    """Its numbers stay OpenVINO's (so the entries' key is right): the whole network serves the cut depth."""
    fresh_models(monkeypatch)
    real = _openvino.convert

    def whole_only(model, *args, **kwargs):
        if len(model.encoder.layer) < 3:
            raise RuntimeError("cannot convert a cut model")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(_openvino, "convert", whole_only)
    embedder = BertEmbedder(tiny_bert, cache=None, layers=1).fit(TEXTS)
    assert embedder.runtime_ == "openvino"
    options = embedder._options(embedder._load())
    with pytest.warns(UserWarning, match="could not run this model through OpenVINO.*cannot convert a cut model"):
        got = embedder.transform(TEXTS)
    assert not options.runtime.fell_back
    assert sorted(embedder._load().derived.networks) == [3] and embedder._load().derived.failed == {1}
    want = BertEmbedder(tiny_bert, cache=None, layers=1, precision="float32").fit(TEXTS).transform(TEXTS)
    assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_batches_that_fell_back_to_torch_are_not_cached_under_openvinos_name(tiny_bert, openvino_on, monkeypatch):
    fresh_models(monkeypatch)
    embedder = BertEmbedder(tiny_bert, batch_size=2).fit(TEXTS)
    fail_on_second_batch(monkeypatch)
    with pytest.warns(UserWarning, match="OpenVINO failed while running"):
        embedder.transform(TEXTS)
    stored = embedder.cache_info()["memory_entries"]
    assert stored <= 2 < len(set(TEXTS))  # at most the batch OpenVINO ran


def test_local_attention_windows_run_on_torch_and_a_short_text_beside_a_long_one_stays_finite(tmp_path, openvino_on):
    """ModernBERT attends within local windows in some layers. Its OpenVINO network gave NaN at padding positions
    whose window held no real token, and the next global layer spread it into the real tokens: a short text in one
    padded batch with a much longer one came out NaN. Such models run on torch."""
    from families import FAMILIES, write_family

    (family,) = [f for f in FAMILIES if f.name == "modernbert"]
    path = write_family(tmp_path / "modernbert", family, layers=3)
    texts = ["a b", "the river bank was muddy and the money was paid at the bank by the river and the fish"]
    embedder = BertEmbedder(path, pooling="mean", layers=-1, cache=None).fit(texts)
    assert embedder.runtime_ == "torch"
    got = embedder.transform(texts)
    assert np.isfinite(got).all()
    alone = np.vstack([BertEmbedder(path, pooling="mean", layers=-1, precision="float32", cache=None,
                                    device="cpu").fit(["a"]).transform([text]) for text in texts])
    assert_allclose(got, alone, rtol=1e-4, atol=2e-5)  # "auto" is float32 here (the fixture)
    assert pickle.loads(pickle.dumps(embedder)).runtime_ == "torch"  # unpickled, it names what runs
    from transformers import BertConfig, ModernBertConfig

    assert not _openvino.converts_exactly(ModernBertConfig()) and _openvino.converts_exactly(BertConfig())
