"""What one encoding pass keeps of each text: a few per-layer vectors that every pooling mode is computed from.

Per text and per hidden state, four vectors (:data:`KINDS`, each defined once in
:data:`KIND_RULES`: its reduction on the device and its combination across windows):

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

Pooling modes are computed from these in :mod:`skbert._spec`. No function here knows
about scikit-learn or the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._pooling import pool_max, pool_sum

@dataclass(frozen=True)
class Kind:
    """One kind of statistic, defined once: how a window's is computed on the device, and how a long text's
    windows combine into the text's.

    Attributes
    ----------
    name : str
    reduce : callable
        ``(hidden (n, t, d), rows, first (n,), last (n,), content (n, t) bool, count (n,) float32) -> (n, d)``
        float32: the window's own statistic, finished (a mean is divided by its count; a window
        that counts no content token gets 0 as its mean and, until :func:`window_statistics`
        marks it ``-inf``, 0 as its maximum).
    combine : callable
        ``(per_window (n_windows, segments, L, d), starts, ends, counts (n_windows, segments),
        totals (n_texts, segments)) -> (n_texts, segments, L, d)``: the windows of text ``k`` are
        ``starts[k]:ends[k]``, in window order; ``counts`` are the content tokens each window
        counts and ``totals`` their sum per text.
    """

    name: str
    reduce: Callable
    combine: Callable


def _weighted_mean(part: np.ndarray, starts, ends, counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Windows' means combined into the text's, each weighted by the content tokens it counts (in float32)."""
    weighted = part.astype(np.float32) * counts[:, :, None, None]
    return np.add.reduceat(weighted, starts, axis=0) / np.maximum(totals, 1)[:, :, None, None]


def _max_of_counted(hidden, rows, first, last, content, count):
    return pool_max(hidden, content).masked_fill_((count == 0)[:, None], 0.0)  # marked -inf once narrowed


