"""precision="int8" through OpenVINO and NNCF: rows near float32 (checked against torch eager float32, an
independent computation), fit's check and its fallbacks, cache keys apart, pickling, and torch's dynamic int8
where NNCF is not installed."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from skbert import BertEmbedder
from skbert import _int8
from support import DATA, MINILM_ID, TEXTS, WORDS, minilm

#: Lowest cosine of int8 rows to float32 accepted on the tiny random BERTs (fit's own bar is
#: ``_int8.TARGET_MIN_COSINE``; the tiny models' small activations quantise almost exactly).
TINY_TOLERANCE = 0.999


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _many_texts(n=80):
    """``n`` distinct short texts (enough for fit to calibrate on them)."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) + f" {i}" for i in range(n)]


@pytest.fixture
def nncf_on(monkeypatch):
    """NNCF and OpenVINO installed (else the test is skipped), the CPU chosen, and "auto" as on a CPU without
    native bfloat16 (so a fallback runs float32, compared with eager float32)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("skbert._device._mps_available", lambda: False)
    monkeypatch.setenv("SKBERT_RUNTIME", "openvino")
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)


def test_int8_rows_are_near_float32_and_calibrated_on_the_sample(tiny_bert, nncf_on):
    params = dict(pooling=("cls", "mean", "max"), layers=(-1, -2), cache=None)
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32", **params).fit_transform(TEXTS)
    quantized = BertEmbedder(tiny_bert, precision="int8", **params).fit(TEXTS)
    assert (quantized.device_, quantized.precision_, quantized.runtime_) == ("cpu", "int8", "openvino")
    check = quantized.int8_check_
    assert check.passed and check.min_cosine >= _int8.TARGET_MIN_COSINE and check.reason == ""
    # fewer than MIN_FIT_TEXTS distinct texts: the shipped sample, calibration and held-out texts apart
    assert check.calibration.source == "sample"
    assert len(check.calibration.texts) == _int8.MAX_CALIBRATION and len(check.calibration.held_out) == 64
    assert not set(check.calibration.texts) & set(check.calibration.held_out)
    assert quantized.runtime_setup_s_ >= check.seconds > 0  # calibration reported as the runtime's setup
    got = quantized.transform(TEXTS)
    assert _cosine(got, full).min() >= TINY_TOLERANCE
    assert not np.allclose(got, full, atol=1e-5)  # int8 did change the numbers: it ran


def test_int8_calibrates_on_enough_fit_texts(tiny_bert, nncf_on):
    texts = _many_texts(80) + _many_texts(80)  # duplicates count once
    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(texts)
    calibration = embedder.int8_check_.calibration
    assert calibration.source == "fit" and embedder.precision_ == "int8"
    assert len(calibration.texts) == 60 and len(calibration.held_out) == 20  # 80 distinct, every fourth held out
    assert set(calibration.texts) | set(calibration.held_out) == set(texts)
    assert not set(calibration.texts) & set(calibration.held_out)
    small = _int8.calibration_for(_many_texts(_int8.MIN_FIT_TEXTS - 1), 64)
    assert small.source == "sample"


def test_int8_falls_back_when_the_check_falls_short(tiny_bert, nncf_on, monkeypatch):
    monkeypatch.setattr(_int8, "TARGET_MIN_COSINE", 1.01)  # a bar no quantised network reaches
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None)
    with pytest.warns(UserWarning, match=r"precision='int8' was not used: its lowest cosine .* below the target"):
        embedder.fit(TEXTS)
    assert not embedder.int8_check_.passed and embedder.int8_check_.min_cosine < 1.01
    assert (embedder.precision_, embedder.runtime_) == ("float32", "openvino")  # as "auto" runs on this CPU
    np.testing.assert_allclose(embedder.transform(TEXTS), full, atol=2e-3, rtol=2e-3)  # OpenVINO float32
    restored = pickle.loads(pickle.dumps(embedder))
    assert (restored.precision_, restored.runtime_) == ("float32", "openvino")


def test_int8_falls_back_when_quantisation_fails(tiny_bert, nncf_on, monkeypatch):
    import nncf

    def failing(*args, **kwargs):
        raise RuntimeError("no statistics for this graph")

    monkeypatch.setattr(nncf, "quantize", failing)
    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None)
    with pytest.warns(UserWarning, match="quantisation failed .*RuntimeError: no statistics"):
        embedder.fit(TEXTS)
    assert embedder.int8_check_.min_cosine is None and embedder.precision_ == "float32"
    assert embedder.runtime_ == "openvino"  # as "auto" runs on this CPU
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
    np.testing.assert_allclose(embedder.transform(TEXTS), full, atol=2e-3, rtol=2e-3)


def test_int8_cache_entries_are_apart_from_other_precisions_and_calibrations(tiny_bert, nncf_on):
    texts = TEXTS
    auto = BertEmbedder(tiny_bert).fit(texts)
    assert auto.runtime_ == "openvino"
    auto.transform(texts)
    first = BertEmbedder(tiny_bert, precision="int8").fit(texts)
    _, report = first.transform_with_report(texts)
    assert report.n_encoded == report.n_unique and report.n_cache_hits == 0  # not served auto's entries
    _, again = BertEmbedder(tiny_bert, precision="int8").fit(texts).transform_with_report(texts)
    assert again.n_encoded == 0  # the same calibration: the same entries
    other = BertEmbedder(tiny_bert, precision="int8").fit(_many_texts())  # calibrated on other texts
    _, report = other.transform_with_report(texts)
    assert report.n_encoded == report.n_unique
    _, report = BertEmbedder(tiny_bert, precision="float32", device="cpu").fit(texts).transform_with_report(texts)
    assert report.n_encoded == report.n_unique


def test_int8_pickles_clones_and_quantises_again_from_its_texts(tiny_bert, nncf_on):
    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(TEXTS)
    expected = embedder.transform(TEXTS)
    restored = pickle.loads(pickle.dumps(embedder))
    assert (restored.precision_, restored.runtime_) == ("int8", "openvino")
    assert restored.int8_check_ == embedder.int8_check_
    restored._load().derived.int8.clear()  # as in a process that never fitted it: made again from the same texts
    np.testing.assert_allclose(restored.transform(TEXTS), expected, atol=1e-5)
    cloned = clone(embedder)
    assert not hasattr(cloned, "int8_check_")
    assert cloned.fit(TEXTS).precision_ == "int8"
    np.testing.assert_allclose(cloned.transform(TEXTS), expected, atol=1e-5)


def test_int8_without_nncf_is_torch_dynamic_int8_with_a_warning(tiny_bert, monkeypatch):
    monkeypatch.setattr(_int8, "available", lambda: False)
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="int8", cache=None)
    with pytest.warns(UserWarning, match="without OpenVINO and NNCF is torch's dynamic int8"):
        embedder.fit(TEXTS)
    assert (embedder.precision_, embedder.runtime_, embedder.int8_check_) == ("int8", "torch", None)
    assert embedder._load().quantized
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
    assert _cosine(embedder.transform(TEXTS), full).min() > 0.98


def test_an_estimator_fitted_without_nncf_keeps_torch_int8_where_it_is(tiny_bert, nncf_on, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(_int8, "available", lambda: False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embedder = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(TEXTS)
    restored = pickle.loads(pickle.dumps(embedder))  # NNCF is here now
    assert (restored.precision_, restored.runtime_) == ("int8", "torch")
    np.testing.assert_allclose(restored.transform(TEXTS), embedder.transform(TEXTS), atol=1e-6)


def test_an_int8_estimator_unpickled_without_nncf_runs_as_auto_with_a_warning(tiny_bert, nncf_on, monkeypatch):
    """Never torch's dynamic int8 (further from float32 than what fit checked): as "auto", keyed apart."""
    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(TEXTS)
    assert embedder.int8_check_.passed
    blob = pickle.dumps(embedder)
    monkeypatch.setattr(_int8, "available", lambda: False)
    with pytest.warns(UserWarning, match="lacks OpenVINO or NNCF .* runs as precision='auto'"):
        restored = pickle.loads(blob)
    auto = BertEmbedder(tiny_bert, cache=None).fit(TEXTS)  # what "auto" picks on this machine
    assert (restored.precision_, restored.runtime_) == (auto.precision_, auto.runtime_)
    assert not restored._load().quantized
    np.testing.assert_allclose(restored.transform(TEXTS), auto.transform(TEXTS), atol=1e-6, rtol=1e-6)
    full = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
    assert _cosine(restored.transform(TEXTS), full).min() > 0.999


