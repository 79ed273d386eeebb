"""Which columns of a table are the texts and which the ids, and what a row without text becomes.

The one reader of text columns for every way skbert takes its texts from a table:
the command line's file output (a table read whole), its dataset output (a table
read chunk by chunk, the chunks embedded here or on Dask workers) and
:mod:`skbert.dask` (a Dask frame's column). :class:`TextColumns` names the columns:
one text column, or two read as sentence pairs (A, B), and the id columns kept beside
the embedding. It checks that a table has them (:meth:`TextColumns.check_in`),
applies the null policy ``on_null`` with the one definition of a missing value
(:func:`~skbert._validation.is_missing`), checks that every other value is a text
(:meth:`TextColumns.apply_null_policy`), and hands the texts, or the pairs, to the
estimator (:meth:`TextColumns.texts_of`). Every mistake it finds is a
:class:`ColumnError`, in one wording whichever caller met it.

Reading the files themselves is :mod:`skbert._tables`' job; this module knows no
file, no model and no estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._validation import describe, is_missing

#: What a row without text becomes: an error naming it, the empty text, or no row (counted).
ON_NULL = ("error", "empty", "skip")
#: The id columns a dataset output makes: the file a row came from (its path below the input's folder:
#: the directory given, a pattern's folder, a file's own) and the row's number in that file. By default
#: always; where ``--id-column`` names one, only where the input has no column of that name.
MADE_IDS = ("file", "row")
#: How many of a table's columns an error lists.
_LISTED = 20


class ColumnError(ValueError):
    """A text or id column the table lacks, or a text column holding what is neither a text nor missing,
    or rows without text under ``on_null="error"``.

    A ``ValueError``: the command line reports it in one line with exit status 2,
    :func:`skbert.dask.embed` raises it to the caller.
    """


def _listed(columns) -> str:
    columns = list(columns)
    more = f" and {len(columns) - _LISTED} more" if len(columns) > _LISTED else ""
    return f"{columns[:_LISTED]}{more}"


@dataclass(frozen=True)
class TextColumns:
    """The text column (or the two columns of sentence pairs) and the id columns of a table.

    Attributes
    ----------
    texts : tuple of str
        One column of texts, or two, (A, B), read as sentence pairs.
    ids : tuple of str, default=()
        Columns kept beside the embedding, to say which row is which; empty until
        :meth:`with_index_ids` names the table's index.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"q": ["a river", "money"], "a": ["the bank", None], "doc": ["d0", "d1"]})
    >>> columns = TextColumns.named(["q", "a"], ids=["doc"])
    >>> rows, n_null = columns.apply_null_policy(frame, "empty", "'in.csv'")
    >>> columns.texts_of(rows), n_null
    ([('a river', 'the bank'), ('money', '')], 1)
    """

    texts: tuple
    ids: tuple = ()

    def __post_init__(self):
        if len(self.texts) not in (1, 2):
            raise ColumnError(f"column={list(self.texts)!r}: a list of columns names a pair's two sides, (A, B).")

    @classmethod
    def named(cls, column, ids=None) -> TextColumns:
        """The columns a caller names.

        Parameters
        ----------
        column : str or list of two str
            The text column, or the (A, B) columns of sentence pairs.
        ids : list of str, optional
            The id columns.

        Returns
        -------
        TextColumns

        Raises
        ------
        ColumnError
            For a list of other than two columns.
        """
        texts = tuple(column) if isinstance(column, (list, tuple)) else (column,)
        return cls(texts, tuple(ids or ()))

    @property
    def pairs(self) -> bool:
        """Whether the texts are sentence pairs (two columns)."""
        return len(self.texts) == 2

    def _named(self) -> list[tuple[str, str]]:
        kinds = ["column", "pair column"][: len(self.texts)]
        return list(zip(kinds, self.texts)) + [("id column", name) for name in self.ids]

    def check_in(self, available, where: str, made=()) -> None:
        """Check that a table has every column named.

        Parameters
        ----------
        available : sequence of str
            The table's columns.
        where : str
            Where the columns were looked for, as the message says it after "is not"
            (``"in the input"``, ``"in 'a.csv'"``, ``"among the columns of the frame"``).
        made : sequence of str, default=()
            Id columns the caller makes where the table lacks them (:data:`MADE_IDS`).

        Raises
        ------
        ColumnError
            Naming the first absent column, its kind and the table's columns.
        """
        available = list(available)
        for kind, name in self._named():
            if name not in available and not (kind == "id column" and name in made):
                raise ColumnError(f"{kind} {name!r} is not {where}; its columns are {_listed(available)}")

    def with_index_ids(self, frame):
        """Without id columns, the table's index becomes the id column (named as the index is, else "row"; where
        the table has a column of that name, "row_index" or the first such name it lacks).

        Parameters
        ----------
        frame : pandas.DataFrame

        Returns
        -------
        frame : pandas.DataFrame
            With the index as a column, where it became the id.
        columns : TextColumns
            With that id column.
        """
        if self.ids:
            return frame, self
        name = frame.index.name or "row"
        if name in frame.columns:  # a column of that name already: the index goes in beside it, named apart
            candidates = (f"{name}_index", *(f"{name}_index_{k}" for k in range(1, len(frame.columns) + 2)))
            name = next(candidate for candidate in candidates if candidate not in frame.columns)
        return frame.rename_axis(name).reset_index(), replace(self, ids=(name,))

    def with_made_ids(self, frame, made, *, first_row: int, file: str):
        """A chunk with the :data:`MADE_IDS` columns ``made`` names (which ones a caller makes, rather than reads
        from the file, is its own decision: :func:`skbert._streaming.made_for`).

        Parameters
        ----------
        frame : pandas.DataFrame
            A chunk of a file, indexed from 0.
        made : sequence of str
            Of :data:`MADE_IDS`: ``"row"``, the row's number in its file, and
            ``"file"``, ``file``.
        first_row : int
            The row number, in its file, of the chunk's first row.
        file : str
            The file, as the ``file`` column names it.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        if "row" in made:
            frame["row"] = np.arange(first_row, first_row + len(frame), dtype=np.int64)
        if "file" in made:
            frame["file"] = pd.Series([file] * len(frame), dtype=object)
        return frame

    def apply_null_policy(self, frame, on_null: str, where: str, first_row: int = 0):
        """Check the text columns' values and apply ``on_null`` to the rows without text.

        A row without text is one with a missing value (:func:`~skbert._validation.is_missing`:
        None, NaN, pandas' NA; a string such as "NA" is a text) in any text column.

        Parameters
        ----------
        frame : pandas.DataFrame
        on_null : {"error", "empty", "skip"}
            Stop, naming the first rows without text and their ids; embed each
            missing value as the empty text; or leave the row out.
        where : str
            The input, for messages (``"'in.csv'"``).
        first_row : int, default=0
            The input row number of the frame's first row (a chunk's offset).

        Returns
        -------
        frame : pandas.DataFrame
            The rows to embed (without the rows without text under ``"skip"``; with
            ``""`` for each missing value under ``"empty"``).
        n_null : int
            Rows that had no text.

        Raises
        ------
        ColumnError
            Under ``"error"``, for rows without text; under any policy, for a value
            that is neither a text nor missing (a number in a Parquet column, say).
        """
        if on_null not in ON_NULL:
            raise ValueError(f"on_null={on_null!r}; expected one of {ON_NULL}")
        missing = np.zeros(len(frame), dtype=bool)
        for column in self.texts:
            values = frame[column].tolist()
            nulls = np.fromiter((is_missing(v) for v in values), dtype=bool, count=len(values))
            wrong = [i for i, v in enumerate(values) if not nulls[i] and not isinstance(v, str)]
            if wrong:
                raise ColumnError(
                    f"{where}, {self._rows(frame, wrong[:1], first_row)}: column {column!r} holds "
                    f"{describe(values[wrong[0]])}, not a text; text columns hold strings (or nulls)"
                )
            missing |= nulls
        n_null = int(missing.sum())
        if not n_null:
            return frame, 0
        if on_null == "error":
            absent = np.flatnonzero(missing)
            more = f" and {n_null - 5} more" if n_null > 5 else ""
            raise ColumnError(
                f"{where}: {n_null} row(s) have no text in column(s) {', '.join(map(repr, self.texts))} (an empty "
                f"field or a null): {self._rows(frame, absent[:5], first_row)}{more}; --on-null empty embeds "
                "them as empty texts, --on-null skip leaves them out"
            )
        if on_null == "skip":
            return frame[~missing], n_null
        frame = frame.copy()
        for column in self.texts:
            frame[column] = [value if isinstance(value, str) else "" for value in frame[column].tolist()]
        return frame, n_null

    def _rows(self, frame, positions, first_row: int) -> str:
        """``row 1 (id='008'), row 3 (id='010')``: rows by their input number and ids."""
        described = []
        for position in positions:
            ids = ", ".join(f"{c}={_plain(frame[c].iloc[position])!r}" for c in self.ids if c in frame.columns)
            described.append(f"row {first_row + int(position)}{f' ({ids})' if ids else ''}")
        return ", ".join(described)

    def texts_of(self, frame) -> list:
        """The texts of a table's rows, in order: a list of str, or of (A, B) tuples for sentence pairs.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows the null policy has passed.

        Returns
        -------
        list of str, or list of (str, str)
        """
        sides = [frame[name].tolist() for name in self.texts]
        return list(zip(*sides)) if self.pairs else sides[0]

    def select(self, frame):
        """The text column (a Series) or the two columns of pairs (a frame) of a pandas or Dask frame,
        index and all, for an estimator that reads them as they are."""
        return frame[list(self.texts)] if self.pairs else frame[self.texts[0]]


def _plain(value):
    """A numpy scalar as the Python value it holds (``3``, not ``np.int64(3)``, in a message)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value


def texts_in(data, column=None):
    """The texts of a pandas or Dask collection: a Series of texts, or the column(s) of a frame that
    ``column`` names (a frame of one column needs no name).

    Parameters
    ----------
    data : Series or DataFrame (pandas or Dask)
    column : str or list of two str, optional
        The text column, or the (A, B) columns of sentence pairs.

    Returns
    -------
    Series or DataFrame
        The texts with the input's index: a Series, or a frame of the two pair columns.

    Raises
    ------
    ColumnError
        For ``column`` with a Series, a frame of several columns without ``column``,
        or a column the frame lacks.
    """
    if getattr(data, "ndim", 1) != 2:
        if column is not None:
            raise ColumnError(f"column={column!r} was given, but data is a Series, not a frame.")
        return data
    if column is None:
        if len(data.columns) != 1:
            raise ColumnError(f"data is a frame with {len(data.columns)} columns {_listed(data.columns)}; "
                              "name the text column with column=...")
        column = data.columns[0]
    columns = TextColumns.named(column)
    columns.check_in(data.columns, "among the columns of the frame")
    return columns.select(data)
