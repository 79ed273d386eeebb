"""Checking text input: one text per row, each a string."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

from ._warnings import warn_user

_SURROGATE = re.compile("[\ud800-\udfff]")


def _a(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def is_missing(item) -> bool:
    """Whether a value is a real null: None, NaN, pandas' NA or NaT (what an empty CSV field or a
    Parquet null reads as). The one definition of "missing" for every entry point; a string, even
    "NA", "null" or "None", is a text."""
    if item is None:
        return True
    if isinstance(item, (float, np.floating)):  # numpy's float32 NaN too
        return math.isnan(item)
    return type(item).__name__ in ("NAType", "NaTType")


def describe(item) -> str:
    """A value in an error message: ``missing (None)``, ``missing (NaN)``, ``an int (3)``..."""
    if item is None:
        return "missing (None)"
    if isinstance(item, (float, np.floating)) and math.isnan(item):
        return "missing (NaN)"
    if is_missing(item):
        return f"missing ({item!r})"
    return f"{_a(type(item).__name__)} ({item!r:.40})"


def _container(X, width: int):
    """The items of ``X`` as a list, the pandas row labels (or None) and the frame's column names (or None).

    ``width`` is 1 for texts (a frame or 2-D array must have one column) and 2 for
    sentence pairs (two columns).
    """
    if X is None:
        raise TypeError("X is None; an iterable of texts was expected.")
    if isinstance(X, str):
        raise TypeError(
            "X is a single string; an iterable of texts was expected (for one text, pass [text])."
        )
    if isinstance(X, (bytes, bytearray)):
        raise TypeError(
            f"X is a single {type(X).__name__} object; an iterable of texts (str) was expected "
            "(decode it first, e.g. [X.decode('utf-8')])."
        )
    if _is_sparse(X):
        raise TypeError(
            f"X is a sparse matrix ({type(X).__name__}) of numbers; texts were expected (a list, array or Series "
            "of str). BertEmbedder reads raw text: put it first in a pipeline, before any vectorizer."
        )
    pair_hint = "; or set pairs=True to encode two columns as sentence pairs" if width == 1 else ""
    labels = columns = None
    if _is_frame(X):  # a pandas or polars DataFrame
        if X.shape[1] != width:
            wanted = "one text column was expected: select it, e.g. X['text']" if width == 1 else (
                "sentence pairs need two text columns, A and B: select them, e.g. X[['question', 'answer']]")
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} column{'' if X.shape[1] == 1 else 's'} {list(X.columns)[:10]}; {wanted}"
                f"{pair_hint if X.shape[1] == 2 else ''}."
            )
        columns = list(X.columns)
        labels = getattr(X, "index", None)  # polars has no row labels
        sides = [_column(X, k) for k in range(width)]
        items = sides[0] if width == 1 else list(zip(*sides))
    elif hasattr(X, "iloc") and hasattr(X, "index"):  # pandas Series
        labels = X.index
        items = X.tolist()
    elif isinstance(X, np.ndarray):
        if width == 1 and X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if width == 1 and X.ndim != 1:
            raise ValueError(
                f"X is an array of shape {X.shape}; a 1-D array of texts (or one column) was expected"
                f"{pair_hint if X.ndim == 2 and X.shape[1] == 2 else ''}."
            )
        if width == 2 and (X.ndim != 2 or X.shape[1] != 2):
            raise ValueError(f"X is an array of shape {X.shape}; sentence pairs need shape (n, 2).")
        items = X.tolist()
    elif isinstance(X, (set, frozenset, dict)) or not isinstance(X, Iterable):
        raise TypeError(
            f"X is {_a(type(X).__name__)}; an ordered iterable of texts (list, array, Series) was expected."
        )
    else:
        items = list(X)
    if not items:
        raise ValueError(f"X holds no {'texts' if width == 1 else 'pairs'}; at least one is needed.")
    return items, labels, columns


def _is_frame(X) -> bool:
    """Whether ``X`` is a data frame: pandas' (``iloc`` and ``columns``) or polars' (``get_column``), which
    iterates over its columns, not its rows."""
    return hasattr(X, "columns") and (hasattr(X, "iloc") or hasattr(X, "get_column")) and len(X.shape) == 2


def _column(frame, k: int) -> list:
    """Column ``k`` of a pandas or polars frame, as a list of its values."""
    if hasattr(frame, "iloc"):
        return frame.iloc[:, k].tolist()
    return frame.get_column(frame.columns[k]).to_list()


def _is_sparse(X) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array (checked without importing SciPy)."""
    return type(X).__module__.startswith("scipy.sparse")


