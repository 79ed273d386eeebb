"""The one reader of text columns: which columns are the texts and ids, what a row without text becomes,
one error type; and its callers (the command's file and dataset outputs, skbert.dask) against each other."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert._cli import build_parser, embed, main
from skbert._columns import MADE_IDS, ON_NULL, ColumnError, TextColumns, texts_in

COLUMNS = ["doc", "text", "n"]


def _missing(value) -> bool:
    """A null as a plain check, apart from the reader's: None, a float NaN, pandas' NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def test_a_column_error_is_a_value_error():
    assert issubclass(ColumnError, ValueError)


def test_columns_are_named_as_one_text_or_a_pair():
    single = TextColumns.named("text", ids=["doc"])
    assert (single.texts, single.ids, single.pairs) == (("text",), ("doc",), False)
    pair = TextColumns.named(["q", "a"])
    assert (pair.texts, pair.ids, pair.pairs) == (("q", "a"), (), True)
    with pytest.raises(ColumnError, match=r"column=\['a', 'b', 'c'\]: a list of columns names a pair's two sides"):
        TextColumns.named(["a", "b", "c"])


@pytest.mark.parametrize("named, kind, name", [
    (TextColumns.named("body"), "column", "body"),
    (TextColumns.named(["text", "nope"]), "pair column", "nope"),
    (TextColumns.named("text", ids=["doc", "key"]), "id column", "key"),
])
def test_an_absent_column_is_named_with_its_kind_and_the_tables_columns(named, kind, name):
    with pytest.raises(ColumnError) as caught:
        named.check_in(COLUMNS, "in the input")
    assert str(caught.value) == f"{kind} {name!r} is not in the input; its columns are ['doc', 'text', 'n']"


def test_made_ids_may_be_absent_but_texts_may_not():
    TextColumns.named("text", ids=list(MADE_IDS)).check_in(COLUMNS, "in 'a.csv'", made=MADE_IDS)
    with pytest.raises(ColumnError, match="^column 'row' is not in 'a.csv'"):
        TextColumns.named("row").check_in(COLUMNS, "in 'a.csv'", made=MADE_IDS)
    many = [f"c{i}" for i in range(25)]
    with pytest.raises(ColumnError, match=re.escape(f"its columns are {many[:20]} and 5 more")):
        TextColumns.named("text").check_in(many, "in the input")


def _table(first_row=0):
    return pd.DataFrame({
        "doc": [f"d{first_row + i}" for i in range(8)],
        "q": ["a", None, "NA", float("nan"), "", pd.NA, "b", "None"],
        "a": ["x", "y", None, "z", "", "w", "null", float("nan")],
    })


@pytest.mark.parametrize("texts", [["q"], ["q", "a"]])
@pytest.mark.parametrize("on_null", ON_NULL)
def test_the_null_policy_against_a_plain_loop(texts, on_null):
    frame = _table()
    columns = TextColumns.named(texts if len(texts) == 2 else texts[0], ids=["doc"])
    rows = [tuple(frame[c].iloc[i] for c in texts) for i in range(len(frame))]
    without = [i for i, row in enumerate(rows) if any(_missing(v) for v in row)]
    if on_null == "error":
        with pytest.raises(ColumnError) as caught:
            columns.apply_null_policy(frame, on_null, "'in.csv'", first_row=10)
        listed = ", ".join(f"row {10 + i} (doc='d{i}')" for i in without[:5])
        more = f" and {len(without) - 5} more" if len(without) > 5 else ""
        assert str(caught.value).startswith(
            f"'in.csv': {len(without)} row(s) have no text in column(s) {', '.join(map(repr, texts))} (an empty "
            f"field or a null): {listed}{more}; --on-null empty")
        return
    kept, n_null = columns.apply_null_policy(frame, on_null, "'in.csv'")
    assert n_null == len(without)
    if on_null == "skip":
        want_rows = [row for i, row in enumerate(rows) if i not in without]
        assert kept["doc"].tolist() == [f"d{i}" for i in range(len(frame)) if i not in without]
    else:
        want_rows = [tuple("" if _missing(v) else v for v in row) for row in rows]
        assert kept["doc"].tolist() == frame["doc"].tolist()
    want = want_rows if len(texts) == 2 else [row[0] for row in want_rows]
    assert columns.texts_of(kept) == want  # "NA", "None" and "null" stay texts
    pd.testing.assert_frame_equal(frame, _table())  # the input is left as it was


