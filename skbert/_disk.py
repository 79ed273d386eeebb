"""The cache's disk tier: blocks of entries in one SQLite database, written by a background thread.

Entries are stored a block at a time (:class:`~skbert._entries.Block`: the rows of
one encoded batch, split so that no block exceeds :data:`BLOCK_BYTES`): one blob
and one checksum per block, and an index row per entry (key -> block, row; the
row's id is the key's first 8 bytes). The writer commits what is queued in one
transaction (at most one per encoded batch, and no fsync of its own: see below); a
look-up is one indexed query for the keys and one read per block, parsed with a few
``numpy.frombuffer`` calls, so a hit costs microseconds whatever the model.
Reading a whole block for one of its rows is the price of a random look-up;
blocks are kept small (:data:`BLOCK_BYTES`) to bound it, and the cache's own access
pattern (a batch of texts read back in the order it was written, a fold of a grid
search) reads most of each block it touches.

Why SQLite (standard library) rather than LMDB or ``diskcache``, measured on the
same blocks by ``benchmarks/cache_scale.py`` (results in ``benchmarks/results/``; on
the 2-core development machine, 100,000 entries of 3.4 kB in blocks of 256): this
tier wrote 35,900 entries a second and read 96,900, LMDB 37,800 and 256,500, and
``diskcache`` 13,900 and 38,500 (it keeps values over 32 kB as files of their own:
392 files). LMDB reads 2.6x as fast; it is not used because SQLite does in SQL what
LMDB would need code of ours for: the byte total and eviction of the oldest blocks
with their index rows in the same atomic transaction as the write (LMDB has no
insertion order; a second index would have to be kept by hand), no memory map size
to choose and grow, and no compiled dependency; and because both are far faster
than an encoder produces entries (a CPU a few hundred to a few thousand texts a
second). It gives what the cache needs: atomic transactions (a killed writer never
leaves a half-written block or an index row without its block), many processes
reading and writing one file (``GridSearchCV(n_jobs=2)`` workers), and three files
however many entries there are (the database, its write-ahead log and its
shared-memory index). Settings measured: 16 kB pages, ``synchronous=NORMAL`` in
WAL mode (safe against a killed process; fsync at checkpoints, not per
transaction). Reads through SQLite's memory map were no faster and counted the
mapped file in the process's resident memory (which Dask's memory limits watch),
so they are off.

What is ours: the block format, a CRC of each block (keys and values; a damaged
block is detected, deleted with its index rows and its texts encoded again; an
index row that points at a block row of another key is found the same way), a
running byte total updated in the same transactions, eviction of the oldest blocks
beyond a byte budget, and a writer thread behind a bounded queue so that encoding
does not wait on the disk (it waits only when the queue is full, or at
:meth:`DiskTier.flush`).
"""

from __future__ import annotations

import atexit
import json
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

from ._entries import FORMAT_VERSION, Block

#: File name of the database in a cache directory; the format version is part of it.
DATABASE = f"skbert-cache-v{FORMAT_VERSION}.sqlite"
#: A stored block's values at most (bytes; at least one row per block).
BLOCK_BYTES = 1 << 20
_SPILL_PREFIX = "skbert-spill-"
_READ_CHUNK = 2000  # keys or blocks per SELECT ... IN (...)
_QUEUE_BATCHES = 8  # batches waiting for the writer before encoding waits
_EVICT_TO = 0.9  # beyond the budget, evict down to this share of it

# magic, dtype code, has pooler, segments, kinds, hidden states, width, rows;
# then the keys (16 bytes each), n_tokens (int64), n_content (int64 per segment),
# the values and the pooler outputs
_HEADER = struct.Struct("<4sB?BHHII")
_MAGIC = b"SKB4"
_KEY_BYTES = 16
_DTYPES = {0: np.dtype("<f2"), 1: np.dtype("<f4")}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}

