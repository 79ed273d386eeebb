"""Per-text statistics: reduced on the device, windows combined, every pooling mode derived,
each checked against plain numpy loops over the token vectors."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from skbert._spec import kinds_needed, pool_statistics
from skbert._statistics import KINDS, Statistics, finish_texts, window_statistics

LENGTHS = [7, 4, 2, 5]  # 2: an empty text, only [CLS] and [SEP]


def _batch(seed=0, t=7, d=5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(LENGTHS), t, d, generator=g)
    mask = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    content = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    for i, length in enumerate(LENGTHS):
        mask[i, :length] = 1
        content[i, 1 : length - 1] = 1
    return [hidden, hidden * 2 + 1], mask, content


def _statistics(states, mask, content, kinds=KINDS, layers=(0, 1)):
    """One window per text: what the device hands back is each text's statistics."""
    values, extras = window_statistics([states[i] for i in layers], mask, content, kinds)
    assert_allclose(extras[:, 0].numpy(), content.sum(1).numpy())
    assert not extras[:, 1].any()
    return Statistics(np.arange(len(values)), values.numpy(), kinds, layers, extras[:, :1].long().numpy(),
                      mask.sum(1).numpy())


@pytest.mark.parametrize("include", [False, True])
def test_every_mode_from_the_statistics_matches_loops(include):
    states, mask, content = _batch()
    stats = _statistics(states, mask, content)
    assert stats.values.shape == (4, 1, len(KINDS), 2, 5) and stats.n_content[:, 0].tolist() == [5, 2, 0, 3]
    for layer, state in enumerate(states):
        h = state.double().numpy()
        mean = pool_statistics(stats, "mean", (layer,), include)[:, 0]
        top = pool_statistics(stats, "max", (layer,), include)[:, 0]
        for i, n in enumerate(LENGTHS):
            rows = list(range(n) if include or n == 2 else range(1, n - 1))  # n == 2: falls back on the specials
            assert_allclose(mean[i], h[i, rows].mean(0), rtol=1e-5, atol=1e-6)
            assert_allclose(top[i], h[i, rows].max(0), rtol=1e-6)
        assert_allclose(pool_statistics(stats, "cls", (layer,), include)[:, 0], h[:, 0], rtol=1e-6)
        last = pool_statistics(stats, "last", (layer,), include)[:, 0]
        assert_allclose(last, [h[i, n - 1] for i, n in enumerate(LENGTHS)], rtol=1e-6)


def test_pooler_mode():
    states, mask, content = _batch()
    stats = _statistics(states, mask, content)
    with pytest.raises(ValueError, match="pooler output"):
        pool_statistics(stats, "pooler", (1,), False)
    stats.pooler = np.ones((4, 5), dtype=np.float16)
    got = pool_statistics(stats, "pooler", (1,), False)
    assert got.shape == (4, 1, 5) and got.dtype == np.float32


def test_only_the_kinds_and_layers_asked_for_are_computed_and_give_the_same_result():
    states, mask, content = _batch()
    full = _statistics(states, mask, content)
    assert kinds_needed(("mean",)) == ("cls", "last", "mean")
    assert kinds_needed(("max", "cls")) == ("cls", "last", "max")
    assert kinds_needed(("pooler",)) == ("cls", "last")
    for modes in (("cls",), ("last",), ("mean",), ("max",), ("mean", "max"), ("last", "mean", "cls")):
        part = _statistics(states, mask, content, kinds_needed(modes), layers=(1,))
        assert part.values.shape[1:4] == (1, len(kinds_needed(modes)), 1)
        for mode in modes:
            for include in (False, True):
                want = pool_statistics(full, mode, (1,), include)
                assert_allclose(pool_statistics(part, mode, (1,), include), want, rtol=0, atol=0)


