"""Pooling functions against plain numpy loops."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from skbert._pooling import (
    STATISTICS,
    expand_pooling,
    layer_statistics,
    pool_cls,
    pool_last,
    pool_max,
    pool_mean,
    pool_statistics,
    pool_sum,
    statistics_needed,
)


def _batch(seed=0, n=4, t=7, d=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, t, d, generator=g).to(dtype)
    lengths = [7, 4, 2, 5][:n]
    mask = torch.zeros(n, t, dtype=torch.long)
    special = torch.zeros(n, t, dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
        special[i, 0] = special[i, length - 1] = 1
    return hidden, mask, special, lengths


def test_token_pooling_matches_loops():
    hidden, mask, _, lengths = _batch()
    h = hidden.double().numpy()
    assert_allclose(pool_cls(hidden, mask).numpy(), h[:, 0], rtol=1e-6)
    assert_allclose(pool_last(hidden, mask).numpy(), [h[i, n - 1] for i, n in enumerate(lengths)], rtol=1e-6)
    assert_allclose(pool_sum(hidden, mask).numpy(), [h[i, :n].sum(0) for i, n in enumerate(lengths)], rtol=1e-5)
    assert_allclose(pool_mean(hidden, mask).numpy(), [h[i, :n].mean(0) for i, n in enumerate(lengths)], rtol=1e-5)
    assert_allclose(pool_max(hidden, mask).numpy(), [h[i, :n].max(0) for i, n in enumerate(lengths)], rtol=1e-6)


def test_pooling_never_writes_into_its_input():
    hidden, mask, special, _ = _batch()
    before = hidden.clone()
    for fn in (pool_cls, pool_last, pool_sum, pool_mean, pool_max):
        fn(hidden, mask)
    layer_statistics([hidden, hidden], mask, special)
    assert torch.equal(hidden, before)


def test_half_precision_max_uses_the_dtype_minimum_and_sums_in_float32():
    hidden, mask, _, lengths = _batch(dtype=torch.float16)
    hidden = hidden * 1000  # large values: a float16 sum would lose digits
    got_max = pool_max(hidden, mask)
    assert got_max.dtype == torch.float32 and torch.isfinite(got_max).all()
    h = hidden.double().numpy()
    assert_allclose(got_max.numpy(), [h[i, :n].max(0) for i, n in enumerate(lengths)])
    got_sum = pool_sum(hidden, mask)
    assert got_sum.dtype == torch.float32
    assert_allclose(got_sum.numpy(), [h[i, :n].sum(0) for i, n in enumerate(lengths)], rtol=1e-6)


def test_statistics_then_pooling_match_loops():
    hidden, mask, special, lengths = _batch()
    states = [hidden, hidden * 2 + 1]
    stats = layer_statistics(states, mask, special).numpy()
    assert stats.shape == (4, len(STATISTICS), 2, 5)
    n_all = mask.sum(1).numpy()
    n_content = (mask * (1 - special)).sum(1).numpy()
    for layer, state in enumerate(states):
        h = state.double().numpy()
        for include in (False, True):
            mean = pool_statistics(stats, n_content, n_all, None, "mean", (layer,), include)[:, 0]
            top = pool_statistics(stats, n_content, n_all, None, "max", (layer,), include)[:, 0]
            for i, n in enumerate(lengths):
                rows = range(n) if include or n == 2 else range(1, n - 1)  # n == 2: only [CLS][SEP]
                assert_allclose(mean[i], h[i, list(rows)].mean(0), rtol=1e-5, atol=1e-6)
                assert_allclose(top[i], h[i, list(rows)].max(0), rtol=1e-6)
        cls = pool_statistics(stats, n_content, n_all, None, "cls", (layer,), False)[:, 0]
        last = pool_statistics(stats, n_content, n_all, None, "last", (layer,), False)[:, 0]
        assert_allclose(cls, h[:, 0], rtol=1e-6)
        assert_allclose(last, [h[i, n - 1] for i, n in enumerate(lengths)], rtol=1e-6)
    pooler = np.ones((4, 5), dtype=np.float32)
    assert pool_statistics(stats, n_content, n_all, pooler, "pooler", (1,), False).shape == (4, 1, 5)
    with pytest.raises(ValueError, match="pooler output"):
        pool_statistics(stats, n_content, n_all, None, "pooler", (1,), False)


def test_pooling_from_only_the_statistics_it_needs():
    hidden, mask, special, _ = _batch()
    stats = layer_statistics([hidden, hidden * 2 + 1], mask, special).numpy()
    n_all = mask.sum(1).numpy()
    n_content = (mask * (1 - special)).sum(1).numpy()
    assert statistics_needed(("mean",), True) == ("sum_all",)
    assert statistics_needed(("max", "cls"), False) == ("cls", "max_content", "max_all")
    assert statistics_needed(("pooler",), False) == ()
    for modes in (("cls",), ("last",), ("mean",), ("max",), ("mean", "max"), ("last", "mean", "cls")):
        for include in (False, True):
            held = statistics_needed(modes, include)
            subset = stats[:, [STATISTICS.index(name) for name in held]]
            for mode in modes:
                want = pool_statistics(stats, n_content, n_all, None, mode, (1, 0), include)
                got = pool_statistics(subset, n_content, n_all, None, mode, (1, 0), include, held)
                assert_allclose(got, want, rtol=0, atol=0)


def test_expand_pooling():
    assert expand_pooling("mean_max") == ("mean", "max")
    assert expand_pooling(("cls", "mean_max", "last")) == ("cls", "mean", "max", "last")
    assert expand_pooling(["pooler"]) == ("pooler",)
    for bad, match in [((), "non-empty"), (("max", "mean_max"), "more than once"), ((1,), "1 is not one of")]:
        with pytest.raises(ValueError, match=match):
            expand_pooling(bad)
