"""Checking text input: one text per row, each a string."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def _describe(item) -> str:
    if item is None:
        return "missing (None)"
    if isinstance(item, float) and math.isnan(item):
        return "missing (NaN)"
    if type(item).__name__ in ("NAType", "NaTType"):
        return f"missing ({item!r})"
    return f"a {type(item).__name__} ({item!r:.40})"


def validate_texts(X) -> list[str]:
    """Return the texts in ``X`` as a list of str, in order, or raise a clear error.

    Parameters
    ----------
    X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
        Any ordered iterable of strings also works. Empty and whitespace-only
        strings are valid texts.

    Returns
    -------
    list of str

    Raises
    ------
    TypeError
        If ``X`` is a single string, None, unordered (a set or dict) or not iterable.
    ValueError
        If ``X`` is empty, is a frame with several columns or an array with more than
        one column, or holds an item that is not a string (the message names the
        first such row, with its index label for pandas input).
    """
    if X is None:
        raise TypeError("X is None; an iterable of texts was expected.")
    if isinstance(X, (str, bytes)):
        raise TypeError(
            "X is a single string; an iterable of texts was expected (for one text, pass [text])."
        )
    labels = None
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns {list(X.columns)[:10]}; "
                "one text column was expected (select it, e.g. X['text'])."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc") and hasattr(X, "index"):  # pandas Series
        labels = X.index
        items = X.tolist()
    elif isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"X is an array of shape {X.shape}; a 1-D array of texts (or one column) was expected.")
        items = X.tolist()
    elif isinstance(X, (set, frozenset, dict)) or not isinstance(X, Iterable):
        raise TypeError(f"X is a {type(X).__name__}; an ordered iterable of texts (list, array, Series) was expected.")
    else:
        items = list(X)
    if not items:
        raise ValueError("X holds no texts; at least one is needed.")
    if not all(isinstance(item, str) for item in items):
        row = next(i for i, item in enumerate(items) if not isinstance(item, str))
        where = f"row {row}" if labels is None else f"row {row} (index {labels[row]!r})"
        raise ValueError(f"{where} of X is {_describe(items[row])}, not a string; every item must be a text.")
    return items
