"""Sentence pairs: [CLS] A [SEP] B [SEP] with token types, pooled over the pair, per side, or compared;
checked against the tokenizer and model called directly, one pair at a time."""

import pickle

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference import PairReference
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from support import MINILM_ID, minilm

from skbert import BertEmbedder
from skbert._encoding import TOTALS
from skbert._entries import text_key

PAIRS = [
    ("The river bank was muddy.", "She paid the loan at the bank."),
    ("a", "b"),  # single-token sides
    ("", "the water"),  # an empty side A
    ("we sat on the bank", ""),  # an empty side B
    ("", ""),
    ("money " * 70, "the river"),  # longer than the window on side A
    ("a fish", "water " * 75),  # ... on side B
    ("bank " * 45, "loan " * 40),  # ... on both sides
]


@pytest.fixture(scope="module")
def reference(tiny_bert):
    return PairReference(tiny_bert)


@pytest.mark.parametrize("include", [False, True])
def test_every_pooling_and_segment_matches_a_plain_loop(tiny_bert, reference, include):
    modes, layers = ("cls", "mean", "max"), (1, 3)
    embedder = BertEmbedder(tiny_bert, pairs=True, pooling=modes, layers=layers, include_special_tokens=include,
                            precision="float32", batch_size=3)
    with pytest.warns(UserWarning, match="3 of 8 pairs were longer than max_length=64"):
        got = embedder.fit_transform(PAIRS)
    want = np.stack([reference.embed_pair(a, b, modes, layers, include_special=include, max_length=64)
                     for a, b in PAIRS])
    assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    sided = clone(embedder).set_params(pooling="mean_max", segments=("a", "b", "abs_diff", "product", "joint"))
    with pytest.warns(UserWarning, match="pairs were longer"):
        got = sided.fit_transform(PAIRS)
    want = np.stack([
        reference.embed_pair(a, b, ("mean", "max"), layers, ("a", "b", "abs_diff", "product", "joint"), include, 64)
        for a, b in PAIRS
    ])
    assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_truncation_is_the_installed_tokenizers_longest_first(reference):
    """Every split of lengths around the window, odd and even budgets, against the tokenizer's own truncation
    (whatever its version's rule: tokenizers 0.23.2 and 0.23.3 give the odd token to different sides)."""
    from skbert._batching import TextTokenizer, make_windows

    tokenizer = reference.tokenizer
    ours = TextTokenizer(tokenizer)
    for max_length in (3, 4, 5, 7, 10, 11):
        pairs = [("a " * len_a, "b " * len_b) for len_a in range(0, 12) for len_b in range(0, 12)]
        tokenized = ours(pairs, max_length)
        windows = make_windows(tokenized, max_length, "truncate", 0)
        for (a, b), text, window in zip(pairs, tokenized, windows):
            want = tokenizer([a], [b], truncation="longest_first", max_length=max_length)["input_ids"][0]
            assert text.ids[window.token_indices].tolist() == want, (max_length, a, b)


def test_the_same_word_differs_with_the_other_side(tiny_bert):
    """Segments attend to each other: A's tokens change with B (that is why pairs are encoded together)."""
    embedder = BertEmbedder(tiny_bert, pairs=True, segments="a", precision="float32")
    X = embedder.fit_transform([("the bank", "the river"), ("the bank", "the loan"), ("the bank", "the river")])
    assert not np.allclose(X[0], X[1], atol=1e-4)
    assert_allclose(X[0], X[2], rtol=0, atol=0)
    # and token type 1 matters: (A, B) is not the single text "A B"
    single = BertEmbedder(tiny_bert, precision="float32").fit_transform(["the bank the river"])
    joint = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit_transform([("the bank", "the river")])
    assert not np.allclose(single, joint, atol=1e-4)