#: What an index row from before entries recorded their depth holds: every hidden state.
_EVERY_HIDDEN_STATE = 2**31 - 1
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS blocks (id INTEGER PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,  -- the key's first 8 bytes: a rowid look-up is twice as fast as a blob key's
    key BLOB NOT NULL,
    block INTEGER NOT NULL,
    row INTEGER NOT NULL,
    hidden INTEGER NOT NULL DEFAULT {_EVERY_HIDDEN_STATE}  -- hidden states the entry holds (fewer than the model's where
                                                  -- the encoder stopped early; the default: every one)
);
CREATE INDEX IF NOT EXISTS entries_by_block ON entries (block);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('bytes', 0), ('entries', 0);
"""
_ADD_TO_TOTALS = "UPDATE totals SET value = value + ? WHERE name = ?"
# a block's index rows in one statement (one step, so the writer thread gives up Python's lock
# once per block, not once per row): ?1 the row ids as a JSON array, ?2 the keys end to end, ?3 the block,
# ?4 its hidden states; a row replaces a shallower entry of its key (the writer left out deeper ones)
_INDEX_BLOCK = """
INSERT OR REPLACE INTO entries (id, key, block, row, hidden)
SELECT value, substr(?2, key * 16 + 1, 16), ?3, key, ?4 FROM json_each(?1)
"""


def pack_block(block: Block) -> bytes:
    """Serialise a block: header, keys, token counts, content counts, values, pooler outputs."""
    n = len(block)
    segments, kinds, hidden, width = block.values.shape[1:]
    code = _CODES[block.values.dtype.newbyteorder("<")]
    dtype = _DTYPES[code]
    header = _HEADER.pack(_MAGIC, code, block.pooler is not None, segments, kinds, hidden, width, n)
    parts = [header, b"".join(block.keys), block.n_tokens.astype("<i8").tobytes(),
             block.n_content.astype("<i8").tobytes(), block.values.astype(dtype, copy=False).tobytes()]
    if block.pooler is not None:
        parts.append(block.pooler.astype(dtype, copy=False).tobytes())
    return b"".join(parts)


def unpack_block(data: bytes) -> Block | None:
    """Read back a block (arrays viewing ``data``); None if it is not a whole block of this format."""
    if len(data) < _HEADER.size:
        return None
    magic, code, has_pooler, segments, kinds, hidden, width, n = _HEADER.unpack_from(data)
    dtype = _DTYPES.get(code)
    if magic != _MAGIC or dtype is None:
        return None
    n_values = n * segments * kinds * hidden * width
    counts_at = _HEADER.size + _KEY_BYTES * n
    values_at = counts_at + 8 * n * (1 + segments)
    if len(data) != values_at + dtype.itemsize * (n_values + (n * width if has_pooler else 0)):
        return None
    keys = [data[i : i + _KEY_BYTES] for i in range(_HEADER.size, counts_at, _KEY_BYTES)]
    counts = np.frombuffer(data, dtype="<i8", count=n * (1 + segments), offset=counts_at).astype(np.int64)
    flat = np.frombuffer(data, dtype=dtype, offset=values_at)
    values = flat[:n_values].reshape(n, segments, kinds, hidden, width)
    pooler = flat[n_values:].reshape(n, width) if has_pooler else None
    return Block(keys, values, counts[n:].reshape(n, segments), counts[:n], pooler, on_disk=True)


def checksum(data: bytes) -> int:
    """CRC-32 of a stored block (its keys are inside it, so a block under another key shows too).

    A CRC, not a cryptographic hash: it guards against torn or flipped bytes, not
    tampering, at a sixth of blake2b's cost.
    """
    return zlib.crc32(data)


def split_block(block: Block, max_bytes: int = BLOCK_BYTES) -> list[Block]:
    """``block`` cut into consecutive blocks of at most ``max_bytes`` of values (one row at least)."""
    per_row = max(block.values[:1].nbytes, 1)
    rows = max(1, max_bytes // per_row)
    if len(block) <= rows:
        return [block]
    return [block.take(range(start, min(start + rows, len(block)))) for start in range(0, len(block), rows)]


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 120000")
    connection.execute("PRAGMA page_size = 16384")  # blobs of up to a megabyte: fewer overflow pages (new files only)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against a killed process, fsync at checkpoints
    return connection


def _checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database and truncate it, so that what a finished call
    leaves on disk is the database alone (best effort: another process reading now may keep
    part of the log until its own checkpoint)."""
    try:
        connection.execute("PRAGMA busy_timeout = 200")  # a reader elsewhere: leave it to a later checkpoint
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass
    finally:
        connection.execute("PRAGMA busy_timeout = 120000")


