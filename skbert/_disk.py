"""The cache's disk tier: entries in one SQLite database, written by a background thread.

Why SQLite (standard library) rather than ``diskcache`` or LMDB: measured on the
same entries by ``benchmarks/cache_scale.py`` (results in ``benchmarks/results/``),
SQLite in WAL mode wrote batches and read them back at least as fast as LMDB, and
faster than ``diskcache`` (which commits each key on its own unless wrapped in a
transaction, and stores values over 32 KB as separate files), while adding no
dependency. It gives what the cache needs without code of ours: atomic batched
transactions (a killed writer never leaves a half-written entry), many processes
reading and writing one file (``GridSearchCV(n_jobs=2)`` workers), and a handful
of files however many entries there are (the database, its write-ahead log and its
shared-memory index).

What is ours: one row per entry with a checksum of the key and value (a damaged
entry is detected, deleted and recomputed), a running byte total kept by triggers,
eviction of the oldest entries beyond a byte budget, and a writer thread behind a
bounded queue so that encoding does not wait on the disk (it waits only when the
queue is full, or at :meth:`DiskTier.flush`).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import queue
import shutil
import sqlite3
import struct
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

from ._entries import FORMAT_VERSION, Entry

#: File name of the database in a cache directory; the format version is part of it.
DATABASE = f"skbert-cache-v{FORMAT_VERSION}.sqlite"
_SPILL_PREFIX = "skbert-spill-"
_READ_CHUNK = 500  # keys per SELECT ... IN (...)
_QUEUE_BATCHES = 8  # batches waiting for the writer before encoding waits
_EVICT_TO = 0.9  # beyond the budget, evict down to this share of it

# magic, dtype code, kinds, hidden states, width, has pooler, n_content, n_tokens
_HEADER = struct.Struct("<4sBHHI?qq")
_MAGIC = b"SKB2"
_DTYPES = {0: np.dtype(np.float16), 1: np.dtype(np.float32)}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key BLOB UNIQUE NOT NULL,
    value BLOB NOT NULL,
    checksum BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('bytes', 0), ('entries', 0);
CREATE TRIGGER IF NOT EXISTS count_insert AFTER INSERT ON entries BEGIN
    UPDATE totals SET value = value + length(NEW.value) WHERE name = 'bytes';
    UPDATE totals SET value = value + 1 WHERE name = 'entries';
END;
CREATE TRIGGER IF NOT EXISTS count_delete AFTER DELETE ON entries BEGIN
    UPDATE totals SET value = value - length(OLD.value) WHERE name = 'bytes';
    UPDATE totals SET value = value - 1 WHERE name = 'entries';
END;
"""


def pack_entry(entry: Entry) -> bytes:
    """Serialise an entry (header, then its values and pooler output)."""
    kinds, hidden, width = entry.values.shape
    header = _HEADER.pack(
        _MAGIC, _CODES[entry.values.dtype], kinds, hidden, width, entry.pooler is not None,
        entry.n_content, entry.n_tokens,
    )
    pooler = b"" if entry.pooler is None else np.ascontiguousarray(entry.pooler, entry.values.dtype).tobytes()
    return header + np.ascontiguousarray(entry.values).tobytes() + pooler


def unpack_entry(blob: bytes) -> Entry | None:
    """Read back an entry; None if the blob is not a whole entry of this format."""
    if len(blob) < _HEADER.size:
        return None
    magic, code, kinds, hidden, width, has_pooler, n_content, n_tokens = _HEADER.unpack_from(blob)
    dtype = _DTYPES.get(code)
    if magic != _MAGIC or dtype is None:
        return None
    n_values = kinds * hidden * width
    if len(blob) != _HEADER.size + dtype.itemsize * (n_values + (width if has_pooler else 0)):
        return None
    flat = np.frombuffer(blob, dtype=dtype, offset=_HEADER.size)
    pooler = flat[n_values:] if has_pooler else None
    return Entry(flat[:n_values].reshape(kinds, hidden, width), int(n_content), int(n_tokens), pooler)


def checksum(key: bytes, value: bytes) -> bytes:
    """16-byte digest of a key and its value: a value filed under another key fails it too."""
    return hashlib.blake2b(value, digest_size=16, key=key[:64]).digest()


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 120000")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against a killed process, fsync at checkpoints
    return connection