def test_windows_combine_into_the_statistics_of_the_whole_text():
    """Three windows of one long text, each with its own [CLS] and [SEP]: the counted tokens
    (the first window's [CLS], each content token once, the last window's [SEP]) pool exactly
    as the union of their vectors."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 6, 4, generator=g)  # windows of 6 tokens: [CLS] 4 content [SEP]
    mask = torch.ones(3, 6, dtype=torch.long)
    counted = torch.tensor(
        [[1, 1, 1, 1, 0, 0],  # first window: its [CLS], 3 content tokens
         [0, 0, 1, 1, 1, 0],  # middle: 3 content tokens
         [0, 0, 0, 1, 1, 1]],  # last: 2 content tokens, its [SEP]
        dtype=torch.long,
    )
    content = counted.clone()
    content[:, 0] = content[:, -1] = 0
    values, extras = window_statistics([hidden], mask, content)
    finished, n_content = finish_texts(values.numpy(), extras[:, :1].long().numpy(), np.zeros(3, np.int64), 1, KINDS)
    stats = Statistics(np.arange(1), finished, KINDS, (0,), n_content, np.array([12]))
    h = hidden.double().numpy()
    content_vectors = np.concatenate([h[w, content[w].bool().numpy()] for w in range(3)])
    every_counted = np.concatenate([h[w, counted[w].bool().numpy()] for w in range(3)])
    assert n_content.tolist() == [[8]] and len(every_counted) == 10
    assert_allclose(pool_statistics(stats, "mean", (0,), False)[0, 0], content_vectors.mean(0), rtol=1e-5)
    assert_allclose(pool_statistics(stats, "max", (0,), False)[0, 0], content_vectors.max(0), rtol=1e-6)
    assert_allclose(pool_statistics(stats, "mean", (0,), True)[0, 0], every_counted.mean(0), rtol=1e-5)
    assert_allclose(pool_statistics(stats, "max", (0,), True)[0, 0], every_counted.max(0), rtol=1e-6)
    assert_allclose(pool_statistics(stats, "cls", (0,), True)[0, 0], h[0, 0], rtol=1e-6)
    assert_allclose(pool_statistics(stats, "last", (0,), True)[0, 0], h[2, -1], rtol=1e-6)


def test_window_statistics_never_write_into_the_hidden_states():
    states, mask, content = _batch()
    before = [s.clone() for s in states]
    window_statistics(states, mask, content)
    assert all(torch.equal(a, b) for a, b in zip(states, before))


def test_half_precision_statistics_stay_finite():
    """float16 hidden states with large values: sums accumulate in float32, the masked max fills
    with float16's own minimum, and an empty text's max becomes -inf (never used for pooling)."""
    states, mask, content = _batch()
    big = [s.half() * 3000 for s in states]
    stats = _statistics(big, mask, content)
    mean = pool_statistics(stats, "mean", (0, 1), False)
    assert np.isfinite(mean).all() and np.isfinite(pool_statistics(stats, "max", (0, 1), False)).all()
    h = big[0].double().numpy()
    assert_allclose(mean[0, 0], h[0, 1:6].mean(0), rtol=1e-3)
    assert np.isneginf(stats.values[2, 0, KINDS.index("max")]).all()


def test_narrowed_statistics_flag_the_windows_that_overflow_and_only_those():
    """float16 statistics are checked as they are narrowed: a window with a value beyond float16's range is
    flagged; an empty text's -inf maximum (by design) and a bfloat16 model's masked maximum are not."""
    states, mask, content = _batch()
    states = [s.clone() for s in states]
    states[1][3, 2, 0] = 1e6  # text 3's content token: its mean and max overflow float16
    values, extras = window_statistics(states, mask, content, dtype=torch.float16, check=True)
    assert values.dtype == torch.float16 and extras[:, -1].tolist() == [0, 0, 0, 1]
    assert torch.isinf(values[2, 0, KINDS.index("max")]).all() and values[2, 0, KINDS.index("mean")].eq(0).all()
    wide, _ = window_statistics(states, mask, content)
    finite = [0, 1, 2]
    assert_allclose(values[finite].float().numpy(), wide[finite].numpy(), rtol=1e-3, atol=1e-3)
    bf16 = [s.bfloat16() for s in _batch()[0]]
    _, extras = window_statistics(bf16, mask, content, dtype=torch.float16, check=True)
    assert not extras[:, -1].any()
    _, unchecked = window_statistics(states, mask, content, dtype=torch.float16)
    assert not unchecked[:, -1].any()