def test_rows_keep_their_order_index_and_duplicates(tiny_bert):
    frame = pd.DataFrame({"q": [a for a, _ in PAIRS] * 2, "a": [b for _, b in PAIRS] * 2},
                         index=[f"r{i}" for i in range(2 * len(PAIRS))])
    shuffled = frame.sample(frac=1.0, random_state=0)
    embedder = BertEmbedder(tiny_bert, pairs=True, pooling="mean_max", segments=("joint", "abs_diff"),
                            precision="float32", batch_size=2).set_output(transform="pandas")
    with pytest.warns(UserWarning, match="pairs were longer"):
        out = embedder.fit_transform(shuffled)
        report = embedder.transform_with_report(shuffled)[1]
    assert list(out.index) == list(shuffled.index)
    assert report.n_rows == 16 and report.n_unique == 8
    with pytest.warns(UserWarning):
        one_by_one = np.stack([embedder.transform([pair]).to_numpy()[0] for pair in shuffled.itertuples(index=False)])
    assert_allclose(out.to_numpy(), one_by_one, rtol=1e-5, atol=1e-6)
    assert_allclose(out.loc["r1"].to_numpy(), out.loc["r9"].to_numpy(), rtol=0, atol=0)


def test_inputs_of_every_pair_shape_agree(tiny_bert):
    pairs = PAIRS[:5]
    embedder = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit(pairs)
    want = embedder.transform(pairs)
    frame = pd.DataFrame(pairs, columns=["question", "answer"])
    for X in (frame, np.array(pairs, dtype=object), [list(p) for p in pairs], iter(pairs), pd.Series(pairs)):
        assert_allclose(embedder.transform(X), want, rtol=0, atol=0)


def test_feature_names_say_which_side(tiny_bert):
    embedder = BertEmbedder(tiny_bert, pairs=True, pooling="mean_max", layers=(-1, -2), layer_aggregation="mean",
                            segments=("a", "product")).fit(PAIRS[:2])
    names = embedder.get_feature_names_out()
    assert len(names) == embedder.transform(PAIRS[:2]).shape[1] == 2 * 2 * 32
    assert names[0] == "a_mean_layers3+2_mean_0" and names[32] == "a_max_layers3+2_mean_0"
    assert names[64] == "product_mean_layers3+2_mean_0" and names[-1] == "product_max_layers3+2_mean_31"


def test_cache_keys_cover_both_sides_and_the_boundary(tiny_bert):
    fingerprint = b"f" * 32
    keys = {text_key(fingerprint, ("a b", "c")), text_key(fingerprint, ("a", "b c")), text_key(fingerprint, "a b c"),
            text_key(fingerprint, ("a b c", "")), text_key(fingerprint, ("", "a b c"))}
    assert len(keys) == 5
    single = BertEmbedder(tiny_bert, precision="float32")  # same cache parameters: one shared store
    pairs = BertEmbedder(tiny_bert, pairs=True, precision="float32")
    single.fit_transform(["a b c"])
    first, report = pairs.fit(PAIRS[:1]).transform_with_report([("a b", "c"), ("a", "b c")])
    assert report.n_encoded == 2 and report.n_cache_hits == 0
    again, report = pairs.transform_with_report([("a b", "c"), ("a", "b c")])
    assert report.n_encoded == 0 and report.n_cache_hits == 2
    assert_allclose(again, first, rtol=0, atol=0)
    assert not np.allclose(first[0], first[1], atol=1e-4)


def test_grid_search_on_pairs_encodes_each_pair_once(tiny_bert):
    rng = np.random.default_rng(0)
    words = "the a bank river money water fish loan paid deposit".split()
    pairs = [(" ".join(rng.choice(words, 4)), " ".join(rng.choice(words, 5))) for _ in range(30)]
    y = np.arange(30) % 2
    pipe = make_pipeline(BertEmbedder(tiny_bert, pairs=True, precision="float32"), LogisticRegression(max_iter=200))
    grid = {"bertembedder__pooling": ["mean", "max", "mean_max"], "bertembedder__layers": [-1, -2, (1, 2, 3)],
            "bertembedder__segments": ["joint", ("a", "b", "abs_diff", "product")]}
    before = TOTALS.n_encoded
    GridSearchCV(pipe, grid, cv=3).fit(pd.DataFrame(pairs, columns=["q", "a"]), y)
    assert TOTALS.n_encoded - before == len(set(pairs))


