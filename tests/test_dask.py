"""The Dask entry point on a real LocalCluster with worker processes (tiny model, float32 on the CPU: the
workers and the single-process reference alike, whatever accelerator the machine has)."""

import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from skbert import BertEmbedder

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from skbert.dask import embed, predict  # noqa: E402

TEXTS = ["The river bank was muddy.", "", "She paid the loan at the bank.", "money money money", "",
         "The river bank was muddy.", "   ", "a", "We sat on the bank of the river.", "new account"] * 3


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


def _series():
    index = pd.Index([f"doc{i:02d}" for i in range(len(TEXTS))], name="id")
    return pd.Series(TEXTS, index=index, name="text")


def test_importing_skbert_does_not_import_dask():
    import subprocess

    code = "import sys, skbert; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_dask_result_equals_a_single_process_transform(client, tiny_bert):
    series = _series()
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", device="cpu", precision="float32").fit(["a"])
    lazy = embed(dd.from_pandas(series, npartitions=4), embedder)
    assert list(lazy.columns) == list(embedder.get_feature_names_out()) and lazy.npartitions == 4
    got = lazy.compute()
    assert got.index.tolist() == series.index.tolist()  # order and index kept, repeats and empties included
    want = BertEmbedder(tiny_bert, pooling="mean_max", device="cpu", precision="float32",
                        cache=None).fit_transform(TEXTS)
    assert_allclose(got.to_numpy(), want, rtol=1e-6, atol=1e-6)
    assert dd.from_pandas(series, npartitions=4).divisions == lazy.divisions
    frame = dd.from_pandas(series.to_frame().assign(n=1), npartitions=3)
    assert_allclose(embed(frame, embedder, column="text").compute().to_numpy(), want, rtol=1e-6, atol=1e-6)


