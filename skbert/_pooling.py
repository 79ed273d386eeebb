"""Pooling: from token vectors to one vector per text.

Two layers of functions live here, neither knowing about scikit-learn:

* pure torch functions ``(hidden, mask) -> (n, d)`` that pool token vectors, and
  :func:`layer_statistics`, which reduces every hidden state of a batch to the few
  per-text vectors that all pooling modes need;
* :func:`pool_statistics`, which computes any pooling mode from those statistics
  (numpy), so that one encoding pass serves every mode and layer choice.

Sums and means accumulate in float32 whatever the model's dtype; the masked maximum
fills with the dtype's own minimum; no function writes into its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: The pooling modes a user can name. "mean_max" stands for ("mean", "max").
POOLING_MODES = ("cls", "mean", "max", "mean_max", "last", "pooler")

#: The per-text, per-layer vectors kept by :func:`layer_statistics`, in this order.
STATISTICS = ("cls", "last", "sum_content", "max_content", "sum_all", "max_all")
_STAT = {name: i for i, name in enumerate(STATISTICS)}


def statistics_needed(modes: tuple[str, ...], include_special_tokens: bool) -> tuple[str, ...]:
    """Which of :data:`STATISTICS` the pooling modes are computed from.

    Parameters
    ----------
    modes : tuple of str
        Base modes, as :func:`expand_pooling` returns them.
    include_special_tokens : bool
        Whether mean and max count special tokens (if not, they also need the
        all-token statistic, the fallback for a text with no other token).

    Returns
    -------
    tuple of str
        In :data:`STATISTICS` order.
    """
    needed = set()
    for mode in modes:
        if mode in ("cls", "last"):
            needed.add(mode)
        elif mode in ("mean", "max"):
            kind = "sum" if mode == "mean" else "max"
            needed.add(f"{kind}_all")
            if not include_special_tokens:
                needed.add(f"{kind}_content")
    return tuple(name for name in STATISTICS if name in needed)


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


def pool_cls(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the first token's vector (BERT's [CLS]) of each row, as float32.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)
        Unused (the first token is always real); kept for a uniform signature.

    Returns
    -------
    Tensor of shape (n, d)
    """
    return hidden[:, 0].float()


def pool_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the vector of the last real (non-padding) token of each row, as float32.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)
        1 for real tokens, 0 for padding; padding must be on the right.

    Returns
    -------
    Tensor of shape (n, d)
    """
    last = mask.long().sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


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


def pool_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the vectors of the tokens where ``mask`` is set, in float32.

    A row with no such token gives zeros.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)

    Returns
    -------
    Tensor of shape (n, d)
    """
    counts = mask.to(torch.float32).sum(dim=1, keepdim=True).clamp(min=1.0)
    return pool_sum(hidden, mask) / counts


def pool_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the tokens where ``mask`` is set, as float32.

    Masked-out positions are filled with the dtype's minimum, so a row with no
    such token gives that minimum.

    Parameters
    ----------
    hidden : Tensor of shape (n, t, d)
    mask : Tensor of shape (n, t)

    Returns
    -------
    Tensor of shape (n, d)
    """
    fill = torch.finfo(hidden.dtype).min
    return hidden.masked_fill(~mask.bool().unsqueeze(-1), fill).amax(dim=1).float()


def layer_statistics(
    hidden_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor,
    counted_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce every hidden state of a batch to what every pooling mode needs.

    Parameters
    ----------
    hidden_states : sequence of Tensor of shape (n, t, d)
        All hidden states, embedding layer first.
    attention_mask : Tensor of shape (n, t)
        1 for real tokens, 0 for padding (on the right).
    special_mask : Tensor of shape (n, t)
        1 for special tokens such as [CLS] and [SEP].
    counted_mask : Tensor of shape (n, t), optional
        Which real tokens the sums and maxima cover (for a window of a long text,
        the tokens it owns); all real tokens by default.

    Returns
    -------
    Tensor of shape (n, len(STATISTICS), len(hidden_states), d), float32
        For each row and layer: the first token, the last real token, the sum and
        maximum over counted non-special tokens, and the sum and maximum over all
        counted tokens.
    """
    real = attention_mask.bool()
    counted = real if counted_mask is None else counted_mask.bool() & real
    content = counted & ~special_mask.bool()
    per_layer = []
    for hidden in hidden_states:
        per_layer.append(
            torch.stack(
                [
                    pool_cls(hidden, real),
                    pool_last(hidden, real),
                    pool_sum(hidden, content),
                    pool_max(hidden, content),
                    pool_sum(hidden, counted),
                    pool_max(hidden, counted),
                ],
                dim=1,
            )
        )
    return torch.stack(per_layer, dim=2)