def test_column_transformer_passes_two_columns_as_a_pair(tiny_bert):
    frame = pd.DataFrame({"q": [a for a, _ in PAIRS[:4]], "a": [b for _, b in PAIRS[:4]], "n": range(4)})
    embedder = BertEmbedder(tiny_bert, pairs=True, precision="float32")
    columns = ColumnTransformer([("pair", embedder, ["q", "a"]), ("n", "passthrough", ["n"])])
    out = columns.fit_transform(frame)
    assert_allclose(out[:, :-1], clone(embedder).fit_transform(PAIRS[:4]), rtol=1e-6, atol=1e-6)
    assert columns.get_feature_names_out()[0] == "pair__mean_layer3_0"


def test_pickle_and_clone_keep_the_pair_settings(tiny_bert):
    embedder = BertEmbedder(tiny_bert, pairs=True, pooling="max", segments=("a", "b"), precision="float32")
    want = embedder.fit_transform(PAIRS[:4])
    restored = pickle.loads(pickle.dumps(embedder))
    assert_allclose(restored.transform(PAIRS[:4]), want, rtol=0, atol=0)
    copy = clone(embedder)
    assert copy.get_params()["pairs"] is True and copy.get_params()["segments"] == ("a", "b")
    assert_allclose(copy.fit_transform(PAIRS[:4]), want, rtol=0, atol=0)


def test_transform_tokens_reports_each_tokens_segment(tiny_bert):
    embedder = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit(PAIRS[:1])
    record = embedder.transform_tokens([("the bank", "a loan")])[0]
    assert record.tokens == ["[CLS]", "the", "bank", "[SEP]", "a", "loan", "[SEP]"]
    assert record.segments.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert [("the bank", "a loan")[s][a:b] for s, (a, b) in zip(record.segments[1:3], record.offsets[1:3])] == [
        "the", "bank"]
    assert "a loan"[slice(*record.offsets[5])] == "loan"
    frame = embedder.transform_tokens(pd.DataFrame({"q": ["x"], "a": ["y"]}, index=["k"])).to_frame()
    assert frame["segment"].tolist() == [0, 0, 0, 1, 1] and set(frame["text_id"]) == {"k"}
    with pytest.raises(ValueError, match="embed_words takes single texts"):
        embedder.embed_words(["the bank"], ["bank"])


def test_packed_and_padded_pairs_agree(tiny_bert):
    """The packed path (variable-length attention on CUDA) on the CPU, against the padded one."""
    padded = BertEmbedder(tiny_bert, pairs=True, pooling=("cls", "mean", "max"), segments=("joint", "a", "b")[:1],
                          attention="padded", precision="float32", cache=None)
    with pytest.warns(UserWarning):
        want = padded.fit_transform(PAIRS)
        got = clone(padded).set_params(attention="packed").fit_transform(PAIRS)
    assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    per_side = dict(pooling="mean_max", segments=("a", "b"))
    with pytest.warns(UserWarning):
        want = clone(padded).set_params(**per_side).fit_transform(PAIRS)
        got = clone(padded).set_params(attention="packed", **per_side).fit_transform(PAIRS)
    assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_pair_settings_that_do_not_fit_are_clear_errors(tiny_bert):
    with pytest.raises(ValueError, match="'a' needs sentence pairs"):
        BertEmbedder(tiny_bert, segments="a").fit(["x"])
    with pytest.raises(ValueError, match="pooling 'cls' is of the whole pair"):
        BertEmbedder(tiny_bert, pairs=True, segments=("joint", "b"), pooling="cls").fit(PAIRS[:1])
    with pytest.raises(ValueError, match="long_text='chunk' works on single texts"):
        BertEmbedder(tiny_bert, pairs=True, long_text="chunk").fit(PAIRS[:1])
    with pytest.raises(ValueError, match="same choice more than once"):
        BertEmbedder(tiny_bert, pairs=True, segments=("a", "a")).fit(PAIRS[:1])
    with pytest.raises(ValueError, match="expected one of"):
        BertEmbedder(tiny_bert, pairs=True, segments="both").fit(PAIRS[:1])
    embedder = BertEmbedder(tiny_bert).fit(["x"])
    with pytest.raises(ValueError, match="set pairs=True"):
        embedder.transform(pd.DataFrame({"q": ["x"], "a": ["y"]}))