def database_files_bytes(path: Path) -> int:
    """Bytes the database really takes on disk: the file, its write-ahead log and its shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(f"{path}{suffix}")
        except OSError:
            pass
    return total


def _in(n: int) -> str:
    return f"({','.join('?' * n)})"


def _row_id(key: bytes) -> int:
    """The index row of a key: its first 8 bytes as a signed integer (two keys sharing them,
    about one pair in 10^19, share a row: the second is not stored and is encoded when asked for)."""
    return int.from_bytes(key[:8], "little", signed=True)


def _indexed(connection: sqlite3.Connection, keys: list[bytes], hidden: int = 0) -> list[tuple[bytes, int, int, int]]:
    """(key, block, row, hidden states) of those of ``keys`` the index holds with at least ``hidden``."""
    wanted = set(keys)
    return [found for found in _index_rows(connection, keys).values() if found[0] in wanted and found[3] >= hidden]


def _roll_back(connection: sqlite3.Connection) -> None:
    """End a failed transaction, if SQLite has not ended it already (it does on a full disk or an I/O error), so
    that the error being raised is the one that failed, not the ROLLBACK's "no transaction is active"."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _add_depth_column(connection: sqlite3.Connection) -> None:
    """Give a database made before entries recorded their depth its ``hidden`` column: every entry
    of those held every hidden state, which the column's default says."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(entries)")}
    if "hidden" not in columns:
        connection.execute("BEGIN IMMEDIATE")
        try:
            if "hidden" not in {row[1] for row in connection.execute("PRAGMA table_info(entries)")}:
                connection.execute(
                    f"ALTER TABLE entries ADD COLUMN hidden INTEGER NOT NULL DEFAULT {_EVERY_HIDDEN_STATE}")
            connection.execute("COMMIT")
        except BaseException:
            _roll_back(connection)
            raise


def _index_rows(connection: sqlite3.Connection, keys: list[bytes]) -> dict[int, tuple[bytes, int, int, int]]:
    """The index rows of ``keys``' row ids, whichever key holds them: id -> (key, block, row, hidden states)."""
    rows = {}
    for start in range(0, len(keys), _READ_CHUNK):
        chunk = [_row_id(key) for key in keys[start : start + _READ_CHUNK]]
        rows.update((row_id, found) for row_id, *found in connection.execute(
            f"SELECT id, key, block, row, hidden FROM entries WHERE id IN {_in(len(chunk))}", chunk))
    return {row_id: tuple(found) for row_id, found in rows.items()}


