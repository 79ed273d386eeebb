"""Token-level output and word-in-context embeddings."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference import Reference

from skbert import BertEmbedder, TokenEmbeddings
from skbert._tokens import find_word, pool_pieces, tokens_in_span

RTOL, ATOL = 1e-4, 2e-5


@pytest.fixture(scope="module")
def reference(tiny_bert):
    return Reference(tiny_bert)


@pytest.mark.parametrize("layers, aggregation", [(-1, "concat"), ((0, 2), "concat"), ("all", "mean"), ((1, 3), "sum")])
def test_token_vectors_are_the_hidden_states_at_those_positions(tiny_bert, reference, texts, layers, aggregation):
    embedder = BertEmbedder(tiny_bert, layers=layers, layer_aggregation=aggregation, batch_size=3,
                            precision="float32").fit(texts)
    records = embedder.transform_tokens(texts)
    assert isinstance(records, TokenEmbeddings) and len(records) == len(texts)
    for text, record in zip(texts, records):
        states, special, _ = reference.token_states(text)
        chosen = states[list(embedder.layer_indices_)]  # (n_sel, t, d)
        if aggregation == "concat":
            want = np.concatenate(list(chosen), axis=1)
        else:
            want = chosen.mean(0) if aggregation == "mean" else chosen.sum(0)
        assert record.vectors.dtype == np.float32
        assert_allclose(record.vectors, want, rtol=RTOL, atol=ATOL)
        assert record.special_mask.tolist() == special.tolist()
        assert record.tokens == reference.tokenizer.convert_ids_to_tokens(reference.tokenizer(text)["input_ids"])


def test_offsets_map_back_to_the_exact_substrings(tiny_bert):
    texts = ["The river-bank, 42 times!", "  money   in the bank  "]
    records = BertEmbedder(tiny_bert).fit(texts).transform_tokens(texts)
    for text, record in zip(texts, records):
        assert record.tokens[0] == "[CLS]" and record.tokens[-1] == "[SEP]"
        assert record.special_mask[[0, -1]].all() and not record.special_mask[1:-1].any()
        for token, (start, end) in zip(record.tokens[1:-1], record.offsets[1:-1]):
            assert text[start:end].lower() == token.removeprefix("##")


def test_to_frame_is_one_row_per_token_with_text_ids(tiny_bert, texts):
    series = pd.Series(texts[:3], index=["a", "b", "c"])
    embedder = BertEmbedder(tiny_bert, layers=(0, -1)).fit(texts)
    records = embedder.transform_tokens(series)
    frame = records.to_frame()
    assert len(frame) == sum(len(r) for r in records)
    assert list(frame.columns[:7]) == ["text_id", "position", "token", "start", "end", "special", "segment"]
    assert list(frame.columns[7:9]) == ["layer0_0", "layer0_1"] and frame.columns[-1] == "layer3_31"
    assert (frame["segment"] == 0).all()  # single texts: one segment
    assert frame["text_id"].tolist() == ["a"] * len(records[0]) + ["b"] * len(records[1]) + ["c"] * len(records[2])
    assert_allclose(frame.iloc[: len(records[0]), 7:].to_numpy(dtype=np.float32), records[0].vectors)
    from_list = embedder.transform_tokens(texts[:2]).to_frame()  # a list has no labels: positions are the ids
    assert from_list["text_id"].tolist() == [0] * len(records[0]) + [1] * len(records[1])


def test_embed_words_is_the_mean_of_the_words_pieces(tiny_bert, reference):
    texts = ["The Riverbank was muddy.", "we paid at the BANK.", "money, money and money"]
    words = ["riverbank", "bank", (7, 12)]  # a span: the second "money"
    embedder = BertEmbedder(tiny_bert, layers=-2, precision="float32").fit(texts)
    n_pieces = {}
    for how in ("mean", "first_piece", "last_piece"):
        got = embedder.embed_words(texts, words, pooling=how)
        for row, (text, word) in enumerate(zip(texts, words)):
            states, _, _ = reference.token_states(text)
            offsets = reference.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
            start, end = (text.lower().index(word.lower()), None) if isinstance(word, str) else word
            end = start + len(word) if end is None else end
            pieces = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
            n_pieces[row] = len(pieces)
            vectors = states[2][pieces]
            want = {"mean": vectors.mean(0), "first_piece": vectors[0], "last_piece": vectors[-1]}[how]
            assert_allclose(got[row], want, rtol=RTOL, atol=ATOL)
    assert n_pieces == {0: 5, 1: 1, 2: 1}  # "riverbank" is "river" and four one-letter pieces here


def test_embed_words_errors_name_the_row(tiny_bert):
    embedder = BertEmbedder(tiny_bert, max_length=8).fit(["a"])
    with pytest.raises(ValueError, match="row 1: 'bank' does not occur as a whole word"):
        embedder.embed_words(["the bank", "the banking house"], ["bank", "bank"])
    with pytest.raises(ValueError, match="row 0: span \\(3, 3\\)"):
        embedder.embed_words(["the bank"], [(3, 3)])
    with pytest.raises(ValueError, match=r"row 0: span \(3, 4\) \(' '\) covers no token"):
        embedder.embed_words(["the bank"], [(3, 4)])
    with pytest.raises(ValueError, match="covers no token that the model saw"), pytest.warns(UserWarning):
        embedder.embed_words(["the river and the water and the bank"], ["bank"])
    with pytest.raises(ValueError, match="one word or span per text: got 2 texts and 1 words"):
        embedder.embed_words(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="pooling='max'"):
        embedder.embed_words(["a"], ["a"], pooling="max")
    with pytest.raises(ValueError, match="pooling='last'.*renamed: use 'last_piece'"):
        embedder.embed_words(["a"], ["a"], pooling="last")


def test_word_helpers():
    assert find_word("A bank, the Bank.", "bank", 0) == (2, 6)
    assert find_word("embankment; bank", "bank", 0) == (12, 16)
    assert find_word("river bank", "RIVER BANK", 0) == (0, 10)
    with pytest.raises(ValueError, match="empty"):
        find_word("x", " ", 3)
    offsets = np.array([[0, 0], [0, 5], [5, 9], [10, 14], [0, 0]])
    special = np.array([1, 0, 0, 0, 1], dtype=bool)
    assert tokens_in_span(offsets, special, (0, 9)).tolist() == [1, 2]
    assert tokens_in_span(offsets, special, (9, 10)).tolist() == []
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert pool_pieces(vectors, "mean").tolist() == [2.0, 3.0]
    assert pool_pieces(vectors, "last_piece").tolist() == [4.0, 5.0]
