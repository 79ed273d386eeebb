"""Every bad or odd input tried, with what must happen to it; the README's table is made from this.

Each case is ``(what, make_X, expected)``: ``expected`` is ``(ErrorType, pattern)`` for an
error whose message matches ``pattern``, or ``("ok", pattern)`` for rows embedded (one per
input row) with a warning matching ``pattern`` (None: no warning).

    python tests/bad_inputs.py     # prints the README's table (runs each case on a tiny model)
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

def _sparse():
    import scipy.sparse

    return scipy.sparse.csr_matrix(np.eye(2))


def _polars():
    import polars

    return polars


CASES = [
    ("a bare string", lambda: "just one text", (TypeError, "single string; an iterable of texts was expected")),
    ("one bytes object", lambda: b"raw bytes", (TypeError, "single bytes object.*decode it first")),
    ("None", lambda: None, (TypeError, "X is None")),
    ("a number", lambda: 42, (TypeError, "X is an int")),
    ("a set of texts (no order)", lambda: {"a", "b"}, (TypeError, "X is a set")),
    ("a dict", lambda: {"a": "b"}, (TypeError, "X is a dict")),
    ("an empty list", lambda: [], (ValueError, "holds no texts")),
    ("None among texts", lambda: ["ok", None], (ValueError, r"row 1 of X is missing \(None\)")),
    ("NaN among texts", lambda: ["ok", float("nan")], (ValueError, r"row 1 of X is missing \(NaN\)")),
    ("numpy's float32 NaN among texts", lambda: ["ok", np.float32("nan")],
     (ValueError, r"row 1 of X is missing \(NaN\)")),
    ("a number among texts", lambda: ["ok", 3], (ValueError, r"row 1 of X is an int \(3\)")),
    ("bytes among texts", lambda: ["ok", b"raw"], (ValueError, r"row 1 of X is a bytes")),
    ("a Series with None", lambda: pd.Series(["a", None], index=["x", "y"]),
     (ValueError, r"row 1 \(index 'y'\) of X is missing \((None|NaN)\)")),
    ("a string Series with <NA>", lambda: pd.Series(["a", pd.NA], dtype="string"),
     (ValueError, r"row 1 \(index 1\) of X is missing \(<NA>\)")),
    ("a DataFrame with two columns", lambda: pd.DataFrame({"a": ["x"], "b": ["y"]}),
     (ValueError, r"DataFrame with 2 columns \['a', 'b'\]")),
    ("a 2-D array with two columns", lambda: np.array([["a", "b"], ["c", "d"]]),
     (ValueError, r"array of shape \(2, 2\)")),
    ("a numeric array", lambda: np.array([1.0, 2.0]), (ValueError, r"row 0 of X is a float")),
    ("a sparse matrix (vectorised text)", lambda: _sparse(), (TypeError, r"X is a sparse matrix \(csr_matrix\)")),
    ("a generator of texts", lambda: (t for t in ["a", "b"]), ("ok", None)),
    ("a one-column DataFrame", lambda: pd.DataFrame({"text": ["a", "b"]}), ("ok", None)),
    ("a one-column polars DataFrame", lambda: _polars().DataFrame({"text": ["a", "b"]}), ("ok", None)),
    ("an (n, 1) array", lambda: np.array([["a"], ["b"]], dtype=object), ("ok", None)),
    ("empty and whitespace-only texts", lambda: ["", "   ", "\n\t"], ("ok", None)),
    ("control characters", lambda: ["\x00\x07 bell", "a\x1bb"], ("ok", None)),
    ("emoji, combining marks, right-to-left, CJK", lambda: ["🙂👍🏽", "e\u0301", "שלום עולם", "漢字かな"], ("ok", None)),
    ("a lone surrogate", lambda: ["ok", "broken \ud800 text"],
     ("ok", r"1 text\(s\) hold lone surrogate characters.*first row 1.*replaced by U\+FFFD")),
    ("a text longer than max_length", lambda: ["word " * 200, "short"],
     ("ok", r"1 of 2 texts were longer than max_length=64 tokens and were truncated")),
    ("a list of (A, B) tuples", lambda: [("a", "b")], (ValueError, r"row 0 of X is a tuple.*set pairs=True")),
    # with pairs=True (sentence pairs): every case's name starts with "pairs:"
    ("pairs: a two-column DataFrame", lambda: pd.DataFrame({"q": ["x", ""], "a": ["y", "z"]}), ("ok", None)),
    ("pairs: a two-column polars DataFrame", lambda: _polars().DataFrame({"q": ["x", ""], "a": ["y", "z"]}),
     ("ok", None)),
    ("pairs: an (n, 2) array", lambda: np.array([["a", "b"], ["c", ""]], dtype=object), ("ok", None)),
    ("pairs: (A, B) tuples and lists", lambda: [("a", "b"), ["c", "d"]], ("ok", None)),
    ("pairs: a one-column DataFrame", lambda: pd.DataFrame({"q": ["x"]}),
     (ValueError, r"DataFrame with 1 column \['q'\]; sentence pairs need two text columns")),
    ("pairs: a list of texts", lambda: ["a", "b"], (ValueError, r"row 0 of X is a str \('a'\), not a pair")),
    ("pairs: a 1-D array", lambda: np.array(["a", "b"]), (ValueError, r"array of shape \(2,\); sentence pairs need")),
    ("pairs: a triple", lambda: [("a", "b", "c")], (ValueError, r"row 0 of X is a tuple.*not a pair")),
    ("pairs: None on side B", lambda: [("a", "b"), ("c", None)],
     (ValueError, r"row 1, side B of X is missing \(None\)")),
    ("pairs: NaN in a frame's second column", lambda: pd.DataFrame({"q": ["x"], "a": [np.nan]}, index=["k"]),
     (ValueError, r"row 0 \(index 'k'\), side B \(column 'a'\) of X is missing \(NaN\)")),
    ("pairs: bytes on side A", lambda: [(b"a", "b")], (ValueError, r"row 0, side A of X is a bytes")),
    ("pairs: an empty list", lambda: [], (ValueError, "holds no pairs")),
    ("pairs: a bare string", lambda: "a", (TypeError, "single string")),
    ("pairs: a lone surrogate on side B", lambda: [("ok", "bad \ud800")],
     ("ok", r"1 text\(s\) hold lone surrogate characters.*first side B of row 0")),
    ("pairs: a pair longer than max_length", lambda: [("word " * 50, "word " * 40)],
     ("ok", r"1 of 1 pairs were longer than max_length=64 tokens and were truncated from the longer side")),
]


def embedder_for(embedder, what: str):
    """The embedder a case runs on: a copy, reading sentence pairs for the ``"pairs:"`` cases."""
    from sklearn.base import clone

    return clone(embedder).set_params(pairs=what.startswith("pairs:"))


def run_case(embedder, make_X):
    """Run ``fit_transform`` on a case; returns (kind, message), kind an error name or "ok"."""
    X = make_X()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = embedder.fit_transform(X)
        except (TypeError, ValueError) as error:
            return type(error).__name__, str(error)
    rows = out.shape[0]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return "ok", f"{rows} rows" + "".join(f"; warns: {m}" for m in messages)


def matches(expected, kind: str, message: str) -> bool:
    want_kind, pattern = expected
    name = want_kind if isinstance(want_kind, str) else want_kind.__name__
    if name != kind:
        return False
    if kind == "ok" and pattern is None:
        return "warns:" not in message
    return re.search(pattern, message) is not None


def markdown(embedder) -> str:
    """The README's table: each case and what actually happens to it."""
    lines = ["| input | what happens |", "| --- | --- |"]
    for what, make_X, _ in CASES:
        kind, message = run_case(embedder_for(embedder, what), make_X)
        outcome = f"embedded, {message}" if kind == "ok" else f"`{kind}`: {message}"
        lines.append(f"| {what} | {outcome.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import _write_tiny_bert

    from skbert import BertEmbedder

    print(markdown(BertEmbedder(_write_tiny_bert(Path(tempfile.mkdtemp()) / "tiny"), precision="float32")))
