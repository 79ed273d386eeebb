"""Pooling: pure torch functions from token vectors to one vector per text.

Each takes ``(hidden, mask)`` and returns ``(n, d)`` float32: sums and means
accumulate in float32 whatever the model's dtype, the masked maximum fills with the
dtype's own minimum, and no function writes into its input. How one encoding pass
serves every mode is in :mod:`skbert._statistics`.
"""

from __future__ import annotations

import torch

#: The pooling modes a user can name. "mean_max" stands for ("mean", "max").
POOLING_MODES = ("cls", "mean", "max", "mean_max", "last", "pooler")


def expand_pooling(pooling) -> tuple[str, ...]:
    """Flatten a pooling spec into base modes, in output order.

    Parameters
    ----------
    pooling : str or tuple/list of str
        One of :data:`POOLING_MODES`, or several to concatenate.

    Returns
    -------
    tuple of str
        Modes among "cls", "mean", "max", "last", "pooler".

    Raises
    ------
    ValueError
        For an unknown, empty or repeated mode.
    """
    items = (pooling,) if isinstance(pooling, str) else tuple(pooling) if isinstance(pooling, (tuple, list)) else ()
    if not items:
        raise ValueError(f"pooling={pooling!r}: expected one of {POOLING_MODES} or a non-empty tuple of them.")
    modes: list[str] = []
    for item in items:
        if not isinstance(item, str) or item not in POOLING_MODES:
            raise ValueError(f"pooling={pooling!r}: {item!r} is not one of {POOLING_MODES}.")
        modes.extend(("mean", "max") if item == "mean_max" else (item,))
    if len(set(modes)) != len(modes):
        raise ValueError(f"pooling={pooling!r} asks for the same mode more than once.")
    return tuple(modes)


#: What ``segments`` may name: the whole input, one side of a sentence pair, or the sides compared.
SEGMENT_CHOICES = ("joint", "a", "b", "abs_diff", "product")


def expand_segments(segments, pairs: bool, modes: tuple[str, ...]) -> tuple[str, ...]:
    """Check a ``segments`` spec against the input kind and the pooling modes.

    Parameters
    ----------
    segments : str or tuple/list of str
        One of :data:`SEGMENT_CHOICES`, or several to concatenate.
    pairs : bool
        Whether the input is sentence pairs.
    modes : tuple of str
        The pooling modes, expanded.

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        For an unknown, empty or repeated choice; a side or comparison without
        pairs; or one with a pooling mode that has no per-side value (``cls``,
        ``last``, ``pooler`` are of the whole input).
    """
    items = (segments,) if isinstance(segments, str) else tuple(segments) if isinstance(segments, (tuple, list)) else ()
    if not items or any(not isinstance(item, str) or item not in SEGMENT_CHOICES for item in items):
        raise ValueError(f"segments={segments!r}: expected one of {SEGMENT_CHOICES} or a non-empty tuple of them.")
    if len(set(items)) != len(items):
        raise ValueError(f"segments={segments!r} names the same choice more than once.")
    per_side = [item for item in items if item != "joint"]
    if per_side and not pairs:
        raise ValueError(f"segments={segments!r}: {per_side[0]!r} needs sentence pairs (pairs=True).")
    whole = [mode for mode in modes if mode not in ("mean", "max")]
    if per_side and whole:
        raise ValueError(
            f"segments={segments!r} pools each side, and pooling {whole[0]!r} is of the whole pair; per side, "
            "pooling takes 'mean', 'max' or 'mean_max' (or use segments='joint')."
        )
    return items


def pool_sum(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum the vectors of the tokens where ``mask`` is set, accumulating in float32.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)
        Which tokens count.

    Returns
    -------
    Tensor of shape (n, d)
    """
    weights = mask.to(torch.float32).unsqueeze(1)  # (n, 1, t)
    return torch.bmm(weights, hidden.float()).squeeze(1)


def pool_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the tokens where ``mask`` is set, as float32.

    A row with no such token gives the dtype's minimum. Where the dtype's range is
    wide (float32, bfloat16), masked-out tokens are pushed below every real value
    by adding that minimum, which is exact where a token counts and several times
    faster on a CPU than filling them with a broadcast mask; float16's range is
    too narrow for that, and it is filled.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)

    Returns
    -------
    Tensor of shape (n, d)
    """
    fill = torch.finfo(hidden.dtype).min
    outside = ~mask.bool()
    if fill > -1e30:  # float16
        return hidden.masked_fill(outside.unsqueeze(-1), fill).amax(dim=1).float()
    maxima = (hidden + outside.to(hidden.dtype).mul_(fill).unsqueeze(-1)).amax(dim=1)
    return maxima.masked_fill_(outside.all(dim=1, keepdim=True), fill).float()
