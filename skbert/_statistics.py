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
    """One kind of statistic, defined once: how a window's is computed on the device, how a long text's
    windows combine, and how the combination is finished into the text's.

    Attributes
    ----------
    name : str
    reduce : callable
        ``(hidden (n, t, d), rows, first (n,), last (n,), content (n, t) bool) -> (n, d)`` float32.
    combine : callable
        ``(per_window (n_windows, ...), starts, ends) -> (n_texts, ...)``: the windows of text
        ``k`` are ``starts[k]:ends[k]``, in window order.
    finish : callable
        ``(combined (n_texts, segments, L, d), n_content (n_texts, segments))``: in place.
    """

    name: str
    reduce: Callable
    combine: Callable
    finish: Callable = lambda combined, n_content: None


def _divide(combined: np.ndarray, n_content: np.ndarray) -> None:
    combined /= np.maximum(n_content, 1)[:, :, None, None]


def _none_is_minus_infinity(combined: np.ndarray, n_content: np.ndarray) -> None:
    combined[n_content == 0] = -np.inf


#: Every kind, by name. ``mean`` is kept as a sum until the windows are combined.
KIND_RULES = {
    "cls": Kind("cls", lambda hidden, rows, first, last, content: hidden[rows, first].float(),
                lambda part, starts, ends: part[starts]),
    "last": Kind("last", lambda hidden, rows, first, last, content: hidden[rows, last].float(),
                 lambda part, starts, ends: part[ends - 1]),
    "mean": Kind("mean", lambda hidden, rows, first, last, content: pool_sum(hidden, content),
                 lambda part, starts, ends: np.add.reduceat(part, starts, axis=0), _divide),
    "max": Kind("max", lambda hidden, rows, first, last, content: pool_max(hidden, content),
                lambda part, starts, ends: np.maximum.reduceat(part, starts, axis=0), _none_is_minus_infinity),
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
) -> torch.Tensor:
    """Reduce some hidden states of a padded batch of windows, on their device.

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
    segments = [((content_mask == segment + 1) & real, bounds[:, segment, 0], bounds[:, segment, 1])
                for segment in range(bounds.shape[1])]
    per_layer = []
    for hidden in hidden_states:  # each read once (a packed batch's are laid out as they are read)
        per_layer.append(torch.stack([
            torch.stack([KIND_RULES[kind].reduce(hidden, rows, first, last, content) for kind in kinds], dim=1)
            for content, first, last in segments
        ], dim=1))  # (n, segments, kinds, d)
    return torch.stack(per_layer, dim=3)


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
        From :func:`window_statistics`, windows of each text in window order. Handed
        over: where every window is a whole text it is finished in place and returned.
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
    if len(text_of_window) == n_texts:  # one window each (the common case): nothing to combine, no copy
        values = window_values
    else:
        values = np.empty((n_texts, *window_values.shape[1:]), dtype=np.float32)
        for position, kind in enumerate(kinds):
            values[:, :, position] = KIND_RULES[kind].combine(window_values[:, :, position], starts, ends)
    for position, kind in enumerate(kinds):
        KIND_RULES[kind].finish(values[:, :, position], n_content)  # a view: finished in place
    return values, n_content
