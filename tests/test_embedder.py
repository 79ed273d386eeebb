"""BertEmbedder's numbers, checked against an independent computation."""

import itertools

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference import Reference

from skbert import BertEmbedder

ATOL = 2e-5
RTOL = 1e-4


@pytest.fixture(scope="module")
def reference(tiny_bert):
    return Reference(tiny_bert)


def expected(reference, texts, modes, layer_indices, aggregation="concat", include_special=False, max_length=None):
    return np.stack(
        [reference.embed(t, modes, layer_indices, aggregation, include_special, max_length) for t in texts]
    )


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "last", "mean_max"])
@pytest.mark.parametrize("include_special", [False, True])
@pytest.mark.parametrize("layers", [-1, 0, (1, -1), "all"])
@pytest.mark.parametrize("cache", [None, "memory"])
def test_pooling_and_layers_match_reference(tiny_bert, reference, texts, pooling, include_special, layers, cache):
    """Without a cache only the statistics and layers asked for are computed; with one (in
    float32) every statistic is stored and the with-special-token ones derived."""
    embedder = BertEmbedder(
        tiny_bert, precision="float32", pooling=pooling, layers=layers, include_special_tokens=include_special,
        batch_size=3, cache=cache,
    )
    got = embedder.fit_transform(texts)
    modes = ("mean", "max") if pooling == "mean_max" else (pooling,)
    want = expected(reference, texts, modes, embedder.layer_indices_, include_special=include_special)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("aggregation", ["concat", "mean", "sum"])