@minilm
def test_pairs_match_transformers_on_the_real_minilm():
    """The issue's parity bar: max abs difference <= 1e-5 in float32 for [CLS], mean and max."""
    pairs = [
        ("How do I bake bread at home?", "Mix flour, water, salt and yeast, let it rise, then bake it."),
        ("Is the bank open?", "The river bank was muddy after the rain."),
        ("a", "b"), ("", "only the second side"), ("only the first side", ""),
        ("The river bank was muddy. " * 100, "short"), ("short", "A loan from the bank. " * 110),
        ("word " * 400, "other " * 300),
    ]
    embedder = BertEmbedder(MINILM_ID, pairs=True, pooling=("cls", "mean", "max"), precision="float32",
                            device="cpu", cache=None)
    with pytest.warns(UserWarning, match="3 of 8 pairs were longer than max_length=512"):
        got = embedder.fit_transform(pairs)
    reference = PairReference(embedder.model_location_)
    want = np.stack([reference.embed_pair(a, b, ("cls", "mean", "max"), (6,), max_length=512) for a, b in pairs])
    assert np.abs(got - want).max() <= 1e-5


def test_a_frame_of_pairs_must_keep_the_columns_fit_saw_in_their_order(tiny_bert):
    """Column A is read first, B second: reordered or other columns at transform would encode other pairs
    silently; they are an error, as scikit-learn's estimators make them."""
    frame = pd.DataFrame(PAIRS[:4], columns=["question", "answer"])
    embedder = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit(frame)
    assert embedder.feature_names_in_.tolist() == ["question", "answer"] and embedder.n_features_in_ == 2
    want = embedder.transform(frame)
    for other in (frame[["answer", "question"]], frame.set_axis(["q", "a"], axis=1)):
        with pytest.raises(ValueError, match=r"columns \[.*\] are not those fit saw, \['question', 'answer'\]"):
            embedder.transform(other)
    with pytest.raises(ValueError, match="not those fit saw"):
        embedder.transform_tokens(frame[["answer", "question"]])
    assert_allclose(embedder.transform(PAIRS[:4]), want, rtol=0, atol=0)  # pairs without names: as given
    refit = embedder.fit(frame[["answer", "question"]])  # a refit records the new columns
    assert refit.feature_names_in_.tolist() == ["answer", "question"]
    assert not hasattr(clone(embedder), "feature_names_in_")
    assert BertEmbedder(tiny_bert, pairs=True).fit_transform(frame) is not None
    fitted = BertEmbedder(tiny_bert, pairs=True, precision="float32")
    fitted.fit_transform(frame)
    assert fitted.feature_names_in_.tolist() == ["question", "answer"]
    assert not hasattr(fitted.fit(PAIRS[:4]), "feature_names_in_") and fitted.n_features_in_ == 2
    single = BertEmbedder(tiny_bert).fit(frame[["question"]])  # single texts: no columns recorded
    assert not hasattr(single, "feature_names_in_") and not hasattr(single, "n_features_in_")


def test_pairs_from_polars_frames_and_through_a_column_transformer(tiny_bert):
    polars = pytest.importorskip("polars")
    frame = polars.DataFrame({"q": [a for a, _ in PAIRS[:4]], "a": [b for _, b in PAIRS[:4]], "n": list(range(4))})
    want = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit_transform(PAIRS[:4])
    embedder = BertEmbedder(tiny_bert, pairs=True, precision="float32").fit(frame.select("q", "a"))
    assert embedder.feature_names_in_.tolist() == ["q", "a"]
    assert_allclose(embedder.transform(frame.select("q", "a")), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not those fit saw"):
        embedder.transform(frame.select("a", "q"))
    columns = ColumnTransformer([("pair", clone(embedder), ["q", "a"]), ("n", "passthrough", ["n"])])
    assert_allclose(columns.fit_transform(frame)[:, :-1], want, rtol=0, atol=0)
