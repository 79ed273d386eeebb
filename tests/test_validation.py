"""Bad text input gives a clear error that names the first bad row."""

import numpy as np
import pandas as pd
import pytest

from skbert import BertEmbedder
from skbert._validation import validate_texts


@pytest.mark.parametrize(
    "X, error, match",
    [
        ("just one text", TypeError, "single string; an iterable of texts was expected"),
        (b"bytes", TypeError, "single string"),
        (None, TypeError, "X is None"),
        (42, TypeError, "X is a int"),
        ({"a", "b"}, TypeError, "X is a set"),
        ([], ValueError, "holds no texts"),
        (["ok", None, 3], ValueError, r"row 1 of X is missing \(None\)"),
        (["ok", "fine", float("nan")], ValueError, r"row 2 of X is missing \(NaN\)"),
        (["ok", 3], ValueError, r"row 1 of X is a int \(3\)"),
        (["ok", b"raw"], ValueError, r"row 1 of X is a bytes"),
        (pd.Series(["a", None], index=["x", "y"]), ValueError, r"row 1 \(index 'y'\) of X is missing"),
        (pd.Series(["a", pd.NA], dtype="string"), ValueError, r"row 1 \(index 1\) of X is missing \(<NA>\)"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), ValueError, r"DataFrame with 2 columns \['a', 'b'\]"),
        (np.array([["a", "b"], ["c", "d"]]), ValueError, r"array of shape \(2, 2\)"),
        (np.array([1.0, 2.0]), ValueError, r"row 0 of X is a float"),
    ],
)
def test_bad_input_raises_naming_the_problem(X, error, match):
    with pytest.raises(error, match=match):
        validate_texts(X)


def test_bad_input_is_rejected_by_fit_and_transform(tiny_bert):
    embedder = BertEmbedder(tiny_bert)
    with pytest.raises(TypeError, match="single string"):
        embedder.fit("a text")
    embedder.fit(["a text"])
    with pytest.raises(TypeError, match="single string"):
        embedder.transform("a text")
    with pytest.raises(ValueError, match=r"row 2 of X is missing \(NaN\)"):
        embedder.transform(["a", "b", np.nan])


def test_valid_inputs_come_back_as_lists_of_str():
    assert validate_texts(np.array(["a", ""])) == ["a", ""]
    assert validate_texts(pd.DataFrame({"t": ["x", " "]})) == ["x", " "]
    assert validate_texts(np.array([["x"], ["y"]], dtype=object)) == ["x", "y"]
    assert validate_texts(iter(["a"])) == ["a"]
