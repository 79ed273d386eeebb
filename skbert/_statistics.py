"""What one encoding pass keeps of each text: a few per-layer vectors that every pooling mode is computed from.

Per text and per hidden state, four vectors (:data:`KINDS`):

- ``cls``: the first token ([CLS]);
- ``last``: the last token ([SEP]);
- ``mean``: the average over the text's own (non-special) tokens;
- ``max``: the element-wise maximum over them (``-inf`` for a text without any);

and the count of those tokens, ``n_content``. Everything else is derived, exactly:
a BERT input counts two special tokens, the first ([CLS]) and the last ([SEP]),
so the mean over all tokens is ``(mean * n_content + cls + last) / (n_content + 2)``
and the maximum over all tokens is ``max(max, cls, last)``. That holds for a long
text cut into windows too: each window has its own [CLS] and [SEP], but only the
first window's [CLS] and the last window's [SEP] are *counted* (each token of a text
is counted in one window only, see :mod:`skbert._batching`), and those are exactly
the ``cls`` and ``last`` kept for the text.

A sentence pair has two *segments*, each kept like a text of its own between its
opening and closing special tokens (:mod:`skbert._layout`): in ``[CLS] A [SEP] B
[SEP]`` A lies between [CLS] and the middle [SEP], B between the middle [SEP] and
the last (one token closes A and opens B); in ``<s> A </s></s> B </s>`` A lies
between ``<s>`` and the first ``</s>``, B between the second and the last. Pooling
over the whole pair (every special token counted once), over one side, or
comparing the sides (``|a - b|``, ``a * b``) all come from those. A single text is
one segment.

No function here knows about scikit-learn or the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._layers import aggregate_layers, describe_layers
from ._pooling import SEGMENT_CHOICES, pool_max, pool_sum

#: The per-layer vectors kept for each text, in this order.
KINDS = ("cls", "last", "mean", "max")


@dataclass
class Statistics:
    """The statistics of some texts, for some layers.

    Attributes
    ----------
    positions : ndarray of shape (n,)
        Which texts (positions among those asked for) the rows are.
    values : ndarray of shape (n, segments, len(kinds), len(layers), d)
        float32, or float16 when read from a 16-bit cache. One segment for a
        single text, two (A, B) for a sentence pair; each segment's ``cls`` and
        ``last`` are its bracketing special tokens.
    kinds : tuple of str
        Which of :data:`KINDS` ``values`` holds, in order (always ``cls`` and ``last``).
    layers : tuple of int
        Which hidden states ``values`` holds, in order (0 is the embedding layer).
    n_content : ndarray of shape (n, segments)
        Non-special tokens the mean and max of each segment cover.
    n_tokens : ndarray of shape (n,)
        Each text's full length in tokens, special tokens included, before any
        truncation or windowing.
    pooler : ndarray of shape (n, d) or None
        The model's pooler output (from the first window), when asked for.
    """

    positions: np.ndarray
    values: np.ndarray
    kinds: tuple
    layers: tuple
    n_content: np.ndarray
    n_tokens: np.ndarray
    pooler: np.ndarray | None = None

    @property
    def n_segments(self) -> int:
        """1 for single texts, 2 for sentence pairs."""
        return self.values.shape[1]

    def get(self, kind: str, layer_indices: Sequence[int], segment: int = 0) -> np.ndarray:
        """One kind of vector of one segment for some hidden states, as float32 of shape (n, len(layer_indices), d)."""
        layer_positions = [self.layers.index(i) for i in layer_indices]
        return as_float32(self.values[:, segment, self.kinds.index(kind)][:, layer_positions])


def as_float32(values: np.ndarray) -> np.ndarray:
    """``values`` as a new float32 array (float16 is converted by torch: ~10x numpy's speed on a CPU)."""
    if values.dtype != np.float16:
        return values.astype(np.float32)
    if not (values.flags.writeable and values.flags.c_contiguous):
        values = values.copy()  # torch shares writable, contiguous memory only
    return torch.from_numpy(values).float().numpy()


def kinds_needed(modes: Sequence[str]) -> tuple[str, ...]:
    """Which of :data:`KINDS` some pooling modes are computed from.

    ``cls`` and ``last`` are always included: they are cheap, and mean and max fall
    back on them for a text with no token of its own (an empty string).

    Parameters
    ----------
    modes : sequence of str
        Base pooling modes (``"mean_max"`` expanded).

    Returns
    -------
    tuple of str
        In :data:`KINDS` order.
    """
    return tuple(kind for kind in KINDS if kind in ("cls", "last") or kind in modes)


def window_statistics(
    hidden_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    content_mask: torch.Tensor,
    kinds: Sequence[str] = KINDS,
    bounds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce some hidden states of a padded batch of windows, on their device.

    Parameters
    ----------
    hidden_states : sequence of Tensor of shape (n, t, d)
        The hidden states wanted, in order.
    attention_mask : Tensor of shape (n, t)
        1 for real tokens, 0 for padding (on the right).
    content_mask : Tensor of shape (n, t)
        The segment (1, or 2 for a pair's B) of each non-special token the window
        counts, 0 elsewhere (see :func:`~skbert._batching.window_segments`).
    kinds : sequence of str, default=KINDS
        Which of :data:`KINDS` to compute, in :data:`KINDS` order.
    bounds : Tensor of shape (n, segments, 2), optional
        Positions of each segment's opening and closing special tokens
        (:func:`~skbert._batching.segment_bounds`). None: one segment, from the
        first token to the last real one.

    Returns
    -------
    Tensor of shape (n, segments, len(kinds), len(hidden_states), d), float32
        For ``"mean"`` the *sum* over counted content tokens (windows of one text
        add up; :func:`finish_texts` divides); for ``"max"`` their maximum (the
        dtype's minimum where a window counts none).
    """
    real = attention_mask.bool()
    rows = torch.arange(real.shape[0], device=real.device)
    if bounds is None:
        bounds = torch.stack([torch.zeros_like(rows), real.long().sum(dim=1) - 1], dim=1)[:, None]
    segments = []
    for segment in range(bounds.shape[1]):
        content = (content_mask == segment + 1) & real
        first, last = bounds[:, segment, 0], bounds[:, segment, 1]
        reducers = {
            "cls": lambda hidden: hidden[rows, first].float(),
            "last": lambda hidden: hidden[rows, last].float(),
            "mean": lambda hidden: pool_sum(hidden, content),
            "max": lambda hidden: pool_max(hidden, content),
        }
        per_layer = [torch.stack([reducers[kind](hidden) for kind in kinds], dim=1) for hidden in hidden_states]
        segments.append(torch.stack(per_layer, dim=2))
    return torch.stack(segments, dim=1)


def finish_texts(
    window_values: np.ndarray,
    window_content: np.ndarray,
    text_of_window: np.ndarray,
    n_texts: int,
    kinds: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Combine windows into texts and turn sums into means.

    Parameters
    ----------
    window_values : ndarray of shape (n_windows, segments, len(kinds), L, d), float32
        From :func:`window_statistics`, windows of each text in window order.
    window_content : ndarray of shape (n_windows, segments)
        Content tokens each window counts.
    text_of_window : ndarray of shape (n_windows,)
        Which text (``0 .. n_texts - 1``) each window belongs to, non-decreasing.
    n_texts : int
    kinds : sequence of str

    Returns
    -------
    values : ndarray of shape (n_texts, segments, len(kinds), L, d), float32
        ``cls`` from each text's first window, ``last`` from its last; sums added and
        divided by the text's content count; maxima combined (``-inf`` where a
        segment has no content token).
    n_content : ndarray of shape (n_texts, segments)
    """
    starts = np.searchsorted(text_of_window, np.arange(n_texts))
    ends = np.append(starts[1:], len(text_of_window))
    if n_texts:
        n_content = np.add.reduceat(window_content, starts, axis=0)
    else:
        n_content = np.zeros((0, window_content.shape[1]), np.int64)
    if len(text_of_window) == n_texts:  # one window each (the common case): nothing to combine
        values = window_values.copy()
    else:
        values = np.empty((n_texts, *window_values.shape[1:]), dtype=np.float32)
        for position, kind in enumerate(kinds):
            part = window_values[:, :, position]
            if kind == "cls":
                values[:, :, position] = part[starts]
            elif kind == "last":
                values[:, :, position] = part[ends - 1]
            elif kind == "mean":
                values[:, :, position] = np.add.reduceat(part, starts, axis=0)
            else:
                values[:, :, position] = np.maximum.reduceat(part, starts, axis=0)
    if "mean" in kinds:
        values[:, :, kinds.index("mean")] /= np.maximum(n_content, 1)[:, :, None, None]
    if "max" in kinds:
        maxima = values[:, :, kinds.index("max")]  # a view
        maxima[n_content == 0] = -np.inf
    return values, n_content


def pool_statistics(
    statistics: Statistics, mode: str, layer_indices: Sequence[int], include_special_tokens: bool,
    segment: int | None = None, shared_boundary: bool = True,
):
    """Compute one pooling mode for some layers from :class:`Statistics`.

    Parameters
    ----------
    statistics : Statistics
    mode : {"cls", "mean", "max", "last", "pooler"}
    layer_indices : sequence of int
        Hidden states to pool (``statistics.layers`` must hold them).
    include_special_tokens : bool
        Whether mean and max count the special tokens ([CLS] and every [SEP] for
        the whole input; a segment's two bracketing tokens for one segment). Where
        there is no other token (an empty text or side) they are used anyway, so
        nothing pools to nothing.
    segment : int or None, default=None
        None: the whole input (both sides of a pair). 0 or 1: one side of a pair,
        ``"mean"`` and ``"max"`` only.
    shared_boundary : bool, default=True
        Whether one special token both closes A and opens B (BERT's ``[CLS] A
        [SEP] B [SEP]``: three special tokens in all) or each side has its own
        (RoBERTa's ``<s> A </s></s> B </s>``: four). One side always counts its own
        opening and closing tokens.

    Returns
    -------
    ndarray of shape (n, len(layer_indices), d), float32
    """
    if mode == "pooler":
        if statistics.pooler is None:
            raise ValueError("pooling='pooler' needs the model's pooler output, which is not available.")
        return as_float32(statistics.pooler[:, None, :])
    last_segment = statistics.n_segments - 1
    if mode in ("cls", "last") and segment is None:
        return statistics.get(mode, layer_indices, 0 if mode == "cls" else last_segment)
    if mode not in ("mean", "max"):
        raise ValueError(f"pooling mode {mode!r} " + ("is not per segment" if mode in ("cls", "last") else "is unknown"))
    segments = range(statistics.n_segments) if segment is None else [segment]
    # the special tokens around the pooled tokens, each once: every segment's opening and closing token,
    # where B's opening token is A's closing one in BERT's layout
    specials = []
    for s in segments:
        if s == segments[0] or not shared_boundary:
            specials.append(statistics.get("cls", layer_indices, s))
        specials.append(statistics.get("last", layer_indices, s))
    counts = statistics.n_content[:, list(segments)].astype(np.float32)
    n_content = counts.sum(axis=1)[:, None, None]
    parts = [statistics.get(mode, layer_indices, s) for s in segments]
    if mode == "mean":
        total = sum(part * count[:, None, None] for part, count in zip(parts, counts.T))
        content = parts[0] if len(parts) == 1 else total / np.maximum(n_content, 1)
        everything = (total + sum(specials)) / (n_content + len(specials))
    else:
        content = np.maximum.reduce(parts)
        everything = np.maximum.reduce([content, *specials])
    if include_special_tokens:
        return everything
    return np.where(n_content > 0, content, everything)


def pool_segments(
    statistics: Statistics, segment: str, mode: str, layer_indices: Sequence[int], aggregation: str,
    include_special_tokens: bool, shared_boundary: bool = True,
) -> np.ndarray:
    """One pooling mode over the whole input, one side, or both sides compared, layers combined.

    ``"abs_diff"`` and ``"product"`` compare the sides' vectors after the layers are
    combined: ``|a - b|`` and ``a * b``, element-wise.

    Returns
    -------
    ndarray of shape (n, width), float32
    """
    def side(index):
        pooled = pool_statistics(statistics, mode, layer_indices, include_special_tokens, index, shared_boundary)
        return aggregate_layers(pooled, aggregation)

    if segment == "joint":
        return side(None)
    if statistics.n_segments != 2:
        raise ValueError(f"segment {segment!r} needs sentence pairs.")
    if segment in ("a", "b"):
        return side("ab".index(segment))
    a, b = side(0), side(1)
    if segment == "abs_diff":
        return np.abs(a - b)
    if segment == "product":
        return a * b
    raise ValueError(f"segment {segment!r} is not one of {SEGMENT_CHOICES}.")


def pool_features(
    statistics: Statistics, modes: Sequence[str], layer_indices: Sequence[int], aggregation: str,
    include_special_tokens: bool, segments: Sequence[str] = ("joint",), shared_boundary: bool = True,
) -> np.ndarray:
    """Every segment choice and pooling mode for the selected layers, layers combined, blocks concatenated.

    ``shared_boundary`` as in :func:`pool_statistics` (the tokenizer's pair layout).

    Returns
    -------
    ndarray of shape (n, n_features), float32
        Blocks in the order :func:`feature_names` names them: by segment choice,
        then by pooling mode.
    """
    blocks = [
        pool_segments(statistics, segment, mode, layer_indices, aggregation, include_special_tokens, shared_boundary)
        for segment in segments
        for mode in modes
    ]
    return np.concatenate(blocks, axis=1)


def feature_names(
    modes: Sequence[str], layer_indices: Sequence[int], aggregation: str, width: int,
    segments: Sequence[str] = ("joint",),
) -> list[str]:
    """Column names for :func:`pool_features`: segment (unless joint), pooling mode, layer(s), dimension.

    E.g. ``"mean_layer12_0"``, ``"max_layers9+10+11+12_mean_0"`` for averaged
    layers, or ``"abs_diff_mean_layer6_0"`` for a pair's sides compared.
    """
    layer_labels = describe_layers(tuple(layer_indices), aggregation)
    labels = [
        f"{'' if segment == 'joint' else segment + '_'}{mode}_{label}"
        for segment in segments
        for mode in modes
        for label in layer_labels
    ]
    return [f"{label}_{j}" for label in labels for j in range(width)]