def test_two_columns_are_embedded_as_sentence_pairs(client, tiny_bert):
    frame = _series().to_frame().assign(answer=[t[::-1] for t in TEXTS], n=1)
    embedder = BertEmbedder(tiny_bert, pairs=True, segments=("joint", "abs_diff"), device="cpu",
                            precision="float32").fit([("a", "b")])
    got = embed(dd.from_pandas(frame, npartitions=3), embedder, column=["text", "answer"]).compute()
    assert got.index.tolist() == frame.index.tolist()
    want = BertEmbedder(tiny_bert, pairs=True, segments=("joint", "abs_diff"), device="cpu", precision="float32",
                        cache=None).fit_transform(frame[["text", "answer"]])
    assert_allclose(got.to_numpy(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="pass column=\\[A, B\\]"):
        embed(dd.from_pandas(frame, npartitions=1), embedder, column="text")
    with pytest.raises(ValueError, match="needs pairs=True"):
        embed(dd.from_pandas(frame, npartitions=1), BertEmbedder(tiny_bert).fit(["a"]), column=["text", "answer"])


def test_threads_gives_torch_its_share_of_cores_on_the_workers(client, tiny_bert):
    """Dask starts workers with OMP_NUM_THREADS=1; threads= sets torch's threads in the tasks' thread while a
    partition is embedded."""

    def task_threads():
        return __import__("torch").get_num_threads()

    def inside_a_task(threads):  # what torch has while a partition is embedded, and after
        import numpy as np
        import pandas as pd
        import torch

        from skbert.dask import _embed_partition

        class Probe:
            def transform(self, part):
                return np.full((len(part), 1), torch.get_num_threads(), np.float32)

        during = _embed_partition(pd.Series(["x"]), Probe(), ["n"], threads)
        return int(during.iloc[0, 0]), torch.get_num_threads()

    addresses = list(client.scheduler_info()["workers"])
    assert {client.submit(task_threads, workers=[a], pure=False).result() for a in addresses} == {1}
    assert {client.submit(inside_a_task, 2, workers=[a], pure=False).result() for a in addresses} == {(2, 1)}
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    got = embed(dd.from_pandas(_series(), npartitions=4), embedder, threads=2).compute()
    assert_allclose(got.to_numpy(), embedder.transform(TEXTS), rtol=1e-5, atol=1e-6)
    assert {client.submit(task_threads, workers=[a], pure=False).result() for a in addresses} == {1}


def test_each_worker_picks_its_own_gpu(client):
    """Simulated on the CPU: with 2 GPUs visible to every worker, device="auto" in worker 0's tasks is
    cuda:0 and in worker 1's cuda:1 (with one GPU per worker, as CUDA_VISIBLE_DEVICES gives, both are cuda:0)."""

    def resolve_as_if_on(n_gpus):
        from unittest import mock

        from skbert._device import resolve_device

        with mock.patch("torch.cuda.is_available", return_value=True), \
                mock.patch("torch.cuda.device_count", return_value=n_gpus), \
                mock.patch("torch.cuda.current_device", return_value=0):
            return str(resolve_device("auto"))

    workers = sorted(client.scheduler_info()["workers"].items(), key=lambda item: item[1]["name"])
    for n_gpus, want in ((2, ["cuda:0", "cuda:1"]), (1, ["cuda:0", "cuda:0"]), (4, ["cuda:0", "cuda:1"])):
        got = [client.submit(resolve_as_if_on, n_gpus, workers=[address], pure=False).result()
               for address, _ in workers]
        assert got == want
    assert resolve_as_if_on(2) == "cuda:0"  # outside a worker: the current GPU, by its number


def test_each_worker_loads_the_model_once_and_reuses_it(client, tiny_bert):
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    embed(dd.from_pandas(_series(), npartitions=6), embedder).compute()
    embed(dd.from_pandas(_series(), npartitions=6), embedder).compute()

    def loaded_models():
        from skbert import _models

        return len(_models._REGISTRY)

    assert set(client.run(loaded_models).values()) == {1}


def test_a_fitted_pipeline_predicts_partition_by_partition(client, tiny_bert):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = np.array([("river" in t) or ("water" in t) for t in TEXTS], dtype=int)
    pipe = make_pipeline(BertEmbedder(tiny_bert, device="cpu", precision="float32"), LogisticRegression(max_iter=200))
    pipe.fit(TEXTS, labels)
    got = predict(dd.from_pandas(_series(), npartitions=3), pipe).compute()
    assert got.index.tolist() == _series().index.tolist()
    assert got.tolist() == pipe.predict(TEXTS).tolist()
    for labels_of in (labels, np.where(labels == 1, "river", "other")):  # scores are floats whatever the labels
        pipe.fit(TEXTS, labels_of)
        lazy = predict(dd.from_pandas(_series(), npartitions=3), pipe, method="decision_function")
        scores = lazy.compute()
        assert lazy.dtype == scores.dtype == np.float64
        assert_allclose(scores.to_numpy(), pipe.decision_function(TEXTS), rtol=1e-6)
        assert predict(dd.from_pandas(_series(), npartitions=3), pipe).compute().tolist() == pipe.predict(TEXTS).tolist()


def test_a_worker_killed_mid_computation_still_gives_the_complete_result(client, tiny_bert, tmp_path):
    """A worker process dies once, in the middle; Dask reruns what it held and the output is whole."""
    marker = tmp_path / "killed"
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    lazy = embed(dd.from_pandas(_series(), npartitions=6), embedder)

    def die_once(part):
        if not marker.exists() and len(part):
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return part

    got = lazy.map_partitions(die_once, meta=lazy._meta).compute()
    assert marker.exists()
    want = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(TEXTS)
    assert got.index.tolist() == _series().index.tolist()
    assert_allclose(got.to_numpy(), want, rtol=1e-6, atol=1e-6)


def test_bad_input_names_the_problem(tiny_bert):
    embedder = BertEmbedder(tiny_bert).fit(["a"])
    frame = dd.from_pandas(pd.DataFrame({"a": ["x"], "b": ["y"]}), npartitions=1)
    with pytest.raises(ValueError, match="2 columns.*column="):
        embed(frame, embedder)
    with pytest.raises(ValueError, match="column 'c' is not among"):
        embed(frame, embedder, column="c")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        embed(frame, BertEmbedder(tiny_bert), column="a")
    import dask.bag as db

    for wrong in (db.from_sequence(["x", "y"]), np.array(["x", "y"]), pd.Series(["x"])):
        with pytest.raises(TypeError, match="a dask.dataframe Series or DataFrame of texts was expected, got"):
            embed(wrong, embedder)


def test_na_null_and_none_are_texts_on_dask_too(client, tiny_bert):
    words = pd.Series(["NA", "null", "None", "nan", "a river", ""], name="text")
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    got = embed(dd.from_pandas(words, npartitions=2), embedder).compute()
    want = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(words.tolist())
    assert_allclose(got.to_numpy(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"row 1 \(index 1\) of X is missing \(.*\), not a string"):
        embed(dd.from_pandas(pd.Series(["a", None], dtype=object), npartitions=1), embedder).compute()


def test_dask_reads_a_frames_columns_as_the_command_reads_a_files(client, tiny_bert, tmp_path, capsys):
    """The same table through skbert.dask (columns picked by the one reader) and through the command's
    file output: the same rows, the same vectors; and one error type for a column either lacks."""
    pytest.importorskip("pyarrow")
    from skbert._cli import main
    from skbert._columns import ColumnError

    frame = pd.DataFrame({"doc": [f"d{i}" for i in range(8)], "q": TEXTS[:8], "a": [t[::-1] for t in TEXTS[:8]]})
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    code = main(["embed", str(tmp_path / "in.parquet"), "--model", tiny_bert, "--column", "q", "--pair-column", "a",
                 "--id-column", "doc", "--segments", "joint,abs_diff", "--device", "cpu", "--precision", "float32",
                 "--no-cache", "--quiet", "-o", str(tmp_path / "out.parquet")])
    assert code == 0, capsys.readouterr().err
    written = pd.read_parquet(tmp_path / "out.parquet")
    embedder = BertEmbedder(tiny_bert, pairs=True, segments=("joint", "abs_diff"), device="cpu",
                            precision="float32").fit([("a", "b")])
    got = embed(dd.from_pandas(frame.set_index("doc"), npartitions=3), embedder, column=["q", "a"]).compute()
    assert got.index.tolist() == written["doc"].tolist()
    assert list(got.columns) == list(written.columns[1:])
    assert_allclose(got.to_numpy(), written.iloc[:, 1:].to_numpy(), rtol=1e-6, atol=1e-6)
    lazy = dd.from_pandas(frame, npartitions=2)
    for column, message in ((["q", "nope"], "pair column 'nope' is not among the columns of the frame"),
                            (["q", "a", "doc"], "a list of columns names a pair's two sides"),
                            ("q", "pass column=\\[A, B\\]")):
        with pytest.raises(ColumnError, match=message):
            embed(lazy, embedder, column=column)
    single = BertEmbedder(tiny_bert).fit(["a"])
    with pytest.raises(ColumnError, match="needs pairs=True"):
        embed(lazy, single, column=["q", "a"])
    with pytest.raises(ColumnError, match="column 'nope' is not among"):
        predict(lazy, single, column="nope")


def test_a_bags_frame_is_embedded_and_predicted(tiny_bert):
    """The TypeError for a bag says to_dataframe makes a frame; its meta is a row of the data, not empty."""
    import dask.bag as db
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = TEXTS[:8]
    frame = db.from_sequence([{"text": t} for t in texts], npartitions=3).to_dataframe()
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    want = BertEmbedder(tiny_bert, device="cpu", precision="float32", cache=None).fit_transform(texts)
    for data, column in ((frame, "text"), (frame["text"], None)):
        got = embed(data, embedder, column=column).compute(scheduler="sync")
        assert_allclose(got.to_numpy(), want, rtol=1e-6, atol=1e-6)
    pipe = make_pipeline(BertEmbedder(tiny_bert, device="cpu", precision="float32"), LogisticRegression(max_iter=200))
    pipe.fit(texts, [i % 2 for i in range(len(texts))])
    assert predict(frame, pipe, column="text").compute(scheduler="sync").tolist() == pipe.predict(texts).tolist()


def test_scores_per_class_come_as_a_frame_of_a_column_per_class(tiny_bert):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = np.array(["river", "money", "other"])[np.arange(len(TEXTS)) % 3]
    pipe = make_pipeline(BertEmbedder(tiny_bert, device="cpu", precision="float32"), LogisticRegression(max_iter=200))
    pipe.fit(TEXTS, labels)
    data = dd.from_pandas(_series(), npartitions=3)
    for method in ("predict_proba", "predict_log_proba", "decision_function"):
        lazy = predict(data, pipe, method=method)
        got = lazy.compute(scheduler="sync")
        assert list(lazy.columns) == list(got.columns) == list(pipe.classes_)
        assert got.index.tolist() == _series().index.tolist()
        assert_allclose(got.to_numpy(), getattr(pipe, method)(TEXTS), rtol=1e-6, atol=1e-9)
    pipe.fit(TEXTS, labels == "river")  # two classes: a probability per class, one decision score
    assert predict(data, pipe, method="predict_proba").compute(scheduler="sync").shape == (len(TEXTS), 2)
    assert predict(data, pipe, method="decision_function").compute(scheduler="sync").shape == (len(TEXTS),)


def test_mistakes_are_found_before_any_task_runs(tiny_bert):
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    data = dd.from_pandas(_series(), npartitions=2)
    pipe = make_pipeline(BertEmbedder(tiny_bert), LogisticRegression())
    with pytest.raises(NotFittedError):
        predict(data, pipe)
    pipe.fit(TEXTS, np.arange(len(TEXTS)) % 2)
    with pytest.raises(AttributeError, match="no method 'transform_all'"):
        predict(data, pipe, method="transform_all")
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads="):
            predict(data, pipe, threads=threads)
        with pytest.raises(ValueError, match="threads="):
            embed(data, pipe[0], threads=threads)
    pairs = pd.DataFrame({"q": ["a river", "money"], "a": ["the bank", "a loan"]})
    embedder = BertEmbedder(tiny_bert, pairs=True).fit(pairs)
    with pytest.raises(ValueError, match=r"column=\['a', 'q'\] are not the columns fit saw, \['q', 'a'\]"):
        embed(dd.from_pandas(pairs, npartitions=1), embedder, column=["a", "q"])


def test_threads_under_a_local_scheduler_leave_the_callers_setting_as_it_was(tiny_bert):
    import torch

    before = torch.get_num_threads()
    embedder = BertEmbedder(tiny_bert, device="cpu", precision="float32").fit(["a"])
    seen = []
    real = BertEmbedder.transform

    def noting(self, X):
        seen.append(torch.get_num_threads())
        return real(self, X)

    BertEmbedder.transform = noting
    try:
        embed(dd.from_pandas(_series(), npartitions=2), embedder, threads=before + 1).compute(scheduler="sync")
    finally:
        BertEmbedder.transform = real
    assert seen == [before + 1, before + 1] and torch.get_num_threads() == before
