"""The command line, end to end on small files with the tiny test model."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert._cli import main

TEXTS = ["the river bank", "money in the bank", "  ", "we sat at the water", "a new house", "the fish"]


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "in.csv"
    pd.DataFrame({"doc": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "n": range(len(TEXTS))}).to_csv(
        path, index=False
    )
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def test_embed_to_parquet_keeps_ids_and_matches_the_estimator(tiny_bert, table, tmp_path, capsys):
    out = tmp_path / "out" / "emb.parquet"
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "--column", "text", "--id-column", "doc",
                     "--pooling", "mean,max", "--layers", "0,-1", "-o", str(out))
    assert code == 0, err
    frame = pd.read_parquet(out)
    assert frame["doc"].tolist() == [f"d{i}" for i in range(len(TEXTS))]
    assert frame.columns[1] == "mean_layer0_0" and frame.shape == (len(TEXTS), 1 + 4 * 32)
    want = BertEmbedder(tiny_bert, pooling=("mean", "max"), layers=(0, -1)).fit_transform(TEXTS)
    assert_allclose(frame.iloc[:, 1:].to_numpy(), want, rtol=1e-4, atol=2e-5)
    assert f"{len(TEXTS)} texts -> 128 features" in err


def test_a_pair_column_embeds_sentence_pairs(tiny_bert, table, tmp_path, capsys):
    frame = pd.read_csv(table, keep_default_na=False)
    frame.assign(answer=frame["text"].str.upper()).to_csv(table, index=False)
    out = tmp_path / "pairs.parquet"
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "--pair-column", "answer", "--id-column", "doc",
                     "--pooling", "mean_max", "--segments", "a,b", "--no-cache", "--quiet", "-o", str(out))
    assert code == 0, err
    got = pd.read_parquet(out)
    assert got.columns[1] == "a_mean_layer3_0" and got.shape == (len(TEXTS), 1 + 4 * 32)
    pairs = list(zip(TEXTS, [t.upper() for t in TEXTS]))
    want = BertEmbedder(tiny_bert, pairs=True, pooling="mean_max", segments=("a", "b"), cache=None).fit_transform(pairs)
    assert_allclose(got.iloc[:, 1:].to_numpy(), want, rtol=1e-4, atol=2e-5)
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "--pair-column", "nope", "-o", str(out))
    assert code == 2 and "pair column 'nope' is not in the input" in err


def test_embed_to_npy_writes_the_ids_beside_it_and_a_rerun_hits_the_cache(tiny_bert, tmp_path, capsys):
    path = tmp_path / "in.parquet"
    pd.DataFrame({"text": TEXTS[:2] + TEXTS[3:]}, index=pd.Index([10, 11, 13, 14, 15], name="key")).to_parquet(path)
    out = tmp_path / "emb.npy"
    argv = ["embed", str(path), "--model", tiny_bert, "--normalize", "--quiet", "-o", str(out)]
    from skbert._cache import clear_stores

    code, err = _run(capsys, *argv)
    assert code == 0 and "encoded 5, from cache 0" in err
    X = np.load(out)
    assert X.shape == (5, 32) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert pd.read_csv(tmp_path / "emb.ids.csv")["key"].tolist() == [10, 11, 13, 14, 15]
    assert (tmp_path / ".skbert-cache").is_dir()
    clear_stores()  # as a new process would: only the disk cache is left
    code, err = _run(capsys, *argv)
    assert code == 0 and "encoded 0, from cache 5" in err
    assert_allclose(np.load(out), X)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["embed", "{dir}/nope.csv", "-o", "{dir}/o.npy"], "input file '{dir}/nope.csv' does not exist"),
        (["embed", "{table}", "--column", "body", "-o", "{dir}/o.npy"],
         "column 'body' is not in the input; its columns are ['doc', 'text', 'n']"),
        (["embed", "{table}", "--id-column", "key", "-o", "{dir}/o.npy"], "id column 'key' is not in the input"),
        (["embed", "{table}", "-o", "{dir}/o.csv"], "expected a .parquet or .npy file"),
        (["embed", "{dir}/in.txt", "-o", "{dir}/o.npy"], "expected one of .csv, .tsv, .parquet, .pq"),
        (["embed", "{table}", "--layers", "7", "-o", "{dir}/o.npy"], "layer 7 is out of range for a model with 3"),
        (["embed", "{table}", "--layers", "1,x", "-o", "{dir}/o.npy"], "a comma-separated list must hold integers"),
        (["embed", "{table}", "--pooling", "median", "-o", "{dir}/o.npy"], "Got 'median' instead"),
        (["embed", "{table}", "--workers", "-1", "-o", "{dir}/ds"], "--workers -1: at least 1"),
        (["embed", "{table}", "--workers", "0", "-o", "{dir}/ds"], "--workers 0: at least 1"),
        (["embed", "{table}", "--workers", "2", "-o", "{dir}/o.npy"], "--workers, --scheduler and --chunk-rows are for"),
        (["embed", "{table}", "--chunk-rows", "5", "-o", "{dir}/o.npy"], "--chunk-rows are for a dataset output"),
        (["embed", "{table}", "--layout", "both", "-o", "{dir}/o.npy"], "a .npy file holds the embedding array alone"),
        (["embed", "{table}", "--cache", "{dir}/c", "--no-cache", "-o", "{dir}/o.npy"], "give one of them"),
        (["embed", "{table}", "--id-column", "doc", "--id-column", "doc", "-o", "{dir}/o.parquet"],
         "the column 'doc' twice (an id column)"),
        (["embed", "{table}", "--id-column", "doc", "--id-column", "doc", "-o", "{dir}/ds"],
         "the column 'doc' twice (an id column)"),
        (["embed", "{table}", "--column", "row", "-o", "{dir}/ds"], "--column 'row': the default id columns are"),
        (["embed", "{table}", "--pair-column", "file", "-o", "{dir}/ds"], "--pair-column 'file': the default id"),
    ],
)
def test_bad_input_gives_a_message_and_exit_status_2(tiny_bert, table, tmp_path, capsys, argv, message):
    (tmp_path / "in.txt").write_text("x")
    fill = {"dir": str(tmp_path), "table": str(table)}
    argv = [part.format(**fill) for part in argv]
    if "--model" not in argv:
        argv += ["--model", tiny_bert]
    code, err = _run(capsys, *argv)
    assert code == 2
    assert message.format(**fill) in err and "Traceback" not in err


def test_empty_cells_are_reported_with_their_ids(tiny_bert, tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    path.write_text("doc,text\nd0,a river\nd1,\nd2,a bank\nd3,\n")
    code, err = _run(capsys, "embed", str(path), "--id-column", "doc", "--model", tiny_bert, "-o",
                     str(tmp_path / "o.npy"))
    assert code == 2 and "gaps.csv': 2 row(s) have no text in column(s) 'text' (an empty field or a null): " \
        "row 1 (doc='d1'), row 3 (doc='d3'); --on-null empty" in err


def test_numeric_ids_of_empty_cells_are_written_as_numbers(tiny_bert, tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    path.write_text("text,n\na river,1\n,2\n")
    code, err = _run(capsys, "embed", str(path), "--model", tiny_bert, "-o", str(tmp_path / "o.npy"))
    assert code == 2 and "row 1 (row=1)" in err and "np." not in err


def test_unknown_model_is_a_clean_error(table, tmp_path, capsys):
    code, err = _run(capsys, "embed", str(table), "--model", "no-such/model-xyz", "-o", str(tmp_path / "o.npy"))
    assert code == 2 and "Could not load model 'no-such/model-xyz'" in err and "Traceback" not in err


def test_the_installed_command_runs(tiny_bert, tmp_path):
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a river", "a bank"]}).to_csv(path, index=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "skbert", "embed", str(path), "--model", tiny_bert, "--no-cache", "-o",
         str(tmp_path / "o.parquet")], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(tmp_path / "o.parquet").shape == (2, 33)
    missing = subprocess.run([sys.executable, "-m", "skbert", "embed", str(tmp_path / "x.csv"), "-o", "o.npy"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_a_file_output_takes_the_null_policies_too(tiny_bert, tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    path.write_text("doc,text\nd0,a river\nd1,\nd2,a bank\n")
    base = ["embed", str(path), "--id-column", "doc", "--model", tiny_bert, "--no-cache", "--quiet"]
    code, err = _run(capsys, *base, "--on-null", "skip", "-o", str(tmp_path / "skip.parquet"))
    assert code == 0 and "2 texts" in err and "1 row(s) without text skipped" in err
    assert pd.read_parquet(tmp_path / "skip.parquet")["doc"].tolist() == ["d0", "d2"]
    code, err = _run(capsys, *base, "--on-null", "empty", "-o", str(tmp_path / "empty.npy"))
    assert code == 0 and "1 row(s) without text embedded as empty" in err
    want = BertEmbedder(tiny_bert, cache=None).fit_transform(["a river", "", "a bank"])
    assert_allclose(np.load(tmp_path / "empty.npy"), want, rtol=1e-5, atol=1e-6)


# -- the options are the estimator's ----------------------------------------------------------------


def _actions():
    from skbert._cli import build_parser

    embed = build_parser()._subparsers._group_actions[0].choices["embed"]
    return {action.dest: action for action in embed._actions}


def test_every_estimator_parameter_is_an_option_or_set_by_the_command():
    from skbert._cli import ESTIMATOR_OPTIONS, SET_BY_THE_COMMAND

    parameters = set(BertEmbedder().get_params())
    assert set(ESTIMATOR_OPTIONS) | set(SET_BY_THE_COMMAND) == parameters
    assert not set(ESTIMATOR_OPTIONS) & set(SET_BY_THE_COMMAND)
    assert set(ESTIMATOR_OPTIONS) <= set(_actions())
    assert {"stride", "token_budget", "attention", "revision"} <= set(ESTIMATOR_OPTIONS)


def test_every_constrained_choice_is_the_options_choice():
    """Read off the constraints here, apart from the command: a parameter constrained to a set of
    strings alone is an option with exactly those choices; one that also takes other values (pooling,
    layers) lists every string in its help."""
    from sklearn.utils._param_validation import StrOptions

    actions = _actions()
    checked = 0
    for name, constraints in BertEmbedder._parameter_constraints.items():
        for constraint in constraints:
            if not isinstance(constraint, StrOptions) or name not in actions:
                continue
            action = actions[name]
            if len(constraints) == 1:
                assert set(action.choices) == constraint.options, name
            else:
                assert action.choices is None and all(option in action.help for option in constraint.options), name
            checked += 1
    assert checked >= 6  # pooling, layers, layer_aggregation, long_text, attention, precision


def test_the_options_default_to_the_estimators_defaults():
    from skbert._cli import COMMAND_DEFAULTS, build_parser, estimator_params

    args = build_parser().parse_args(["embed", "in.csv", "-o", "out.npy"])
    params = estimator_params(args)
    defaults = BertEmbedder().get_params()
    for name, value in params.items():
        assert value == COMMAND_DEFAULTS.get(name, defaults[name]), name
    assert params["model_name"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_options_reach_the_estimator_as_it_takes_them():
    from skbert._cli import build_parser, estimator_params

    argv = ["embed", "in.csv", "-o", "o.npy", "--pair-column", "b", "--pooling", "cls,mean", "--layers", "0,-1",
            "--segments", "a,b", "--long-text", "chunk", "--stride", "4", "--token-budget", "512", "--attention",
            "padded", "--revision", "v1.0", "--batch-size", "3", "--max-length", "32", "--normalize", "--device", "cpu"]
    params = estimator_params(build_parser().parse_args(argv))
    assert {k: params[k] for k in ("pairs", "pooling", "layers", "segments", "long_text", "stride", "token_budget",
                                   "attention", "revision", "batch_size", "max_length", "normalize", "device")} == {
        "pairs": True, "pooling": ("cls", "mean"), "layers": (0, -1), "segments": ("a", "b"), "long_text": "chunk",
        "stride": 4, "token_budget": 512, "attention": "padded", "revision": "v1.0", "batch_size": 3,
        "max_length": 32, "normalize": True, "device": "cpu"}
    assert estimator_params(build_parser().parse_args(["embed", "i", "-o", "o", "--layers", "last_four"]))[
        "layers"] == "last_four"
    with pytest.raises(SystemExit):  # a choice the estimator does not take: argparse's own error
        build_parser().parse_args(["embed", "i", "-o", "o", "--attention", "fast"])


def test_chunking_options_give_the_estimators_numbers(tiny_bert, tmp_path, capsys):
    long_texts = [" ".join(["river bank money water"] * k) for k in (1, 5, 12)]
    path = tmp_path / "long.csv"
    pd.DataFrame({"text": long_texts}).to_csv(path, index=False)
    code, err = _run(capsys, "embed", str(path), "--model", tiny_bert, "--long-text", "chunk", "--max-length", "16",
                     "--stride", "5", "--token-budget", "64", "--attention", "padded", "--precision", "float32",
                     "--no-cache", "--quiet", "-o", str(tmp_path / "o.npy"))
    assert code == 0, err
    want = BertEmbedder(tiny_bert, long_text="chunk", max_length=16, stride=5, precision="float32",
                        cache=None).fit_transform(long_texts)
    assert_allclose(np.load(tmp_path / "o.npy"), want, rtol=1e-5, atol=1e-6)
    other = BertEmbedder(tiny_bert, long_text="chunk", max_length=16, stride=2, precision="float32",
                         cache=None).fit_transform(long_texts)
    assert not np.allclose(other, want, rtol=1e-5, atol=1e-6)  # the stride reached the estimator


def test_the_command_reaches_no_private_method_of_the_estimator():
    import ast
    import inspect

    import skbert._cli

    tree = ast.parse(inspect.getsource(skbert._cli))
    reached = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not reached & {"_load", "_options", "_store", "_read", "_call_report", "_token_records"}


# -- truncation: counted from the reports, said once ------------------------------------------------


def test_truncation_is_said_in_the_summary_from_the_reports_not_warned(tiny_bert, tmp_path, capsys):
    from transformers import AutoTokenizer

    texts = ["a river", "the river bank was muddy and the water ran", "money", "we sat at the bank of the river"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    n_long = sum(len(tokenizer(text)["input_ids"]) > 8 for text in texts)  # counted apart from skbert
    assert 0 < n_long < len(texts)
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    base = ["embed", str(path), "--model", tiny_bert, "--max-length", "8", "--precision", "float32", "--no-cache",
            "--quiet"]
    for output, chunks in (("o.npy", []), ("dataset", ["--chunk-rows", "2"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, err = _run(capsys, *base, *chunks, "-o", str(tmp_path / output))
        assert code == 0, err
        assert f"; {n_long} truncated to --max-length" in err
        assert not [w for w in caught if "truncated" in str(w.message)]
        assert "warning" not in err  # the command writes a warning as a line of its own
    code, err = _run(capsys, *base[:4], "--precision", "float32", "--no-cache", "--quiet", "-o",
                     str(tmp_path / "whole.npy"))
    assert code == 0 and "truncated" not in err
    embedder = BertEmbedder(tiny_bert, max_length=8, precision="float32", cache=None).fit(["a"])
    with pytest.warns(UserWarning, match=f"{n_long} of {len(texts)} texts were longer than max_length=8"):
        embedder.transform(texts)  # the estimator itself still warns


def test_a_table_with_a_row_column_gets_its_row_numbers_under_another_name(tiny_bert, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("text,row\na river,b\nthe bank,a\n")
    code, _ = _run(capsys, "embed", str(tmp_path / "in.csv"), "--model", tiny_bert, "--precision", "float32",
                   "--quiet", "-o", str(tmp_path / "o.parquet"))
    assert code == 0
    got = pd.read_parquet(tmp_path / "o.parquet")
    assert got["row_index"].tolist() == [0, 1]  # the row numbers, not the column named "row"
    assert_allclose(got.drop(columns="row_index").to_numpy(), BertEmbedder(
        tiny_bert, precision="float32", cache=None).fit(["a"]).transform(["a river", "the bank"]), rtol=1e-5, atol=1e-6)


def test_a_negative_comma_list_is_a_value_not_an_option(tiny_bert, table, tmp_path, capsys):
    """argparse takes "-2,-1" for an option unless told otherwise; the README writes --layers 0,-1."""
    out = tmp_path / "o.parquet"
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "--layers", "-2,-1", "--no-cache", "--quiet",
                     "--precision", "float32", "-o", str(out))
    assert code == 0, err
    want = BertEmbedder(tiny_bert, layers=(-2, -1), precision="float32", cache=None).fit(["a"]).transform(TEXTS)
    assert_allclose(pd.read_parquet(out).iloc[:, 1:].to_numpy(), want, rtol=1e-5, atol=1e-6)


def test_an_upper_case_npy_suffix_is_an_npy_file(tiny_bert, table, tmp_path, capsys):
    out = tmp_path / "emb.NPY"
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "--no-cache", "--quiet", "-o", str(out))
    assert code == 0, err
    assert np.load(out).shape == (len(TEXTS), 32) and (tmp_path / "emb.ids.csv").is_file()
    assert not (tmp_path / "emb.NPY.npy").exists()


@pytest.mark.parametrize("index, want", [(pd.Index([7, 9], name="key"), [7, 9]),
                                         (pd.RangeIndex(10, 14, 2, name="key"), [10, 12])])
def test_a_parquet_files_named_pandas_index_can_be_the_id_column(tiny_bert, tmp_path, capsys, index, want):
    """A RangeIndex is stored as metadata, not as a column; any other index as a column."""
    path = tmp_path / "keyed.parquet"
    pd.DataFrame({"text": ["a river", "a bank"]}, index=index).to_parquet(path)
    for out, more in ((tmp_path / "o.parquet", []), (tmp_path / "ds", ["--chunk-rows", "1"])):
        code, err = _run(capsys, "embed", str(path), "--model", tiny_bert, "--id-column", "key", "--no-cache",
                         "--quiet", *more, "-o", str(out))
        assert code == 0 and "Traceback" not in err, err
        assert pd.read_parquet(out)["key"].tolist() == want


def test_integer_ids_with_a_null_stay_integers_in_every_part(tiny_bert, tmp_path, capsys):
    """An int64 id column with a null is read by pandas as floats (2**60 + 1 no longer exact) and a chunk of
    only null ids has no type: each part keeps the input's type, so the dataset reads back as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [2**60 + 1, 2**60 + 2, None, None, 2**60 + 5, 2**60 + 6]
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": TEXTS}), path)
    csv = tmp_path / "csv" / "ids.csv"
    csv.parent.mkdir()
    pd.DataFrame({"id": ["", "", "x3", "x4", "", "x6"], "text": TEXTS}).to_csv(csv, index=False)
    base = ["--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet"]
    for source, out in ((path, tmp_path / "ds"), (path, tmp_path / "o.parquet"), (csv, tmp_path / "csv_ds")):
        code, err = _run(capsys, "embed", str(source), *base, "--chunk-rows", "2", "-o", str(out)) \
            if out.suffix == "" else _run(capsys, "embed", str(source), *base, "-o", str(out))
        assert code == 0, err
        got = pd.read_parquet(out)  # every part of one type: readable as one table
        assert len(got) == len(TEXTS)
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.schema.field("id").type == pa.int64() and table.column("id").to_pylist() == ids
    dataset = pq.read_table(tmp_path / "ds")
    assert dataset.schema.field("id").type == pa.int64() and sorted(dataset.column("id").to_pylist(),
                                                                     key=str) == sorted(ids, key=str)
    assert pq.read_table(tmp_path / "csv_ds").schema.field("id").type == pa.string()


