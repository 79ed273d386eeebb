"""Row alignment and invariances as properties over generated inputs (hypothesis, bounded examples).

Texts mix duplicates, empty and whitespace-only strings, unicode from every plane (emoji,
combining marks, right-to-left, CJK, lone surrogates), control characters and texts longer
than the tiny model's 64-token window.
"""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from support import WORDS

from skbert import BertEmbedder

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
any_unicode = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=24)  # surrogates too
special = st.sampled_from(["", " ", "\n\t ", "🙂👍🏽", "e\u0301", "שלום", "漢字かな", "\x00\x07", "bank\u200b"])
long_texts = st.integers(40, 90).map(lambda n: " ".join(WORDS[i % len(WORDS)] for i in range(n)))
one_text = st.one_of(words, any_unicode, special, long_texts)


@st.composite
def text_lists(draw):
    """A list of texts, some repeated."""
    base = draw(st.lists(one_text, min_size=1, max_size=8))
    repeats = draw(st.lists(st.sampled_from(base), max_size=4))
    order = draw(st.permutations(base + repeats))
    return list(order)


@pytest.fixture(scope="module")
def reference(tiny_bert):
    return BertEmbedder(tiny_bert, pooling="mean_max", layers=(0, -1), precision="float32", cache=None,
                        long_text="chunk", batch_size=1).fit(["a"])


def _quietly(call, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lone-surrogate notices
        return call(*args)


@SETTINGS
@given(texts=text_lists(), batch_size=st.integers(1, 9), token_budget=st.integers(64, 700))
def test_rows_align_and_do_not_depend_on_batching_or_order(reference, texts, batch_size, token_budget):
    want = _quietly(reference.transform, texts)
    assert want.shape[0] == len(texts) and np.isfinite(want).all()
    for i, text in enumerate(texts):  # equal texts, equal rows
        first = texts.index(text)
        assert np.array_equal(want[i], want[first])
    other = BertEmbedder(**{**reference.get_params(), "batch_size": batch_size, "token_budget": token_budget})
    other.fit(["a"])
    assert_allclose(_quietly(other.transform, texts), want, rtol=1e-5, atol=1e-5)
    order = np.random.default_rng(len(texts)).permutation(len(texts))
    shuffled = _quietly(other.transform, [texts[i] for i in order])
    assert_allclose(shuffled, want[order], rtol=1e-5, atol=1e-5)


@SETTINGS
@given(texts=text_lists(), seed=st.integers(0, 1000))
@example(texts=["\ud800", "a", "a"], seed=0)  # a lone surrogate in a pandas Series (CI found it)
def test_pandas_output_keeps_a_shuffled_non_unique_index(tiny_bert, texts, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, max(2, len(texts) // 2), size=len(texts))  # repeated labels
    series = pd.Series(texts, index=index, dtype=object)  # pandas 3's str dtype refuses lone surrogates
    embedder = BertEmbedder(tiny_bert, cache=None, long_text="head_tail").set_output(transform="pandas")
    frame = _quietly(embedder.fit_transform, series)
    assert frame.index.tolist() == index.tolist() and frame.shape[0] == len(texts)
    assert_allclose(frame.to_numpy(), _quietly(embedder.set_output(transform="default").transform, texts),
                    rtol=0, atol=0)


@SETTINGS
@given(texts=text_lists())
def test_token_offsets_slice_back_to_each_tokens_text(reference, texts):
    normalize = reference._load().tokenizer.backend_tokenizer.normalizer.normalize_str
    records = _quietly(reference.transform_tokens, texts)
    assert len(records) == len(texts)
    for text, record in zip(texts, records):
        assert record.vectors.shape == (len(record.tokens), 64) and np.isfinite(record.vectors).all()
        assert record.tokens[0] == "[CLS]" and record.tokens[-1] == "[SEP]"
        clean = re.sub("[\ud800-\udfff]", "\ufffd", text)  # as tokenised
        for token, (start, end), is_special in zip(record.tokens, record.offsets, record.special_mask):
            assert 0 <= start <= end <= len(text)
            if not is_special and token != "[UNK]":
                assert normalize(clean[start:end]) == token.removeprefix("##"), (token, clean[start:end])


@st.composite
def pair_lists(draw):
    """A list of (A, B) pairs, some repeated, some sides swapped (a different pair)."""
    base = draw(st.lists(st.tuples(one_text, one_text), min_size=1, max_size=6))
    repeats = draw(st.lists(st.sampled_from(base), max_size=3))
    swapped = [(b, a) for a, b in draw(st.lists(st.sampled_from(base), max_size=2))]
    return list(draw(st.permutations(base + repeats + swapped)))


@SETTINGS
@given(pairs=pair_lists(), batch_size=st.integers(1, 7), attention=st.sampled_from(["padded", "packed"]))
def test_pair_rows_align_and_do_not_depend_on_batching_order_or_packing(tiny_bert, pairs, batch_size, attention):
    params = dict(pairs=True, pooling="mean_max", segments=("joint", "a", "b"), precision="float32", cache=None)
    want = _quietly(BertEmbedder(tiny_bert, batch_size=1, attention="padded", **params).fit_transform, pairs)
    assert want.shape == (len(pairs), 3 * 2 * 32) and np.isfinite(want).all()
    for i, pair in enumerate(pairs):  # equal pairs, equal rows
        assert np.array_equal(want[i], want[pairs.index(pair)])
    other = BertEmbedder(tiny_bert, batch_size=batch_size, attention=attention, **params).fit([("a", "b")])
    order = np.random.default_rng(len(pairs)).permutation(len(pairs))
    assert_allclose(_quietly(other.transform, [pairs[i] for i in order]), want[order], rtol=1e-4, atol=1e-5)