#: Every kind, by name.
KIND_RULES = {
    "cls": Kind("cls", lambda hidden, rows, first, last, content, count: hidden[rows, first].float(),
                lambda part, starts, ends, counts, totals: part[starts]),
    "last": Kind("last", lambda hidden, rows, first, last, content, count: hidden[rows, last].float(),
                 lambda part, starts, ends, counts, totals: part[ends - 1]),
    "mean": Kind("mean", lambda hidden, rows, first, last, content, count:
                 pool_sum(hidden, content).div_(count.clamp(min=1)[:, None]), _weighted_mean),
    "max": Kind("max", _max_of_counted,
                lambda part, starts, ends, counts, totals: np.maximum.reduceat(part, starts, axis=0)),
}
#: The per-layer vectors kept for each text, in this order.
KINDS = tuple(KIND_RULES)


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
    checked : bool
        Whether the values and the pooler are known to hold no infinity or NaN where a
        number belongs (checked on the device as they were narrowed); False: not known.
    """

    positions: np.ndarray
    values: np.ndarray
    kinds: tuple
    layers: tuple
    n_content: np.ndarray
    n_tokens: np.ndarray
    pooler: np.ndarray | None = None
    checked: bool = False

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


@dataclass(frozen=True)
class Request:
    """What a caller will pool, as it asks the statistics source for it.

    Attributes
    ----------
    kinds : tuple of str
        Of :data:`KINDS`, in that order (``cls`` and ``last`` always among them: they
        are cheap, and mean and max fall back on them for a text with no token of its
        own).
    layers : tuple of int
        Hidden states.
    pooler : bool
        Whether the pooler output is needed.
    """

    kinds: tuple
    layers: tuple
    pooler: bool = False


def window_statistics(
    hidden_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    content_mask: torch.Tensor,
    kinds: Sequence[str] = KINDS,
    bounds: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    check: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce some hidden states of a padded batch of windows to each window's statistics, on their device.

    Every window comes out finished: a window that is a whole text (most are) holds
    exactly the text's statistics, in the ``dtype`` they are shipped and kept in, so
    the host has nothing left to compute for it; the windows of a long text combine
    with :func:`finish_texts`. No reduction needs atomics: a text gives the same
    numbers run to run.

    Parameters
    ----------
    hidden_states : iterable of Tensor of shape (n, t, d)
        The hidden states wanted, in order; each is read once, so a generator keeps
        one at a time in memory.
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
    dtype : torch.dtype, default=torch.float32
        What the values are narrowed to (computed in float32 either way).
    check : bool, default=False
        Flag windows holding an infinity or a NaN where a number belongs once
        narrowed (a float16 overflow, or a model that overflowed): an empty segment's
        ``-inf`` maximum is not one.

    Returns
    -------
    values : Tensor of shape (n, segments, len(kinds), len(hidden_states), d), ``dtype``
        ``mean`` the average over the window's counted content tokens (0 where it
        counts none), ``max`` their maximum (``-inf`` where it counts none).
    extras : Tensor of shape (n, segments + 1), float32
        The content tokens each segment of each window counts, then 1 for a window
        flagged by ``check`` (0 otherwise, and always 0 without it): one small array,
        copied to the host with the values.
    """
    real = attention_mask.bool()
    n = real.shape[0]
    rows = torch.arange(n, device=real.device)
    if bounds is None:
        bounds = torch.stack([torch.zeros_like(rows), real.long().sum(dim=1) - 1], dim=1)[:, None]
    n_segments = bounds.shape[1]
    extras = torch.zeros((n, n_segments + 1), dtype=torch.float32, device=real.device)
    segments = []
    for segment in range(n_segments):
        content = (content_mask == segment + 1) & real
        extras[:, segment] = content.sum(dim=1)
        segments.append((content, bounds[:, segment, 0], bounds[:, segment, 1], extras[:, segment]))
    chunks = []
    for hidden in hidden_states:  # each read once (a packed batch's are laid out as they are read)
        layer = torch.stack([
            torch.stack([KIND_RULES[kind].reduce(hidden, rows, first, last, content, count) for kind in kinds], dim=1)
            for content, first, last, count in segments
        ], dim=1).to(dtype)  # (n, segments, kinds, d)
        if check:
            extras[:, -1] += (~layer.isfinite()).flatten(1).any(dim=1)
        chunks.append(layer)
    values = torch.stack(chunks, dim=3)
    if "max" in kinds:
        empty = extras[:, :n_segments] == 0  # (n, segments)
        values[:, :, list(kinds).index("max")].masked_fill_(empty[:, :, None, None], float("-inf"))
    return values, extras


def finish_texts(
    window_values: np.ndarray,
    window_content: np.ndarray,
    text_of_window: np.ndarray,
    n_texts: int,
    kinds: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Combine the windows of long texts into the texts' statistics.

    Parameters
    ----------
    window_values : ndarray of shape (n_windows, segments, len(kinds), L, d)
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
        ``cls`` from each text's first window, ``last`` from its last; means
        averaged, each window weighted by the content tokens it counts; maxima
        combined (``-inf`` where a segment has no content token).
    n_content : ndarray of shape (n_texts, segments)
    """
    window_content = np.asarray(window_content)
    starts = np.searchsorted(text_of_window, np.arange(n_texts))
    ends = np.append(starts[1:], len(text_of_window))
    if not n_texts:
        return (np.zeros((0, *window_values.shape[1:]), np.float32),
                np.zeros((0, window_content.shape[1]), np.int64))
    n_content = np.add.reduceat(window_content, starts, axis=0)
    values = np.empty((n_texts, *window_values.shape[1:]), dtype=np.float32)
    for position, kind in enumerate(kinds):
        values[:, :, position] = KIND_RULES[kind].combine(window_values[:, :, position], starts, ends,
                                                          window_content, n_content)
    return values, n_content.astype(np.int64)
