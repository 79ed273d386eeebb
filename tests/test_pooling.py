"""Pure pooling functions against plain numpy loops."""

import pytest
import torch
from numpy.testing import assert_allclose

from skbert._pooling import expand_pooling, pool_max, pool_sum


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
    assert_allclose(pool_sum(hidden, mask).numpy(), [h[i, :n].sum(0) for i, n in enumerate(lengths)], rtol=1e-5)
    assert_allclose(pool_max(hidden, mask).numpy(), [h[i, :n].max(0) for i, n in enumerate(lengths)], rtol=1e-6)


def test_pooling_never_writes_into_its_input():
    hidden, mask, _, _ = _batch()
    before = hidden.clone()
    for fn in (pool_sum, pool_max):
        fn(hidden, mask)
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


def test_expand_pooling():
    assert expand_pooling("mean_max") == ("mean", "max")
    assert expand_pooling(("cls", "mean_max", "last")) == ("cls", "mean", "max", "last")
    assert expand_pooling(["pooler"]) == ("pooler",)
    for bad, match in [((), "non-empty"), (("max", "mean_max"), "more than once"), ((1,), "1 is not one of")]:
        with pytest.raises(ValueError, match=match):
            expand_pooling(bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_max_equals_a_masked_fill_reference_and_a_row_without_tokens_gives_the_minimum(dtype):
    hidden, mask, _, lengths = _batch(dtype=dtype)
    hidden = hidden * 100  # values whose sum with the dtype's minimum would round in float16
    mask = mask.clone()
    mask[1] = 0  # a row where no token counts
    want = hidden.float().masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(dtype).min).amax(dim=1)
    got = pool_max(hidden, mask)
    assert torch.equal(got, want)
    assert (got[1] == torch.finfo(dtype).min).all()
