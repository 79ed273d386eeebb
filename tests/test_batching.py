import numpy as np
import pytest
from transformers import AutoTokenizer

from skbert._batching import (
    BatchLimits,
    TextTokenizer,
    TokenizedText,
    collate,
    length_sorted_batches,
    make_windows,
    plan_windows,
    segment_bounds,
    window_segments,
)


def test_batches_cover_every_position_once_sorted_by_length():
    lengths = np.array([5, 2, 9, 2, 7, 1, 9])
    batches = list(length_sorted_batches(lengths, BatchLimits(max_rows=3)))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(7))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert list(lengths[flat]) == sorted(lengths, reverse=True)


def test_token_budget_limits_padded_tokens_per_batch():
    lengths = np.array([100, 10, 10, 10, 10, 10, 50, 50, 300])
    batches = list(length_sorted_batches(lengths, BatchLimits(token_budget=100, max_rows=64)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(9))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 100
    assert [len(b) for b in batches] == [1, 1, 2, 5]  # 300 alone, 100 alone, 2x50, 5x10


def test_a_lowered_budget_applies_to_every_later_batch():
    lengths = np.full(40, 10)
    limits = BatchLimits(token_budget=200)
    batches = length_sorted_batches(lengths, limits)
    assert len(next(batches)) == 20
    limits.lower(np.full(20, 10))  # that batch ran out of memory
    assert (limits.token_budget, limits.max_rows) == (100, 10)
    rest = list(batches)
    assert [len(b) for b in rest] == [10, 10]  # the other 20 windows, at the lowered budget


def _special(n):
    mask = np.zeros(n, dtype=bool)
    mask[[0, n - 1]] = True
    return mask


def test_a_text_that_fits_is_one_whole_window_under_every_strategy():
    for strategy in ("truncate", "head_tail", "chunk"):
        [(indices, counted)] = plan_windows(_special(10), 10, strategy, 2)
        assert indices.tolist() == list(range(10)) and counted.all()


def test_truncate_and_head_tail_keep_the_specials():
    n = 30  # [CLS] + 28 tokens + [SEP]
    [(keep, counted)] = plan_windows(_special(n), 10, "truncate", 0)
    assert keep.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 29] and counted.all()
    [(keep, _)] = plan_windows(_special(n), 10, "head_tail", 0)
    assert keep.tolist() == [0, 1, 2, 23, 24, 25, 26, 27, 28, 29]  # 8 text tokens: 2 head, 6 tail


@pytest.mark.parametrize("n, max_length, stride", [(30, 10, 2), (30, 10, 0), (11, 10, 7), (200, 16, 5), (9, 4, 1)])
def test_chunk_windows_count_every_token_exactly_once(n, max_length, stride):
    windows = plan_windows(_special(n), max_length, "chunk", stride)
    counts = np.zeros(n, dtype=int)
    for indices, counted in windows:
        assert len(indices) <= max_length
        assert indices[0] == 0 and indices[-1] == n - 1  # every window is [CLS] ... [SEP]
        counts[indices[counted]] += 1
    assert counts.tolist() == [1] * n
    # consecutive windows overlap by `stride` text tokens
    for (a, _), (b, _) in zip(windows, windows[1:]):
        assert len(set(a[1:-1]) & set(b[1:-1])) == stride or b[-2] == n - 2


def test_chunk_gives_a_shared_token_to_the_window_where_it_has_more_context():
    # 20 text tokens, windows of 8 text tokens, overlap 4: windows [0,8), [4,12), ...
    windows = plan_windows(_special(22), 10, "chunk", 4)
    first, second = windows[0], windows[1]
    owned_first = set(first[0][first[1]].tolist()) - {0}
    owned_second = set(second[0][second[1]].tolist())
    # shared text tokens 4..7 (token ids 5..8): 5, 6 stay with the first window, 7, 8 go to the second
    assert {5, 6} <= owned_first and {7, 8} <= owned_second and not (owned_first & owned_second)