@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_layer_aggregation_matches_reference(tiny_bert, reference, texts, aggregation, pooling):
    embedder = BertEmbedder(tiny_bert, precision="float32", pooling=pooling, layers=(0, 2, -1), layer_aggregation=aggregation)
    got = embedder.fit_transform(texts)
    want = expected(reference, texts, (pooling,), (0, 2, 3), aggregation)
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_pooler_and_tuple_of_modes(tiny_bert, reference, texts):
    embedder = BertEmbedder(tiny_bert, precision="float32", pooling=("pooler", "cls", "max"), layers="last")
    got = embedder.fit_transform(texts)
    want = expected(reference, texts, ("pooler", "cls", "max"), (3,))
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_mean_with_special_tokens_is_the_attention_mask_average(tiny_bert, texts):
    """The seed recipe: sum(last_hidden_state * mask) / sum(mask) over a padded batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    recipe = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    got = BertEmbedder(tiny_bert, precision="float32", pooling="mean", include_special_tokens=True).fit_transform(texts)
    assert_allclose(got, recipe, rtol=RTOL, atol=ATOL)


def test_independent_of_batch_size_and_order(tiny_bert, texts, rng):
    """Every call encodes afresh (cache=None), so batching really varies."""
    params = dict(precision="float32", pooling="mean_max", layers="all", cache=None)
    base = BertEmbedder(tiny_bert, batch_size=1, **params).fit_transform(texts)
    for batch_size in (2, 5, 64):
        got = BertEmbedder(tiny_bert, batch_size=batch_size, **params).fit_transform(texts)
        assert_allclose(got, base, rtol=RTOL, atol=ATOL)
    order = rng.permutation(len(texts))
    shuffled = BertEmbedder(tiny_bert, batch_size=3, **params).fit_transform([texts[i] for i in order])
    assert_allclose(shuffled, base[order], rtol=RTOL, atol=ATOL)


def test_rows_in_input_order_with_duplicates(tiny_bert, texts):
    doubled = texts + texts[::-1]
    got = BertEmbedder(tiny_bert, precision="float32", batch_size=3).fit_transform(doubled)
    assert_allclose(got[: len(texts)], got[len(texts) :][::-1], rtol=RTOL, atol=ATOL)


def test_empty_and_blank_texts_embed_as_cls_sep(tiny_bert, reference):
    got = BertEmbedder(tiny_bert, precision="float32", pooling="mean").fit_transform(["", "   "])
    both_special = expected(reference, [""], ("mean",), (3,), include_special=True)[0]
    assert np.all(np.isfinite(got))
    assert_allclose(got[0], both_special, rtol=RTOL, atol=ATOL)
    assert_allclose(got[1], got[0], rtol=RTOL, atol=ATOL)


def test_normalize_gives_unit_rows_in_the_same_direction(tiny_bert, texts):
    raw = BertEmbedder(tiny_bert, precision="float32", pooling="mean_max").fit_transform(texts)
    unit = BertEmbedder(tiny_bert, precision="float32", pooling="mean_max", normalize=True).fit_transform(texts)
    assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_truncation_to_max_length(tiny_bert, reference):
    text = " ".join(["river bank money"] * 10)
    with pytest.warns(UserWarning, match="1 of 2 texts were longer than max_length=8 tokens and were truncated"):
        got = BertEmbedder(tiny_bert, precision="float32", pooling="mean_max", max_length=8).fit_transform([text, "a"])
    want = expected(reference, [text, "a"], ("mean", "max"), (3,), max_length=8)
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert BertEmbedder(tiny_bert, precision="float32").fit(["a"]).max_length_ == 64  # the model's own limit


@pytest.mark.parametrize(
    "params, names",
    [
        ({"pooling": "mean", "layers": -1}, ["mean_layer3"]),
        ({"pooling": "mean_max", "layers": (0, -1)}, ["mean_layer0", "mean_layer3", "max_layer0", "max_layer3"]),
        ({"pooling": "cls", "layers": "last_four", "layer_aggregation": "mean"}, []),  # 3 layers: error below
        ({"pooling": ("cls", "max"), "layers": "all", "layer_aggregation": "sum"},
         ["cls_layers0+1+2+3_sum", "max_layers0+1+2+3_sum"]),
    ],
)
def test_feature_names_say_pooling_and_layers(tiny_bert, texts, params, names):
    embedder = BertEmbedder(tiny_bert, precision="float32", **params)
    if not names:
        with pytest.raises(ValueError, match="at least 4 encoder layers; this model has 3"):
            embedder.fit(texts)
        return
    X = embedder.fit_transform(texts)
    features = embedder.get_feature_names_out()
    assert len(features) == X.shape[1] == 32 * len(names)
    blocks = [features[i * 32][: -len("_0")] for i in range(len(names))]
    assert blocks == names
    assert features[1].endswith("_1") and len(set(features)) == len(features)


def test_pandas_output_keeps_the_index(tiny_bert, texts):
    series = pd.Series(texts, index=[f"doc{i}" for i in range(len(texts))][::-1], name="text")
    embedder = BertEmbedder(tiny_bert, precision="float32").set_output(transform="pandas")
    frame = embedder.fit_transform(series)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list(series.index)
    assert list(frame.columns) == list(embedder.get_feature_names_out())
    plain = BertEmbedder(tiny_bert, precision="float32").fit_transform(texts)
    assert_allclose(frame.to_numpy(), plain, rtol=RTOL, atol=ATOL)
    one_column = embedder.transform(series.to_frame())
    assert list(one_column.index) == list(series.index)


@pytest.mark.parametrize(
    "container",
    [list, tuple, np.array, lambda t: np.array(t, dtype=object), lambda t: np.array(t).reshape(-1, 1),
     pd.Series, lambda t: pd.DataFrame({"text": t}), lambda t: (x for x in t)],
)
def test_accepted_containers_give_the_same_rows(tiny_bert, texts, container):
    embedder = BertEmbedder(tiny_bert, precision="float32").fit(texts)
    assert_allclose(embedder.transform(container(texts)), embedder.transform(texts), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"layers": 4}, r"layer 4 is out of range for a model with 3 encoder layers"),
        ({"layers": -5}, r"with 3 encoder layers: use -4\.\.3"),
        ({"layers": (1, 1)}, "more than once"),
        ({"layers": ()}, "non-empty"),
        ({"layers": (1, "x")}, "'x' is not an int"),
        ({"layers": True}, "must be an int, not a bool"),
        ({"pooling": ("mean", "median")}, "'median' is not one of"),
        ({"pooling": ("mean", "mean_max")}, "same mode more than once"),
        ({"pooling": "pooler", "layers": -2}, "last layer only"),
        ({"pooling": "pooler", "layers": (2, 3)}, "last layer only"),
        ({"max_length": 65}, "exceeds the 64 tokens"),
        ({"device": "tpu:banana"}, "is not a device"),
    ],
)
def test_bad_parameters_raise_clear_errors_at_fit(tiny_bert, texts, params, match):
    with pytest.raises(ValueError, match=match):
        BertEmbedder(tiny_bert, precision="float32", **params).fit(texts)


def test_pooler_needs_pooler_weights(tiny_bert_no_pooler, texts):
    with pytest.raises(ValueError, match="needs pooler weights.*has none"):
        BertEmbedder(tiny_bert_no_pooler, pooling="pooler").fit(texts)
    # every other mode still works on such a model
    assert BertEmbedder(tiny_bert_no_pooler, pooling="cls").fit_transform(texts).shape == (len(texts), 32)


def test_every_grid_point_is_consistent(tiny_bert, texts):
    """Pooling x layers grid: each output block equals the single-mode, single-layer result."""
    singles = {
        (mode, layer): BertEmbedder(tiny_bert, precision="float32", pooling=mode, layers=layer, cache=None)
        .fit_transform(texts)
        for mode, layer in itertools.product(["cls", "mean", "max", "last"], [0, 1, 2, 3])
    }
    combined = BertEmbedder(tiny_bert, precision="float32", pooling=("cls", "mean", "max", "last"), layers="all").fit_transform(texts)
    blocks = np.split(combined, 16, axis=1)
    for (i, mode), layer in itertools.product(enumerate(["cls", "mean", "max", "last"]), range(4)):
        assert_allclose(blocks[i * 4 + layer], singles[(mode, layer)], rtol=RTOL, atol=ATOL)


DIGEST_TEXTS = ["a river", "", "the river bank was muddy and the water ran over the fish in the stream " * 2,
                "money money money at the bank"]
DIGEST_BASE = dict(precision="float32", cache=None, pooling="mean", layers=(1, -1), max_length=16)


def _fitted(model, **change):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stride without chunk, emulated bfloat16: said at fit, beside the point
        return BertEmbedder(model, **{**DIGEST_BASE, **change}).fit([("a", "b")] if change.get("pairs") else ["a"])


def _quiet_transform(embedder):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is meant here
        return embedder.transform(DIGEST_TEXTS)


@pytest.mark.filterwarnings("ignore:.*were truncated", "ignore:precision='bfloat16' on this CPU is emulated")
def test_the_numbers_digest_is_equal_exactly_when_the_numbers_are(tiny_bert, tiny_bert_no_pooler):
    """Checked against the numbers themselves: settings that keep the digest give the same vectors,
    every setting that changes it gives other vectors."""
    base = _fitted(tiny_bert)
    digest, want = base.numbers_digest(), _quiet_transform(base)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert _fitted(tiny_bert).numbers_digest() == digest  # equal settings, another estimator
    for change in (dict(batch_size=1), dict(token_budget=40), dict(attention="padded"), dict(show_progress=True),
                   dict(cache="memory"), dict(stride=3)):  # stride: no effect without long_text="chunk"
        other = _fitted(tiny_bert, **change)
        assert other.numbers_digest() == digest, change
        assert_allclose(_quiet_transform(other), want, rtol=1e-5, atol=1e-6)
    for model, change in ((tiny_bert, dict(pooling="max")), (tiny_bert, dict(layers=(0, -1))),
                          (tiny_bert, dict(layer_aggregation="mean")), (tiny_bert, dict(include_special_tokens=True)),
                          (tiny_bert, dict(normalize=True)), (tiny_bert, dict(max_length=12)),
                          (tiny_bert, dict(long_text="head_tail")), (tiny_bert, dict(long_text="chunk")),
                          (tiny_bert, dict(long_text="chunk", stride=1)), (tiny_bert, dict(precision="bfloat16")),
                          (tiny_bert_no_pooler, {})):  # other weights
        other = _fitted(model, **change)
        assert other.numbers_digest() != digest, change
        got = _quiet_transform(other)
        assert got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6), change
    chunked = _fitted(tiny_bert, long_text="chunk")
    assert chunked.numbers_digest() != _fitted(tiny_bert, long_text="chunk", stride=1).numbers_digest()
    joint = _fitted(tiny_bert, pairs=True)
    assert joint.numbers_digest() not in (digest, _fitted(tiny_bert, pairs=True, segments="a").numbers_digest())


def test_the_numbers_digest_follows_set_params_and_needs_a_fitted_estimator(tiny_bert):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        BertEmbedder(tiny_bert).numbers_digest()
    embedder = _fitted(tiny_bert)
    before = embedder.numbers_digest()
    assert embedder.set_params(normalize=True).numbers_digest() != before  # read at transform, as the digest is
    assert embedder.set_params(normalize=False, batch_size=2).numbers_digest() == before