@pytest.mark.parametrize("on_null", ON_NULL)
def test_a_value_that_is_neither_text_nor_missing_is_an_error_under_every_policy(on_null):
    frame = pd.DataFrame({"doc": ["d0", "d1"], "q": ["a", "b"], "a": ["x", 3]})
    with pytest.raises(ColumnError, match=r"^'in.parquet', row 1 \(doc='d1'\): column 'a' holds an int \(3\), not a "
                                          "text"):
        TextColumns.named(["q", "a"], ids=["doc"]).apply_null_policy(frame, on_null, "'in.parquet'")
    with pytest.raises(ValueError, match="on_null='drop'"):
        TextColumns.named("q").apply_null_policy(frame, "drop", "'in.parquet'")


def test_the_index_becomes_the_id_where_no_id_column_is_named():
    frame = pd.DataFrame({"text": ["a", "b"]}, index=pd.Index([7, 9], name="key"))
    got, columns = TextColumns.named("text").with_index_ids(frame)
    assert columns.ids == ("key",) and got["key"].tolist() == [7, 9]
    got, columns = TextColumns.named("text").with_index_ids(frame.reset_index(drop=True))
    assert columns.ids == ("row",) and got["row"].tolist() == [0, 1]
    named = TextColumns.named("text", ids=["text"])
    assert named.with_index_ids(frame) == (frame, named)


def test_made_ids_number_rows_within_their_file():
    from skbert._streaming import Options, made_for

    chunk = pd.DataFrame({"text": ["a", "b", "c"]})
    got = TextColumns.named("text", ids=MADE_IDS).with_made_ids(chunk.copy(), MADE_IDS, first_row=40, file="x/a.csv")
    assert got["row"].tolist() == [40, 41, 42] and got["file"].tolist() == ["x/a.csv"] * 3
    own = chunk.assign(row=["r1", "r2", "r3"])
    named = Options(["text"], list(MADE_IDS))  # --id-column file --id-column row
    assert made_for(named, ["text", "row"]) == ["file"]  # the file's own "row" column is read
    got = TextColumns.named("text", ids=MADE_IDS).with_made_ids(own.copy(), ["file"], first_row=40, file="f")
    assert got["row"].tolist() == ["r1", "r2", "r3"] and got["file"].tolist() == ["f"] * 3
    default = Options(["text"], list(MADE_IDS), made_ids=MADE_IDS)  # no --id-column: both made, whatever the file has
    assert made_for(default, ["text", "row", "file"]) == ["file", "row"]


def test_texts_in_a_pandas_collection():
    series = pd.Series(["a", "b"], index=[5, 6])
    assert texts_in(series) is series
    frame = pd.DataFrame({"q": ["a", "b"], "a": ["x", "y"]})
    pd.testing.assert_series_equal(texts_in(frame[["q"]]), frame["q"])
    pd.testing.assert_frame_equal(texts_in(frame, ["q", "a"]), frame)
    with pytest.raises(ColumnError, match="column='q' was given, but data is a Series"):
        texts_in(series, "q")
    with pytest.raises(ColumnError, match=r"data is a frame with 2 columns \['q', 'a'\]; name the text column"):
        texts_in(frame)
    with pytest.raises(ColumnError, match=r"^column 'c' is not among the columns of the frame; its columns are "
                                          r"\['q', 'a'\]$"):
        texts_in(frame, "c")


# -- the callers against each other ----------------------------------------------------------------


def _where_left_out(message: str) -> str:
    """A column error without where the column was looked for (an input, a file, a frame)."""
    return re.sub(r" is not (in|among) .*?; its columns", " is not ...; its columns", message)


