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


def _forget_checks():
    """Every loaded model's remembered int8 checks forgotten, so the next fit quantises and checks again."""
    from skbert import _models

    for loaded in list(_models._REGISTRY.values()):
        loaded.derived.int8_checks.clear()


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
    _int8.toolchain.cache_clear()  # it names bf16 or f32: worked out under this patch
    _forget_checks()  # each test checks anew (a check is reused per model and calibration in a process)
    yield
    _int8.toolchain.cache_clear()


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


class _TimedNetwork:
    """Stands in for a compiled network whose every inference takes ``seconds`` (a sleep)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def create_infer_request(self):
        import time

        return type("Request", (), {"infer": lambda _, feed: time.sleep(self.seconds)})()


def test_measured_speedup_is_the_ratio_of_best_times():
    feeds = [(np.arange(2), {}), (np.arange(2, 4), {})]
    ratio = _int8.measured_speedup(_TimedNetwork(0.01), _TimedNetwork(0.03), feeds, rounds=2)
    assert 1.8 < ratio < 3.5  # 3x by construction; sleeps overshoot a little on a busy machine
    assert _int8.measured_speedup(_TimedNetwork(0.03), _TimedNetwork(0.01), feeds, rounds=2) < 0.55


def test_a_passed_check_records_its_speedup_and_warns_where_int8_does_not_pay(tiny_bert, nncf_on, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning where int8 pays (faked: 1.5x)
        monkeypatch.setattr(_int8, "measured_speedup", lambda *args, **kwargs: 1.5)
        fast = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(TEXTS)
    assert fast.int8_check_.speedup == 1.5 and fast.precision_ == "int8"
    monkeypatch.setattr(_int8, "measured_speedup", lambda *args, **kwargs: 0.6)
    _forget_checks()
    with pytest.warns(UserWarning, match=r"at 0\.60x the speed of precision='auto' at fit: int8 does not seem to pay"):
        slow = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(TEXTS)
    assert slow.int8_check_.speedup == 0.6 and slow.precision_ == "int8"  # it still runs as asked


def test_the_speedup_is_timed_against_the_network_auto_runs_for_the_same_layers(tiny_bert, nncf_on, monkeypatch):
    from skbert import _openvino

    timed = []
    monkeypatch.setattr(_int8, "measured_speedup", lambda quantized, plain, feeds: timed.append((quantized, plain)) or 1.2)
    embedder = BertEmbedder(tiny_bert, precision="int8", layers=1, cache=None).fit(TEXTS)
    loaded = embedder._load()
    assert embedder.int8_check_.speedup == 1.2 and len(timed) == 1
    quantized, plain = timed[0]
    assert quantized is loaded.derived.int8[embedder.int8_check_.calibration.digest]  # int8 first
    assert plain is _openvino.network(loaded, 1)  # what "auto" runs reading layer 1: cut there (3-layer model)
    assert plain is not _openvino.network(loaded, None)


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
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")  # NNCF installed or not: the warning names the real cause
    with pytest.warns(UserWarning, match="SKBERT_RUNTIME=torch keeps OpenVINO and NNCF out, so precision='int8' is"):
        BertEmbedder(tiny_bert, device="cpu", precision="int8", cache=None).fit(TEXTS)


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


def test_a_refit_on_the_same_texts_reuses_the_check_and_other_texts_quantise_again(tiny_bert, nncf_on, monkeypatch):
    """A grid search fits every candidate on each fold's texts: one quantisation per fold, not per candidate."""
    made = []
    quantize = _int8.quantize_model
    monkeypatch.setattr(_int8, "quantize_model", lambda *args, **kwargs: made.append(1) or quantize(*args, **kwargs))
    texts = _many_texts()
    first = BertEmbedder(tiny_bert, precision="int8", cache=None).fit(texts)
    assert len(made) == 1 and first.int8_check_.passed
    second = BertEmbedder(tiny_bert, precision="int8", pooling="max", layers=-2, cache=None).fit(texts)
    assert len(made) == 1 and second.int8_check_ == first.int8_check_ and second.precision_ == "int8"
    before = second.transform(texts)
    loaded = first._load()
    loaded.derived.int8.clear()  # the network forgotten (as when more calibrations ran since)
    np.testing.assert_allclose(clone(second).fit(texts).transform(texts), before, atol=1e-6)
    assert len(made) == 2  # made again from the same texts, the check reused
    BertEmbedder(tiny_bert, precision="int8", cache=None).fit(_many_texts(90))  # other texts: quantised
    assert len(made) == 3
    with pytest.warns(UserWarning, match="int8 network failed while running"):
        _int8.give_up(loaded, first.int8_check_, RuntimeError("lost"))
    BertEmbedder(tiny_bert, precision="int8", cache=None).fit(texts)  # a failed network is checked again
    assert len(made) == 4 and first.int8_check_.calibration.digest not in loaded.derived.int8_failed


