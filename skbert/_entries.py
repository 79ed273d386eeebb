"""Cache entries: what is kept of each text, its key, and the conversions to and from batches.

An entry holds a text's :data:`~skbert._statistics.KINDS` for every hidden state up
to the deepest one the encoding ran to (every one, unless the call that encoded it
stopped the encoder early: :attr:`Block.hidden`), per segment for a sentence pair,
its pooler output (if the model has one and every layer ran), its
content-token counts and its full token count: everything any pooling mode, choice
of layers up to that depth, or aggregation is computed from, and nothing that can be
derived (see :mod:`skbert._statistics`). A look-up that reads a deeper layer than an
entry holds misses, and the deeper entry encoded then replaces it.

Entries live in :class:`Block` s, one row per text, as the encoder produced them:
a batch of texts is encoded, stored, read back and handed out as a few arrays,
never as one Python object per text. That is what keeps a cache hit to a few
microseconds (a disk read is one blob and one checksum per block; a pooled batch is
one gather per block), which matters when the encoder is fast (a GPU, a small
model) and the cache is asked for millions of texts.

Values are kept in 16 bits (float16) unless the encoder asked for float32: a mean
and a maximum of LayerNorm outputs sit well inside float16's range, and its 11-bit
significand keeps every pooled vector within cosine 0.99999 of the float32 one
(tested). A batch whose values would overflow float16 is kept in float32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._statistics import KINDS, Statistics

#: Bumped whenever what an entry holds or how it is stored changes.
FORMAT_VERSION = 4

#: Memory an entry costs beyond its arrays (its key and its place in the memory tier's index).
ROW_OVERHEAD = 160


@dataclass(eq=False)
class Block:
    """The entries of some texts, one row per text.

    Attributes
    ----------
    keys : list of bytes
        Each row's 16-byte key (:func:`text_key`).
    values : ndarray of shape (n, segments, len(KINDS), depth + 1, d), float16 or float32
        One segment for single texts, two for sentence pairs; hidden states ``0..depth``
        (``depth`` is the model's last layer unless the encoding stopped earlier: see
        :attr:`hidden`).
    n_content : ndarray of int64, shape (n, segments)
    n_tokens : ndarray of int64, shape (n,)
        Each text's full length in tokens, before truncation or windowing.
    pooler : ndarray of shape (n, d) or None
    on_disk : bool
        Whether a disk tier holds these rows (or has them queued), so they need not be
        written again.
    live : int
        Rows of this block the memory tier holds (kept by :class:`~skbert._cache.MemoryTier`).
    may_be_non_finite : bool
        False where making it ruled out any infinity or NaN (:func:`non_finite_rows`).
    """

    keys: list
    values: np.ndarray
    n_content: np.ndarray
    n_tokens: np.ndarray
    pooler: np.ndarray | None = None
    on_disk: bool = False
    live: int = 0
    may_be_non_finite: bool = field(default=True, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def array_bytes(self) -> int:
        """Bytes of its arrays."""
        pooler = 0 if self.pooler is None else self.pooler.nbytes
        return self.values.nbytes + self.n_content.nbytes + self.n_tokens.nbytes + pooler

    @property
    def hidden(self) -> int:
        """Hidden states each row holds (``0 .. hidden - 1``): a look-up that reads a higher one misses."""
        return self.values.shape[3]

    @property
    def shape(self) -> tuple:
        """What rows must share to sit in one block: the per-row value shape and dtype, and the pooler."""
        return self.values.shape[1:], self.values.dtype, self.pooler is not None

    def take(self, rows) -> Block:
        """A new block of some rows (copies), in that order."""
        rows = np.asarray(rows, dtype=np.intp)
        return Block(
            [self.keys[r] for r in rows], self.values[rows], self.n_content[rows], self.n_tokens[rows],
            None if self.pooler is None else self.pooler[rows], self.on_disk,
        )


def concatenate(blocks: Sequence[Block]) -> Block:
    """A new block of the rows of several blocks of the same :attr:`Block.shape` (float32 if any is), on no tier."""
    if len(blocks) == 1:
        return Block(**{**blocks[0].__dict__, "on_disk": False, "live": 0})
    pooler = None if blocks[0].pooler is None else np.concatenate([b.pooler for b in blocks])
    return Block(
        [key for b in blocks for key in b.keys], np.concatenate([b.values for b in blocks]),
        np.concatenate([b.n_content for b in blocks]), np.concatenate([b.n_tokens for b in blocks]), pooler,
    )


def gather(located: Sequence[tuple[Block, int]]) -> tuple[np.ndarray, list[Block]]:
    """Group located rows by the block that holds them and take each group out.

    Parameters
    ----------
    located : sequence of (Block, int)

    Returns
    -------
    order : ndarray of int
        For each row of the returned blocks, in order, its position in ``located``.
    parts : list of Block
        One per distinct block, holding the rows asked for in the block's order (the
        block itself, not a copy, where all its rows are asked for).
    """
    groups: dict[int, tuple[Block, list]] = {}
    for position, (block, row) in enumerate(located):
        group = groups.get(id(block))
        if group is None:
            group = groups[id(block)] = (block, [])
        group[1].append((row, position))
    parts, order = [], []
    for block, rows in groups.values():
        rows.sort()
        order.extend(position for _, position in rows)
        whole = len(rows) == len(block) and all(row == i for i, (row, _) in enumerate(rows))  # each row once
        parts.append(block if whole else block.take([row for row, _ in rows]))
    return np.asarray(order, dtype=np.int64), parts


def text_key(fingerprint: bytes, text) -> bytes:
    """The 16-byte key of a text, or of a sentence pair, under an encoder fingerprint.

    A pair is hashed with its own personalisation (so no single text shares its key)
    and with the length of A in front (so ``("a b", "c")`` and ``("a", "b c")`` differ).
    """
    return text_keys(fingerprint, [text])[0]


def text_keys(fingerprint: bytes, texts) -> list[bytes]:
    """:func:`text_key` of each of ``texts`` (one keyed hash set up, then copied per text)."""
    single = hashlib.blake2b(digest_size=16, key=fingerprint[:64])
    pair = hashlib.blake2b(digest_size=16, key=fingerprint[:64], person=b"skbert-pair")
    keys = []
    for text in texts:
        if isinstance(text, tuple):
            first, second = (side.encode("utf-8", "surrogatepass") for side in text)
            digest = pair.copy()
            digest.update(len(first).to_bytes(8, "little") + first + second)
        else:
            digest = single.copy()
            digest.update(text.encode("utf-8", "surrogatepass"))
        keys.append(digest.digest())
    return keys


def non_finite_rows(block: Block) -> np.ndarray | None:
    """Rows holding a NaN or an infinity where a number belongs (the model overflowed, as float16 can on
    cards without bfloat16), or None where there is none.

    A segment without a token of its own has ``-inf`` as its maximum by design: that is
    not one. A block that :func:`block_from_statistics` found free of any infinity or
    NaN while narrowing it (the common case) is not looked at again.
    """
    if not block.may_be_non_finite:
        return None
    values = torch.from_numpy(np.ascontiguousarray(block.values))
    bad = ~values.isfinite()
    maximum = KINDS.index("max")
    empty = torch.from_numpy(block.n_content == 0)[:, :, None, None]  # (n, segments, 1, 1)
    bad[:, :, maximum] &= ~(empty & (values[:, :, maximum] == float("-inf")))
    rows = bad.flatten(1).any(dim=1)
    if block.pooler is not None:
        rows |= ~torch.from_numpy(np.ascontiguousarray(block.pooler)).isfinite().all(dim=1)
    return rows.numpy() if bool(rows.any()) else None


def _narrow(values: np.ndarray | None, dtype: np.dtype, checked: bool = False) -> tuple[np.ndarray | None, bool]:
    """``values`` in ``dtype`` (None if some finite value would overflow it), and whether they may hold an
    infinity or a NaN (False only where that was ruled out on the way, or by the encoder: ``checked``).

    float16 is converted by torch and checked on its bits (numpy's float16
    arithmetic is ~10x slower on a CPU).
    """
    if values is None:
        return None, False
    if dtype == values.dtype:
        return values, not checked
    wide = np.ascontiguousarray(values, dtype=np.float32)
    narrow = torch.from_numpy(wide).to(torch.float16).numpy()
    magnitude = narrow.view(np.uint16) & 0x7FFF  # exponent and significand bits
    if magnitude.max(initial=0) < 0x7C00:  # no infinity (and no NaN) at all: the common case
        return narrow, False
    overflowed = np.count_nonzero(magnitude == 0x7C00) != np.count_nonzero(np.isinf(wide))
    return (None if overflowed else narrow), True


def block_from_statistics(keys: list[bytes], statistics: Statistics, dtype) -> Block:
    """Turn a freshly encoded batch (every kind, every hidden state) into a block of ``dtype``.

    Parameters
    ----------
    keys : list of bytes
        One per row.
    statistics : Statistics
        Holding :data:`KINDS` for hidden states ``0..depth`` in order: float32, or
        already ``dtype`` (as the encoder ships a 16-bit store's entries: kept as
        they are, with no copy and, where the encoder checked them, no second scan).
    dtype : numpy dtype
        float16 or float32; a batch whose values would overflow float16 is kept in
        float32.

    Returns
    -------
    Block
        What the cache keeps, and what is handed out (see :func:`statistics_from_block`).
    """
    if statistics.kinds != KINDS or statistics.layers != tuple(range(statistics.values.shape[3])):
        raise ValueError("cache entries need every kind of statistic for every hidden state")
    checked = statistics.checked
    (values, odd_values), (pooler, odd_pooler) = (_narrow(statistics.values, np.dtype(dtype), checked),
                                                  _narrow(statistics.pooler, np.dtype(dtype), checked))
    if values is None or (pooler is None) != (statistics.pooler is None):  # would overflow: keep float32
        (values, odd_values), (pooler, odd_pooler) = ((statistics.values.astype(np.float32), True),
                                                      _narrow(statistics.pooler, np.dtype(np.float32)))
    block = Block(list(keys), values, np.asarray(statistics.n_content, dtype=np.int64),
                  np.asarray(statistics.n_tokens, dtype=np.int64), pooler)
    block.may_be_non_finite = odd_values or odd_pooler
    return block


def statistics_from_block(positions, block: Block) -> Statistics:
    """A block's rows as :class:`Statistics` of every kind and hidden state (no copy).

    Parameters
    ----------
    positions : array-like of int
        Which texts the rows are.
    block : Block
    """
    return Statistics(np.asarray(positions), block.values, KINDS, tuple(range(block.values.shape[3])),
                      block.n_content, block.n_tokens, block.pooler)
