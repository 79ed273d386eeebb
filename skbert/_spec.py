"""How a fitted estimator turns statistics into its output: the pooling spec.

:class:`PoolingSpec` is made from the estimator's fitted attributes and parameters
(``BertEmbedder._pooling``), as scikit-learn's vectorizers interpret their parameters
once in ``build_analyzer``, and carries everything after the statistics: what it asks
of the statistics source (:attr:`PoolingSpec.request`), its columns' names and width,
how it pools (every mode from the same statistics, exactly: see
:mod:`skbert._statistics`), and what of it shapes the output (:meth:`PoolingSpec.keyed`).

No function here knows about scikit-learn, the model or the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ._layers import aggregate_layers, describe_layers
from ._pooling import SEGMENT_CHOICES
from ._statistics import KINDS, Request, Statistics, as_float32


@dataclass(frozen=True)
class PoolingSpec:
    """Pooling modes, layers and segments, as fitted.

    Attributes
    ----------
    modes : tuple of str
        Base pooling modes, in output order (``"mean_max"`` expanded).
    layer_indices : tuple of int
        Hidden states pooled.
    aggregation : {"concat", "mean", "sum"}
        How the selected layers combine.
    include_special_tokens : bool
        Whether mean and max count the special tokens.
    segments : tuple of str
        What of a sentence pair each block covers (``("joint",)`` for single texts).
    shared_boundary : bool
        Whether one special token closes A and opens B (the tokenizer's pair layout).
    hidden_size : int
        The model's width.
    normalize : bool
        Whether each output row is scaled to unit length.
    """

    modes: tuple
    layer_indices: tuple
    aggregation: str
    include_special_tokens: bool
    segments: tuple
    shared_boundary: bool
    hidden_size: int
    normalize: bool = False

    @property
    def request(self) -> Request:
        """What it needs of the statistics source: the kinds, hidden states and whether the pooler."""
        return Request(kinds_needed(self.modes), tuple(self.layer_indices), "pooler" in self.modes)

    def feature_names(self) -> list[str]:
        """Column names: segment (unless joint), pooling mode, layer(s), dimension.

        E.g. ``"mean_layer12_0"``, ``"max_layers9+10+11+12_mean_0"`` for averaged
        layers, or ``"abs_diff_mean_layer6_0"`` for a pair's sides compared.
        """
        layer_labels = describe_layers(tuple(self.layer_indices), self.aggregation)
        labels = [
            f"{'' if segment == 'joint' else segment + '_'}{mode}_{label}"
            for segment in self.segments
            for mode in self.modes
            for label in layer_labels
        ]
        return [f"{label}_{j}" for label in labels for j in range(self.hidden_size)]

    @property
    def width(self) -> int:
        """Output columns."""
        per_block = self.hidden_size * len(describe_layers(tuple(self.layer_indices), self.aggregation))
        return len(self.segments) * len(self.modes) * per_block

    def pool(self, statistics: Statistics) -> np.ndarray:
        """Every segment choice and pooling mode, layers combined, blocks concatenated in :meth:`feature_names`
        order (rows not yet normalised: :meth:`finish` does that over the whole output).

        Returns
        -------
        ndarray of shape (n, width), float32
        """
        blocks = [pool_segment(statistics, segment, mode, self.layer_indices, self.aggregation,
                               self.include_special_tokens, self.shared_boundary)
                  for segment in self.segments for mode in self.modes]
        return np.concatenate(blocks, axis=1)

    def finish(self, output: np.ndarray) -> np.ndarray:
        """The pooled rows as handed out: scaled to unit length (in place) with ``normalize``."""
        if self.normalize:
            output /= np.maximum(np.linalg.norm(output, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return output

    def keyed(self) -> dict:
        """Everything that shapes the output beyond the encoder's numbers, by name (for a record of how an
        output was made, beside :func:`~skbert._options.numbers_fingerprint`)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


def kinds_needed(modes: Sequence[str]) -> tuple[str, ...]:
    """Which of :data:`~skbert._statistics.KINDS` some pooling modes are computed from.

    ``cls`` and ``last`` are always included: they are cheap, and mean and max fall
    back on them for a text with no token of its own (an empty string).

    Parameters
    ----------
    modes : sequence of str
        Base pooling modes (``"mean_max"`` expanded).

    Returns
    -------
    tuple of str
        In :data:`~skbert._statistics.KINDS` order.
    """
    return tuple(kind for kind in KINDS if kind in ("cls", "last") or kind in modes)


def pool_statistics(
    statistics: Statistics, mode: str, layer_indices: Sequence[int], include_special_tokens: bool,
    segment: int | None = None, shared_boundary: bool = True,
):
    """Compute one pooling mode for some layers from :class:`~skbert._statistics.Statistics`.

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


def pool_segment(
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