@pytest.mark.parametrize("bf16", [False, True])
def test_int8_on_a_family_that_runs_on_torch_is_not_quantised_and_runs_as_auto(tmp_path, nncf_on, monkeypatch, bf16):
    """ModernBERT (attention within local windows) never runs on OpenVINO: fit says int8 was not used without
    spending a quantisation on it, runs as "auto" does (torch, in auto's precision: bfloat16 on a CPU that has it,
    not the float32 int8 loads for its calibration), and an unpickled copy does too."""
    from families import FAMILIES, write_family

    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: bf16)
    want = "bfloat16" if bf16 else "float32"

    (family,) = [f for f in FAMILIES if f.name == "modernbert"]
    path = write_family(tmp_path / "modernbert", family, layers=2)
    called = []
    monkeypatch.setattr(_int8, "quantize_model", lambda *args, **kwargs: called.append(1))
    with pytest.warns(UserWarning, match="int8' was not used: OpenVINO does not run this model family exactly"):
        embedder = BertEmbedder(path, precision="int8", cache=None).fit(TEXTS)
    assert not called and not embedder.int8_check_.passed and embedder.int8_check_.min_cosine is None
    auto = BertEmbedder(path, cache=None).fit(TEXTS)
    assert (embedder.precision_, embedder.runtime_) == (auto.precision_, auto.runtime_) == (want, "torch")
    np.testing.assert_allclose(embedder.transform(TEXTS), auto.transform(TEXTS), rtol=0, atol=0)
    restored = pickle.loads(pickle.dumps(embedder))
    assert (restored.precision_, restored.runtime_) == (want, "torch")
    np.testing.assert_allclose(restored.transform(TEXTS), auto.transform(TEXTS), rtol=0, atol=0)


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


def test_an_int8_call_keeps_its_network_when_the_model_evicts_it_mid_call(tiny_bert, nncf_on, monkeypatch):
    """Another calibration's call may push this one's network out of the model's few kept ones between two
    batches: the call runs on with the network it started with; the next call makes it again, once."""
    from skbert import _openvino

    embedder = BertEmbedder(tiny_bert, precision="int8", cache=None, batch_size=2).fit(TEXTS)
    expected = embedder.transform(TEXTS)
    loaded = embedder._load()
    forward, quantized, counts = _openvino.forward, _int8._quantized, {"batches": 0, "quantised": 0}

    def evicting(*args, **kwargs):
        counts["batches"] += 1
        out = forward(*args, **kwargs)
        with loaded.derived.lock:
            loaded.derived.int8.clear()  # as another calibration's network would
        return out

    def counted(*args, **kwargs):
        counts["quantised"] += 1
        return quantized(*args, **kwargs)

    monkeypatch.setattr(_openvino, "forward", evicting)
    monkeypatch.setattr(_int8, "_quantized", counted)
    got = embedder.transform(TEXTS)
    assert counts["batches"] > 2 and counts["quantised"] == 0  # evicted after every batch, never made again
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(embedder.transform(TEXTS), expected, atol=1e-6)
    assert counts["quantised"] == 1  # the next call, finding it evicted, makes it again once


def test_the_ffn_output_projections_are_kept_in_bf16_in_every_family(tmp_path):
    """KEPT_IN_BF16 names each family's feed-forward output projection: checked against the torch modules
    themselves (a Linear from the intermediate width back to the hidden width), every one of them and nothing
    else."""
    pytest.importorskip("openvino")
    from families import FAMILIES, write_family

    from skbert._models import load_model
    from skbert._openvino import to_openvino

    for family in FAMILIES:
        loaded = load_model(str(write_family(tmp_path / family.name, family)), None, torch.device("cpu"),
                            torch.float32)
        config = loaded.model.config
        hidden = getattr(config, "hidden_size", None) or config.dim
        wide = getattr(config, "intermediate_size", None) or config.hidden_dim
        ffn_outputs = {name for name, module in loaded.model.named_modules()
                       if isinstance(module, torch.nn.Linear) and (module.in_features, module.out_features) == (wide, hidden)}
        kept = {name.split("/")[0].removeprefix("__module.model.")
                for name in _int8.kept_operations(to_openvino(loaded.model, loaded.has_token_types))}
        assert ffn_outputs and kept == ffn_outputs, family.name


def test_a_pickled_calibration_works_its_digest_out_again():
    """The digest names what makes the network in the skbert that runs it, not in the one that pickled it."""
    calibration = _int8.calibration_for(_many_texts(80), 64)
    digest = calibration.digest
    blob = pickle.dumps(calibration)
    assert digest.encode() not in blob
    restored = pickle.loads(blob)
    assert "digest" not in vars(restored) and restored == calibration and restored.digest == digest


def test_nncf_leaves_the_kept_projections_unquantised_and_quantises_the_others(tiny_bert, nncf_on):
    """The ignored scope reaches NNCF (it is passed with validate=False, so a name that stopped matching would
    quantise everything silently): no FakeQuantize feeds a kept MatMul, one feeds every other Linear's."""
    from skbert._models import load_model

    loaded = load_model(tiny_bert, None, torch.device("cpu"), torch.float32)
    quantized = _int8.quantize_model(loaded, _int8.calibration_for(None, 32))

    def quantized_input(op, hops=2):
        """Whether a FakeQuantize feeds ``op`` within a few hops (through converts, reshapes and the like)."""
        sources = [port.get_source_output().get_node() for port in op.inputs()]
        return any(s.get_type_name() == "FakeQuantize" or (hops > 1 and quantized_input(s, hops - 1)) for s in sources)

    linear = [op for op in quantized.get_ops() if op.get_type_name() == "MatMul" and "aten::linear" in op.get_friendly_name()]
    kept = set(_int8.kept_operations(quantized)) & {op.get_friendly_name() for op in linear}
    assert len(kept) == 3  # one FFN output projection in each of the tiny model's three layers
    for op in linear:
        assert quantized_input(op) != (op.get_friendly_name() in kept), op.get_friendly_name()