def combine_windows(statistics: np.ndarray) -> np.ndarray:
    """Merge the statistics of one text's windows, in window order, into one.

    Sums add and maxima take the maximum, which is exact because each token is
    counted in one window only; the first token comes from the first window and
    the last token from the last.

    Parameters
    ----------
    statistics : ndarray of shape (n_windows, len(STATISTICS), n_hidden_states, d)

    Returns
    -------
    ndarray of shape (len(STATISTICS), n_hidden_states, d)
    """
    merged = np.empty_like(statistics[0])
    merged[_STAT["cls"]] = statistics[0, _STAT["cls"]]
    merged[_STAT["last"]] = statistics[-1, _STAT["last"]]
    for name in ("sum_content", "sum_all"):
        merged[_STAT[name]] = statistics[:, _STAT[name]].sum(axis=0)
    for name in ("max_content", "max_all"):
        merged[_STAT[name]] = statistics[:, _STAT[name]].max(axis=0)
    return merged


def pool_statistics(
    statistics: np.ndarray,
    n_content: np.ndarray,
    n_all: np.ndarray,
    pooler: np.ndarray | None,
    mode: str,
    layer_indices: tuple[int, ...],
    include_special_tokens: bool,
    held: tuple[str, ...] = STATISTICS,
) -> np.ndarray:
    """Compute one pooling mode for the selected layers from :func:`layer_statistics`.

    Parameters
    ----------
    statistics : ndarray of shape (n, len(held), n_hidden_states, d)
    n_content : ndarray of shape (n,)
        Number of non-special real tokens per text.
    n_all : ndarray of shape (n,)
        Number of real tokens per text.
    pooler : ndarray of shape (n, d) or None
        The model's pooler output (needed only for mode "pooler").
    mode : {"cls", "mean", "max", "last", "pooler"}
    layer_indices : tuple of int
        Hidden-state indices to take.
    include_special_tokens : bool
        Whether mean and max count special tokens. A text with no other token
        (an empty string) falls back to its special tokens, so it never pools to
        nothing.
    held : tuple of str, default=STATISTICS
        Which statistics ``statistics`` holds along its second axis, in order (at
        least those :func:`statistics_needed` names for ``mode``).

    Returns
    -------
    ndarray of shape (n, len(layer_indices), d), float32
    """
    idx = list(layer_indices)
    at = {name: i for i, name in enumerate(held)}
    if mode == "cls":
        return statistics[:, at["cls"], idx]
    if mode == "last":
        return statistics[:, at["last"], idx]
    if mode == "pooler":
        if pooler is None:
            raise ValueError("pooling='pooler' needs the model's pooler output, which is not available.")
        return pooler[:, None, :]
    if mode not in ("mean", "max"):
        raise ValueError(f"unknown pooling mode {mode!r}")
    everything = statistics[:, at[f"{'sum' if mode == 'mean' else 'max'}_all"], idx]
    if mode == "mean":
        everything = everything / n_all[:, None, None].astype(np.float32)
    if include_special_tokens:
        return everything.astype(np.float32, copy=False)
    content = statistics[:, at[f"{'sum' if mode == 'mean' else 'max'}_content"], idx]
    if mode == "mean":
        content = content / np.maximum(n_content, 1)[:, None, None].astype(np.float32)
    has_content = (n_content > 0)[:, None, None]
    return np.where(has_content, content, everything).astype(np.float32, copy=False)
