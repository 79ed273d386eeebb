"""BertEmbedder as a scikit-learn citizen: checks, pipelines, searches, pickling."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as checks

from skbert import BertEmbedder
from skbert._cache import clear_stores
from skbert import _models

RTOL, ATOL = 1e-4, 2e-5

SKLEARN_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_param_validation",
    "check_transformers_unfitted",
    "check_get_feature_names_out_error",
]


@pytest.mark.parametrize("check", SKLEARN_CHECKS)
def test_sklearn_check(check):
    getattr(checks, check)("BertEmbedder", BertEmbedder())


def test_init_does_no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("loaded a model in __init__")

    monkeypatch.setattr(_models, "load_model", forbidden)
    embedder = BertEmbedder("no/such-model", layers=99, pooling="nope", device="nope")
    assert embedder.get_params()["layers"] == 99


def test_tags_declare_text_input():
    tags = BertEmbedder().__sklearn_tags__()
    assert tags.input_tags.string and tags.input_tags.one_d_array and not tags.input_tags.two_d_array
    assert not tags.target_tags.required


# ---- data-dependent checks, ported to text ------------------------------------------


def test_fit_returns_self_and_is_idempotent(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert)
    assert embedder.fit(texts) is embedder
    first = embedder.transform(texts)
    second = embedder.fit(texts).transform(texts)
    assert_allclose(first, second, rtol=RTOL, atol=ATOL)


def test_fit_does_not_change_parameters(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, layers=[0, -1], pooling=("cls", "mean"))
    before = joblib.hash(embedder.get_params())
    embedder.fit(texts)
    assert joblib.hash(embedder.get_params()) == before
    assert embedder.layers == [0, -1]


def test_subset_and_order_invariance(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, batch_size=2).fit(texts)
    full = embedder.transform(texts)
    assert_allclose(embedder.transform(texts[2:5]), full[2:5], rtol=RTOL, atol=ATOL)
    for i, text in enumerate(texts):
        assert_allclose(embedder.transform([text])[0], full[i], rtol=RTOL, atol=ATOL)
    assert_allclose(embedder.transform(texts[::-1]), full[::-1], rtol=RTOL, atol=ATOL)


def test_refit_resets_state(tiny_bert, tiny_bert_no_pooler, texts):
    embedder = BertEmbedder(tiny_bert, layers=-1).fit(texts)
    assert embedder.layer_indices_ == (3,)
    embedder.set_params(layers="all").fit(texts)
    assert embedder.layer_indices_ == (0, 1, 2, 3)
    assert embedder.transform(texts).shape == (len(texts), 32 * 4)
    embedder.set_params(model_name=tiny_bert_no_pooler, layers=-1).fit(texts)
    assert embedder.model_location_ == tiny_bert_no_pooler
    other = BertEmbedder(tiny_bert_no_pooler).fit_transform(texts)
    assert_allclose(embedder.transform(texts), other, rtol=RTOL, atol=ATOL)


def test_clone_then_refit_gives_the_same_result(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, pooling="max", layers=(1, 2)).fit(texts)
    copy = clone(embedder)
    assert not hasattr(copy, "layer_indices_")
    want = embedder.transform(texts)
    clear_stores()
    assert_allclose(copy.fit_transform(texts), want, rtol=RTOL, atol=ATOL)


def test_clones_share_one_loaded_model(tiny_bert, texts):
    a = BertEmbedder(tiny_bert).fit(texts)
    b = clone(a).set_params(pooling="max", layers=0).fit(texts)
    assert a._load() is b._load()
    assert a._load().model is b._load().model


def test_unfitted_transform_raises(tiny_bert, texts):
    with pytest.raises(NotFittedError):
        BertEmbedder(tiny_bert).transform(texts)


def test_pickle_round_trip_leaves_the_weights_out(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", layers="all").fit(texts)
    expected = embedder.transform(texts)
    blob = pickle.dumps(embedder)
    assert len(blob) < 5_000  # parameters and a few fitted numbers; no tensors
    restored = pickle.loads(blob)
    clear_stores()  # the restored estimator encodes anew
    assert_allclose(restored.transform(texts), expected, rtol=RTOL, atol=ATOL)
    clear_stores()
    assert_allclose(joblib.load(_dump(embedder)).transform(texts), expected, rtol=RTOL, atol=ATOL)


def _dump(obj):
    import io

    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_pickle_made_on_a_gpu_machine_loads_on_a_cpu_one(tiny_bert, texts, monkeypatch):
    """Simulate a GPU fit: the fitted state says cuda/bfloat16; here device='auto' means a CPU
    without native bfloat16 (this machine made one: no CUDA, no MPS, whatever it has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("skbert._device._mps_available", lambda: False)
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)
    embedder = BertEmbedder(tiny_bert).fit(texts)
    assert (embedder.device_, embedder.precision_) == ("cpu", "float32")
    expected = embedder.transform(texts)
    embedder.device_, embedder.precision_ = "cuda:0", "bfloat16"
    restored = pickle.loads(pickle.dumps(embedder))
    assert restored.device_ == "cpu" and restored.precision_ == "float32"
    clear_stores()
    assert_allclose(restored.transform(texts), expected, rtol=RTOL, atol=ATOL)


