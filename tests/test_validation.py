"""Bad text input gives a clear error that names the first bad row."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_inputs import CASES, embedder_for, markdown, matches, run_case

from skbert import BertEmbedder
from skbert._validation import validate_texts


@pytest.mark.parametrize("what, make_X, expected", CASES, ids=[case[0] for case in CASES])
def test_every_bad_input_is_named_or_embedded(tiny_bert, what, make_X, expected):
    """Through ``fit_transform``, as a user would call it."""
    kind, message = run_case(embedder_for(BertEmbedder(tiny_bert), what), make_X)
    assert matches(expected, kind, message), (kind, message)


def test_the_readme_table_is_what_the_cases_give(tiny_bert):
    """The README lists every case with the message it really produces (``python tests/bad_inputs.py``)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = re.search(r"<!-- bad-inputs -->\n(.*?)\n<!-- /bad-inputs -->", readme, flags=re.S).group(1)
    assert table == markdown(BertEmbedder(tiny_bert, precision="float32"))


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


@pytest.mark.parametrize("name, value", [("stride", True), ("stride", False), ("batch_size", True),
                                         ("token_budget", True), ("layers", True), ("cache_memory_bytes", False),
                                         ("cache_disk_bytes", True)])
def test_a_bool_is_not_a_number_for_an_integer_parameter(tiny_bert, name, value):
    """Python counts True as 1, and so do scikit-learn's interval constraints: stride=True was a stride of 1."""
    from sklearn.utils._param_validation import InvalidParameterError

    from skbert._settings import INTEGER_PARAMETERS

    assert name in INTEGER_PARAMETERS
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of BertEmbedder must be an int, not a "
                       f"bool; got {value}"):
        BertEmbedder(tiny_bert, long_text="chunk", **{name: value}).fit(["a"])
    read = []
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):  # before X is read (an iterator)
        BertEmbedder(tiny_bert, long_text="chunk", **{name: value}).fit_transform(read.append(t) or t for t in "ab")
    assert read == []
    BertEmbedder(tiny_bert, long_text="chunk", **{name: 1 if name != "layers" else -1}).fit(["a"])  # an int is
