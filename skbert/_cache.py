"""The cache: a memory tier in front of a disk tier, so that a text is encoded once.

A :class:`Store` has two tiers:

- memory: the most recently used entries, within a byte budget (least recently used
  evicted first);
- disk (:class:`~skbert._disk.DiskTier`): either the user's cache directory, where
  every entry is written (shared by processes and later runs), or, for
  ``cache="memory"``, a temporary *spill* directory that receives what the memory
  tier evicts, created on the first eviction and removed when the process exits.

So a working set larger than the memory budget is read back from disk on the next
pass instead of being encoded again, which is what keeps a grid search at one
encoding pass: least-recently-used eviction alone, under a scan that revisits every
text each fold, would miss on every look-up. When the disk tier too must evict, the
store warns once with the numbers.

Stores are made once per process for each (location, memory budget, disk budget),
so every estimator with the same cache settings, clones included, shares one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ._disk import DATABASE, DiskTier, database_files_bytes, default_disk_budget, spill_tier, split_block
from ._entries import ROW_OVERHEAD, Block, concatenate, gather
from ._warnings import warn_user


@dataclass
class CacheInfo:
    """What a store holds and has done in this process.

    Attributes
    ----------
    hits, misses : int
        Look-ups that found an entry (in either tier) and that did not.
    disk_hits : int
        Hits served from the disk tier.
    memory_entries, memory_bytes, memory_max_bytes : int
        The memory tier now, and its budget.
    memory_evictions : int
        Entries dropped from memory (to the disk tier, where there is one).
    disk_entries, disk_bytes, disk_max_bytes : int
        The disk tier now (every process's entries, and their bytes) and its budget
        (which ``disk_bytes`` stays within); 0 without one.
    disk_file_bytes : int
        What the database's files really take on disk now: the database, its
        write-ahead log and its shared-memory index. The log is copied into the
        database and truncated when a call finishes and when the store closes (at
        exit too), so after a call this is ``disk_bytes`` plus SQLite's own pages.
    disk_writes, disk_evictions, corrupt : int
        Entries this process wrote to disk, entries it evicted there, and damaged
        entries it found (and deleted, to be encoded again).
    disk_path : str or None
        The database file (in a temporary directory for ``cache="memory"``).
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    memory_entries: int = 0
    memory_bytes: int = 0
    memory_max_bytes: int = 0
    memory_evictions: int = 0
    disk_entries: int = 0
    disk_bytes: int = 0
    disk_max_bytes: int = 0
    disk_file_bytes: int = 0
    disk_writes: int = 0
    disk_evictions: int = 0
    corrupt: int = 0
    disk_path: str | None = None


class MemoryTier:
    """Entries in process memory within a byte budget, least recently used evicted first.

    Entries stay in the blocks they came in (an encoded batch, a disk read); the
    tier indexes them by key and counts a block's arrays while it holds any of its
    rows, so :attr:`bytes` is what the held blocks really take. A block whose rows
    were partly evicted keeps its memory until its last row goes: under the scans the
    cache serves (every fold of a grid search reads the texts in order), rows of a
    block are used and evicted together.

    Parameters
    ----------
    max_bytes : int
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.evictions = 0
        self._index: OrderedDict[bytes, tuple[Block, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._index)

    def get_many(self, keys: list[bytes], hidden: int = 0) -> list[tuple[Block, int] | None]:
        """Where the entries under ``keys`` holding at least ``hidden`` hidden states are (None where
        absent, or too shallow); found ones become the most recent."""
        with self._lock:
            found = [self._index.get(key) for key in keys]
            for i, (key, place) in enumerate(zip(keys, found)):
                if place is not None:
                    if place[0].hidden < hidden:
                        found[i] = None
                    else:
                        self._index.move_to_end(key)
        return found

    def put(self, block: Block) -> list[tuple[bytes, Block, int]]:
        """Keep a block's rows, evicting the least recently used beyond the budget.

        Returns
        -------
        list of (key, Block, row)
            What was evicted (the new rows too, if the budget cannot hold them).
        """
        evicted = []
        with self._lock:
            # a small budget holds part of a batch (split, a copy); a batch within a quarter of it is kept as it came
            for piece in split_block(block, max(self.max_bytes // 4, 1)):
                if piece.live == 0:
                    self.bytes += piece.array_bytes
                piece.live += len(piece)
                self.bytes += ROW_OVERHEAD * len(piece)
                index = self._index
                for row, key in enumerate(piece.keys):
                    old = index.pop(key, None)
                    if old is not None:  # held already (maybe by this very block): let that row go
                        self._release(old[0])
                    index[key] = (piece, row)
                while self.bytes > self.max_bytes and self._index:
                    key, (dropped, row) = self._index.popitem(last=False)
                    self._release(dropped)
                    evicted.append((key, dropped, row))
            self.evictions += len(evicted)
        return evicted

    def _release(self, block: Block) -> None:
        block.live -= 1
        self.bytes -= ROW_OVERHEAD
        if block.live == 0:
            self.bytes -= block.array_bytes


class Store:
    """A memory tier in front of a disk tier.

    Parameters
    ----------
    memory_bytes : int
        Budget of the memory tier.
    directory : path-like or None
        The cache directory (every entry is written there), or None to spill to a
        temporary directory what memory evicts.
    disk_bytes : int or None
        Budget of the disk tier; None means half the free space of its file system
        when it is opened.
    """

    def __init__(self, memory_bytes: int, directory=None, disk_bytes: int | None = None):
        self.memory = MemoryTier(memory_bytes)
        self.directory = None if directory is None else Path(directory)
        self.disk_bytes = disk_bytes
        self.hits = self.misses = self.disk_hits = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.disk: DiskTier | None = None
        self._disk_failed = False
        if self.directory is not None:
            self.disk = self._open_disk()

    # -- tiers -----------------------------------------------------------------------

    def _open_disk(self) -> DiskTier | None:
        """Open the disk tier; on failure, warn and go on with memory alone."""
        budget = self.disk_bytes
        try:
            if self.directory is None:
                return spill_tier(budget if budget is not None else default_disk_budget(tempfile.gettempdir()))
            _warn_about_old_formats(self.directory)
            return DiskTier(self.directory, budget if budget is not None else default_disk_budget(self.directory))
        except (sqlite3.Error, OSError) as error:
            self._disk_failed = True
            where = "a temporary spill directory" if self.directory is None else f"cache={str(self.directory)!r}"
            warn_user(
                f"skbert could not open its disk cache in {where} ({error}); entries are kept in memory only, "
                "and texts evicted from memory will be encoded again. Results are not affected."
            )
            return None

    def _lose_disk(self, disk: DiskTier, error: Exception) -> None:
        """The disk tier failed while being read (a damaged database): warn once, and go on with memory alone in
        this process (its queued writes are let go)."""
        with self._lock:
            if self.disk is not disk:
                return  # another thread has dropped it already
            self.disk, self._disk_failed = None, True
        warn_user(
            f"skbert could not read its disk cache {str(disk.path)!r} ({type(error).__name__}: {error}); this process "
            "goes on without it, keeping entries in memory only. Results are not affected. "
            + ("Delete that file to start the cache afresh." if self.directory is not None else "")
        )
        try:
            disk.close()
        except (sqlite3.Error, OSError):
            pass

    def _disk_for_spill(self) -> DiskTier | None:
        with self._lock:
            if self.disk is None and not self._disk_failed:
                self.disk = self._open_disk()
            return self.disk

    # -- look-ups --------------------------------------------------------------------

    def get_many(self, keys: list[bytes], hidden: int = 0) -> list[tuple[Block, int] | None]:
        """Where the entries under ``keys`` are, from memory, then disk (None where neither has one
        holding at least ``hidden`` hidden states: an entry encoded by a call that stopped the
        encoder below a layer asked for now is a miss)."""
        found = self.memory.get_many(keys, hidden)
        absent = [i for i, place in enumerate(found) if place is None]
        disk = self.disk
        if absent and disk is not None:
            try:
                from_disk = disk.get_many([keys[i] for i in absent], hidden)
            except sqlite3.Error as error:  # e.g. "database disk image is malformed": a miss, never a crash
                self._lose_disk(disk, error)
                from_disk = {}
            for i in absent:
                found[i] = from_disk.get(keys[i])
            with self._lock:
                self.disk_hits += len(from_disk)
            read = {id(block): block for block, _ in from_disk.values()}
            for block in read.values():
                self._keep_in_memory(block)
        n_found = sum(place is not None for place in found)
        with self._lock:  # threads sharing an estimator share its store
            self.hits += n_found
            self.misses += len(keys) - n_found
        return found

    def put(self, block: Block) -> None:
        """Store newly encoded entries: in memory, and on disk (all of them in a cache
        directory; in a spill directory, what memory evicts). An entry holding more hidden
        states replaces one of the same key holding fewer, in both tiers."""
        disk = self.disk  # once: a thread may drop a damaged tier meanwhile
        if self.directory is not None and disk is not None:
            disk.write(block)
        self._keep_in_memory(block)

    def _keep_in_memory(self, block: Block) -> None:
        """Put a block in the memory tier; what it evicts and no disk holds goes to the disk tier."""
        evicted = [(dropped, row) for _, dropped, row in self.memory.put(block) if not dropped.on_disk]
        if not evicted:
            return
        disk = self._disk_for_spill()
        if disk is not None:
            _, parts = gather(evicted)
            by_shape: dict[tuple, list[Block]] = {}  # one store may hold single texts and pairs
            for part in parts:
                by_shape.setdefault(part.shape, []).append(part)
            for same in by_shape.values():
                disk.write(concatenate(same))
        elif "memory" not in self._warned:
            self._warned.add("memory")
            warn_user(
                f"skbert's memory cache is full (cache_memory_bytes={self.memory.max_bytes:,}) and has no disk "
                "tier; evicted texts will be encoded again if asked for. Raise cache_memory_bytes or give a "
                "cache directory."
            )

    def flush(self) -> None:
        """Wait for queued disk writes, and warn once if the disk tier failed or had to evict."""
        disk = self.disk
        if disk is None:
            return
        disk.flush()
        if disk.error is not None and "error" not in self._warned:
            self._warned.add("error")
            warn_user(
                f"skbert stopped writing its disk cache {str(disk.path)!r}: {disk.error}. Results are not "
                "affected; texts not stored will be encoded again when asked for."
            )
        if disk.evictions and "disk" not in self._warned:
            self._warned.add("disk")
            try:
                entries, nbytes = disk.totals()
            except sqlite3.Error as error:
                self._lose_disk(disk, error)
                return
            per_entry = nbytes // max(entries, 1)
            warn_user(
                f"skbert's cache is smaller than the texts it is asked to keep: its disk tier {str(disk.path)!r} "
                f"reached its budget of {disk.max_bytes:,} bytes (about {disk.max_bytes // max(per_entry, 1):,} "
                f"entries of {per_entry:,} bytes) and evicted {disk.evictions:,} of the oldest; texts asked for "
                "again after that are encoded again. Raise cache_disk_bytes to keep them all."
            )

    def info(self) -> CacheInfo:
        """Counters and sizes."""
        with self._lock:
            hits, misses, disk_hits = self.hits, self.misses, self.disk_hits
        info = CacheInfo(
            hits=hits, misses=misses, disk_hits=disk_hits,
            memory_entries=len(self.memory), memory_bytes=self.memory.bytes,
            memory_max_bytes=self.memory.max_bytes, memory_evictions=self.memory.evictions,
        )
        disk = self.disk
        if disk is not None:
            try:
                info.disk_entries, info.disk_bytes = disk.totals()
            except sqlite3.Error as error:
                self._lose_disk(disk, error)
                return info
            info.disk_max_bytes = disk.max_bytes
            info.disk_file_bytes = database_files_bytes(disk.path)
            info.disk_writes, info.disk_evictions = disk.writes, disk.evictions
            info.corrupt, info.disk_path = disk.corrupt, str(disk.path)
        return info

    def close(self) -> None:
        """Commit queued writes and close the disk tier (a spill directory is removed)."""
        if self.disk is not None:
            self.disk.close()
            if self.directory is None:
                shutil.rmtree(self.disk.directory, ignore_errors=True)


def _warn_about_old_formats(directory: Path) -> None:
    """Say so when a cache directory holds entries this version does not read."""
    old = [p.name for p in directory.glob("skbert-cache-v*.sqlite") if p.name != DATABASE]
    if next(directory.glob("??/*.skbc"), None) is not None:
        old.append("one file per text (format 1)")
    if old:
        warn_user(
            f"cache directory {str(directory)!r} holds entries of another skbert cache format ({', '.join(old)}); "
            f"they are not used (this version keeps {DATABASE}) and can be deleted."
        )


def check_cache_location(cache) -> Path | None:
    """Validate ``cache``: "memory", None, or a directory given as a path.

    Returns
    -------
    Path or None
        The directory, or None for ``"memory"`` and None.

    Raises
    ------
    ValueError
        For a plain word other than "memory" (likely a typo; a directory is given
        as a path, with a separator or as :class:`pathlib.Path`), or a path that
        exists and is not a directory.
    """
    if cache is None or (isinstance(cache, str) and cache == "memory"):
        return None
    if isinstance(cache, str) and os.sep not in cache and (os.altsep is None or os.altsep not in cache):
        raise ValueError(
            f"cache={cache!r} is not 'memory' or None; a directory is given as a path, e.g. "
            f"cache='./{cache}' or cache=pathlib.Path({cache!r})."
        )
    path = Path(cache).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"cache={str(cache)!r} is a file, not a directory; give a directory for the disk cache.")
    return path


_STORES: dict[tuple, Store] = {}
_STORES_LOCK = threading.Lock()


def store_for(cache, memory_bytes: int, disk_bytes: int | None) -> Store | None:
    """The process's store for these cache settings (made on first use), or None for ``cache=None``."""
    if cache is None:
        return None
    directory = check_cache_location(cache)
    location = None if directory is None else os.path.realpath(directory)
    key = (os.getpid(), location, int(memory_bytes), disk_bytes)  # a forked child makes its own
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = Store(memory_bytes, location, disk_bytes)
        return store


def clear_stores() -> None:
    """Close and forget every store of this process (spill directories are removed); in a forked child, its
    parent's stores are forgotten, not closed (their connections and spill directories are the parent's)."""
    with _STORES_LOCK:
        stores = [store for key, store in _STORES.items() if key[0] == os.getpid()]
        _STORES.clear()
    for store in stores:
        store.close()


def _close_at_exit() -> None:
    """Close this process's stores (not a forked parent's, whose connections a child must not touch):
    queued writes are committed and the write-ahead log folded into the database before the process ends."""
    with _STORES_LOCK:
        mine = [key for key in _STORES if key[0] == os.getpid()]
        stores = [_STORES.pop(key) for key in mine]
    for store in stores:
        store.close()


atexit.register(_close_at_exit)
