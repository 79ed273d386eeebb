"""Cache entries: what is kept of one text, its key, and the conversions to and from batches.

An entry holds the text's :data:`~skbert._statistics.KINDS` for every hidden state
(per segment, for a sentence pair), its pooler output (if the model has one), its
content-token counts and its full token count: everything any pooling mode, layer choice or aggregation is computed
from, and nothing that can be derived (see :mod:`skbert._statistics`).

Values are kept in 16 bits (float16) unless the encoder asked for float32: a mean
and a maximum of LayerNorm outputs sit well inside float16's range, and its 11-bit
significand keeps every pooled vector within cosine 0.99999 of the float32 one
(tested). An entry whose values would overflow float16 is kept in float32.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ._statistics import KINDS, Statistics

#: Bumped whenever what an entry holds or how it is stored changes.
FORMAT_VERSION = 3


@dataclass(eq=False)
class Entry:
    """What one text encoded to.

    Attributes
    ----------
    values : ndarray of shape (segments, len(KINDS), n_layers + 1, d), float16 or float32
        One segment for a single text, two for a sentence pair.
    n_content : ndarray of int64, shape (segments,)
    n_tokens : int
        The text's full length in tokens, before truncation or windowing.
    pooler : ndarray of shape (d,) or None
    on_disk : bool
        Whether a disk tier holds it (or has it queued), so it need not be written again.
    """

    values: np.ndarray
    n_content: np.ndarray
    n_tokens: int
    pooler: np.ndarray | None = None
    on_disk: bool = False

    @property
    def nbytes(self) -> int:
        """Memory the entry takes (arrays, and a rough allowance for the objects)."""
        return self.values.nbytes + (0 if self.pooler is None else self.pooler.nbytes) + 200


def text_key(fingerprint: bytes, text) -> bytes:
    """The 16-byte key of a text, or of a sentence pair, under an encoder fingerprint.

    A pair is hashed with its own personalisation (so no single text shares its key)
    and with the length of A in front (so ``("a b", "c")`` and ``("a", "b c")`` differ).
    """
    if isinstance(text, tuple):
        first, second = (side.encode("utf-8", "surrogatepass") for side in text)
        data = len(first).to_bytes(8, "little") + first + second
        return hashlib.blake2b(data, digest_size=16, key=fingerprint[:64], person=b"skbert-pair").digest()
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=fingerprint[:64]).digest()


def encoder_fingerprint(model_fingerprint: bytes, **settings) -> bytes:
    """Combine a model's fingerprint with everything else that changes what is stored.

    The torch and transformers versions are part of it: a new kernel or a changed
    model implementation may change the numbers, so entries are never shared across
    versions.

    Parameters
    ----------
    model_fingerprint : bytes
        From :func:`~skbert._models.model_fingerprint`.
    **settings
        ``max_length``, ``long_text``, ``stride``, device type, compute dtype,
        stored dtype.

    Returns
    -------
    bytes
        32 bytes.
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(model_fingerprint)
    import torch
    import transformers  # looked up now: the module in sys.modules, whatever imported it first

    versions = (FORMAT_VERSION, torch.__version__, transformers.__version__)
    digest.update(repr((versions, sorted(settings.items()))).encode())
    return digest.digest()


def _narrow(values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``values`` in ``dtype``, and which rows would overflow it (those stay float32)."""
    with np.errstate(over="ignore"):  # overflow is what is looked for below
        narrow = values.astype(dtype)
    if dtype == np.float32:
        return narrow, np.zeros(len(values), dtype=bool)
    overflow = (np.isinf(narrow) & np.isfinite(values)).reshape(len(values), -1).any(axis=1)
    return narrow, overflow


def entries_from_statistics(statistics: Statistics, dtype) -> tuple[list[Entry], Statistics]:
    """Turn a freshly encoded batch (all kinds, all hidden states) into entries of ``dtype``.

    Parameters
    ----------
    statistics : Statistics
        float32, holding :data:`KINDS` for every hidden state in order.
    dtype : numpy dtype
        float16 or float32.

    Returns
    -------
    entries : list of Entry
        One per row.
    stored : Statistics
        The batch as the entries hold it (what a cache hit would give).
    """
    if statistics.kinds != KINDS or statistics.layers != tuple(range(statistics.values.shape[3])):
        raise ValueError("cache entries need every kind of statistic for every hidden state")
    dtype = np.dtype(dtype)
    values, overflow = _narrow(statistics.values, dtype)
    pooler = None
    if statistics.pooler is not None:
        pooler, pooler_overflow = _narrow(statistics.pooler, dtype)
        overflow |= pooler_overflow
    if overflow.any():  # those rows stay float32
        values, pooler = values.astype(np.float32), None if pooler is None else pooler.astype(np.float32)
        values[overflow] = statistics.values[overflow]
        if pooler is not None:
            pooler[overflow] = statistics.pooler[overflow]
    entries = []
    for row in range(len(values)):
        narrow = not overflow[row]
        entries.append(
            Entry(
                values[row].astype(dtype) if narrow else values[row].copy(),
                statistics.n_content[row].astype(np.int64),
                int(statistics.n_tokens[row]),
                None if pooler is None else (pooler[row].astype(dtype) if narrow else pooler[row].copy()),
            )
        )
    stored = Statistics(statistics.positions, values, KINDS, statistics.layers, statistics.n_content,
                        statistics.n_tokens, pooler)
    return entries, stored


def statistics_from_entries(
    positions, entries: list[Entry], kinds: tuple[str, ...], layers: tuple[int, ...]
) -> Statistics:
    """Gather entries into a batch of the kinds and hidden states asked for.

    Parameters
    ----------
    positions : sequence of int
    entries : list of Entry
    kinds : tuple of str
        In :data:`KINDS` order.
    layers : tuple of int
        Hidden states.

    Returns
    -------
    Statistics
        In the entries' dtype (float32 if any entry is).
    """
    stacked = np.stack([entry.values for entry in entries])  # one C-level copy (float32 if any entry is)
    has_pooler = all(entry.pooler is not None for entry in entries)
    every = Statistics(
        np.asarray(positions),
        stacked,
        KINDS,
        tuple(range(stacked.shape[3])),
        np.stack([entry.n_content for entry in entries]),
        np.array([entry.n_tokens for entry in entries]),
        np.stack([entry.pooler for entry in entries]) if has_pooler else None,
    )
    return every.select(kinds, layers)
