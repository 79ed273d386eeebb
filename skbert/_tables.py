"""Reading input tables for every command-line output.

A file output (``-o FILE.parquet``, ``.npy``) reads a table whole, a dataset output
(``-o DIRECTORY``) reads it in chunks: both go through :func:`read_table` /
:func:`iter_chunks`, which read CSV and TSV the same way (every column as text:
"NA", "null" and "None" are texts, and only an empty field is missing) and Parquet
through pyarrow (a null is missing). Which of a table's columns are texts and ids,
and what a row without text becomes, is :mod:`skbert._columns`' job, for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

#: File suffixes read, and how.
READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
#: CSV cells are text as written; only an empty field is a null.
_CSV_OPTIONS = {"dtype": str, "keep_default_na": False, "na_values": [""]}


class TableError(Exception):
    """An input file that cannot be read as a table (absent, of another kind, malformed); reported
    without a traceback. A problem with its columns is a :class:`~skbert._columns.ColumnError`."""


def _kind(path: Path) -> str:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise TableError(f"input file {str(path)!r}: expected one of {', '.join(READERS)}")
    return kind


def _csv_separator(kind: str) -> str:
    return "\t" if kind == "tsv" else ","


def _nulls_as_none(frame):
    """Object columns with None for every null of a CSV (pandas reads an empty field as NaN), so an
    empty id cell is a null in Arrow, not a float among strings."""
    return frame.astype(object).where(frame.notna(), None)


def file_columns(path: Path) -> list[str]:
    """The columns of a file, read from its header or footer only (an unreadable file is an error)."""
    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        import pandas as pd

        return list(pd.read_csv(path, sep=_csv_separator(kind), nrows=0).columns)
    except ImportError as error:
        raise TableError(f"reading Parquet needs pyarrow (pip install pyarrow): {error}") from None
    except Exception as error:  # a malformed or unreadable file
        raise TableError(f"could not read {str(path)!r}: {error}") from None


def read_table(path: Path):
    """A whole table as a pandas frame (a Parquet file's stored pandas index is kept).

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

            frame = pq.read_table(path).to_pandas()
        else:
            frame = _nulls_as_none(pd.read_csv(path, sep=_csv_separator(kind), **_CSV_OPTIONS))
    except ImportError as error:
        raise TableError(f"reading Parquet needs pyarrow (pip install pyarrow): {error}") from None
    except Exception as error:  # a malformed file
        raise TableError(f"could not read {str(path)!r}: {error}") from None
    return frame


def iter_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator:
    """Read the given columns of a file, at most ``chunk_rows`` rows at a time, as pandas frames.

    Read as :func:`read_table` reads the whole file, so a chunk's texts and ids are
    the same values a file output sees; every chunk of a CSV file has the same types.
    """
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()
            return
        reader = pd.read_csv(path, sep=_csv_separator(kind), usecols=columns, chunksize=chunk_rows, **_CSV_OPTIONS)
        for frame in reader:
            yield _nulls_as_none(frame)
    except Exception as error:  # the file went bad part way
        raise TableError(f"could not read {str(path)!r}: {error}") from None
