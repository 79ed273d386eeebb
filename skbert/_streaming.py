"""Streaming tables of any size through an embedder into a Parquet dataset, one part per input chunk.

Input is a CSV/TSV/Parquet file, a directory of them or a glob. Each file is read in
chunks of at most ``chunk_rows`` rows (Parquet batches via pyarrow, CSV through pandas'
chunked reader), so memory is bounded by the chunk, not by the input. Each chunk
becomes one part of the output dataset, written under a temporary name and renamed
into place, so a part is either whole or absent. A part records, in its Parquet
metadata, which chunk it came from, a digest of that chunk's ids and texts, and the
settings it was made with; a re-run reads each chunk again and skips it when its part
verifies (readable footer, same digest, same settings, same row count), so resuming
needs no per-text cache. Parts that no chunk of this run produced are removed at the
end, so the dataset never holds a row twice: only parts skbert wrote (their record says
so), never an input file nor another tool's file. A directory or pattern input leaves
out the files under the output directory, which may lie inside it.

With a Dask client the chunks are embedded and written by the workers (the output
directory must be reachable from them); a worker lost mid-chunk has its task run
again, and since a part appears only whole, the result is the same.

pyarrow does the Parquet reading and writing: it streams row batches, writes
fixed-size list columns and per-file metadata, and its datasets read the parts back
as one table.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._columns import MADE_IDS, ColumnError, TextColumns
from ._device import torch_threads
from ._report import caller_reports_truncation
from ._tables import TableError, accepted, column_types, file_columns, iter_chunks, table_kind

#: How the embedding is laid out in the output: a list column, a column per feature, or both.
LAYOUTS = ("list", "columns", "both")
METADATA_KEY = b"skbert"
#: Name of the fixed-size list column that holds each row's embedding.
EMBEDDING_COLUMN = "embedding"


def input_files(spec: str, output: Path | None = None) -> list[Path]:
    """The input files a path, directory or glob names, sorted.

    Parameters
    ----------
    spec : str
        A file, a directory (every CSV/TSV/Parquet file under it, recursively) or a
        glob pattern (``data/*.parquet``, ``data/**/*.csv``). An existing file is
        that file, whatever characters its name holds.
    output : Path, optional
        The dataset being written: a directory or pattern never takes files from it
        (its parts are not input, also when it lies inside the input's folder).

    Returns
    -------
    list of Path

    Raises
    ------
    TableError
        If nothing readable is found, or a named file has another suffix.
    """
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and table_kind(p)]
        where = f"directory {spec!r}"
    elif not path.is_file() and any(ch in spec for ch in "*?["):
        files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        files = [p for p in files if table_kind(p)]
        where = f"pattern {spec!r}"
    else:
        if not path.is_file():
            raise TableError(f"input file {spec!r} does not exist")
        if not table_kind(path):
            raise TableError(f"input file {spec!r}: expected one of {accepted()}")
        return [path]
    if output is not None:
        written = output.resolve()
        files = [p for p in files if not p.resolve().is_relative_to(written)]
        where += f" (less the output {str(output)!r})"
    if not files:
        raise TableError(f"{where} holds no {accepted()} files")
    return sorted(files)


def chunk_digest(frame, columns: list[str]) -> str:
    """A digest of a chunk's ids and texts, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for column in columns:
        digest.update(column.encode())
        for value in frame[column].tolist():
            digest.update(repr(value).encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
    return digest.hexdigest()


def input_root(spec: str, files: list[Path]) -> Path:
    """The folder the ``file`` ids and part names are relative to: the directory an input names, a pattern's
    folder (its part before the first wildcard), a file's own folder.

    It depends on the input as given, not on the files found, so files added to a
    corpus later leave the ids, and the parts, of the others as they were. Where a
    file lies outside it (a pattern with ``..`` after a wildcard), the files' common folder.
    """
    path = Path(spec)
    if path.is_dir():
        root = path
    elif path.is_file():
        root = path.parent
    else:
        fixed = []
        for part in path.parts:
            if any(ch in part for ch in "*?["):
                break
            fixed.append(part)
        root = Path(*fixed) if fixed else Path(".")
    root = root.resolve()
    if all(p.resolve().is_relative_to(root) for p in files):
        return root
    return Path(os.path.commonpath([str(p.resolve().parent) for p in files]))


def relative_name(path: Path, root: Path) -> str:
    """A file's path below the input's folder (:func:`input_root`; the same however the input was spelt)."""
    resolved = path.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else resolved.as_posix()


def part_name(path: Path, root: Path, chunk: int) -> str:
    """A part's file name: the source file's name, a digest of its path, the chunk number."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40]
    tag = hashlib.blake2b(relative_name(path, root).encode(), digest_size=4).hexdigest()
    return f"part-{stem}-{tag}-{chunk:06d}.parquet"


def part_is_complete(path: Path, expected: dict) -> bool:
    """Whether a part file is whole and was made from the same chunk with the same settings."""
    return path.is_file() and _part_footer(path) == (expected, expected["rows"])


def written_by_skbert(path: Path) -> bool:
    """Whether a file is a part skbert wrote (a readable Parquet footer holding skbert's record)."""
    return _part_footer(path) is not None


def _part_footer(path: Path) -> tuple[dict, int] | None:
    """A part's record (what it was made from and with) and row count, from its Parquet footer; None for a file
    that is truncated, not Parquet, or without skbert's record."""
    try:
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(path)
        return json.loads(metadata.metadata[METADATA_KEY]), metadata.num_rows
    except Exception:
        return None


def id_table(frame, names: list[str], types: dict):
    """The id columns of a frame as an Arrow table, each of the type ``types`` gives it (its input's), else
    inferred.

    A chunk's values alone would give other types in other chunks (no type for a chunk
    whose ids are all null); an integer id stays an integer.
    """
    import pyarrow as pa

    arrays = []
    for name in names:
        values, wanted = frame[name].tolist(), types.get(name)
        try:  # from_pandas: a NaN is a null, as in pandas
            arrays.append(pa.array(values, type=wanted, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # a type pa.array does not build from Python values
            arrays.append(pa.array(values, from_pandas=True).cast(wanted))
    return pa.Table.from_arrays(arrays, names=list(names))


def check_output_columns(ids, feature_names, layout: str) -> None:
    """Check that an output's columns have distinct names: the ids, then the embedding's list column and/or
    its feature columns.

    Raises
    ------
    ColumnError
        Naming the repeated column (pandas and pyarrow cannot read a table that holds one twice).
    """
    names = list(ids)
    if layout in ("list", "both"):
        names.append(EMBEDDING_COLUMN)
    if layout in ("columns", "both"):
        names.extend(str(name) for name in feature_names)
    seen = set()
    for name in names:
        if name in seen:
            what = "an id column" if list(ids).count(name) > 1 else "an id column and the embedding's"
            raise ColumnError(f"the output would hold the column {name!r} twice ({what}): readers refuse such a "
                              "table; name each id column once, and rename a column that clashes with the "
                              f"embedding's ({EMBEDDING_COLUMN!r}, or the feature names with --layout columns)")
        seen.add(name)


def embedding_table(ids, X: np.ndarray, names: list[str], layout: str):
    """An Arrow table of the id columns, then the embedding as a fixed-size list column and/or a column per feature.

    Parameters
    ----------
    ids : pyarrow.Table
        The id columns, one row per row of ``X``.
    X : ndarray of shape (n, d), float32
    names : list of str
        The feature names (``get_feature_names_out``).
    layout : {"list", "columns", "both"}
    """
    import pyarrow as pa

    table = ids
    if layout in ("list", "both"):
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), pa.float32()), X.shape[1])
        table = table.append_column(EMBEDDING_COLUMN, vectors)
    if layout in ("columns", "both"):
        for j, name in enumerate(names):
            table = table.append_column(str(name), pa.array(X[:, j], pa.float32()))
    return table


@dataclass
class PartJob:
    """One chunk to embed and write.

    Attributes
    ----------
    frame : pandas.DataFrame
        The chunk's id and text columns (null rows already handled).
    destination : str
        The part's final path.
    record : dict
        What the part's metadata records (source, chunk, rows, digest, settings).
    id_types : dict
        The Arrow type of each id column (:func:`id_types`), for :func:`id_table`.
    """

    frame: object
    destination: str
    record: dict
    id_types: dict


@dataclass
class Options:
    """How chunks become parts.

    Attributes
    ----------
    text_columns : list of str
        One column, or two (A, B) for sentence pairs.
    id_columns : list of str
        Kept in the output before the embedding.
    made_ids : tuple of str, default=()
        Of :data:`~skbert._columns.MADE_IDS`, those made whatever the input holds (the
        default ids); the others in ``id_columns`` are made only where a file lacks them.
    layout : {"list", "columns", "both"}
        The embedding as one fixed-size list column, one column per feature, or both.
    threads : int or None
        Threads torch uses for each chunk (set on Dask workers, which start with one).
    """

    text_columns: list
    id_columns: list
    layout: str = "list"
    threads: int | None = None
    made_ids: tuple = ()

    @property
    def columns(self) -> TextColumns:
        """The text and id columns, as the one reader of text columns takes them."""
        return TextColumns(tuple(self.text_columns), tuple(self.id_columns))


#: How parts are written; a part written otherwise (before id columns kept their input's types: 2) is redone.
PART_FORMAT = 2


def part_settings(embedder, options: Options, types: dict | None = None) -> str:
    """What a part is made with: everything that changes its numbers or its columns.

    The estimator's :meth:`~skbert.BertEmbedder.numbers_digest` (the weights themselves,
    the device type and precision as resolved on this machine, the window, pooling...),
    so new weights in the same folder, or "auto" resolving to another precision, redo
    every part; then which columns a part holds and how (the id columns' types
    included), and :data:`PART_FORMAT`.

    Parameters
    ----------
    embedder : BertEmbedder
        Fitted.
    options : Options
    types : dict, optional
        The id columns' Arrow types (:func:`id_types`).

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    described = json.dumps([PART_FORMAT, embedder.numbers_digest(), options.text_columns, options.id_columns,
                            options.layout, {name: str(kind) for name, kind in (types or {}).items()}], default=str)
    return hashlib.blake2b(described.encode(), digest_size=16).hexdigest()


def embed_part(embedder, job: PartJob, options: Options) -> dict:
    """Embed one chunk and write its part atomically; returns counts.

    Runs in this process or on a Dask worker: the embedder arrives fitted and
    without weights, and the model loads once per process.
    """
    import pyarrow.parquet as pq

    frame = job.frame
    texts = options.columns.texts_of(frame)
    names = [str(name) for name in embedder.get_feature_names_out()]
    with caller_reports_truncation(), torch_threads(options.threads):  # truncation: said once for the run
        X, report = embedder.transform_with_report(texts)
        X = np.asarray(X)  # an array whatever set_output says
    counts = {"encoded": report.n_encoded, "cache_hits": report.n_cache_hits, "truncated": report.n_truncated}
    table = embedding_table(id_table(frame, options.id_columns, job.id_types), X, names, options.layout)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(job.record).encode()})
    destination = Path(job.destination)
    temporary = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    pq.write_table(table, temporary)
    os.replace(temporary, destination)  # the part appears whole, or not at all
    return {"rows": len(frame), **counts}


@dataclass
class StreamSummary:
    """What a streaming run did.

    Attributes
    ----------
    rows, parts, parts_skipped, null_rows, encoded, cache_hits, truncated, removed : int
        Rows written (this run and kept from before), parts in the dataset, parts
        found complete and kept, rows with a missing text (skipped or embedded as
        empty), texts encoded, served from a cache, truncated, and stale parts removed.
    """

    rows: int = 0
    parts: int = 0
    parts_skipped: int = 0
    null_rows: int = 0
    encoded: int = 0
    cache_hits: int = 0
    truncated: int = 0
    removed: int = 0


def made_for(options: Options, available) -> list[str]:
    """The id columns made for a file (of :data:`~skbert._columns.MADE_IDS`) rather than read from it: the default
    ids always, a named one where the file has no column of that name."""
    return [c for c in options.id_columns if c in MADE_IDS and (c in options.made_ids or c not in available)]


def id_types(columns: dict, options: Options) -> dict:
    """The Arrow type of each id column (``columns``: input file -> its columns), one for every part: the input
    files' types, unified as pyarrow reads such files back as one table (a string and a large string, an int32
    and an int64).

    Raises
    ------
    ColumnError
        For id columns whose types do not unify (an integer in one file, a text in another).
    """
    import pyarrow as pa

    made = {"file": pa.string(), "row": pa.int64()}
    schemas = []
    for path, available in columns.items():
        built = made_for(options, available)
        held = column_types(path, [c for c in options.id_columns if c not in built])
        schemas.append((path, pa.schema([(c, held[c] if c in held else made[c]) for c in options.id_columns])))
    try:
        unified = pa.unify_schemas([schema for _, schema in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        for name in options.id_columns:  # name the column and two files that disagree
            kinds = {}
            for path, schema in schemas:
                kinds.setdefault(str(schema.field(name).type), path)
            if len(kinds) > 1:
                (first, a), (second, b) = list(kinds.items())[:2]
                raise ColumnError(f"id column {name!r} is {first} in {str(a)!r} but {second} in {str(b)!r}: the "
                                  "parts would not read back as one table; give inputs whose id columns agree") from None
        raise
    return {name: unified.field(name).type for name in options.id_columns}


def _jobs(columns: dict, output: Path, root: Path, options: Options, types: dict, chunk_rows: int, on_null: str,
          settings: str, summary: StreamSummary, expected: set):
    """Read every chunk of every file (``columns``: file -> its columns, each checked); yield the jobs whose parts
    are not already complete."""
    reader = options.columns
    for path, available in columns.items():
        made = made_for(options, available)
        read = [c for c in reader.texts + reader.ids if c not in made]
        start = 0
        for index, frame in enumerate(iter_chunks(path, list(dict.fromkeys(read)), chunk_rows)):
            frame = reader.with_made_ids(frame.reset_index(drop=True), made, first_row=start,
                                         file=relative_name(path, root))
            n_read = len(frame)
            frame, nulls = reader.apply_null_policy(frame, on_null, repr(str(path)), first_row=start)
            start += n_read
            summary.null_rows += nulls
            if len(frame) == 0:  # every row skipped: no part
                continue
            name = part_name(path, root, index)
            expected.add(name)
            record = {"source": relative_name(path, root), "chunk": index, "rows": len(frame),
                      "digest": chunk_digest(frame, options.id_columns + options.text_columns), "settings": settings}
            summary.parts += 1
            summary.rows += len(frame)
            if part_is_complete(output / name, record):
                summary.parts_skipped += 1
                continue
            yield PartJob(frame, str(output / name), record, types)


def stream_embed(embedder, spec: str, output: Path, options: Options, *, chunk_rows: int = 10_000,
                 on_null: str = "error", settings: str | None = None, client=None, progress=None) -> StreamSummary:
    """Embed every chunk of the input into a Parquet dataset of parts under ``output``.

    Parameters
    ----------
    embedder : BertEmbedder
        Fitted.
    spec : str
        A file, directory or glob (:func:`input_files`).
    output : Path
        The dataset directory (made if needed).
    options : Options
    chunk_rows : int, default=10_000
        Rows read, embedded and written at a time (one part each).
    on_null : {"error", "empty", "skip"}, default="error"
        A missing or non-string text: stop with the file, row and id; embed it as
        an empty text; or leave the row out (counted).
    settings : str, optional
        A digest of the settings the parts are made with (a part made otherwise is
        redone); by default :func:`part_settings`.
    client : distributed.Client, optional
        Run the chunks on its workers, a few per worker in flight at a time.
    progress : callable, optional
        Called with the rows of each finished part.

    Returns
    -------
    StreamSummary
    """
    files = input_files(spec, output)
    columns = {path: file_columns(path) for path in files}  # every file readable before any work starts
    for path, available in columns.items():  # and holding the columns, before any work starts
        options.columns.check_in(available, f"in {str(path)!r}", made=MADE_IDS)
    check_output_columns(options.id_columns, embedder.get_feature_names_out(), options.layout)
    types = id_types(columns, options)
    settings = part_settings(embedder, options, types) if settings is None else settings
    made_output = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        return _stream(embedder, spec, output, options, files, columns, types, chunk_rows, on_null, settings, client,
                       progress)
    except BaseException:  # a run that wrote nothing (an error, Ctrl-C) leaves no folder of its own behind
        if made_output:
            with contextlib.suppress(OSError):  # not empty (a part, a worker's file): kept
                output.rmdir()
        raise


def _stream(embedder, spec, output, options, files, columns, types, chunk_rows, on_null, settings, client,
            progress):
    """:func:`stream_embed`'s work, once the inputs and the output folder are checked."""
    root = input_root(spec, files)
    summary, expected = StreamSummary(), set()
    jobs = _jobs(columns, output, root, options, types, chunk_rows, on_null, settings, summary, expected)

    def account(counts):
        summary.encoded += counts["encoded"]
        summary.cache_hits += counts["cache_hits"]
        summary.truncated += counts["truncated"]
        if progress is not None:
            progress(counts["rows"])

    if client is None:
        for job in jobs:
            account(embed_part(embedder, job, options))
    else:
        from distributed import as_completed

        limit = 2 * max(1, len(client.scheduler_info().get("workers", {})))
        running = as_completed()
        for job in jobs:  # a bounded number of chunks in flight: memory stays bounded on this side too
            running.add(client.submit(embed_part, embedder, job, options, pure=False))
            while running.count() >= limit:
                account(next(running).result())
        for future in running:
            account(future.result())
    if summary.rows == 0:  # before any clean-up: a wrong input removes nothing
        raise TableError(f"input {spec!r} has no rows" + (" with text" if summary.null_rows else ""))
    inputs = {path.resolve() for path in files}
    for stale in output.glob("part-*.parquet"):  # parts no chunk of this run made: from other inputs
        # only skbert's own parts: never an input, nor a file another tool wrote there
        if stale.name not in expected and stale.resolve() not in inputs and written_by_skbert(stale):
            stale.unlink()
            summary.removed += 1
    for leftover in output.glob(".part-*.tmp-*"):  # a killed writer's temporary file
        leftover.unlink(missing_ok=True)
    return summary
