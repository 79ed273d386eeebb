"""Reading input tables, and the one null policy, for every command-line output.

A file output (``-o FILE.parquet``, ``.npy``) reads a table whole, a dataset output
(``-o DIRECTORY``) reads it in chunks: both go through :func:`read_table` /
:func:`iter_chunks`, which read CSV and TSV the same way (every column as text:
"NA", "null" and "None" are texts, and only an empty field is missing) and Parquet
through pyarrow (a null is missing), and both apply :func:`apply_null_policy`, which
says what a missing text is (:func:`~skbert._validation.is_missing`: the same
definition the estimator's input checks use) and reports it in one wording.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ._validation import describe, is_missing

#: File suffixes read, and how.
READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
#: What a row without text becomes: an error naming it, the empty text, or no row (counted).
ON_NULL = ("error", "empty", "skip")
#: CSV cells are text as written; only an empty field is a null.
_CSV_OPTIONS = {"dtype": str, "keep_default_na": False, "na_values": [""]}


class TableError(Exception):
    """A problem with an input table that the user can fix; reported without a traceback."""


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


def apply_null_policy(frame, text_columns: list[str], id_columns: list[str], on_null: str, where: str,
                      first_row: int = 0):
    """Check a table's text columns and apply ``on_null`` to the rows without text.

    Parameters
    ----------
    frame : pandas.DataFrame
    text_columns : list of str
        One column, or two (A, B) for sentence pairs.
    id_columns : list of str
        Named in the error for the first rows without text.
    on_null : {"error", "empty", "skip"}
    where : str
        The input, for messages (``"'in.csv'"``).
    first_row : int, default=0
        The input row number of the frame's first row (a chunk's offset).

    Returns
    -------
    frame : pandas.DataFrame
        The rows to embed (without the null rows under ``"skip"``; with ``""`` in
        their place under ``"empty"``), text columns as Python objects.
    n_null : int
        Rows that had no text.

    Raises
    ------
    TableError
        Under ``"error"``, for rows without text; under any policy, for a value that
        is neither a text nor missing (a number in a Parquet column, say).
    """
    missing = np.zeros(len(frame), dtype=bool)
    for column in text_columns:
        values = frame[column].tolist()
        nulls = np.fromiter((is_missing(v) for v in values), dtype=bool, count=len(values))
        wrong = [i for i, v in enumerate(values) if not nulls[i] and not isinstance(v, str)]
        if wrong:
            raise TableError(
                f"{where}, {_rows(frame, wrong[:1], id_columns, first_row)}: column {column!r} holds "
                f"{describe(values[wrong[0]])}, not a text; text columns hold strings (or nulls)"
            )
        missing |= nulls
    n_null = int(missing.sum())
    if not n_null:
        return frame, 0
    if on_null == "error":
        absent = np.flatnonzero(missing)
        more = f" and {n_null - 5} more" if n_null > 5 else ""
        raise TableError(
            f"{where}: {n_null} row(s) have no text in column(s) {', '.join(map(repr, text_columns))} (an empty "
            f"field or a null): {_rows(frame, absent[:5], id_columns, first_row)}{more}; --on-null empty embeds "
            "them as empty texts, --on-null skip leaves them out"
        )
    if on_null == "skip":
        return frame[~missing], n_null
    frame = frame.copy()
    for column in text_columns:
        frame[column] = [value if isinstance(value, str) else "" for value in frame[column].tolist()]
    return frame, n_null


def _rows(frame, positions, id_columns: list[str], first_row: int) -> str:
    """``row 1 (id='008'), row 3 (id='010')``: rows by their input number and ids."""
    described = []
    for position in positions:
        ids = ", ".join(f"{c}={frame[c].iloc[position]!r}" for c in id_columns if c in frame.columns)
        described.append(f"row {first_row + int(position)}{f' ({ids})' if ids else ''}")
    return ", ".join(described)
