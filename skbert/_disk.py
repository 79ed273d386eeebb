"""The cache's disk tier: entries in one SQLite database, written by a background thread.

Why SQLite (standard library) rather than LMDB or ``diskcache``, measured on the same
22 kB MiniLM entries by ``benchmarks/cache_scale.py`` (results in
``benchmarks/results/``): over five runs on the 2-core development machine, LMDB
wrote between 0.8x and 1.8x as many entries per second as this tier (which wrote
4,600-9,200 a second) and read 1.3-1.6x as many (this tier: about 30,000 a second;
with 3.4 kB entries LMDB read 1.4-2.2x as many), and
``diskcache`` was the slowest of the three. SQLite is kept because the gap is small
and goes both ways beside encoding (a CPU encodes a few hundred texts a
second), and because it does in SQL what LMDB would need code of ours for: the byte
total and eviction of the oldest entries in the same atomic transaction as the
write (LMDB has no insertion order; a second index would have to be kept by hand),
no memory map size to choose and grow, and no compiled dependency. It gives what
the cache needs: atomic batched transactions (a killed writer never leaves a
half-written entry), many processes reading and writing one file
(``GridSearchCV(n_jobs=2)`` workers), and three files however many entries there
are (the database, its write-ahead log and its index). Settings measured: 16 kB
pages (1.4x the writes of 4 kB pages for such entries in plain SQLite), ``synchronous=NORMAL`` in
WAL mode (safe against a killed process; fsync at checkpoints, not per batch).

What is ours: one row per entry with a CRC of its key and value (a damaged entry is
detected, deleted and encoded again), a running byte total updated in the same
transactions, eviction of the oldest entries beyond a byte budget, and a writer
thread behind a bounded queue so that encoding does not wait on the disk (it waits
only when the queue is full, or at :meth:`DiskTier.flush`).
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import sqlite3
import struct
import tempfile
import threading
import weakref
import zlib
from pathlib import Path

import numpy as np

from ._entries import FORMAT_VERSION, Entry

#: File name of the database in a cache directory; the format version is part of it.
DATABASE = f"skbert-cache-v{FORMAT_VERSION}.sqlite"
_SPILL_PREFIX = "skbert-spill-"
_READ_CHUNK = 500  # keys per SELECT ... IN (...)
_QUEUE_BATCHES = 8  # batches waiting for the writer before encoding waits
_EVICT_TO = 0.9  # beyond the budget, evict down to this share of it

# magic, dtype code, segments, kinds, hidden states, width, has pooler, n_tokens;
# then n_content (one int64 per segment), the values and the pooler output
_HEADER = struct.Struct("<4sBBHHI?q")
_MAGIC = b"SKB3"
_DTYPES = {0: np.dtype(np.float16), 1: np.dtype(np.float32)}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key BLOB UNIQUE NOT NULL,
    value BLOB NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('bytes', 0), ('entries', 0);
"""
_ADD_TO_TOTALS = "UPDATE totals SET value = value + ? WHERE name = ?"


def pack_entry(entry: Entry) -> bytes:
    """Serialise an entry (header, content counts, then its values and pooler output)."""
    segments, kinds, hidden, width = entry.values.shape
    header = _HEADER.pack(
        _MAGIC, _CODES[entry.values.dtype], segments, kinds, hidden, width, entry.pooler is not None, entry.n_tokens,
    )
    counts = np.ascontiguousarray(entry.n_content, dtype="<i8").tobytes()
    pooler = b"" if entry.pooler is None else np.ascontiguousarray(entry.pooler, entry.values.dtype).tobytes()
    return header + counts + np.ascontiguousarray(entry.values).tobytes() + pooler


