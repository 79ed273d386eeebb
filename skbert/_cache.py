"""A content-addressed store of what the encoder produced for each text.

An entry holds one text's per-layer statistics (see
:func:`~skbert._pooling.layer_statistics`), its token counts and its pooler
output: everything any pooling mode, layer choice or aggregation is computed from.
Its key is a hash of the text and of an *encoder fingerprint* that covers
everything that changes those numbers (the weights and tokenizer, ``max_length``,
the long-text strategy and stride, the device type and precision), never the
pooling or layer parameters, which are applied afterwards.

Two stores:

- :class:`MemoryStore`: in process memory, bounded by a byte budget, least
  recently used entries evicted first. One per process, shared by every estimator
  and clone.
- :class:`DiskStore`: one file per entry under a directory, shared by processes.
  Writes go to a temporary file that is renamed into place, so a killed writer
  never leaves a partial entry and concurrent writers never mix; every entry
  carries its key and a checksum, so a corrupt or truncated file is detected,
  removed and recomputed. It keeps recently used entries in a memory store too.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_MAGIC = b"SKBC\x00\x01"
# magic, key, checksum, n_layers + 1, d, n_content, n_all, n_tokens, has_pooler
_HEADER = struct.Struct("<6s16s16siiqqq?")


@dataclass
class Entry:
    """What one text encoded to.

    Attributes
    ----------
    statistics : ndarray of shape (len(STATISTICS), n_layers + 1, d), float32
    n_content : int
    n_all : int
    pooler : ndarray of shape (d,) or None
    n_tokens : int
        The text's full length in tokens, before truncation or windowing.
    """

    statistics: np.ndarray
    n_content: int
    n_all: int
    pooler: np.ndarray | None
    n_tokens: int

    @property
    def nbytes(self) -> int:
        """Memory the entry's arrays take."""
        return self.statistics.nbytes + (0 if self.pooler is None else self.pooler.nbytes) + 64


