"""Texts in, statistics out: the one place that decides what is encoded, cached and read back.

:class:`StatisticsSource` dedupes the texts, looks them up in the store (memory,
then disk), encodes only the misses, stores what it encoded batch by batch (so an
interrupted call resumes from there) and hands out :class:`~skbert._statistics.Statistics`
holding at least the kinds and hidden states the caller will pool: with a store,
every kind and every hidden state up to the deepest the entry holds, as the store's
blocks hold them (no copy, no selection; pooling picks what it needs); with no store,
only those kinds and hidden states, computed in the first place.

A miss is encoded to the highest layer the request reads, where the encoder can stop
there (:meth:`~skbert._models.LoadedModel.stops_at`), and every hidden state up to it is stored; an entry that holds fewer hidden states than
a request reads is a miss, and the deeper entry encoded then replaces it.

Cached or freshly encoded, a text's statistics are handed out as the store keeps
them (16-bit unless float32 was asked for), so a text gives the same vector whether
or not it was in the cache. A text whose statistics hold a NaN or an infinity (a
16-bit overflow in the model) is handed out but never stored, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._batching import n_segments
from ._cache import Store
from ._encoding import CHUNK_SIZE, EncodingReport, iter_statistics
from ._entries import (
    block_from_statistics,
    concatenate,
    gather,
    non_finite_rows,
    statistics_from_block,
    text_keys,
)
from ._models import LoadedModel
from ._options import EncodingOptions, numbers_fingerprint
from ._statistics import KINDS, Request, Statistics
from ._warnings import warn_user

#: Keys looked up (and cached texts handed out) at a time: as many as the encoder
#: sorts by length together, so a stored block (an encoded batch) is read once by a
#: pass over the same texts; fewer where entries are large.
LOOKUP_BATCH = CHUNK_SIZE
LOOKUP_BYTES = 128 * 2**20
JOIN_BELOW = 32  # cached blocks with fewer rows are joined before pooling


def deduplicate(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-seen order, and each input's position among them."""
    positions: dict[str, int] = {}
    inverse = np.fromiter((positions.setdefault(t, len(positions)) for t in texts), np.int64, len(texts))
    return list(positions), inverse


class StatisticsSource:
    """Statistics of texts, from the store where it has them, from the model where not.

    Parameters
    ----------
    loaded : LoadedModel
    store : Store or None
        None: encode everything, computing only what is requested.
    options : EncodingOptions
        How to encode, and how entries are kept (``options.stored``).

    Attributes
    ----------
    fingerprint : bytes
        What keys are made under (:func:`~skbert._options.numbers_fingerprint`);
        empty without a store.
    """

    def __init__(self, loaded: LoadedModel, store: Store | None, options: EncodingOptions):
        self.loaded = loaded
        self.store = store
        self.options = options
        self.stored_dtype = np.dtype(options.stored)
        self.fingerprint = b"" if store is None else numbers_fingerprint(loaded, options)

    def statistics(
        self, texts: list[str], request: Request, report: EncodingReport
    ) -> tuple[int, np.ndarray, Iterator[Statistics]]:
        """The statistics of ``texts``, each distinct text looked up or encoded once.

        Parameters
        ----------
        texts : list of str
            Texts, repeats allowed.
        request : Request
        report : EncodingReport
            Counts texts served from the store and texts encoded.

        Returns
        -------
        n_unique : int
            Distinct texts.
        inverse : ndarray of shape (len(texts),)
            Each text's position among the distinct ones.
        batches : iterator of Statistics
            Every distinct text exactly once, in no particular order; ``positions``
            index the distinct texts.
        """
        unique, inverse = deduplicate(texts)
        return len(unique), inverse, self._statistics(unique, request, report)

    def _statistics(self, texts: list[str], request: Request, report: EncodingReport) -> Iterator[Statistics]:
        if self.store is None:
            yield from iter_statistics(
                self.loaded, texts, layers=request.layers, kinds=request.kinds,
                with_pooler=request.pooler, report=report, options=self.options,
            )
            return
        try:
            yield from self._cached(texts, request, report)
        finally:
            self.store.flush()

    def _cached(self, texts, request: Request, report: EncodingReport) -> Iterator[Statistics]:
        keys = text_keys(self.fingerprint, texts)
        segments = n_segments(texts)
        reads = self.loaded.reads(request.layers, request.pooler)
        depth = self.loaded.stops_at(reads)  # a miss is encoded this deep, and every hidden state up to it stored
        width = self.loaded.hidden_size
        row_bytes = self.stored_dtype.itemsize * segments * len(KINDS) * (self.loaded.n_layers + 1) * width
        step = max(1, min(LOOKUP_BATCH, LOOKUP_BYTES // row_bytes))
        needed = reads + 1  # hidden states an entry must hold
        missing = []
        for start in range(0, len(keys), step):
            found = self.store.get_many(keys[start : start + step], hidden=needed)
            hits = [i for i, place in enumerate(found) if place is not None]
            missing.extend(start + i for i, place in enumerate(found) if place is None)
            if hits:
                report.n_cache_hits += len(hits)
                yield from _handed_out(start + np.asarray(hits), [found[i] for i in hits])
        if not missing:
            return
        missing = np.asarray(missing)
        for batch in iter_statistics(
            self.loaded, [texts[i] for i in missing], layers=tuple(range(depth + 1)), kinds=KINDS,
            with_pooler=self.loaded.has_pooler and depth == self.loaded.n_layers, report=report,
            options=self.options, dtype=self.stored_dtype.name,
        ):
            positions = missing[batch.positions]
            block = block_from_statistics([keys[p] for p in positions], batch, self.stored_dtype)
            bad = non_finite_rows(block)
            if self.options.runtime.fell_back:  # another runtime's numbers: not under this one's keys
                pass
            elif bad is None:
                self.store.put(block)
            else:  # handed out as they are, never kept: the next call encodes them again
                _warn_non_finite(int(bad.sum()), self.loaded)
                if not bad.all():
                    self.store.put(block.take(np.flatnonzero(~bad)))
            yield statistics_from_block(positions, block)


def _warn_non_finite(n: int, loaded: LoadedModel) -> None:
    warn_user(f"the model gave {n} text(s) NaN or infinite values ({loaded.dtype} on {loaded.device}: float16 "
              "overflows on some models); their rows hold them, and they are not cached. precision='float32' "
              "(or 'bfloat16' where the hardware has it) avoids the overflow.")


def _handed_out(positions: np.ndarray, located: list) -> Iterator[Statistics]:
    """Cached rows as statistics: a large block as it is, small ones joined (fewer, larger batches to pool), those
    of one shape together (entries of different depths, or a float32 block among float16 ones, are not joined)."""
    order, parts = gather(located)
    small: dict[tuple, tuple[list, list]] = {}
    done = 0
    for part in parts:
        rows = positions[order[done : done + len(part)]]
        done += len(part)
        if len(part) >= JOIN_BELOW:
            yield statistics_from_block(rows, part)
        else:
            blocks, block_rows = small.setdefault(part.shape, ([], []))
            blocks.append(part)
            block_rows.append(rows)
    for blocks, block_rows in small.values():
        yield statistics_from_block(np.concatenate(block_rows), concatenate(blocks))