class DiskTier:
    """Entries in one SQLite database under a directory, shared by processes.

    Parameters
    ----------
    directory : path-like
        Created if missing.
    max_bytes : int
        Budget for the entries' bytes; beyond it the oldest entries are evicted.

    Raises
    ------
    sqlite3.Error or OSError
        If the database cannot be opened or created.
    """

    def __init__(self, directory, max_bytes: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DATABASE
        self.max_bytes = int(max_bytes)
        self._reader = _connect(self.path)
        self._reader.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        self._read_lock = threading.Lock()
        self._pending: dict[bytes, Entry] = {}  # queued for the writer, not yet committed
        self._pending_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.reads = self.writes = self.evictions = self.corrupt = 0
        self.error: BaseException | None = None  # the writer's failure, if any: writes stop
        self._writer = threading.Thread(target=self._write_loop, name="skbert-cache-writer", daemon=True)
        self._writer.start()

    # -- reading ---------------------------------------------------------------------

    def get_many(self, keys: list[bytes]) -> dict[bytes, Entry]:
        """Entries found for some keys (damaged ones are deleted and left out)."""
        found: dict[bytes, Entry] = {}
        with self._pending_lock:
            for key in keys:
                if key in self._pending:
                    found[key] = self._pending[key]
        rest = [key for key in keys if key not in found]
        damaged = []
        with self._read_lock:
            for start in range(0, len(rest), _READ_CHUNK):
                chunk = rest[start : start + _READ_CHUNK]
                rows = self._reader.execute(
                    f"SELECT key, value, checksum FROM entries WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, value, digest in rows:
                    entry = unpack_entry(value) if checksum(key, value) == digest else None
                    if entry is None:
                        damaged.append(key)
                    else:
                        entry.on_disk = True
                        found[key] = entry
            if damaged:
                self._reader.executemany("DELETE FROM entries WHERE key = ?", [(key,) for key in damaged])
        self.corrupt += len(damaged)
        self.reads += len(found)
        return found

    def totals(self) -> tuple[int, int]:
        """Entries and bytes the database holds now (all processes' writes)."""
        with self._read_lock:
            rows = dict(self._reader.execute("SELECT name, value FROM totals").fetchall())
        return rows["entries"], rows["bytes"]

    # -- writing ---------------------------------------------------------------------

    def write(self, items: list[tuple[bytes, Entry]]) -> None:
        """Queue entries for the writer (waits only while the queue is full)."""
        if self.error is not None or not items:
            return
        with self._pending_lock:
            for key, entry in items:
                entry.on_disk = True
                self._pending[key] = entry
        self._queue.put(items)

    def flush(self) -> None:
        """Wait until everything queued so far is committed (or the writer has failed)."""
        if self._writer.is_alive():
            done = threading.Event()
            self._queue.put(done)
            done.wait()

    def _write_loop(self) -> None:
        connection = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                if self.error is None:
                    connection = connection or _connect(self.path)
                    self._commit(connection, item)
            except (sqlite3.Error, OSError) as error:  # e.g. a full disk: stop writing, keep going
                self.error = error
            finally:
                with self._pending_lock:
                    for key, _ in item:
                        self._pending.pop(key, None)
        if connection is not None:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, items: list[tuple[bytes, Entry]]) -> None:
        rows = []
        for key, entry in items:
            value = pack_entry(entry)
            rows.append((key, value, checksum(key, value)))
        connection.execute("BEGIN IMMEDIATE")
        try:
            written = connection.executemany(
                "INSERT OR IGNORE INTO entries (key, value, checksum) VALUES (?, ?, ?)", rows
            ).rowcount  # rows inserted (not those another process had written already)
            self.evictions += self._evict(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        self.writes += written

    def _evict(self, connection: sqlite3.Connection) -> int:
        """Delete the oldest entries until the bytes are back under the budget's share."""
        total = connection.execute("SELECT value FROM totals WHERE name = 'bytes'").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        target, evicted = int(self.max_bytes * _EVICT_TO), 0
        while total > target:
            oldest = connection.execute("SELECT id, length(value) FROM entries ORDER BY id LIMIT 256").fetchall()
            if not oldest:
                break
            last_id = oldest[-1][0]
            for row_id, size in oldest:
                total -= size
                evicted += 1
                if total <= target:
                    last_id = row_id
                    break
            connection.execute("DELETE FROM entries WHERE id <= ?", (last_id,))
        return evicted

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (again: nothing)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        with self._read_lock:
            self._reader.close()
        self.error = self.error or sqlite3.ProgrammingError("the disk tier was closed")


# -- spill directories -------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_spill_directories(root: str | None = None) -> int:
    """Remove spill directories left by processes that no longer run (killed ones).

    Returns
    -------
    int
        Directories removed.
    """
    removed = 0
    for path in Path(root or tempfile.gettempdir()).glob(f"{_SPILL_PREFIX}*"):
        try:
            pid = int(path.name[len(_SPILL_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def spill_tier(max_bytes: int) -> DiskTier:
    """A disk tier in a new temporary directory, removed when the process exits.

    Stale spill directories of dead processes are swept first.
    """
    sweep_spill_directories()
    directory = tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-")
    tier = DiskTier(directory, max_bytes)
    atexit.register(_remove_spill, weakref.ref(tier), directory)
    return tier


def _remove_spill(tier_ref, directory: str) -> None:
    tier = tier_ref()
    if tier is not None:
        try:
            tier.close()
        except sqlite3.Error:
            pass
    shutil.rmtree(directory, ignore_errors=True)


def default_disk_budget(directory) -> int:
    """Half the free space of the file system that holds ``directory``."""
    path = Path(directory)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free // 2