def test_an_unpickled_cpu_estimator_names_the_precision_auto_runs_on_this_cpu(tiny_bert, texts, monkeypatch):
    """device="cpu" is not chosen anew, but precision="auto" is: bfloat16 only on a CPU that has it natively."""
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("SKBERT_RUNTIME", "torch")
    blob = pickle.dumps(BertEmbedder(tiny_bert, device="cpu", cache=None).fit(texts))
    assert pickle.loads(blob).precision_ == "bfloat16"
    explicit = pickle.dumps(BertEmbedder(tiny_bert, device="cpu", precision="bfloat16", cache=None).fit(texts))
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)
    restored = pickle.loads(blob)
    assert restored.precision_ == "float32" == str(restored._load().dtype).removeprefix("torch.")
    assert pickle.loads(explicit).precision_ == "bfloat16"  # asked for: it stays


def test_transform_with_report_gives_what_set_output_asks_for(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, precision="float32").fit(texts)
    series = pd.Series(texts, index=[f"t{i}" for i in range(len(texts))])
    out, report = embedder.set_output(transform="pandas").transform_with_report(series)
    assert isinstance(out, pd.DataFrame) and list(out.index) == list(series.index)
    assert list(out.columns) == list(embedder.get_feature_names_out())
    assert report.n_rows == len(texts)
    assert_allclose(out.to_numpy(), embedder.set_output(transform="default").transform(series), rtol=0, atol=0)
    array, again = embedder.transform_with_report(series)
    assert isinstance(array, np.ndarray) and again is not report and again.n_cache_hits == again.n_unique


@pytest.mark.parametrize(("pairs", "long_text"), [(False, "truncate"), (False, "chunk"), (True, "truncate")])
def test_a_max_length_with_no_room_for_text_is_named_at_fit(tiny_bert, pairs, long_text):
    """Not "stride=0 must be below the 0 text tokens" (a stride the user never set) under "chunk"."""
    specials = 3 if pairs else 2
    with pytest.raises(ValueError, match=rf"max_length={specials} leaves no room for text.*at least max_length="
                                         rf"{specials + 1}"):
        BertEmbedder(tiny_bert, max_length=specials, long_text=long_text, pairs=pairs).fit([("a", "b")] if pairs else ["a"])
    BertEmbedder(tiny_bert, max_length=specials + 1, long_text=long_text, pairs=pairs).fit([("a", "b")] if pairs else ["a"])


# ---- composition -------------------------------------------------------------------


def _labelled(texts_per_class=6):
    river = ["the river bank", "water in the stream", "fish in the river", "we sat at the water",
             "the muddy stream bank", "the old river"]
    money = ["money in the bank", "she paid the loan", "a new account", "deposit the money",
             "the bank loan was paid", "money for the house"]
    X = river[:texts_per_class] + money[:texts_per_class]
    y = [0] * texts_per_class + [1] * texts_per_class
    return X, np.array(y)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_pipeline_in_grid_search(tiny_bert, n_jobs):
    X, y = _labelled()
    pipe = make_pipeline(BertEmbedder(tiny_bert), LogisticRegression(max_iter=200))
    grid = {"bertembedder__pooling": ["cls", "mean", "max"], "bertembedder__layers": [-1, 0, "all"]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs, error_score="raise").fit(X, y)
    assert len(search.cv_results_["params"]) == 9
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_.named_steps["bertembedder"]
    assert best.pooling in ("cls", "mean", "max")
    assert search.predict(X).shape == (12,)


def test_column_transformer_with_a_scalar_text_column(tiny_bert):
    X, y = _labelled()
    frame = pd.DataFrame({"text": X, "length": [len(t) for t in X]}, index=range(100, 112))
    embedder = BertEmbedder(tiny_bert, precision="float32")
    columns = ColumnTransformer([("bert", embedder, "text"), ("num", "passthrough", ["length"])])
    out = columns.fit_transform(frame)
    assert out.shape == (12, 33)
    fresh = BertEmbedder(tiny_bert, precision="float32", cache=None).fit_transform(X)  # encoded anew
    assert_allclose(out[:, :32], fresh, rtol=RTOL, atol=ATOL)
    columns.set_output(transform="pandas")
    named = columns.fit_transform(frame)
    assert list(named.index) == list(frame.index)
    assert named.columns[0] == "bert__mean_layer3_0" and named.columns[-1] == "num__length"
    pipe = make_pipeline(columns, LogisticRegression(max_iter=200)).fit(frame, y)
    assert pipe.score(frame, y) >= 0.5


@pytest.mark.parametrize("change", [dict(precision="float32"), dict(attention="packed"), dict(device="cpu")])
def test_what_runs_changed_after_fit_asks_for_a_new_fit(tiny_bert, texts, change):
    """runtime_ and precision_ are chosen at fit: a transform after set_params(precision=...) ran the new precision
    while they still named the old one."""
    embedder = BertEmbedder(tiny_bert, precision="bfloat16", attention="padded", device="auto").fit(texts)
    embedder.set_params(**change)
    for call in (embedder.transform, embedder.transform_tokens):
        with pytest.raises(ValueError, match=f"{next(iter(change))}=.*call fit again"):
            call(texts)
    embedder.fit(texts)
    assert embedder.transform(texts).shape[0] == len(texts)
    embedder.set_params(normalize=True, pooling="max", show_progress=True)  # read at transform: no new fit needed
    assert embedder.transform(texts).shape[0] == len(texts)
