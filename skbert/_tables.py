"""Reading input tables for every command-line output.

A file output (``-o FILE.parquet``, ``.npy``) reads a table whole, a dataset output
(``-o DIRECTORY``) reads it in chunks: both go through :func:`read_table` /
:func:`iter_chunks`, which read CSV and TSV the same way (every column as text:
"NA", "null" and "None" are texts, and only an empty field is missing; TSV quotes
as CSV does, as pandas and spreadsheets write it: a field that opens with a quote
runs to its closing quote) and Parquet through pyarrow (a null is missing;
an integer column with nulls stays integers, not floats). CSV and TSV may be
compressed (``.csv.gz``, ``.tsv.bz2``...: pandas reads them as they are). Which of a
table's columns are texts and ids, and what a row without text becomes, is
:mod:`skbert._columns`' job, for both; :func:`column_types` says what type each id
column keeps in the output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

#: File suffixes read, and how.
READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
#: Compression a CSV or TSV file may carry, after its suffix (pandas infers it from the name).
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
#: CSV cells are text as written; only an empty field is a null.
_CSV_OPTIONS = {"dtype": str, "keep_default_na": False, "na_values": [""]}


class TableError(Exception):
    """An input file that cannot be read as a table (absent, of another kind, malformed); reported
    without a traceback. A problem with its columns is a :class:`~skbert._columns.ColumnError`."""


def table_kind(path: Path) -> str | None:
    """How a file is read ("csv", "tsv" or "parquet"), from its suffix; None for a file of another kind."""
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    if len(suffixes) == 2 and suffixes[1] in COMPRESSED and READERS.get(suffixes[0]) in ("csv", "tsv"):
        return READERS[suffixes[0]]
    return READERS.get(suffixes[-1]) if suffixes else None


def accepted() -> str:
    """The suffixes read, for messages."""
    return f"{', '.join(READERS)} (CSV and TSV also compressed: {', '.join(COMPRESSED)})"


def _kind(path: Path) -> str:
    kind = table_kind(path)
    if kind is None:
        raise TableError(f"input file {str(path)!r}: expected one of {accepted()}")
    return kind


def _text_options(kind: str) -> dict:
    """pandas' reading options for a CSV or TSV file (TSV quotes as CSV does: pandas and spreadsheets quote a TSV
    field that holds a tab, a line break or a leading quote)."""
    return {"sep": "," if kind == "csv" else "\t", **_CSV_OPTIONS}


def _nulls_as_none(frame):
    """Object columns with None for every null of a CSV (pandas reads an empty field as NaN), so an
    empty id cell is a null in Arrow, not a float among strings."""
    return frame.astype(object).where(frame.notna(), None)


def _range_indexes(schema) -> dict:
    """A Parquet file's named pandas RangeIndex levels, which pandas stores as metadata, not as columns: name ->
    (start, step)."""
    described = (schema.pandas_metadata or {}).get("index_columns", [])
    return {d["name"]: (d["start"], d["step"]) for d in described
            if isinstance(d, dict) and d.get("kind") == "range" and d.get("name") is not None}


def file_columns(path: Path) -> list[str]:
    """The columns of a file, read from its header or footer only (an unreadable file is an error); a Parquet
    file's named pandas index among them, also a RangeIndex that pandas stored as metadata."""
    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(path).schema_arrow
            return list(schema.names) + [name for name in _range_indexes(schema) if name not in schema.names]
        import pandas as pd

        return list(pd.read_csv(path, nrows=0, **_text_options(kind)).columns)
    except ImportError as error:
        raise TableError(f"reading Parquet needs pyarrow (pip install pyarrow): {error}") from None
    except Exception as error:  # a malformed or unreadable file
        raise TableError(f"could not read {str(path)!r}: {str(error).strip()}") from None


def column_types(path: Path, columns) -> dict:
    """The Arrow type of each of ``columns`` the file holds, for the output to keep (CSV and TSV: text); a column
    it does not hold (an id the caller makes) is left out.

    An id column keeps its input's type in every part, whatever one chunk's values
    would suggest (a chunk whose ids are all null, an integer column with a null).
    """
    import pyarrow as pa

    if _kind(path) != "parquet":
        held = set(file_columns(path))
        return {name: pa.string() for name in columns if name in held}
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(path).schema_arrow
    ranges = _range_indexes(schema)
    return {name: schema.field(name).type if name in schema.names else pa.int64() for name in columns
            if name in schema.names or name in ranges}


def read_table(path: Path, columns=()):
    """A whole table as a pandas frame (a Parquet file's stored pandas index is kept, unless ``columns`` names it:
    then it is a column, as the file holds it).

    Raises
    ------
    TableError
        If the file does not exist, has another suffix or cannot be read.
    """
    import pandas as pd

    if not path.is_file():
        raise TableError(f"input file {str(path)!r} does not exist")
    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            frame = pq.read_table(path).to_pandas(integer_object_nulls=True)  # ints with nulls: not floats
            named = [name for name in frame.index.names if name is not None and name in columns]
            if named:
                frame = frame.reset_index(level=named)
        else:
            frame = _nulls_as_none(pd.read_csv(path, **_text_options(kind)))
    except ImportError as error:
        raise TableError(f"reading Parquet needs pyarrow (pip install pyarrow): {error}") from None
    except Exception as error:  # a malformed file
        raise TableError(f"could not read {str(path)!r}: {str(error).strip()}") from None
    return frame


def iter_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator:
    """Read the given columns of a file, at most ``chunk_rows`` rows at a time, as pandas frames.

    Read as :func:`read_table` reads the whole file, so a chunk's texts and ids are
    the same values a file output sees (a malformed CSV row is an error in both; a
    Parquet file's stored pandas index is a column like the others); every chunk of
    a CSV file has the same types.
    """
    import numpy as np
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            file = pq.ParquetFile(path)
            ranges = {name: r for name, r in _range_indexes(file.schema_arrow).items()
                      if name in columns and name not in file.schema_arrow.names}
            stored = [name for name in columns if name not in ranges]
            first = 0
            for batch in file.iter_batches(batch_size=chunk_rows, columns=stored):
                frame = batch.to_pandas(integer_object_nulls=True, ignore_metadata=True)
                for name, (start, step) in ranges.items():  # a RangeIndex's values, as pandas would read them
                    frame[name] = start + step * np.arange(first, first + len(frame), dtype=np.int64)
                first += len(frame)
                yield frame[columns]
            return
        # every column read (pandas' usecols would drop a malformed row's extra fields without a word)
        for frame in pd.read_csv(path, chunksize=chunk_rows, **_text_options(kind)):
            yield _nulls_as_none(frame[columns])
    except Exception as error:  # the file went bad part way
        raise TableError(f"could not read {str(path)!r}: {str(error).strip()}") from None