def test_bad_stride_and_window():
    with pytest.raises(ValueError, match="stride=8 must be"):
        plan_windows(_special(30), 10, "chunk", 8)
    with pytest.raises(ValueError, match="no room for text"):
        plan_windows(_special(30), 2, "truncate", 0)


def test_tokenizer_and_collate_pad_on_the_right(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["the river bank", "", "money " * 40]
    tokenized = TextTokenizer(tokenizer)(texts)
    assert [len(t.ids) for t in tokenized] == [5, 2, 42]
    assert tokenized[1].ids.tolist() == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert tokenized[0].offsets.tolist() == [[0, 0], [0, 3], [4, 9], [10, 14], [0, 0]]
    windows = make_windows(tokenized, 10, "truncate", 0)
    batch = collate(tokenized, [windows[2], windows[0], windows[1]], tokenizer.pad_token_id)
    assert batch.input_ids.shape == (3, 10)
    assert batch.attention_mask.sum(1).tolist() == [10, 5, 2]
    assert batch.input_ids[1, 5:].tolist() == [tokenizer.pad_token_id] * 5
    assert batch.content_mask[1].tolist() == [0, 1, 1, 1, 0] + [0] * 5
    assert batch.content_mask[2].tolist() == [0, 0] + [0] * 8  # an empty text has no content token
    assert batch.input_ids[0, -1].item() == tokenizer.sep_token_id  # truncation keeps [SEP]
    assert batch.content_mask[0].tolist() == [0] + [1] * 8 + [0]


def test_tokens_without_offsets_are_the_same_tokens(tiny_bert):
    """The statistics skip offsets (the tokenizer's faster path): ids, special tokens and types must not change."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenize = TextTokenizer(tokenizer)
    for texts in (["the river bank", "", "Money, money! " * 30, "café naïve"],
                  [("the river bank", "was muddy"), ("", "money"), ("a " * 20, "")]):
        full, bare = tokenize(texts, 16), tokenize(texts, 16, offsets=False)
        assert all(t.offsets is None for t in bare) and all(t.offsets is not None for t in full)
        for a, b in zip(full, bare):
            assert a.ids.tolist() == b.ids.tolist() and a.special.tolist() == b.special.tolist()
            assert (a.type_ids is None) == (b.type_ids is None)
            if a.type_ids is not None:
                assert a.type_ids.tolist() == b.type_ids.tolist() and a.segments.tolist() == b.segments.tolist()
            assert a.pair_kept == b.pair_kept


def test_the_shared_tokenizer_is_not_changed(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.backend_tokenizer.enable_truncation(max_length=4)
    tokenized = TextTokenizer(tokenizer)(["the river bank of the river"])
    assert len(tokenized[0].ids) == 8  # the private copy does not truncate
    assert tokenizer.backend_tokenizer.truncation["max_length"] == 4


def test_prefetching_yields_every_item_in_order():
    from skbert._encoding import _prefetching

    for n in (2, 3, 7):
        assert list(_prefetching(lambda start: start * 10, range(0, n))) == [i * 10 for i in range(n)]


def _collate_one_window_at_a_time(tokenized, windows, pad_token_id):
    """The batch as the per-window definitions give it: row by row, window_segments and segment_bounds."""
    width = max(len(w.token_indices) for w in windows)
    pairs = tokenized[windows[0].text].type_ids is not None
    rows = []
    for window in windows:
        text, length = tokenized[window.text], len(window.token_indices)
        pad = [0] * (width - length)
        rows.append((
            text.ids[window.token_indices].tolist() + [pad_token_id] * (width - length),
            [1] * length + pad,
            window_segments(text, window).tolist() + pad,
            segment_bounds(text.special[window.token_indices], pairs).tolist(),
            text.type_ids[window.token_indices].tolist() + pad if pairs else None,
        ))
    return [list(column) for column in zip(*rows)]


@pytest.mark.parametrize(("strategy", "pairs"),
                         [("truncate", False), ("head_tail", False), ("chunk", False), ("truncate", True)])
def test_collate_gives_each_window_its_per_window_definition(tiny_bert, strategy, pairs):
    """The array-at-once batch against row-by-row window_segments / segment_bounds, on shuffled mixed batches:
    texts that fit, long texts' windows (every strategy; pairs are truncated), empty texts, pairs with empty
    sides, literal [SEP]."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rng = np.random.default_rng(7)
    words = "the river bank money was muddy [SEP] a café naïve of".split()
    single = [" ".join(rng.choice(words, size=rng.integers(0, 40))) for _ in range(60)]
    single += ["", "[SEP]", "a [SEP] b [SEP] c"]
    texts = [(a, b) for a, b in zip(single, single[::-1])] if pairs else single
    tokenized = TextTokenizer(tokenizer)(texts, 16)
    windows = make_windows(tokenized, 16, strategy, 4)
    assert any(len(w.token_indices) < len(tokenized[w.text].ids) for w in windows)  # some are cut from longer texts
    order = rng.permutation(len(windows))
    for part in np.array_split(order, 7):
        chosen = [windows[i] for i in part]
        batch = collate(tokenized, chosen, tokenizer.pad_token_id)
        ids, attention, content, bounds, types = _collate_one_window_at_a_time(tokenized, chosen,
                                                                               tokenizer.pad_token_id)
        assert batch.input_ids.tolist() == ids
        assert batch.attention_mask.tolist() == attention
        assert batch.content_mask.tolist() == content
        assert batch.bounds.tolist() == bounds
        assert (batch.token_type_ids is None) == (not pairs)
        if pairs:
            assert batch.token_type_ids.tolist() == types
        assert batch.has_padding == (min(len(w.token_indices) for w in chosen) < len(ids[0]))


def test_collate_of_a_pair_with_two_special_tokens_between_its_sides():
    """RoBERTa's layout, ``<s> A </s></s> B </s>``: B is segment 2 (not 3), each side bounded by its own tokens."""
    special = np.array([1, 0, 0, 1, 1, 0, 0, 1], dtype=bool)
    text = TokenizedText(np.arange(10, 18), special, None, np.zeros(8, dtype=np.int64))
    short = TokenizedText(np.arange(20, 25), np.array([1, 0, 1, 1, 1], dtype=bool), None, np.zeros(5, dtype=np.int64))
    windows = make_windows([text, short], 16, "truncate", 0)
    batch = collate([text, short], windows, 1)
    assert batch.content_mask.tolist() == [[0, 1, 1, 0, 0, 2, 2, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
    assert batch.bounds.tolist() == [[[0, 3], [4, 7]], [[0, 2], [3, 4]]]
    assert batch.input_ids[1].tolist() == [20, 21, 22, 23, 24, 1, 1, 1]
    assert batch.content_mask.tolist() == _collate_one_window_at_a_time([text, short], windows, 1)[2]


def test_a_packed_budget_counts_real_tokens():
    """Packed batches pay for their tokens, not for padding: more rows fit, never more real tokens than the budget."""
    lengths = np.array([100, 90, 60, 60, 55, 50, 10, 10, 10, 5])
    padded = list(length_sorted_batches(lengths, BatchLimits(token_budget=200)))
    packed = list(length_sorted_batches(lengths, BatchLimits(token_budget=200, packed=True)))
    assert [len(b) for b in padded] == [2, 3, 4, 1]  # by the longest: 2 x 100, 3 x 60, 4 x 50, then the 5
    assert [lengths[b].tolist() for b in packed] == [[100, 90], [60, 60, 55], [50, 10, 10, 10, 5]]
    for batch in packed:
        assert lengths[batch].sum() <= 200
    # one long window among many short ones: the unpacked padded layout stays within twice the budget
    mixed = np.array([100] + [2] * 98)
    (first, *rest) = length_sorted_batches(mixed, BatchLimits(token_budget=200, packed=True))
    assert len(first) == 4 and len(first) * 100 <= 2 * 200 and mixed[first].sum() <= 200
    limits = BatchLimits(token_budget=1000, packed=True)
    limits.lower(np.array([300, 200, 100]))  # a batch of 600 real tokens ran out of memory
    assert (limits.token_budget, limits.max_rows) == (300, 1)