class DiskTier:
    """Blocks of entries in one SQLite database under a directory, shared by processes.

    Parameters
    ----------
    directory : path-like
        Created if missing.
    max_bytes : int
        Budget for the stored blocks' bytes; beyond it the oldest blocks are evicted.

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
        _add_depth_column(self._reader)
        self._read_lock = threading.Lock()
        self._pending: dict[bytes, tuple[Block, int]] = {}  # queued for the writer, not yet committed
        self._pending_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.writes = self.evictions = self.corrupt = 0
        self.error: BaseException | None = None  # the writer's failure, if any: writes stop
        self._writer = threading.Thread(target=self._write_loop, name="skbert-cache-writer", daemon=True)
        self._writer.start()

    # -- reading ---------------------------------------------------------------------

    def get_many(self, keys: list[bytes], hidden: int = 0) -> dict[bytes, tuple[Block, int]]:
        """Where the entries of some keys are: a block of the found rows (read from disk or
        still queued) and the row; entries with fewer than ``hidden`` hidden states are left
        out, damaged blocks deleted and their keys left out."""
        found: dict[bytes, tuple[Block, int]] = {}
        with self._pending_lock:
            for key in keys:
                place = self._pending.get(key)
                if place is not None and place[0].hidden >= hidden:
                    found[key] = place
        rest = [key for key in keys if key not in found]
        with self._read_lock:
            located = _indexed(self._reader, rest, hidden)
            by_block: dict[int, list[tuple[bytes, int]]] = {}
            for key, block_id, row, _ in located:
                by_block.setdefault(block_id, []).append((key, row))
            damaged_blocks, damaged_keys = [], []
            ids = list(by_block)
            for start in range(0, len(ids), _READ_CHUNK):
                chunk = ids[start : start + _READ_CHUNK]
                for block_id, data, digest in self._reader.execute(
                    f"SELECT id, data, checksum FROM blocks WHERE id IN {_in(len(chunk))}", chunk
                ).fetchall():
                    wanted = by_block.pop(block_id)
                    block = unpack_block(data) if checksum(data) == digest else None
                    if block is None:
                        damaged_blocks.append(block_id)
                        continue
                    good = []
                    for key, row in wanted:  # an index row must point at its own key
                        if row < len(block) and block.keys[row] == key:
                            good.append((key, row))
                        else:
                            damaged_keys.append(key)
                    good.sort(key=lambda item: item[1])
                    rows = [row for _, row in good]
                    if rows != list(range(len(block))):  # not the whole block: a copy, and the blob is let go
                        block = block.take(rows)
                    found.update((key, (block, i)) for i, (key, _) in enumerate(good))
            damaged_keys += [key for wanted in by_block.values() for key, _ in wanted]  # rows without a block
            if damaged_blocks or damaged_keys:
                self.corrupt += _delete(self._reader, damaged_blocks, damaged_keys)
        return found

    def totals(self) -> tuple[int, int]:
        """Entries and bytes the database holds now (all processes' writes)."""
        with self._read_lock:
            rows = dict(self._reader.execute("SELECT name, value FROM totals").fetchall())
        return rows["entries"], rows["bytes"]

    # -- writing ---------------------------------------------------------------------

    def write(self, block: Block) -> None:
        """Queue a block for the writer (waits only while the queue is full)."""
        if self.error is not None or not len(block):
            return
        block.on_disk = True
        with self._pending_lock:
            for row, key in enumerate(block.keys):
                self._pending[key] = (block, row)
        try:
            self._queue.put(block)
        except BaseException:  # interrupted while the queue was full: never queued, so neither pending nor stored
            with self._pending_lock:
                for key in block.keys:
                    if self._pending.get(key, (None,))[0] is block:
                        del self._pending[key]
            block.on_disk = False
            raise

    def flush(self) -> None:
        """Wait until everything queued so far is committed (or the writer has failed)."""
        if self._writer.is_alive():
            done = threading.Event()
            self._queue.put(done)
            done.wait()

    def _write_loop(self) -> None:
        connection = None
        stop = False
        while not stop:
            items = [self._queue.get()]
            while len(items) < _QUEUE_BATCHES:  # what else is queued goes in the same transaction
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            blocks = []
            for item in items:
                if item is None:
                    stop = True
                elif isinstance(item, Block):
                    blocks.append(item)
            try:
                if blocks and self.error is None:
                    connection = connection or _connect(self.path)
                    self._commit(connection, blocks)
            except (sqlite3.Error, OSError) as error:  # e.g. a full disk: stop writing, keep going
                self.error = error
            finally:
                with self._pending_lock:
                    for block in blocks:
                        for key in block.keys:
                            if self._pending.get(key, (None,))[0] is block:
                                del self._pending[key]
                waiting = [item for item in items if isinstance(item, threading.Event)]
                if connection is not None and (waiting or stop):  # a call ends, or the tier closes
                    _checkpoint(connection)
                for item in waiting:
                    item.set()
        if connection is not None:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, blocks: list[Block]) -> None:
        """Store the rows of ``blocks`` that no process has stored yet (or stored with fewer hidden
        states: those replace the shallower entries), in one transaction."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            present = _index_rows(connection, [key for block in blocks for key in block.keys])
            added = replaced = added_bytes = 0
            replaced_in: set[int] = set()  # blocks that lost rows to deeper entries
            for block in blocks:  # written already as deep, maybe by another process: left out
                new = []
                for row, key in enumerate(block.keys):
                    old = present.get(_row_id(key))  # (key, block, row, hidden) of the key's index row
                    if old is None or (old[0] == key and old[3] < block.hidden):  # another key's row: kept
                        new.append(row)
                        if old is not None:
                            replaced += 1
                            replaced_in.add(old[1])
                        present[_row_id(key)] = (key, -1, row, block.hidden)  # taken: a copy later in the block is left out
                if not new:
                    continue
                kept = block if len(new) == len(block) else block.take(new)
                # blobs of at most a quarter of the budget: eviction goes by whole blobs, oldest first, so a budget
                # smaller than one batch still keeps that batch's newest entries
                for part in split_block(kept, min(BLOCK_BYTES, max(self.max_bytes // 4, 1))):
                    data = pack_block(part)
                    block_id = connection.execute(
                        "INSERT INTO blocks (data, checksum) VALUES (?, ?)", (data, checksum(data))).lastrowid
                    connection.execute(_INDEX_BLOCK, (json.dumps([_row_id(key) for key in part.keys]),
                                                      b"".join(part.keys), block_id, part.hidden))
                    present.update((_row_id(key), (key, block_id, row, part.hidden)) for row, key in enumerate(part.keys))
                    added += len(part)
                    added_bytes += len(data)
            if added_bytes:
                connection.execute(_ADD_TO_TOTALS, (added_bytes, "bytes"))
                connection.execute(_ADD_TO_TOTALS, (added - replaced, "entries"))
            # a block none of whose rows is indexed any more (all replaced by deeper entries) goes
            empty = [block_id for block_id in replaced_in if connection.execute(
                "SELECT 1 FROM entries WHERE block = ? LIMIT 1", (block_id,)).fetchone() is None]
            if empty:
                _delete(connection, empty, [])
            evicted = self._evict(connection)
            connection.execute("COMMIT")
        except BaseException:
            _roll_back(connection)
            raise
        self.writes += added
        self.evictions += evicted

    def _evict(self, connection: sqlite3.Connection) -> int:
        """Delete the oldest blocks until the bytes are back under the budget's share."""
        total = connection.execute("SELECT value FROM totals WHERE name = 'bytes'").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        target, victims, last_id = int(self.max_bytes * _EVICT_TO), [], -1
        while total > target:
            oldest = connection.execute(
                "SELECT id, length(data) FROM blocks WHERE id > ? ORDER BY id LIMIT 256", (last_id,)).fetchall()
            if not oldest:
                break
            for last_id, size in oldest:
                victims.append(last_id)
                total -= size
                if total <= target:
                    break
        return _delete(connection, victims, [])

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (again: nothing)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        with self._read_lock:
            self._reader.close()
        self.error = self.error or sqlite3.ProgrammingError("the disk tier was closed")


