"""The streaming command line: files, directories and globs in bounded chunks, a Parquet dataset of parts
out, verified resume after a kill, null policies, bad files, and the same run on Dask workers."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert._cli import main

pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = "the a bank river money water fish loan paid deposit muddy walked sat stream account house".split()


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(0, 9))) for _ in range(n)]
    for i in range(0, n - 1, 7):  # some repeats
        texts[i] = texts[i + 1]
    return texts


@pytest.fixture
def parquet_dir(tmp_path):
    """Three Parquet files of several row groups, ids unique across them."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k, n in enumerate((40, 25, 31)):
        frame = pd.DataFrame({"doc": [f"f{k}-{i}" for i in range(n)], "text": _texts(n, k), "n": range(n)})
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"file{k}.parquet",
                       row_group_size=9)
    return folder


def _inputs(folder):
    frames = [pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _read(out):
    return ds.dataset(out, format="parquet").to_table().to_pandas()


def _embed(tiny_bert, texts, **params):
    return BertEmbedder(tiny_bert, precision="float32", cache=None, **params).fit(["a"]).transform(texts)


def test_a_directory_streams_into_parts_that_match_one_transform(tiny_bert, parquet_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(capsys, "embed", parquet_dir, "--model", tiny_bert, "--id-column", "doc", "--id-column", "n",
                     "--chunk-rows", 8, "--layout", "both", "--precision", "float32", "--quiet", "-o", out)
    assert code == 0, err
    inputs = _inputs(parquet_dir)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 5 + 4 + 4 and "96 rows in 13 parts (0 already complete)" in err
    got = _read(out)
    assert got["doc"].tolist() == inputs["doc"].tolist() and got["n"].tolist() == inputs["n"].tolist()
    table = pq.read_table(parts[0])
    assert pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    assert table.schema.field("embedding").type.list_size == 32
    vectors = np.stack(got["embedding"].to_numpy())
    assert_allclose(vectors, got.loc[:, "mean_layer3_0":"mean_layer3_31"].to_numpy(), rtol=0, atol=0)
    assert_allclose(vectors, _embed(tiny_bert, inputs["text"].tolist()), rtol=1e-5, atol=1e-6)


def test_a_killed_run_resumes_from_its_verified_parts(tiny_bert, tmp_path, capsys):
    folder = tmp_path / "big"
    folder.mkdir()
    for k in range(3):
        texts = [f"row {k} {i} " + t for i, t in enumerate(_texts(1500, k))]
        pd.DataFrame({"doc": [f"{k}-{i}" for i in range(1500)], "text": texts}).to_parquet(folder / f"p{k}.parquet")
    out = tmp_path / "out"
    argv = ["embed", str(folder), "--model", tiny_bert, "--id-column", "doc", "--chunk-rows", "50",
            "--precision", "float32", "--quiet", "-o", str(out)]
    child = subprocess.Popen([sys.executable, "-m", "skbert", *argv], stderr=subprocess.PIPE,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 240
    while len(list(out.glob("part-*.parquet"))) < 4 and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(list(out.glob("part-*.parquet")))
    assert 4 <= done_before < 90, "the run must be killed part way"
    code, err = _run(capsys, *argv)
    assert code == 0 and f"4500 rows in 90 parts ({done_before} already complete)" in err, err
    got = _read(out)
    assert got["doc"].is_unique and len(got) == 4500 and not list(out.glob(".part-*"))
    inputs = _inputs(folder)
    assert got["doc"].tolist() == inputs["doc"].tolist()
    assert_allclose(np.stack(got["embedding"].to_numpy()), _embed(tiny_bert, inputs["text"].tolist()),
                    rtol=1e-5, atol=1e-6)


def test_a_truncated_or_stale_part_is_redone_and_parts_of_gone_inputs_removed(tiny_bert, parquet_dir, tmp_path,
                                                                               capsys):
    out = tmp_path / "out"
    argv = ["embed", parquet_dir, "--model", tiny_bert, "--chunk-rows", 10, "--precision", "float32", "--quiet",
            "-o", out]
    assert _run(capsys, *argv)[0] == 0
    first = _read(out)
    part = sorted(out.glob("part-*.parquet"))[2]
    blob = part.read_bytes()
    part.write_bytes(blob[: len(blob) // 2])  # as a kill during a copy would leave it
    code, err = _run(capsys, *argv)
    assert code == 0 and "96 rows in 11 parts (10 already complete)" in err
    pd.testing.assert_frame_equal(_read(out), first)
    code, err = _run(capsys, *argv[:-2], "--pooling", "max", "-o", out)  # other settings: every part redone
    assert code == 0 and "(0 already complete)" in err
    assert_allclose(np.stack(_read(out)["embedding"].to_numpy()),
                    _embed(tiny_bert, _inputs(parquet_dir)["text"].tolist(), pooling="max"), rtol=1e-5, atol=1e-6)
    (parquet_dir / "file1.parquet").unlink()
    code, err = _run(capsys, *argv)
    assert code == 0 and "71 rows in 8 parts" in err and "removed 3 stale part(s)" in err
    got = _read(out)
    assert len(got) == 71 and set(got["file"].map(os.path.basename)) == {"file0.parquet", "file2.parquet"}
    assert got["row"].tolist() == list(range(40)) + list(range(31))


def test_csv_files_by_glob_and_every_null_policy(tiny_bert, tmp_path, capsys):
    (tmp_path / "a.csv").write_text("id,text\n007,a river\n008,\n009,the bank\n")
    (tmp_path / "b.csv").write_text("id,text\n010,money\n")
    pattern = str(tmp_path / "*.csv")
    base = ["embed", pattern, "--model", tiny_bert, "--id-column", "id", "--precision", "float32", "--quiet"]
    code, err = _run(capsys, *base, "-o", tmp_path / "o1")
    assert code == 2 and "a.csv': 1 row(s) have no text in column(s) 'text' (an empty field or a null): " \
        "row 1 (id='008'); --on-null empty" in err
    code, err = _run(capsys, *base, "--on-null", "skip", "-o", tmp_path / "o2")
    assert code == 0 and "3 rows" in err and "1 row(s) without text skipped" in err
    got = _read(tmp_path / "o2")
    assert got["id"].tolist() == ["007", "009", "010"]  # CSV ids kept as written
    assert_allclose(np.stack(got["embedding"].to_numpy()), _embed(tiny_bert, ["a river", "the bank", "money"]),
                    rtol=1e-5, atol=1e-6)
    code, err = _run(capsys, *base, "--on-null", "empty", "-o", tmp_path / "o3")
    assert code == 0 and "1 row(s) without text embedded as empty" in err
    got = _read(tmp_path / "o3")
    assert got["id"].tolist() == ["007", "008", "009", "010"]
    assert_allclose(np.stack(got["embedding"].to_numpy())[1], _embed(tiny_bert, [""])[0], rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_file_and_write_nothing(tiny_bert, parquet_dir, tmp_path, capsys):
    (parquet_dir / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    out = tmp_path / "out"
    code, err = _run(capsys, "embed", parquet_dir, "--model", tiny_bert, "-o", out)
    assert code == 2 and "could not read" in err and "broken.parquet" in err and "Traceback" not in err
    assert not list(out.glob("part-*"))
    (parquet_dir / "broken.parquet").unlink()
    code, err = _run(capsys, "embed", parquet_dir, "--model", tiny_bert, "--column", "body", "-o", out)
    assert code == 2 and "column 'body' is not in" in err
    code, err = _run(capsys, "embed", tmp_path / "nothing-*.csv", "--model", tiny_bert, "-o", out)
    assert code == 2 and "holds no .csv" in err
    (tmp_path / "empty.csv").write_text("text\n")
    code, err = _run(capsys, "embed", tmp_path / "empty.csv", "--model", tiny_bert, "-o", out)
    assert code == 2 and "has no rows" in err
    code, err = _run(capsys, "embed", parquet_dir, "--model", tiny_bert, "-o", tmp_path / "one.parquet")
    assert code == 2 and "names several files: write a dataset" in err
    code, err = _run(capsys, "embed", parquet_dir, "--model", tiny_bert, "-o", tmp_path / "x.csv")
    assert code == 2 and "or a directory (no suffix)" in err


def test_clean_up_removes_only_skbert_parts_never_an_input_or_another_tools_file(tiny_bert, tmp_path, capsys):
    """A Spark-style input named part-*.parquet inside the output directory, and another tool's part there: the
    clean-up of stale parts must leave both (they are not skbert's), and remove skbert's own stale part."""
    out = tmp_path / "out"
    out.mkdir()
    frame = pd.DataFrame({"text": _texts(12, 3)})
    spark = out / "part-00000-abc.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), spark)
    foreign = out / "part-0.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    other_input = tmp_path / "other.csv"
    other_input.write_text("text\na river\n")
    base = ["embed", "--model", tiny_bert, "--precision", "float32", "--quiet", "-o", out]
    assert _run(capsys, *base[:1], other_input, *base[1:])[0] == 0  # a skbert part that the next run makes stale
    code, err = _run(capsys, *base[:1], spark, *base[1:])
    assert code == 0 and "removed 1 stale part(s)" in err
    assert spark.is_file() and foreign.is_file()
    assert pq.read_table(spark).to_pandas().equals(frame)  # the input is untouched
    made = [p for p in out.glob("part-*.parquet") if p not in (spark, foreign)]
    assert len(made) == 1 and pq.read_table(made[0]).num_rows == 12


def test_an_output_inside_the_input_directory_is_not_read_as_input(tiny_bert, parquet_dir, capsys):
    out = parquet_dir / "embeddings"
    argv = ["embed", parquet_dir, "--model", tiny_bert, "--chunk-rows", 50, "--precision", "float32", "--quiet",
            "-o", out]
    assert _run(capsys, *argv)[0] == 0
    code, err = _run(capsys, *argv)  # the parts now lie under the input directory
    assert code == 0 and "96 rows in 3 parts (3 already complete)" in err
    assert len(_read(out)) == 96


def test_an_existing_file_whose_name_looks_like_a_pattern_is_that_file(tiny_bert, tmp_path, capsys):
    named = tmp_path / "data[1].csv"
    named.write_text("text\na river\nthe bank\n")
    code, err = _run(capsys, "embed", named, "--model", tiny_bert, "--precision", "float32", "--quiet",
                     "-o", tmp_path / "out")
    assert code == 0 and "2 rows" in err
    assert_allclose(np.stack(_read(tmp_path / "out")["embedding"].to_numpy()),
                    _embed(tiny_bert, ["a river", "the bank"]), rtol=1e-5, atol=1e-6)


def test_pairs_stream_too(tiny_bert, tmp_path, capsys):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"q": ["a river", "", "money"], "a": ["the bank", "a loan", ""]}).to_parquet(path)
    code, err = _run(capsys, "embed", path, "--model", tiny_bert, "--pair-column", "a", "--column", "q",
                     "--segments", "joint,abs_diff", "--precision", "float32", "--quiet", "-o", tmp_path / "out")
    assert code == 0, err
    got = np.stack(_read(tmp_path / "out")["embedding"].to_numpy())
    want = BertEmbedder(tiny_bert, pairs=True, segments=("joint", "abs_diff"), precision="float32", cache=None)
    assert_allclose(got, want.fit_transform([("a river", "the bank"), ("", "a loan"), ("money", "")]),
                    rtol=1e-5, atol=1e-6)


def test_the_same_command_runs_on_dask_workers(tiny_bert, parquet_dir, tmp_path, capsys):
    pytest.importorskip("distributed")
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    # the CPU in this process and in the workers alike: the two datasets are compared bit for bit
    base = ["embed", parquet_dir, "--model", tiny_bert, "--id-column", "doc", "--chunk-rows", 8,
            "--device", "cpu", "--precision", "float32", "--quiet"]
    assert _run(capsys, *base, "-o", local)[0] == 0
    code, err = _run(capsys, *base, "--workers", 2, "-o", cluster)
    assert code == 0 and "96 rows in 13 parts" in err, err
    pd.testing.assert_frame_equal(_read(cluster), _read(local))
    assert sorted(p.name for p in cluster.glob("*")) == sorted(p.name for p in local.glob("*"))


def test_a_worker_killed_mid_chunk_leaves_a_complete_dataset(tiny_bert, parquet_dir, tmp_path):
    """On Dask, the worker writing a part dies once; Dask reruns its chunk and the dataset is whole."""
    distributed = pytest.importorskip("distributed")
    from support import KilledOnce

    from skbert._streaming import Options, stream_embed

    embedder = BertEmbedder(tiny_bert, precision="float32", cache=None).fit(["a"])
    marker = tmp_path / "killed"
    options = Options(["text"], ["doc"], "list")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        summary = stream_embed(KilledOnce(embedder, marker), str(parquet_dir), tmp_path / "out", options,
                               chunk_rows=8, settings="s", client=client)
    assert marker.exists() and summary.parts == 13 and summary.rows == 96
    got = _read(tmp_path / "out")
    inputs = _inputs(parquet_dir)
    assert got["doc"].tolist() == inputs["doc"].tolist() and not list((tmp_path / "out").glob(".part-*"))
    assert_allclose(np.stack(got["embedding"].to_numpy()), _embed(tiny_bert, inputs["text"].tolist()),
                    rtol=1e-5, atol=1e-6)


def test_new_weights_in_the_same_folder_or_another_resolved_precision_redo_every_part(tiny_bert, tmp_path, capsys,
                                                                                      monkeypatch):
    import shutil

    from conftest import _write_tiny_bert
    from skbert import _models

    # on the CPU, where "auto" follows the CPU's bfloat16 flag (a GPU's "auto" is bfloat16 whatever the CPU)
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)  # "auto" is float32 first
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    texts = _texts(30, 5)
    pd.DataFrame({"doc": [f"d{i}" for i in range(30)], "text": texts}).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    argv = ["embed", tmp_path / "in.parquet", "--model", model, "--device", "cpu", "--chunk-rows", 10, "--quiet",
            "-o", out]
    assert _run(capsys, *argv)[0] == 0
    code, err = _run(capsys, *argv)
    assert code == 0 and "(3 already complete)" in err
    _write_tiny_bert(model, seed=7)  # new weights, same folder, same name
    monkeypatch.setattr(_models, "_REGISTRY", {})  # as a new process would load them
    code, err = _run(capsys, *argv)
    assert code == 0 and "(0 already complete)" in err, err
    want = BertEmbedder(str(model), device="cpu", cache=None).fit(["a"]).transform(texts)
    assert_allclose(np.stack(_read(out)["embedding"].to_numpy()), want, rtol=1e-5, atol=1e-6)
    # "auto" resolving to bfloat16 on another CPU: the parts made in float32 are not kept
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: True)
    code, err = _run(capsys, *argv)
    assert code == 0 and "(0 already complete)" in err, err


def test_na_null_and_none_are_texts_in_every_output(tiny_bert, tmp_path, capsys):
    words = ["NA", "null", "None", "nan", "N/A", "a river"]
    (tmp_path / "in.csv").write_text("doc,text\n" + "".join(f"d{i},{w}\n" for i, w in enumerate(words)))
    pq.write_table(pa.table({"doc": [f"d{i}" for i in range(len(words))], "text": words}), tmp_path / "in.parquet")
    want = _embed(tiny_bert, words)
    base = ["--model", tiny_bert, "--id-column", "doc", "--precision", "float32", "--no-cache", "--quiet"]
    for source in ("in.csv", "in.parquet"):
        code, err = _run(capsys, "embed", tmp_path / source, *base, "-o", tmp_path / f"{source}.npy")
        assert code == 0 and "without text" not in err, err
        assert_allclose(np.load(tmp_path / f"{source}.npy"), want, rtol=1e-5, atol=1e-6)
        code, err = _run(capsys, "embed", tmp_path / source, *base, "-o", tmp_path / f"{source.replace('.', '_')}-dataset")
        assert code == 0 and "without text" not in err, err
        got = _read(tmp_path / f"{source.replace('.', '_')}-dataset")
        assert got["doc"].tolist() == [f"d{i}" for i in range(len(words))]
        assert_allclose(np.stack(got["embedding"].to_numpy()), want, rtol=1e-5, atol=1e-6)


def test_a_real_null_is_reported_the_same_way_by_both_outputs(tiny_bert, tmp_path, capsys):
    pq.write_table(pa.table({"doc": ["d0", "d1"], "text": ["a river", None]}), tmp_path / "in.parquet")
    (tmp_path / "in.csv").write_text("doc,text\nd0,a river\nd1,\n")
    base = ["--model", tiny_bert, "--id-column", "doc", "--precision", "float32", "--no-cache", "--quiet"]
    for source in ("in.csv", "in.parquet"):
        messages = []
        for output in (f"{source}.npy", f"{source.replace('.', '_')}-dataset"):
            code, err = _run(capsys, "embed", tmp_path / source, *base, "-o", tmp_path / output)
            assert code == 2
            messages.append(err.split(": ", 2)[-1])
        assert messages[0] == messages[1], messages
        assert "1 row(s) have no text in column(s) 'text' (an empty field or a null): row 1 (doc='d1')" in messages[0]
    pq.write_table(pa.table({"doc": ["d0"], "text": [3]}), tmp_path / "numbers.parquet")
    code, err = _run(capsys, "embed", tmp_path / "numbers.parquet", *base, "--on-null", "empty", "-o", tmp_path / "n")
    assert code == 2 and "column 'text' holds an int (3), not a text" in err


def test_an_empty_id_cell_is_a_null_id_in_both_outputs(tiny_bert, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,text\n007,a river\n,the bank\n")
    base = ["embed", tmp_path / "in.csv", "--model", tiny_bert, "--id-column", "id", "--precision", "float32",
            "--no-cache", "--quiet"]
    code, err = _run(capsys, *base, "-o", tmp_path / "dataset")
    assert code == 0, err
    assert ds.dataset(tmp_path / "dataset").to_table().column("id").to_pylist() == ["007", None]
    code, err = _run(capsys, *base, "-o", tmp_path / "file.parquet")
    assert code == 0, err
    assert pq.read_table(tmp_path / "file.parquet").column("id").to_pylist() == ["007", None]


def test_a_malformed_csv_row_is_an_error_in_a_dataset_as_in_a_file_output(tiny_bert, tmp_path, capsys):
    """A row with an unquoted comma has a field too many: pandas' usecols would drop it without a word."""
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,a river\n2,a river, with a bank\n")
    for out in ("o.parquet", "ds"):
        code, err = _run(capsys, "embed", path, "--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet",
                         "-o", tmp_path / out)
        assert code == 2 and "Expected 2 fields in line 3, saw 3" in err
    assert not (tmp_path / "ds").exists()  # a run that wrote nothing leaves no folder


def test_a_tsv_written_by_pandas_reads_back_as_written(tiny_bert, tmp_path, capsys):
    """pandas (and spreadsheets) quote a TSV field that holds a quote, a tab or a line break."""
    path = tmp_path / "in.tsv"
    texts = ['"quoted start" of a text', "a tab\there", 'a 5" screen', "two\nlines"]
    pd.DataFrame({"id": ["0", "1", "2", "3"], "text": texts}).to_csv(path, sep="\t", index=False)
    code, err = _run(capsys, "embed", path, "--model", tiny_bert, "--id-column", "id", "--precision", "float32",
                     "--no-cache", "--quiet", "-o", tmp_path / "ds")
    assert code == 0, err
    got = _read(tmp_path / "ds")
    assert got["id"].tolist() == ["0", "1", "2", "3"]
    assert_allclose(np.stack(got["embedding"].to_numpy()), _embed(tiny_bert, texts), rtol=1e-5, atol=1e-6)


def test_a_compressed_csv_is_read_as_it_is(tiny_bert, tmp_path, capsys):
    """The project's own data file, data/debian_descriptions.csv.gz, is an input as shipped."""
    import gzip
    from pathlib import Path

    shipped = Path(__file__).parent.parent / "data" / "debian_descriptions.csv.gz"
    frame = pd.read_csv(shipped, keep_default_na=False).head(30)
    code, err = _run(capsys, "embed", shipped, "--model", tiny_bert, "--id-column", "package", "--max-length", "16",
                     "--no-cache", "--quiet", "-o", tmp_path / "all.npy")
    assert code == 0 and "2318 texts" in err, err
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "few.csv.gz", "wt") as file:
        frame.to_csv(file, index=False)
    code, err = _run(capsys, "embed", folder, "--model", tiny_bert, "--precision", "float32", "--max-length", "16",
                     "--no-cache", "--quiet", "-o", tmp_path / "ds")
    assert code == 0 and "30 rows" in err, err  # a directory's compressed files are inputs too
    got = _read(tmp_path / "ds")
    assert got["file"].tolist() == ["few.csv.gz"] * 30 and got["row"].tolist() == list(range(30))
    assert_allclose(np.stack(got["embedding"].to_numpy()), _embed(tiny_bert, frame["text"].tolist(), max_length=16),
                    rtol=1e-5, atol=1e-6)


def test_the_default_ids_are_made_even_where_the_input_has_such_a_column(tiny_bert, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("text,row\na river,r\nthe bank,r\n")
    code, err = _run(capsys, "embed", tmp_path / "in.csv", "--model", tiny_bert, "--no-cache", "--quiet",
                     "-o", tmp_path / "ds")
    assert code == 0, err
    got = _read(tmp_path / "ds")
    assert got["row"].tolist() == [0, 1] and got["file"].tolist() == ["in.csv", "in.csv"]  # the README's promise
    code, err = _run(capsys, "embed", tmp_path / "in.csv", "--model", tiny_bert, "--id-column", "row", "--no-cache",
                     "--quiet", "-o", tmp_path / "named")
    assert code == 0 and _read(tmp_path / "named")["row"].tolist() == ["r", "r"]  # named: the input's own column


def test_inputs_are_checked_whole_before_any_part_is_written(tiny_bert, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "text": ["a", "b"]}), folder / "a.parquet")
    (folder / "b.csv").write_text("id,text\nx,c\n")
    code, err = _run(capsys, "embed", folder, "--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet",
                     "-o", tmp_path / "mixed")
    assert code == 2 and "id column 'id' is int64 in" in err and "but string in" in err
    assert not (tmp_path / "mixed").exists()
    (folder / "b.csv").write_text("key,text\nx,c\n")  # a later file without the id column
    code, err = _run(capsys, "embed", folder, "--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet",
                     "-o", tmp_path / "late")
    assert code == 2 and "id column 'id' is not in" in err and "b.csv" in err
    assert not (tmp_path / "late").exists()  # found before a.parquet's part was written


def test_a_dataset_of_only_rows_without_text_is_an_error_as_for_a_file(tiny_bert, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,text\n1,\n2,\n")
    for out in ("ds", "o.parquet"):
        code, err = _run(capsys, "embed", tmp_path / "in.csv", "--model", tiny_bert, "--on-null", "skip",
                         "--no-cache", "--quiet", "-o", tmp_path / out)
        assert code == 2 and "has no rows with text" in err
    assert not (tmp_path / "ds").exists()


def test_files_added_to_a_corpus_leave_the_other_files_ids_and_parts_alone(tiny_bert, tmp_path, capsys):
    """The file ids are relative to the folder given, not to the files found: a new subfolder redoes nothing."""
    corpus = tmp_path / "corpus"
    (corpus / "2025").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a river", "a bank"]}), corpus / "2025" / "a.parquet")
    base = ["--model", tiny_bert, "--no-cache", "--quiet", "-o", tmp_path / "ds"]
    code, err = _run(capsys, "embed", corpus, *base)
    assert code == 0 and "(0 already complete)" in err
    assert _read(tmp_path / "ds")["file"].tolist() == ["2025/a.parquet"] * 2
    (corpus / "2026").mkdir()
    pq.write_table(pa.table({"text": ["money"]}), corpus / "2026" / "b.parquet")
    code, err = _run(capsys, "embed", corpus, *base)
    assert code == 0 and "3 rows in 2 parts (1 already complete)" in err and "removed" not in err
    assert sorted(_read(tmp_path / "ds")["file"]) == ["2025/a.parquet", "2025/a.parquet", "2026/b.parquet"]
    code, err = _run(capsys, "embed", str(corpus / "*" / "*.parquet"), *base)  # the same files by a pattern
    assert code == 0 and "(2 already complete)" in err  # whose folder is corpus/ too: the same ids and parts


def test_id_types_that_pyarrow_unifies_are_one_type_and_a_null_float_id_is_null(tiny_bert, tmp_path, capsys):
    """A string and a large string (pandas' and polars' Parquet) read back as one table: they are not refused."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array(["x", "y"], pa.string()), "text": ["a", "b"]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": pa.array(["z"], pa.large_string()), "text": ["c"]}), folder / "b.parquet")
    code, err = _run(capsys, "embed", folder, "--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet",
                     "-o", tmp_path / "ds")
    assert code == 0, err
    kinds = {pq.read_schema(part).field("id").type for part in (tmp_path / "ds").glob("part-*.parquet")}
    assert kinds == {pa.large_string()} and sorted(_read(tmp_path / "ds")["id"]) == ["x", "y", "z"]
    path = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"id": pa.array([1.5, None, 2.5]), "text": ["a", "b", "c"]}), path)
    for out in ("floats_ds", "floats.parquet"):
        code, err = _run(capsys, "embed", path, "--model", tiny_bert, "--id-column", "id", "--no-cache", "--quiet",
                         "-o", tmp_path / out)
        assert code == 0, err
        assert pq.read_table(tmp_path / out).column("id").to_pylist() == [1.5, None, 2.5]  # a null, not NaN


def test_parts_of_an_older_format_are_redone(tiny_bert, parquet_dir, tmp_path, capsys, monkeypatch):
    from skbert import _streaming

    base = ["embed", parquet_dir, "--model", tiny_bert, "--id-column", "doc", "--no-cache", "--quiet", "-o",
            tmp_path / "ds"]
    monkeypatch.setattr(_streaming, "PART_FORMAT", _streaming.PART_FORMAT - 1)
    assert _run(capsys, *base)[0] == 0
    monkeypatch.undo()
    code, err = _run(capsys, *base)
    assert code == 0 and "(0 already complete)" in err
    code, err = _run(capsys, *base)
    assert code == 0 and "0 already complete" not in err
