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


def _describe(item) -> str:
    if item is None:
        return "missing (None)"
    if isinstance(item, float) and math.isnan(item):
        return "missing (NaN)"
    if type(item).__name__ in ("NAType", "NaTType"):
        return f"missing ({item!r})"
    return f"{_a(type(item).__name__)} ({item!r:.40})"


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
        Lone surrogate characters (which no tokenizer accepts) replaced by U+FFFD,
        with a warning that names the first such row.

    Raises
    ------
    TypeError
        If ``X`` is a single string or bytes object, None, unordered (a set or dict)
        or not iterable.
    ValueError
        If ``X`` is empty, is a frame with several columns or an array with more than
        one column, or holds an item that is not a string (the message names the
        first such row, with its index label for pandas input).
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
        raise TypeError(
            f"X is {_a(type(X).__name__)}; an ordered iterable of texts (list, array, Series) was expected."
        )
    else:
        items = list(X)
    if not items:
        raise ValueError("X holds no texts; at least one is needed.")
    if not all(isinstance(item, str) for item in items):
        row = next(i for i, item in enumerate(items) if not isinstance(item, str))
        where = f"row {row}" if labels is None else f"row {row} (index {labels[row]!r})"
        raise ValueError(f"{where} of X is {_describe(items[row])}, not a string; every item must be a text.")
    return _replace_lone_surrogates(items, labels)


def _replace_lone_surrogates(items: list[str], labels) -> list[str]:
    """Replace unpaired UTF-16 surrogates (not valid Unicode, not encodable) by U+FFFD, warning once.

    Python strings can hold them (scraped or badly decoded data does), tokenizers
    cannot. One character replaces one, so character offsets into the original text
    stay right.
    """
    bad = [row for row, text in enumerate(items) if not text.isascii() and _SURROGATE.search(text)]
    if not bad:
        return items
    row = bad[0]
    where = f"row {row}" if labels is None else f"row {row} (index {labels[row]!r})"
    warn_user(
        f"{len(bad)} text(s) hold lone surrogate characters (not valid Unicode), first {where}; each was "
        "replaced by U+FFFD before tokenising (offsets are unchanged)."
    )
    items = list(items)
    for row in bad:
        items[row] = _SURROGATE.sub("\ufffd", items[row])
    return items