def column_names(X) -> list | None:
    """The column names of a data frame whose names are all strings (what scikit-learn records as
    ``feature_names_in_``), else None."""
    if not _is_frame(X):
        return None
    names = list(X.columns)
    return names if all(isinstance(name, str) for name in names) else None


def _where(row: int, labels) -> str:
    return f"row {row}" if labels is None else f"row {row} (index {labels[row]!r})"


def validate_texts(X) -> list[str]:
    """Return the texts in ``X`` as a list of str, in order, or raise a clear error.

    Parameters
    ----------
    X : list, tuple, ndarray, pandas or polars Series, or one-column DataFrame of str
        Any ordered iterable of strings also works. Empty and whitespace-only
        strings are valid texts.

    Returns
    -------
    list of str
        Lone surrogate characters (which no tokenizer accepts) replaced by U+FFFD,
        with a warning that names the first such row.

    Raises
    ------
    TypeError
        If ``X`` is a single string or bytes object, None, unordered (a set or dict),
        a sparse matrix, or not iterable.
    ValueError
        If ``X`` is empty, is a frame with several columns or an array with more than
        one column, or holds an item that is not a string (the message names the
        first such row, with its index label for pandas input).
    """
    items, labels, _ = _container(X, 1)
    if not all(isinstance(item, str) for item in items):
        row = next(i for i, item in enumerate(items) if not isinstance(item, str))
        hint = "; for sentence pairs set pairs=True" if isinstance(items[row], (tuple, list)) else ""
        raise ValueError(
            f"{_where(row, labels)} of X is {describe(items[row])}, not a string; every item must be a text{hint}."
        )
    return _replace_lone_surrogates(items, labels)


def validate_pairs(X) -> list[tuple[str, str]]:
    """Return the sentence pairs in ``X`` as a list of (A, B) tuples of str, in order, or raise a clear error.

    Parameters
    ----------
    X : two-column DataFrame (pandas or polars) or (n, 2) array of str, or a sequence of (A, B) pairs
        A pandas Series of 2-tuples also works. Either side may be an empty string.

    Returns
    -------
    list of (str, str)
        Lone surrogates replaced by U+FFFD (with one warning), as for texts.

    Raises
    ------
    TypeError
        As :func:`validate_texts`.
    ValueError
        If ``X`` is empty or has another number of columns, if an item is not a
        pair, or if a side is not a string (the message names the row, its index
        label for pandas input, and the side, with the column name for a frame).
    """
    items, labels, columns = _container(X, 2)
    for row, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"{_where(row, labels)} of X is {describe(item)}, not a pair (A, B); with pairs=True every "
                "row must hold two texts."
            )
        for side, value in zip("AB", item):
            if not isinstance(value, str):
                name = "" if columns is None else f" (column {columns['AB'.index(side)]!r})"
                raise ValueError(
                    f"{_where(row, labels)}, side {side}{name} of X is {describe(value)}, not a string; "
                    "both sides of every pair must be texts."
                )
    firsts = _replace_lone_surrogates([a for a, _ in items], labels, "side A of ")
    seconds = _replace_lone_surrogates([b for _, b in items], labels, "side B of ")
    return list(zip(firsts, seconds))


def _replace_lone_surrogates(items: list[str], labels, side: str = "") -> list[str]:
    """Replace unpaired UTF-16 surrogates (not valid Unicode, not encodable) by U+FFFD, warning once.

    Python strings can hold them (scraped or badly decoded data does), tokenizers
    cannot. One character replaces one, so character offsets into the original text
    stay right.
    """
    bad = [row for row, text in enumerate(items) if not text.isascii() and _SURROGATE.search(text)]
    if not bad:
        return items
    warn_user(
        f"{len(bad)} text(s) hold lone surrogate characters (not valid Unicode), first {side}"
        f"{_where(bad[0], labels)}; each was replaced by U+FFFD before tokenising (offsets are unchanged)."
    )
    items = list(items)
    for row in bad:
        items[row] = _SURROGATE.sub("\ufffd", items[row])
    return items