def unpack_entry(blob: bytes) -> Entry | None:
    """Read back an entry; None if the blob is not a whole entry of this format."""
    if len(blob) < _HEADER.size:
        return None
    magic, code, segments, kinds, hidden, width, has_pooler, n_tokens = _HEADER.unpack_from(blob)
    dtype = _DTYPES.get(code)
    if magic != _MAGIC or dtype is None:
        return None
    n_values = segments * kinds * hidden * width
    start = _HEADER.size + 8 * segments
    if len(blob) != start + dtype.itemsize * (n_values + (width if has_pooler else 0)):
        return None
    n_content = np.frombuffer(blob, dtype="<i8", count=segments, offset=_HEADER.size).astype(np.int64)
    flat = np.frombuffer(blob, dtype=dtype, offset=start)
    pooler = flat[n_values:] if has_pooler else None
    return Entry(flat[:n_values].reshape(segments, kinds, hidden, width), n_content, int(n_tokens), pooler)


def checksum(key: bytes, value: bytes) -> int:
    """CRC-32 of a key and its value: damage shows, and so does a value filed under another key.

    A CRC, not a cryptographic hash: it guards against torn or flipped bytes, not
    tampering, at a sixth of blake2b's cost (6 against 39 us for a 22 kB entry).
    """
    return zlib.crc32(value, zlib.crc32(key))


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 120000")
    connection.execute("PRAGMA page_size = 16384")  # entries of 10-100 kB: fewer overflow pages (new files only)
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
                        damaged.append((key, len(value)))
                    else:
                        entry.on_disk = True
                        found[key] = entry
            if damaged:
                _delete(self._reader, damaged)
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
        connection.execute("BEGIN IMMEDIATE")
        try:
            keys = list(dict.fromkeys(key for key, _ in items))
            present = set()
            for start in range(0, len(keys), _READ_CHUNK):  # written already, maybe by another process
                chunk = keys[start : start + _READ_CHUNK]
                present.update(row[0] for row in connection.execute(
                    f"SELECT key FROM entries WHERE key IN ({','.join('?' * len(chunk))})", chunk))
            rows = []
            for key, entry in items:
                if key not in present:
                    present.add(key)
                    value = pack_entry(entry)
                    rows.append((key, value, checksum(key, value)))
            connection.executemany("INSERT INTO entries (key, value, checksum) VALUES (?, ?, ?)", rows)
            connection.execute(_ADD_TO_TOTALS, (sum(len(row[1]) for row in rows), "bytes"))
            connection.execute(_ADD_TO_TOTALS, (len(rows), "entries"))
            evicted = self._evict(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        self.writes += len(rows)
        self.evictions += evicted

    def _evict(self, connection: sqlite3.Connection) -> int:
        """Delete the oldest entries until the bytes are back under the budget's share."""
        total = connection.execute("SELECT value FROM totals WHERE name = 'bytes'").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        target, victims, last_id = int(self.max_bytes * _EVICT_TO), [], -1
        while total > target:
            oldest = connection.execute(
                "SELECT id, key, length(value) FROM entries WHERE id > ? ORDER BY id LIMIT 256", (last_id,)
            ).fetchall()
            if not oldest:
                break
            for last_id, key, size in oldest:
                victims.append((key, size))
                total -= size
                if total <= target:
                    break
        _delete(connection, victims)
        return len(victims)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (again: nothing)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        with self._read_lock:
            self._reader.close()
        self.error = self.error or sqlite3.ProgrammingError("the disk tier was closed")


def _delete(connection: sqlite3.Connection, victims: list[tuple[bytes, int]]) -> None:
    """Delete entries (key, size) and take them off the totals, in one transaction."""
    if connection.in_transaction:
        _delete_rows(connection, victims)
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        _delete_rows(connection, victims)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _delete_rows(connection: sqlite3.Connection, victims: list[tuple[bytes, int]]) -> None:
    deleted = freed = 0
    for key, size in victims:
        if connection.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount:  # not if another did
            deleted += 1
            freed += size
    connection.execute(_ADD_TO_TOTALS, (-freed, "bytes"))
    connection.execute(_ADD_TO_TOTALS, (-deleted, "entries"))


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
