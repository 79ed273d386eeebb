"""A call's report: truncation counted as data, and warned unless the caller says it itself."""

import threading
import warnings

import pytest

from skbert import BertEmbedder
from skbert._report import caller_reports_truncation

LONG = "the river bank was muddy and the water ran " * 3


def test_a_caller_that_reports_truncation_gets_the_counts_and_no_warning(tiny_bert):
    embedder = BertEmbedder(tiny_bert, precision="float32", max_length=8, cache=None).fit(["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caller_reports_truncation():
            report = embedder.transform_with_report([LONG, "a", LONG])[1]
            tokens = embedder.transform_tokens([LONG])
    assert (report.n_long, report.n_truncated) == (2, 2) and len(tokens[0]) == 8
    with pytest.warns(UserWarning, match="2 of 3 texts were longer than max_length=8"):
        embedder.transform_with_report([LONG, "a", LONG])  # after the block: warned again


def test_it_holds_in_its_own_thread_only(tiny_bert):
    """Unlike a warnings filter, which is one for the whole process."""
    embedder = BertEmbedder(tiny_bert, precision="float32", max_length=8, cache=None).fit(["a"])
    inside, outside = threading.Event(), threading.Event()
    counts = {}

    def quiet():
        with caller_reports_truncation():
            inside.set()
            outside.wait(60)
            counts["quiet"] = embedder.transform_with_report([LONG])[1].n_truncated

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread = threading.Thread(target=quiet)
        thread.start()
        inside.wait(60)
        counts["loud"] = embedder.transform_with_report([LONG, LONG, "a"])[1].n_truncated  # while the block is open
        outside.set()
        thread.join(60)
    assert counts == {"quiet": 1, "loud": 2}
    assert [str(w.message)[:6] for w in caught if "truncated" in str(w.message)] == ["2 of 3"]