def text_key(fingerprint: bytes, text: str) -> bytes:
    """The 16-byte key of a text under an encoder fingerprint."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=fingerprint[:64]).digest()


@dataclass
class CacheStats:
    """Counters of a store since it was made (or last cleared).

    Attributes
    ----------
    hits, misses : int
        Look-ups that found an entry, and that did not.
    entries, bytes, max_bytes : int
        What the in-memory part holds now, and its budget.
    evictions : int
        Entries dropped from memory to stay within the budget.
    disk_reads, disk_writes, corrupt : int
        For a disk store: entries read from and written to disk, and entries found
        damaged (and removed).
    """

    hits: int = 0
    misses: int = 0
    entries: int = 0
    bytes: int = 0
    max_bytes: int = 0
    evictions: int = 0
    disk_reads: int = 0
    disk_writes: int = 0
    corrupt: int = 0


class MemoryStore:
    """An LRU store of entries in process memory, bounded by a byte budget.

    Parameters
    ----------
    max_bytes : int
        Most bytes of entries held; the least recently used go first. An entry
        larger than the budget is not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats(max_bytes=self.max_bytes)

    def get(self, key: bytes) -> Entry | None:
        """Return the entry under ``key`` (and mark it recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry

    def put(self, key: bytes, entry: Entry) -> None:
        """Store an entry, evicting the least recently used ones beyond the budget."""
        size = entry.nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                self._sync()
                return
            self._entries[key] = entry
            self._bytes += size
            self._evict_to_budget()

    def resize(self, max_bytes: int) -> None:
        """Change the budget, evicting as needed."""
        with self._lock:
            self.max_bytes = self.stats.max_bytes = int(max_bytes)
            self._evict_to_budget()

    def _evict_to_budget(self) -> None:
        """Drop least recently used entries until the budget holds (call with the lock held)."""
        while self._bytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes
            self.stats.evictions += 1
        self._sync()

    def info(self) -> CacheStats:
        """A copy of the counters."""
        with self._lock:
            return CacheStats(**self.stats.__dict__)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.stats = CacheStats(max_bytes=self.max_bytes)

    def _sync(self) -> None:
        self.stats.entries = len(self._entries)
        self.stats.bytes = self._bytes


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def encode_entry(key: bytes, entry: Entry) -> bytes:
    """Serialise an entry with its key and a checksum of its payload."""
    payload = np.ascontiguousarray(entry.statistics, dtype=np.float32).tobytes()
    if entry.pooler is not None:
        payload += np.ascontiguousarray(entry.pooler, dtype=np.float32).tobytes()
    _, n_layers, width = entry.statistics.shape
    header = _HEADER.pack(
        _MAGIC,
        key,
        _checksum(payload),
        n_layers,
        width,
        entry.n_content,
        entry.n_all,
        entry.n_tokens,
        entry.pooler is not None,
    )
    return header + payload


def decode_entry(key: bytes, blob: bytes, n_statistics: int) -> Entry | None:
    """Read back an entry; None if it is truncated, damaged or for another key."""
    if len(blob) < _HEADER.size:
        return None
    magic, stored_key, checksum, n_layers, width, n_content, n_all, n_tokens, has_pooler = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size :]
    expected = 4 * width * (n_statistics * n_layers + (1 if has_pooler else 0))
    if magic != _MAGIC or stored_key != key or len(payload) != expected or _checksum(payload) != checksum:
        return None
    values = np.frombuffer(payload, dtype=np.float32)
    split = n_statistics * n_layers * width
    statistics = values[:split].reshape(n_statistics, n_layers, width)
    pooler = values[split:] if has_pooler else None
    return Entry(statistics, int(n_content), int(n_all), pooler, int(n_tokens))


class DiskStore:
    """Entries as files under a directory, shared between processes.

    Parameters
    ----------
    directory : str or path-like
        Created if missing.
    n_statistics : int
        Number of statistics per layer (to check entries read back).
    memory : MemoryStore
        Recently used entries, kept in front of the disk.
    """

    def __init__(self, directory, n_statistics: int, memory: MemoryStore):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_statistics = n_statistics
        self.memory = memory
        self.stats = CacheStats()

    def _path(self, key: bytes) -> Path:
        name = key.hex()
        return self.directory / name[:2] / f"{name}.skbc"

    def get(self, key: bytes) -> Entry | None:
        """Return the entry under ``key`` from memory or disk, or None."""
        entry = self.memory.get(key)
        path = self._path(key)
        if entry is not None:
            self.stats.hits += 1
            if not path.exists():  # computed under the memory cache: make the disk cache complete
                self._write(path, key, entry)
            return entry
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        entry = decode_entry(key, blob, self.n_statistics)
        if entry is None:  # damaged: remove it, and let it be recomputed
            self.stats.corrupt += 1
            self.stats.misses += 1
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return None
        self.stats.hits += 1
        self.stats.disk_reads += 1
        self.memory.put(key, entry)
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        """Write an entry atomically (temporary file, then rename) and keep it in memory."""
        self._write(self._path(key), key, entry)
        self.memory.put(key, entry)

    def _write(self, path: Path, key: bytes, entry: Entry) -> None:
        path.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(encode_entry(key, entry))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        self.stats.disk_writes += 1

    def info(self) -> CacheStats:
        """Counters, with the memory part's size."""
        stats = CacheStats(**self.stats.__dict__)
        stats.entries, stats.bytes, stats.max_bytes = (
            self.memory.stats.entries,
            self.memory.stats.bytes,
            self.memory.max_bytes,
        )
        stats.evictions = self.memory.stats.evictions
        return stats


def encoder_fingerprint(model_fingerprint: bytes, **settings) -> bytes:
    """Combine a model's fingerprint with the settings that change its numbers.

    Parameters
    ----------
    model_fingerprint : bytes
        From :func:`~skbert._models.model_fingerprint`.
    **settings
        Everything else that changes what a text encodes to (``max_length``,
        ``long_text``, ``stride``, device type, dtype).

    Returns
    -------
    bytes
        32 bytes.
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(model_fingerprint)
    digest.update(repr((FORMAT_VERSION, sorted(settings.items()))).encode())
    return digest.digest()


_MEMORY: MemoryStore | None = None
_DISKS: dict[str, DiskStore] = {}
_STORES_LOCK = threading.Lock()


def memory_store(max_bytes: int) -> MemoryStore:
    """The process's in-memory store, with its budget set to ``max_bytes``."""
    global _MEMORY
    with _STORES_LOCK:
        if _MEMORY is None:
            _MEMORY = MemoryStore(max_bytes)
        elif _MEMORY.max_bytes != max_bytes:
            _MEMORY.resize(max_bytes)
        return _MEMORY


def disk_store(directory, n_statistics: int, max_bytes: int) -> DiskStore:
    """The process's store for a cache directory (one per directory)."""
    memory = memory_store(max_bytes)
    path = os.path.realpath(os.fspath(directory))
    with _STORES_LOCK:
        store = _DISKS.get(path)
        if store is None:
            store = _DISKS[path] = DiskStore(path, n_statistics, memory)
        return store


def clear_memory() -> None:
    """Empty the in-memory store and reset the counters of every store."""
    with _STORES_LOCK:
        if _MEMORY is not None:
            _MEMORY.clear()
        for store in _DISKS.values():
            store.stats = CacheStats()