def test_an_int8_network_that_failed_makes_later_calls_run_as_auto_under_their_own_key(tiny_bert, nncf_on):
    from skbert._runtimes import OpenVINOInt8, choose_runtime

    embedder = BertEmbedder(tiny_bert, precision="int8").fit(TEXTS)
    loaded = embedder._load()
    assert isinstance(choose_runtime(loaded, "int8", "auto", embedder.int8_check_), OpenVINOInt8)
    with pytest.warns(UserWarning, match="int8 network failed while running"):
        _int8.give_up(loaded, embedder.int8_check_, RuntimeError("lost"))
    try:
        runtime = choose_runtime(loaded, "int8", "auto", embedder.int8_check_)
        assert not isinstance(runtime, OpenVINOInt8) and runtime.key == "openvino"
        full = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
        got, report = embedder.transform_with_report(TEXTS)
        np.testing.assert_allclose(got, full, atol=2e-3, rtol=2e-3)
        _, again = embedder.transform_with_report(TEXTS)
        assert again.n_encoded == 0  # the fallback's rows are kept, under their own key
    finally:
        loaded.derived.int8_failed.discard(embedder.int8_check_.calibration.digest)


def test_int8_cache_key_names_the_toolchain(tiny_bert, nncf_on):
    from skbert._runtimes import choose_runtime

    embedder = BertEmbedder(tiny_bert, precision="int8").fit(TEXTS)
    key = choose_runtime(embedder._load(), "int8", "auto", embedder.int8_check_).key
    import nncf
    import openvino

    assert embedder.int8_check_.calibration.digest in key
    assert f"nncf-{nncf.__version__}" in key and "openvino-" in key and key.endswith(":f32")


@minilm
def test_int8_minilm_on_held_out_real_text(nncf_on):
    """MiniLM calibrated on the shipped sample (even rows of data/), evaluated on odd rows it never saw."""
    held_out = pd.read_csv(DATA)["text"].tolist()[1::2][:64]
    params = dict(pooling="mean", include_special_tokens=True, max_length=128, cache=None)
    quantized = BertEmbedder(MINILM_ID, precision="int8", **params).fit(["calibrate on the sample"])
    assert quantized.precision_ == "int8", quantized.int8_check_
    assert quantized.int8_check_.min_cosine >= _int8.TARGET_MIN_COSINE
    full = BertEmbedder(MINILM_ID, device="cpu", precision="float32", **params).fit_transform(held_out)
    assert _cosine(quantized.transform(held_out), full).min() >= _int8.TARGET_MIN_COSINE - 0.002