def test_a_warning_is_one_line_of_the_commands_output(tiny_bert, tmp_path, capsys):
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a river", "a bank"]}).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as a fresh process shows it, whatever ran before in this one
        code, err = _run(capsys, "embed", str(path), "--model", tiny_bert, "--no-cache", "--quiet", "--pooling",
                         "cls", "--include-special-tokens", "-o", str(tmp_path / "o.npy"))
    assert code == 0, err
    assert "skbert: warning: include_special_tokens=True has no effect with pooling='cls'" in err
    assert "UserWarning" not in err and ".py:" not in err


def test_an_interrupt_before_the_run_starts_is_said_in_one_line(tiny_bert, table, tmp_path, capsys, monkeypatch):
    from skbert import _cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "read_table", interrupted)
    code, err = _run(capsys, "embed", str(table), "--model", tiny_bert, "-o", str(tmp_path / "o.npy"))
    assert code == 130 and err.strip() == "skbert: interrupted"


@pytest.mark.parametrize("column, layout, out", [("embedding", "list", "ds"), ("mean_layer3_0", "columns", "o.parquet"),
                                                 ("mean_layer3_0", "both", "ds")])
def test_an_id_column_named_as_the_embedding_is_an_error_before_any_work(tiny_bert, tmp_path, capsys, monkeypatch,
                                                                          column, layout, out):
    path = tmp_path / "in.csv"
    pd.DataFrame({column: ["x", "y"], "text": ["a river", "a bank"]}).to_csv(path, index=False)

    def no_work(*args, **kwargs):
        raise AssertionError("texts were embedded before the columns were checked")

    monkeypatch.setattr(BertEmbedder, "transform_with_report", no_work)
    code, err = _run(capsys, "embed", str(path), "--model", tiny_bert, "--id-column", column, "--layout", layout,
                     "--no-cache", "--quiet", "-o", str(tmp_path / out))
    assert code == 2 and f"the column {column!r} twice (an id column and the embedding's)" in err
    assert not (tmp_path / out).exists()