def test_an_absent_column_is_one_error_worded_alike_by_every_caller(tiny_bert, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    dd = pytest.importorskip("dask.dataframe")
    from skbert.dask import embed as dask_embed

    frame = pd.DataFrame({"doc": ["d0", "d1"], "text": ["a river", "a bank"], "n": [0, 1]})
    frame.to_csv(tmp_path / "in.csv", index=False)
    messages = []
    for output in ("o.npy", "dataset"):
        args = build_parser().parse_args(["embed", str(tmp_path / "in.csv"), "--model", tiny_bert, "--column",
                                          "body", "--quiet", "-o", str(tmp_path / output)])
        with pytest.raises(ColumnError) as caught:
            embed(args)
        messages.append(str(caught.value))
        assert main(["embed", str(tmp_path / "in.csv"), "--model", tiny_bert, "--column", "body", "--quiet", "-o",
                     str(tmp_path / output)]) == 2
        assert capsys.readouterr().err == f"skbert: error: {caught.value}\n"
    embedder = BertEmbedder(tiny_bert).fit(["a"])
    with pytest.raises(ColumnError) as caught:
        dask_embed(dd.from_pandas(frame, npartitions=1), embedder, column="body")
    messages.append(str(caught.value))
    assert messages[0].startswith("column 'body' is not in the input;")
    assert messages[1].startswith(f"column 'body' is not in {str(tmp_path / 'in.csv')!r};")
    assert messages[2].startswith("column 'body' is not among the columns of the frame;")
    assert {_where_left_out(m) for m in messages} == {"column 'body' is not ...; its columns are ['doc', 'text', 'n']"}


def test_pairs_with_nulls_are_read_alike_by_the_file_and_the_dataset_output(tiny_bert, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow.dataset as ds

    q = ["a river", "money", None, "the bank", "", "NA"]
    a = ["the bank", None, "a loan", "water", "fish", "paid"]
    pq.write_table(pa.table({"doc": [f"d{i}" for i in range(6)], "q": q, "a": a}), tmp_path / "in.parquet")
    base = ["embed", tmp_path / "in.parquet", "--model", tiny_bert, "--column", "q", "--pair-column", "a",
            "--id-column", "doc", "--precision", "float32", "--no-cache", "--quiet"]
    errors = []
    for output in ("e.parquet", "e-dataset"):
        assert main([str(x) for x in base + ["-o", tmp_path / output]]) == 2
        errors.append(capsys.readouterr().err.split(": ", 2)[-1])
    assert errors[0] == errors[1] and "2 row(s) have no text in column(s) 'q', 'a'" in errors[0]
    assert "row 1 (doc='d1'), row 2 (doc='d2')" in errors[0]
    kept = [i for i in range(6) if q[i] is not None and a[i] is not None]
    want = BertEmbedder(tiny_bert, pairs=True, precision="float32", cache=None).fit_transform(
        [(q[i], a[i]) for i in kept])
    for output, on_null in (("s.parquet", "skip"), ("s-dataset", "skip")):
        code = main([str(x) for x in base + ["--on-null", on_null, "--layout", "list", "-o", tmp_path / output]])
        assert code == 0 and "2 row(s) without text skipped" in capsys.readouterr().err
        got = ds.dataset(tmp_path / output, format="parquet").to_table().to_pandas()
        assert got["doc"].tolist() == [f"d{i}" for i in kept]
        assert_allclose(np.stack(got["embedding"].to_numpy()), want, rtol=1e-5, atol=1e-6)
    empty = [(q[i] or "", a[i] or "") for i in range(6)]
    want = BertEmbedder(tiny_bert, pairs=True, precision="float32", cache=None).fit_transform(empty)
    for output in ("m.parquet", "m-dataset"):
        code = main([str(x) for x in base + ["--on-null", "empty", "--layout", "list", "-o", tmp_path / output]])
        assert code == 0 and "2 row(s) without text embedded as empty" in capsys.readouterr().err
        got = ds.dataset(tmp_path / output, format="parquet").to_table().to_pandas()
        assert_allclose(np.stack(got["embedding"].to_numpy()), want, rtol=1e-5, atol=1e-6)


def test_each_output_names_rows_by_its_default_ids(tiny_bert, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "in.csv").write_text("text,n\na river,0\n,1\nthe bank,2\n")
    base = ["embed", str(tmp_path / "in.csv"), "--model", tiny_bert, "--on-null", "skip", "--no-cache", "--quiet"]
    assert main(base + ["-o", str(tmp_path / "o.parquet")]) == 0
    assert pq.read_table(tmp_path / "o.parquet").column("row").to_pylist() == [0, 2]  # the table's row numbers
    assert main(base + ["-o", str(tmp_path / "dataset")]) == 0
    table = pq.read_table(next((tmp_path / "dataset").glob("part-*.parquet")))
    assert table.column("row").to_pylist() == [0, 2] and table.column("file").to_pylist() == ["in.csv"] * 2
    capsys.readouterr()


def test_the_modules_examples_run():
    import doctest

    import skbert._columns

    failed, tried = doctest.testmod(skbert._columns)
    assert failed == 0 and tried >= 4