def _delete(connection: sqlite3.Connection, block_ids: list[int], keys: list[bytes]) -> int:
    """Delete blocks with their index rows, and single index rows, in one transaction.

    Returns
    -------
    int
        Entries deleted (another process may have deleted some first).
    """
    if not connection.in_transaction:
        connection.execute("BEGIN IMMEDIATE")
        try:
            deleted = _delete(connection, block_ids, keys)
            connection.execute("COMMIT")
        except BaseException:
            _roll_back(connection)
            raise
        return deleted
    deleted = freed = 0
    for block_id in block_ids:
        deleted += connection.execute("DELETE FROM entries WHERE block = ?", (block_id,)).rowcount
        size = connection.execute("SELECT length(data) FROM blocks WHERE id = ?", (block_id,)).fetchone()
        if size is not None:
            connection.execute("DELETE FROM blocks WHERE id = ?", (block_id,))
            freed += size[0]
    for key in keys:
        deleted += connection.execute("DELETE FROM entries WHERE id = ? AND key = ?", (_row_id(key), key)).rowcount
    connection.execute(_ADD_TO_TOTALS, (-freed, "bytes"))
    connection.execute(_ADD_TO_TOTALS, (-deleted, "entries"))
    return deleted


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
    atexit.register(_remove_spill, weakref.ref(tier), directory, os.getpid())
    return tier


def _remove_spill(tier_ref, directory: str, owner: int) -> None:
    """At exit, close and remove a spill directory, in the process that made it only: a child forked from it
    inherits this exit handler, and must leave its parent's cache alone."""
    if os.getpid() != owner:
        return
    tier = tier_ref()
    if tier is not None:
        try:
            tier.close()
        except sqlite3.Error:
            pass
    shutil.rmtree(directory, ignore_errors=True)


def default_disk_budget(directory) -> int:
    """Half the free space of the file system that holds ``directory`` (for a spill tier, the
    temporary directory it is made in)."""
    path = Path(directory)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free // 2
