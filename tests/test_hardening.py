"""A quiet, honest surface: iterators, lone surrogates, torch devices, warnings at the user's line,
progress bars only for long work, a transform that never changes the estimator, and forked processes."""

import copy
import os
import subprocess
import sys
import threading
import warnings

import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose

from skbert import BertEmbedder, TransformReport
from skbert import _report

TEXTS = ["The river bank was muddy.", "She paid the loan at the bank.", "", "money money money"]


def test_a_generator_is_read_once_by_fit_transform(tiny_bert):
    want = BertEmbedder(tiny_bert).fit_transform(list(TEXTS))
    got = BertEmbedder(tiny_bert).fit_transform(t for t in TEXTS)
    assert_allclose(got, want, rtol=0, atol=0)


def test_lone_surrogates_become_u_fffd_everywhere_texts_enter(tiny_bert):
    broken = ["fine", "the bank \ud800 flooded"]
    clean = ["fine", "the bank \ufffd flooded"]
    embedder = BertEmbedder(tiny_bert).fit(clean)
    with pytest.warns(UserWarning, match="first row 1; each was replaced by U\\+FFFD") as caught:
        got = embedder.transform(broken)
    assert caught[0].filename == __file__
    assert_allclose(got, embedder.transform(clean), rtol=0, atol=0)
    with pytest.warns(UserWarning, match="lone surrogate"):
        record = embedder.transform_tokens(broken)[1]
    for token, (start, end) in zip(record.tokens, record.offsets):
        if end > start:  # offsets still index the text as given
            assert broken[1][start:end].lower() == token.removeprefix("##") or token == "[UNK]"
    with pytest.warns(UserWarning, match="lone surrogate"):
        words = embedder.embed_words(broken, ["fine", "flooded"])
    assert_allclose(words, embedder.embed_words(clean, ["fine", "flooded"]), rtol=0, atol=0)


def test_pandas_input_with_a_lone_surrogate_warns_once_and_keeps_its_index(tiny_bert):
    series = pd.Series(["fine", "broken \ud800"], index=["x", "y"], dtype=object)  # str dtype refuses it
    embedder = BertEmbedder(tiny_bert).set_output(transform="pandas")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = embedder.fit_transform(series)
    assert len([w for w in caught if "lone surrogate" in str(w.message)]) == 1
    assert frame.index.tolist() == ["x", "y"]


def test_a_torch_device_is_accepted(tiny_bert):
    embedder = BertEmbedder(tiny_bert, device=torch.device("cpu")).fit(TEXTS)
    assert embedder.device_ == "cpu"
    assert_allclose(embedder.transform(TEXTS), BertEmbedder(tiny_bert, device="cpu").fit_transform(TEXTS), rtol=0,
                    atol=0)


def test_the_truncation_warning_points_at_the_users_line_through_set_output_and_pipelines(tiny_bert):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    long_text = "river bank " * 60
    embedder = BertEmbedder(tiny_bert).set_output(transform="pandas").fit(TEXTS)
    with pytest.warns(UserWarning, match="were truncated") as caught:
        embedder.transform(pd.Series([long_text, "a"]))
    assert caught[0].filename == __file__
    pipe = make_pipeline(BertEmbedder(tiny_bert), StandardScaler()).fit(TEXTS)
    with pytest.warns(UserWarning, match="were truncated") as caught:
        pipe.transform([long_text, "a"])
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match="were truncated") as caught:  # fit runs its steps through joblib
        make_pipeline(BertEmbedder(tiny_bert), StandardScaler()).fit([long_text, "a"])
    assert caught[0].filename == __file__


def test_a_progress_bar_only_for_work_that_takes_a_while(tiny_bert, capsys, monkeypatch):
    embedder = BertEmbedder(tiny_bert, show_progress=True).fit(TEXTS)
    embedder.transform(["one text"])
    assert "skbert" not in capsys.readouterr().err  # a one-text predict: no bar
    monkeypatch.setattr(_report, "PROGRESS_DELAY_S", 0)  # as if the call had run for a while
    embedder.transform(TEXTS * 3)
    assert "skbert" in capsys.readouterr().err


def test_transform_never_changes_the_fitted_estimator(tiny_bert):
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", max_length=8).fit(TEXTS)
    before = copy.deepcopy(embedder.__dict__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedder.transform(TEXTS + ["river bank " * 20])
        embedder.transform_tokens(TEXTS)
        embedder.embed_words(TEXTS[:2], ["river", "paid"])
    assert embedder.__dict__.keys() == before.keys()
    assert all(embedder.__dict__[k] == v for k, v in before.items())


def test_threads_sharing_one_estimator_get_their_own_rows_and_reports(tiny_bert):
    embedder = BertEmbedder(tiny_bert, cache=None).fit(TEXTS)
    inputs = [[f"{i} {t}" for t in TEXTS][: 1 + i % 4] for i in range(8)]
    want = [embedder.transform(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        results[i] = embedder.transform_with_report(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, (got, report) in enumerate(results):
        assert isinstance(report, TransformReport) and report.n_rows == len(inputs[i]) == report.n_encoded
        assert_allclose(got, want[i], rtol=1e-5, atol=1e-6)


_FORKED_CHILD = """
import multiprocessing, sys, warnings
import numpy as np, torch
from skbert import BertEmbedder

texts = ["The river bank was muddy.", "She paid the loan at the bank.", "money money money"] * 8
torch.set_num_threads(2)
torch.ones(4_000_000).mul_(2)  # the parent's OpenMP threads have run (as a real model's pass runs them)
embedder = BertEmbedder(sys.argv[1], cache=None).fit(texts)
want = embedder.transform(texts)

def child(_):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = embedder.transform(texts)
    torch.ones(4_000_000).mul_(2)  # a parallel torch operation after skbert's: would wait for ever on 2 threads
    return got, torch.get_num_threads(), [str(w.message) for w in caught]

with multiprocessing.get_context("fork").Pool(1) as pool:
    try:
        got, threads, messages = pool.apply_async(child, (0,)).get(timeout=90)
    except multiprocessing.TimeoutError:
        pool.terminate()
        sys.exit("the forked child hung")
np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
assert threads == 1, threads
assert sum("forked" in m for m in messages) == 1, messages
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork start method is Linux's default")
def test_a_forked_child_embeds_on_one_thread_instead_of_hanging(tiny_bert):
    # torch's OpenMP threads cannot run again in a process forked after they ran: without skbert's guard the
    # child's first parallel operation never returns
    # the CPU's threads are the subject: the child runs as on a machine without a GPU (see test_gpu.py for one with)
    done = subprocess.run([sys.executable, "-c", _FORKED_CHILD, tiny_bert], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
