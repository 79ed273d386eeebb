"""The cache: values from it, keys, tiers, eviction and spill, the disk store, damage and faults."""

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skbert import BertEmbedder
from skbert import _cache, _disk
from skbert._cache import MemoryTier, Store
from skbert._encoding import TOTALS
from skbert._disk import BLOCK_BYTES, DATABASE, pack_block, split_block, sweep_spill_directories, unpack_block
from skbert._entries import ROW_OVERHEAD, Block, block_from_statistics, concatenate, gather
from skbert._statistics import KINDS, Statistics

RTOL, ATOL = 1e-4, 2e-5
MANY = [f"{w} river bank {i} money" * (1 + i % 4) for i, w in enumerate("the a of and to in is was on at".split())]
F32 = {"precision": "float32"}


def _rowwise_cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


COMBINATIONS = [
    dict(pooling=pooling, layers=layers, layer_aggregation=aggregation, include_special_tokens=special,
         normalize=normalize)
    for pooling, layers, aggregation, special, normalize in itertools.product(
        ["cls", "mean", "max", "mean_max", "last", "pooler", ("cls", "max")], [-1, 0, (1, 2), "all"],
        ["concat", "mean", "sum"], [False, True], [False, True],
    )
    if not (pooling == "pooler" and layers != -1)
]


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_every_combination_from_the_cache_matches_an_uncached_run(tiny_bert, texts, precision):
    """float32 entries give the uncached numbers; 16-bit ones (the default) stay within
    cosine 0.99999 row by row. The pooler is checked like every other mode."""
    BertEmbedder(tiny_bert, layers="all", precision=precision).fit(texts).transform(texts)  # fills the cache
    for params in COMBINATIONS:
        cached = BertEmbedder(tiny_bert, precision=precision, **params).fit(texts)
        got, report = cached.transform_with_report(texts)
        assert report.n_encoded == 0 and report.n_cache_hits == report.n_unique == len(set(texts))
        want = BertEmbedder(tiny_bert, cache=None, precision=precision, **params).fit_transform(texts)
        if precision == "float32":
            assert_allclose(got, want, rtol=RTOL, atol=ATOL)
        else:
            assert _rowwise_cosine(got, want).min() > 0.99999, params


def test_a_text_gives_the_same_vector_whether_or_not_it_was_cached(tiny_bert, texts):
    embedder = BertEmbedder(tiny_bert, pooling="mean_max").fit(texts)
    first, report = embedder.transform_with_report(texts)
    assert report.n_encoded == len(set(texts))
    again, report = embedder.transform_with_report(texts)
    assert report.n_encoded == 0
    assert_allclose(again, first, rtol=0, atol=0)


def _fake_statistics(n_layers, width, rng):
    values = rng.standard_normal((2, 1, len(KINDS), n_layers + 1, width)).astype(np.float32)
    return Statistics(np.arange(2), values, KINDS, tuple(range(n_layers + 1)), np.array([[3], [0]]), np.array([5, 2]),
                      rng.standard_normal((2, width)).astype(np.float32))


KEYS = [bytes([i]) * 16 for i in range(2)]


@pytest.mark.parametrize("n_layers, width, limit", [(6, 384, 25_000), (12, 768, 90_000)])
def test_entries_fit_the_size_targets(n_layers, width, limit, rng):
    """MiniLM's shape (6 layers, 384 wide) and bert-base's (12 x 768), in memory and on disk."""
    statistics = _fake_statistics(n_layers, width, rng)
    block = block_from_statistics(KEYS, statistics, np.float16)
    assert block.values.dtype == np.float16
    assert block.array_bytes / 2 + ROW_OVERHEAD <= limit and len(pack_block(block)) / 2 <= limit
    assert block_from_statistics(KEYS, statistics, np.float32).array_bytes / 2 > limit  # float32 is twice the size


def test_values_that_overflow_16_bits_keep_float32(rng):
    statistics = _fake_statistics(2, 8, rng)
    statistics.values[1, 0, 0, 0, 0] = 1e6
    block = block_from_statistics(KEYS, statistics, np.float16)
    assert block.values.dtype == np.float32 and block.pooler.dtype == np.float32
    assert np.array_equal(block.values, statistics.values)  # exact, not rounded
    statistics.values[1, 0, 0, 0, 0] = 1.0
    statistics.pooler[0, 0] = -1e6  # the pooler output too
    assert block_from_statistics(KEYS, statistics, np.float16).values.dtype == np.float32
    statistics.pooler[0, 0] = 1.0
    statistics.values[1, 0, 3, 0, 0] = -np.inf  # a max over no token is not an overflow
    assert block_from_statistics(KEYS, statistics, np.float16).values.dtype == np.float16


def test_block_round_trip_and_checks(rng):
    pair = Block([b"p" * 16], rng.random((1, 2, 4, 3, 8), dtype=np.float32), np.array([[5, 0]]), np.array([9]))
    for block in [block_from_statistics(KEYS, _fake_statistics(2, 8, rng), np.float16), pair]:
        back = unpack_block(pack_block(block))
        assert back.keys == block.keys and back.on_disk
        assert back.values.dtype == block.values.dtype and np.array_equal(back.values, block.values)
        assert np.array_equal(back.n_content, block.n_content) and np.array_equal(back.n_tokens, block.n_tokens)
        assert (back.pooler is None) == (block.pooler is None)
        if block.pooler is not None:
            assert np.array_equal(back.pooler, block.pooler)
        data = pack_block(block)
        assert unpack_block(data[:-1]) is None and unpack_block(b"") is None and unpack_block(b"XXXX" + data[4:]) is None


def test_blocks_split_take_gather_and_concatenate(rng):
    block = block_from_statistics(KEYS, _fake_statistics(2, 8, rng), np.float16)
    one_row = block.values[:1].nbytes
    assert [len(b) for b in split_block(block, one_row)] == [1, 1] and split_block(block, BLOCK_BYTES) == [block]
    other = block.take([1, 0])
    assert other.keys == KEYS[::-1] and np.array_equal(other.values, block.values[::-1])
    order, parts = gather([(block, 1), (other, 0), (block, 0)])
    joined = concatenate(parts)
    # rows come out in each block's order, and ``order`` says which located row each one is
    assert order.tolist() == [2, 0, 1] and joined.keys == [KEYS[0], KEYS[1], KEYS[1]]
    assert np.array_equal(joined.values, block.values[[0, 1, 1]])
    order, parts = gather([(block, 1), (block, 0)])
    assert parts == [block] and order.tolist() == [1, 0]  # a whole block is handed out as it is, not copied


def test_a_grid_search_encodes_each_text_once(tiny_bert):
    X = MANY * 2
    y = np.arange(len(X)) % 2
    pipe = make_pipeline(BertEmbedder(tiny_bert), LogisticRegression(max_iter=100))
    grid = {"bertembedder__pooling": ["cls", "mean", "max", "last"], "bertembedder__layers": [-1, 0, "all"]}
    before = BertEmbedder(tiny_bert).cache_info()["n_encoded"]
    GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert BertEmbedder(tiny_bert).cache_info()["n_encoded"] - before == len(set(X))


def test_no_thrash_when_the_working_set_is_ten_times_the_memory_budget(tiny_bert):
    """4 pooling modes x 2 layer specs x 5 folds with a memory budget one tenth of the working
    set: what memory evicts spills to disk, so every unique text is encoded exactly once."""
    X = [f"{i} {text}" for i in range(6) for text in MANY]
    y = np.arange(len(X)) % 2
    probe = BertEmbedder(tiny_bert).fit(X)
    probe.transform(X[:1])
    entry_bytes = probe.cache_info()["memory_bytes"]
    budget = entry_bytes * len(X) // 10
    _cache.clear_stores()
    pipe = make_pipeline(BertEmbedder(tiny_bert, cache_memory_bytes=budget), LogisticRegression(max_iter=1000))
    grid = {"bertembedder__pooling": ["cls", "mean", "max", "last"], "bertembedder__layers": [-1, "all"]}
    before = probe.cache_info()["n_encoded"]
    GridSearchCV(pipe, grid, cv=5).fit(X, y)
    assert probe.cache_info()["n_encoded"] - before == len(X)
    info = BertEmbedder(tiny_bert, cache_memory_bytes=budget).cache_info()
    assert info["memory_bytes"] <= budget and info["memory_evictions"] > 0 and info["disk_hits"] > 0
    spill = os.path.dirname(info["disk_path"])
    assert os.path.isdir(spill) and os.path.basename(spill).startswith("skbert-spill-")
    _cache.clear_stores()
    assert not os.path.exists(spill)  # the spill directory goes with its store


@pytest.mark.parametrize(
    "change",
    [{"max_length": 16}, {"precision": "bfloat16"}, {"precision": "auto"}, {"long_text": "chunk"},
     {"long_text": "chunk", "stride": 2}, {"long_text": "head_tail"}],
)
@pytest.mark.filterwarnings("ignore:precision='bfloat16' on this CPU is emulated")
def test_settings_that_change_the_numbers_never_share_entries(tiny_bert, change):
    base = {"max_length": 32, "long_text": "truncate", "precision": "float32"}  # "auto" differs: 16-bit entries
    BertEmbedder(tiny_bert, **base).fit(MANY).transform(MANY)
    if change.get("stride"):
        BertEmbedder(tiny_bert, **{**base, "long_text": "chunk"}).fit(MANY).transform(MANY)
    other = BertEmbedder(tiny_bert, **{**base, **change}).fit(MANY)
    report = other.transform_with_report(MANY)[1]
    assert report.n_encoded == len(MANY) and report.n_cache_hits == 0
    again = BertEmbedder(tiny_bert, **base, pooling="max", layers=0, normalize=True).fit(MANY)
    assert again.transform_with_report(MANY)[1].n_encoded == 0  # pooling, layers and normalize are applied after the cache


def test_new_torch_transformers_or_tokenizers_versions_never_get_old_entries(tiny_bert, monkeypatch):
    BertEmbedder(tiny_bert).fit(MANY).transform(MANY)
    import transformers

    monkeypatch.setattr(transformers, "__version__", transformers.__version__ + ".post1")
    upgraded = BertEmbedder(tiny_bert).fit(MANY)
    assert upgraded.transform_with_report(MANY)[1].n_encoded == len(MANY)
    monkeypatch.setattr(torch, "__version__", "99.0")
    assert upgraded.transform_with_report(MANY)[1].n_encoded == len(MANY)
    import tokenizers  # its pair truncation rule has changed between versions

    monkeypatch.setattr(tokenizers, "__version__", tokenizers.__version__ + ".post1")
    assert upgraded.transform_with_report(MANY)[1].n_encoded == len(MANY)


def test_a_different_model_never_gets_stale_vectors(tiny_bert, tiny_bert_no_pooler, tmp_path):
    a = BertEmbedder(tiny_bert).fit(MANY).transform(MANY)
    other = BertEmbedder(tiny_bert_no_pooler).fit(MANY)
    b, report = other.transform_with_report(MANY)
    assert report.n_encoded == len(MANY) and not np.allclose(a, b)
    # the same weights copied elsewhere share entries: the key is the content, not the path
    import shutil

    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    moved = BertEmbedder(str(copy)).fit(MANY)
    got, report = moved.transform_with_report(MANY)
    assert_allclose(got, a, rtol=0, atol=0)
    assert report.n_encoded == 0


def test_duplicates_are_encoded_once_and_rows_come_back_in_order(tiny_bert):
    texts = [MANY[3], MANY[0], MANY[3], "", MANY[9], MANY[0], "", MANY[3]]
    embedder = BertEmbedder(tiny_bert, cache=None, batch_size=2, **F32).fit(texts)  # batching aside, exact
    got, report = embedder.transform_with_report(texts)
    assert report.n_encoded == 4 and report.n_rows == 8 and report.n_unique == 4
    one_by_one = np.stack([embedder.transform([t])[0] for t in texts])
    assert_allclose(got, one_by_one, rtol=RTOL, atol=ATOL)


def _block(keys, width=4):
    n = len(keys)
    return Block(list(keys), np.zeros((n, 1, 4, 2, width), np.float16), np.ones((n, 1), np.int64),
                 np.full(n, 3, np.int64))


def test_memory_tier_is_least_recently_used():
    row_bytes = _block([b"a"]).array_bytes + ROW_OVERHEAD
    tier = MemoryTier(max_bytes=2 * row_bytes)
    a, b, c = _block([b"a"]), _block([b"b"]), _block([b"c"])
    assert tier.put(a) == [] and tier.put(b) == []
    assert tier.get_many([b"a"]) == [(a, 0)]  # "a" is now the most recent
    assert tier.put(c) == [(b"b", b, 0)]
    assert tier.get_many([b"b", b"a", b"c"]) == [None, (a, 0), (c, 0)]
    assert tier.evictions == 1 and tier.bytes == 2 * row_bytes
    big = _block([b"d"], width=400)
    assert tier.put(big) == [(b"a", a, 0), (b"c", c, 0), (b"d", big, 0)]  # larger than the budget: nothing kept
    assert len(tier) == 0 and tier.bytes == 0


def test_memory_tier_counts_a_block_until_its_last_row_goes():
    block = _block([b"a", b"b", b"c", b"d"])
    tier = MemoryTier(max_bytes=10**6)
    tier.put(block)
    assert tier.bytes == block.array_bytes + 4 * ROW_OVERHEAD and block.live == 4
    tier.put(_block([b"a", b"b", b"c"]))  # the same keys again: their old rows are let go
    assert block.live == 1 and tier.bytes == block.array_bytes + _block("abc").array_bytes + 4 * ROW_OVERHEAD
    tier.put(_block([b"d"]))
    assert block.live == 0 and tier.bytes == _block("abc").array_bytes + _block("d").array_bytes + 4 * ROW_OVERHEAD
    small = MemoryTier(max_bytes=16 * (_block([b"a"]).array_bytes + ROW_OVERHEAD))
    assert small.put(_block([bytes([i]) for i in range(40)]))  # more than fits: the oldest rows go
    assert small.bytes <= small.max_bytes and len(small) > 0  # a large block is kept in parts, not dropped whole


def test_stores_are_shared_by_clones_and_separate_for_other_budgets(tiny_bert):
    embedder = BertEmbedder(tiny_bert).fit(MANY)
    embedder.transform(MANY)
    copy = clone(embedder).fit(MANY)
    assert copy.transform_with_report(MANY)[1].n_encoded == 0
    small = BertEmbedder(tiny_bert, cache_memory_bytes=10**6).fit(MANY)
    assert small.transform_with_report(MANY)[1].n_encoded == len(MANY)  # its own store: the other budget is left as it was
    assert embedder.cache_info()["memory_max_bytes"] == 2 * 1024**3
    assert small.cache_info()["memory_max_bytes"] == 10**6


def test_cache_none_encodes_every_time(tiny_bert):
    embedder = BertEmbedder(tiny_bert, cache=None).fit(MANY)
    embedder.transform(MANY)
    assert embedder.transform_with_report(MANY)[1].n_encoded == len(MANY) and "hits" not in embedder.cache_info()


@pytest.mark.parametrize("cache", ["memroy", "cache", "disk"])
def test_a_plain_word_is_not_taken_for_a_directory(tiny_bert, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"cache='{cache}' is not 'memory' or None.*cache='\./{cache}'"):
        BertEmbedder(tiny_bert, cache=cache).fit(["a"])
    assert not (tmp_path / cache).exists()


def test_a_file_in_place_of_the_cache_directory_is_a_clear_error(tiny_bert, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        BertEmbedder(tiny_bert, cache=tmp_path / "taken").fit(["a"])


# ---- disk cache ----------------------------------------------------------------------


def _rows(directory):
    with sqlite3.connect(directory / DATABASE) as db:
        return db.execute("SELECT key, block, row FROM entries ORDER BY block, row").fetchall()


def _run(code, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=env, timeout=300
    )
    return result


def test_disk_cache_is_shared_across_processes_in_a_few_files(tiny_bert, tmp_path):
    code = """
        import sys, json
        from skbert import BertEmbedder
        texts = json.loads(sys.argv[3])
        e = BertEmbedder(sys.argv[1], cache=sys.argv[2], pooling="mean_max", precision="float32").fit(texts)
        X, report = e.transform_with_report(texts)
        print(json.dumps([report.n_encoded, e.cache_info()["disk_hits"], X.tolist()]))
    """
    import json

    texts = MANY + [f"{i} {t}" for i in range(5) for t in MANY]
    first = _run(code, tiny_bert, str(tmp_path), json.dumps(texts))
    assert first.returncode == 0, first.stderr
    encoded, reads, X1 = json.loads(first.stdout.splitlines()[-1])
    assert encoded == len(texts) and reads == 0
    assert len(_rows(tmp_path)) == len(texts)
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) <= 3  # the database, its log and index
    second = _run(code, tiny_bert, str(tmp_path), json.dumps(texts))
    encoded, reads, X2 = json.loads(second.stdout.splitlines()[-1])
    assert encoded == 0 and reads == len(texts)
    assert_allclose(np.array(X2), np.array(X1), rtol=0, atol=0)
    want = BertEmbedder(tiny_bert, pooling="mean_max", cache=None, **F32).fit_transform(texts)
    assert_allclose(np.array(X1), want, rtol=RTOL, atol=ATOL)


def test_grid_search_workers_share_the_disk_cache(tiny_bert, tmp_path):
    X = MANY * 2
    y = np.arange(len(X)) % 2
    # workers resolve precision="auto" on their own CPU, so ask for float32 outright
    BertEmbedder(tiny_bert, cache=tmp_path, **F32).fit(X).transform(X)
    rows = _rows(tmp_path)
    assert len(rows) == len(MANY)
    pipe = make_pipeline(BertEmbedder(tiny_bert, cache=tmp_path, **F32), LogisticRegression(max_iter=100))
    grid = {"bertembedder__pooling": ["cls", "mean"], "bertembedder__layers": [-1, 0]}

    def texts_encoded(estimator, X_test, y_test):  # in the worker, with its embedder
        return estimator[0].transform_with_report(X_test)[1].n_encoded

    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2, scoring=texts_encoded).fit(X, y)
    assert search.cv_results_["mean_test_score"].tolist() == [0] * 4
    assert _rows(tmp_path) == rows


def test_a_killed_writer_leaves_no_entry_that_reads_back_wrong(tiny_bert, tmp_path):
    code = """
        import os, signal, sys
        import skbert._disk as disk
        from skbert import BertEmbedder
        def die(self, connection, items):  # killed in the middle of a transaction
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO blocks (data, checksum) VALUES (x'00', 0)")
            os.kill(os.getpid(), signal.SIGKILL)
        disk.DiskTier._commit = die
        BertEmbedder(sys.argv[1], cache=sys.argv[2]).fit(["a"]).transform(sys.argv[3:])
    """
    result = _run(code, tiny_bert, str(tmp_path), *MANY[:4])
    assert result.returncode == -9, result.stderr
    assert _rows(tmp_path) == []  # the transaction never committed
    embedder = BertEmbedder(tiny_bert, cache=tmp_path).fit(MANY)
    got, report = embedder.transform_with_report(MANY[:4])
    assert report.n_encoded == 4
    assert_allclose(got, BertEmbedder(tiny_bert).fit_transform(MANY[:4]), rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "other_block", "other_key"])
def test_a_corrupt_entry_is_detected_and_recomputed(tiny_bert, tmp_path, damage):
    """A damaged block is found by its checksum, deleted and its texts encoded again; an index
    row that points at another key's entry is found by the key stored in the block."""
    embedder = BertEmbedder(tiny_bert, cache=tmp_path, pooling="mean_max", batch_size=4).fit(MANY)
    want = embedder.transform(MANY)
    with sqlite3.connect(tmp_path / DATABASE) as db:
        blocks = db.execute("SELECT id, data, checksum FROM blocks ORDER BY id").fetchall()
        assert len(blocks) > 2
        victim, data, digest = blocks[1]
        in_victim = db.execute("SELECT count(*) FROM entries WHERE block = ?", (victim,)).fetchone()[0]
        if damage == "other_key":  # a valid entry, filed under the wrong key
            db.execute("UPDATE entries SET row = (row + 1) % ? WHERE block = ? AND row = 0", (in_victim, victim))
        else:
            damaged = {
                "truncate": data[: len(data) // 2],
                "flip": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
                "empty": b"",
                "other_block": blocks[2][1],  # a whole valid block in its place, checksum and all
            }[damage]
            db.execute("UPDATE blocks SET data = ?, checksum = ? WHERE id = ?",
                       (damaged, blocks[2][2] if damage == "other_block" else digest, victim))
    _cache.clear_stores()  # as a new process would: read from disk
    again = BertEmbedder(tiny_bert, cache=tmp_path, pooling="mean_max").fit(MANY)
    got, report = again.transform_with_report(MANY)
    lost = 1 if damage == "other_key" else in_victim
    assert report.n_encoded == lost and again.cache_info()["corrupt"] == lost
    assert_allclose(got, want, rtol=0, atol=0)
    assert len(_rows(tmp_path)) == len(MANY)  # deleted, then written anew


def test_an_interrupted_transform_resumes_from_the_cache(tiny_bert, tmp_path, monkeypatch):
    embedder = BertEmbedder(tiny_bert, cache=tmp_path, batch_size=3).fit(MANY)
    calls = {"n": 0}
    from skbert._spec import PoolingSpec

    real_pool = PoolingSpec.pool

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_pool(*args)

    with monkeypatch.context() as patched:  # undoes only this patch (not conftest's, which fix precision)
        patched.setattr(PoolingSpec, "pool", interrupted)
        with pytest.raises(KeyboardInterrupt):
            embedder.transform(MANY)
    stored = len(_rows(tmp_path))
    assert 0 < stored < len(MANY)
    _cache.clear_stores()
    assert embedder.transform_with_report(MANY)[1].n_encoded == len(MANY) - stored


def test_the_disk_budget_evicts_the_oldest_and_warns_once_with_the_numbers(tiny_bert, tmp_path):
    probe = BertEmbedder(tiny_bert, cache=tmp_path / "probe").fit(MANY)
    probe.transform(MANY[:1])
    entry_bytes = probe.cache_info()["disk_bytes"]
    budget = 4 * entry_bytes
    embedder = BertEmbedder(tiny_bert, cache=tmp_path / "small", cache_disk_bytes=budget, batch_size=2).fit(MANY)
    with pytest.warns(UserWarning, match=rf"reached its budget of {budget:,} bytes \(about 4 entries.*evicted"):
        got = embedder.transform(MANY)
    info = embedder.cache_info()
    assert info["disk_bytes"] <= budget and info["disk_evictions"] >= len(MANY) - 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per store
        embedder.transform(MANY[-2:])
    # float16 entries of the same batches: bit for bit (other batching may differ by a float16 step)
    assert_allclose(got, BertEmbedder(tiny_bert, batch_size=2).fit_transform(MANY), rtol=0, atol=0)


def test_a_disk_budget_smaller_than_one_batch_keeps_its_newest_entries(tiny_bert, tmp_path):
    """Eviction deletes whole blobs, oldest first, down to 90% of the budget: one batch stored as one blob larger
    than that was evicted whole, leaving the tier empty. Blobs are at most a quarter of the budget."""
    probe = BertEmbedder(tiny_bert, cache=tmp_path / "probe").fit(MANY)
    probe.transform(MANY[:1])
    budget = 4 * probe.cache_info()["disk_bytes"]
    embedder = BertEmbedder(tiny_bert, cache=tmp_path / "small", cache_disk_bytes=budget).fit(MANY)
    with pytest.warns(UserWarning, match="reached its budget"):
        want = embedder.transform(MANY)  # one batch: every text
    info = embedder.cache_info()
    assert 0 < info["disk_entries"] < len(MANY) and info["disk_bytes"] <= budget
    _cache.clear_stores()  # a new process's view: the disk tier alone
    again = BertEmbedder(tiny_bert, cache=tmp_path / "small", cache_disk_bytes=budget).fit(MANY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, report = again.transform_with_report(MANY)
    assert report.n_cache_hits == info["disk_entries"]
    assert_allclose(got, want, rtol=0, atol=0)


def test_writes_happen_off_the_encoding_thread_and_are_readable_while_queued(tiny_bert, tmp_path, monkeypatch):
    release = threading.Event()
    real_commit = _disk.DiskTier._commit
    writer_threads = set()

    def slow_commit(self, connection, items):
        writer_threads.add(threading.current_thread().name)
        release.wait(30)
        real_commit(self, connection, items)

    monkeypatch.setattr(_disk.DiskTier, "_commit", slow_commit)
    store = Store(10**6, tmp_path, None)
    block = _block([b"k" * 16])
    store.put(block)  # returns while the writer waits
    assert store.disk.get_many([b"k" * 16])[b"k" * 16] == (block, 0)  # served from the queue
    assert _rows(tmp_path) == []
    release.set()
    store.flush()
    assert len(_rows(tmp_path)) == 1 and writer_threads == {"skbert-cache-writer"}
    store.close()


def test_an_unwritable_cache_directory_warns_and_gives_correct_results(tiny_bert, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(_disk, "_connect", refuse)
    embedder = BertEmbedder(tiny_bert, cache=tmp_path / "ro").fit(MANY)
    with pytest.warns(UserWarning, match="could not open its disk cache.*memory only"):
        got = embedder.transform(MANY)
    assert_allclose(got, BertEmbedder(tiny_bert, cache=None).fit_transform(MANY), rtol=1e-3, atol=1e-3)
    assert embedder.transform_with_report(MANY[:2])[1].n_encoded == 0  # memory still serves


def test_a_full_disk_warns_and_gives_correct_results(tiny_bert, tmp_path, monkeypatch):
    def full(self, connection, items):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patched:  # undoes only this patch (not conftest's, which fix precision)
        patched.setattr(_disk.DiskTier, "_commit", full)
        embedder = BertEmbedder(tiny_bert, cache=tmp_path, batch_size=2).fit(MANY)
        with pytest.warns(UserWarning, match="stopped writing its disk cache.*database or disk is full"):
            got = embedder.transform(MANY)
    assert _rows(tmp_path) == []
    assert_allclose(got, BertEmbedder(tiny_bert, batch_size=2).fit_transform(MANY), rtol=0, atol=0)


def test_a_full_disk_names_its_own_error_not_the_rollback_s(tiny_bert, tmp_path, monkeypatch):
    """SQLite ends a transaction itself on a full disk or an I/O error; a ROLLBACK after it fails with "no
    transaction is active", which must not hide the real error."""
    def full(self, connection):
        connection.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(_disk.DiskTier, "_evict", full)
        embedder = BertEmbedder(tiny_bert, cache=tmp_path, batch_size=2).fit(MANY)
        with pytest.warns(UserWarning, match="stopped writing its disk cache.*: database or disk is full") as caught:
            embedder.transform(MANY)
    assert not any("no transaction" in str(w.message) for w in caught)


def test_a_damaged_database_page_warns_and_the_process_goes_on_from_memory(tiny_bert, tmp_path):
    """A torn write or a bad sector in the index: SQLite opens the file, then reading it raises "database disk
    image is malformed". The call warns once and gives the right rows; the process goes on without the tier."""
    embedder = BertEmbedder(tiny_bert, cache=tmp_path, batch_size=2).fit(MANY)
    want = embedder.transform(MANY)
    _cache.clear_stores()
    with sqlite3.connect(tmp_path / DATABASE) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    with open(tmp_path / DATABASE, "r+b") as file:  # the index's root page overwritten: no valid page type
        file.seek((root - 1) * page)
        file.write(bytes(8) + np.random.default_rng(0).bytes(page - 8))
    again = BertEmbedder(tiny_bert, cache=tmp_path, batch_size=2).fit(MANY)
    with pytest.warns(UserWarning, match="could not read its disk cache.*malformed.*Results are not affected"):
        got, report = again.transform_with_report(MANY)
    assert report.n_encoded == len(MANY)
    assert_allclose(got, want, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: later calls run from memory, quietly
        got, report = again.transform_with_report(MANY)
        info = again.cache_info()
    assert report.n_cache_hits == len(MANY) and info["disk_entries"] == 0
    assert_allclose(got, want, rtol=0, atol=0)


def test_a_forked_child_that_exits_leaves_its_parent_s_spill_directory(tiny_bert):
    """The exit handler that removes a spill directory is inherited by a child made with os.fork(); only the
    process that made the directory removes it."""
    code = """
        import os, sys
        from skbert import BertEmbedder
        texts = [f"text number {i} about the river bank" for i in range(300)]
        embedder = BertEmbedder(sys.argv[1], precision="float32", cache_memory_bytes=20_000).fit(texts)  # torch
        embedder.transform(texts)  # spills to a temporary directory
        path = embedder.cache_info()["disk_path"]
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit handlers run in the child
        os.waitpid(pid, 0)
        print(os.path.exists(path), embedder.transform_with_report(texts)[1].n_encoded, flush=True)
    """
    result = _run(code, tiny_bert)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "0"]


def test_a_directory_of_an_older_format_warns_and_is_not_read(tiny_bert, tmp_path):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / ("ab" * 16 + ".skbc")).write_bytes(b"SKBC\x00\x01" + b"\x00" * 100)
    embedder = BertEmbedder(tiny_bert, cache=tmp_path).fit(MANY)
    with pytest.warns(UserWarning, match="another skbert cache format.*one file per text.*can be deleted"):
        got, report = embedder.transform_with_report(MANY)
    assert report.n_encoded == len(MANY)
    assert_allclose(got, BertEmbedder(tiny_bert).fit_transform(MANY), rtol=0, atol=0)


def test_stale_spill_directories_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"skbert-spill-{dead.stdout.strip()}-abc"
    live = tmp_path / f"skbert-spill-{os.getpid()}-def"
    for path in (stale, live):
        path.mkdir()
        (path / DATABASE).write_bytes(b"x")
    assert sweep_spill_directories(str(tmp_path)) == 1
    assert not stale.exists() and live.exists()


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(tiny_bert, monkeypatch):
    # on the CPU: the fake error is raised on padded batches of more than 2 rows (a GPU packs each batch
    # into one row, which would never fail)
    embedder = BertEmbedder(tiny_bert, device="cpu", cache=None, batch_size=8, pooling="mean_max", **F32).fit(MANY)
    want = embedder.transform(MANY)
    model = embedder._load().model
    real_forward = model.forward

    def small_batches_only(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", small_batches_only)
    from skbert import _encoding

    before = _encoding.TOTALS.n_oom_splits
    got = embedder.transform(MANY)
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert _encoding.TOTALS.n_oom_splits - before == 2  # 8 -> 4 -> 2 once; the lowered limit then sticks
    monkeypatch.setattr(model, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        embedder.transform(MANY[:3])


def test_keys_sharing_an_index_row_never_get_each_others_entries(tmp_path):
    """The index is keyed by a key's first 8 bytes; a second key with the same 8 bytes is not
    stored (it is encoded when asked for) and never gets the first one's entry."""
    from skbert._disk import DiskTier

    first, second = b"samepref" + b"A" * 8, b"samepref" + b"B" * 8
    tier = DiskTier(tmp_path, 10**9)
    tier.write(_block([first]))
    tier.write(_block([second]))
    tier.flush()
    fresh = DiskTier(tmp_path, 10**9)
    found = fresh.get_many([first, second])
    assert list(found) == [first] and found[first][0].keys == [first]
    assert fresh.totals()[0] == 1 and fresh.corrupt == 0
    tier.close()
    fresh.close()


def test_after_a_process_ends_the_directory_holds_about_what_cache_info_reports(tiny_bert, tmp_path):
    """The write-ahead log is folded into the database when a call ends and at exit: no log is left
    beside it, and the directory's bytes are within 1.15x of the entries' bytes."""
    script = textwrap.dedent(f"""
        import json
        from skbert import BertEmbedder
        texts = [f"{{i}} the river bank " * (1 + i % 5) for i in range(600)]
        embedder = BertEmbedder({tiny_bert!r}, cache={str(tmp_path)!r}, precision="float32").fit(texts[:1])
        embedder.transform(texts)
        print(json.dumps(embedder.cache_info()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    import json

    info = json.loads(result.stdout.strip().splitlines()[-1])
    on_disk = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert info["disk_entries"] == 600
    assert not (tmp_path / f"{DATABASE}-wal").exists() or (tmp_path / f"{DATABASE}-wal").stat().st_size == 0
    assert info["disk_bytes"] <= on_disk <= 1.15 * info["disk_bytes"], (on_disk, info)
    assert on_disk <= info["disk_file_bytes"] <= on_disk + 64 * 1024  # while open: an empty log and the shared index


def test_the_spill_budget_comes_from_the_temporary_directory_it_writes_to(tiny_bert, tmp_path, monkeypatch):
    import tempfile

    asked = []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_cache, "default_disk_budget", lambda directory: asked.append(str(directory)) or 10**9)
    BertEmbedder(tiny_bert, cache_memory_bytes=2048).fit(MANY).transform(MANY)  # evicts: a spill tier opens
    assert asked == [str(tmp_path)]
    assert BertEmbedder(tiny_bert, cache_memory_bytes=2048).cache_info()["disk_path"].startswith(str(tmp_path))


def test_four_threads_sharing_a_cached_estimator_get_the_serial_result_and_consistent_counts(tiny_bert):
    from skbert._encoding import TOTALS

    texts = [f"{i % 37} river bank {i}" for i in range(200)]
    want = BertEmbedder(tiny_bert, cache=None, batch_size=4).fit(texts).transform(texts)
    embedder = BertEmbedder(tiny_bert, batch_size=4).fit(texts)
    before = TOTALS.n_encoded
    calls = [texts[k::4] + texts[: 10 * k] for k in range(4)] * 3
    results = [None] * len(calls)

    def work(i):
        results[i] = embedder.transform_with_report(calls[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: unlocked counters would lose updates
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    index = {text: i for i, text in enumerate(texts)}
    for call, (got, report) in zip(calls, results):
        rows = [index[text] for text in call]
        assert_allclose(got, want[rows], rtol=1e-3, atol=1e-3)  # float16 entries
        assert report.n_encoded + report.n_cache_hits == report.n_unique
    info = embedder.cache_info()
    lookups = sum(report.n_unique for _, report in results)
    assert info["hits"] + info["misses"] == lookups
    assert TOTALS.n_encoded - before == sum(report.n_encoded for _, report in results) == info["misses"]
    assert len(set(texts)) <= info["misses"]  # each distinct text encoded at least once, by some thread


def _layer_calls(embedder):
    """Hooks counting the calls of each encoder layer of an embedder's loaded model; returns (calls, hooks).
    The cut models are made first (making one runs the whole model on a probe input)."""
    loaded = embedder._load()
    for depth in range(1, loaded.n_layers):
        loaded.view(depth)
    layers = loaded.model.encoder.layer
    calls = [0] * len(layers)

    def hook(k):
        def count(module, args, output):
            calls[k] += 1
        return count

    return calls, [layer.register_forward_hook(hook(k)) for k, layer in enumerate(layers)]


@pytest.mark.parametrize("cache", ["memory", "directory"])
def test_entries_hold_the_layers_their_encoding_ran_and_deeper_requests_are_encoded_again(tiny_bert, tmp_path,
                                                                                          cache):
    """layers=1 of 3 with a cache runs the first layer only and stores hidden states 0..1; a later
    layers=-1 finds them too shallow, encodes every layer and replaces them (the disk holds one entry
    per text, not two); a later layers=1 is served from the deeper entries; every result equals a
    cache=None pass."""
    location = "memory" if cache == "memory" else str(tmp_path / "cache")
    shallow = BertEmbedder(tiny_bert, cache=location, layers=1, **F32).fit(MANY[:1])
    calls, hooks = _layer_calls(shallow)
    try:
        first = shallow.transform(MANY)
        assert calls[0] > 0 and calls[1] == calls[2] == 0  # hidden state 1 is the first layer's output
        info = shallow.cache_info()
        assert info["misses"] == len(MANY)
        deep = BertEmbedder(tiny_bert, cache=location, layers=-1, **F32).fit(MANY[:1])
        top = deep.transform(MANY)
        assert calls[2] > 0
        info = deep.cache_info()
        assert info["misses"] == 2 * len(MANY)  # too shallow: a miss, encoded again
        if cache == "directory":
            assert info["disk_entries"] == len(MANY)  # replaced, not added
        _cache.clear_stores()  # from disk (a directory) or encoded anew (memory)
        before = calls[2]
        again = BertEmbedder(tiny_bert, cache=location, layers=1, **F32).fit(MANY[:1]).transform(MANY)
        if cache == "directory":
            assert calls[2] == before  # served from the deeper entries on disk
    finally:
        for h in hooks:
            h.remove()
    for layers, got in ((1, first), (-1, top), (1, again)):
        want = BertEmbedder(tiny_bert, cache=None, layers=layers, **F32).fit(MANY[:1]).transform(MANY)
        assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if cache == "directory":
        disk = Store(10**6, tmp_path / "cache").disk
        entries, nbytes = disk.totals()
        blocks = disk._reader.execute("SELECT COUNT(*), SUM(length(data)) FROM blocks").fetchone()
        assert entries == len(MANY) and nbytes == blocks[1]  # the shallow blocks went with their last entry
        disk.close()


def test_the_pooler_after_shallow_entries_encodes_every_layer(tiny_bert):
    shallow = BertEmbedder(tiny_bert, layers=0, **F32).fit(MANY[:1])
    shallow.transform(MANY)
    pooled = BertEmbedder(tiny_bert, pooling="pooler", **F32).fit(MANY[:1]).transform(MANY)
    want = BertEmbedder(tiny_bert, pooling="pooler", cache=None, **F32).fit(MANY[:1]).transform(MANY)
    assert_allclose(pooled, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("order", [[2, 1], [1, 2]])
def test_a_search_over_layers_up_to_k_never_runs_a_layer_above_k(tiny_bert, order):
    """A grid over hidden states 1 and 2 of 3: the third layer never runs. Listed deepest first, each text is
    encoded once (the later points are served from the deeper entries); listed shallowest first, the
    deeper point finds the entries too shallow and encodes each text a second time."""
    X = MANY * 2
    y = np.arange(len(X)) % 2
    pipe = make_pipeline(BertEmbedder(tiny_bert, **F32), LogisticRegression(max_iter=100))  # torch: hooks see it
    calls, hooks = _layer_calls(pipe[0])
    before = BertEmbedder(tiny_bert).cache_info()["n_encoded"]
    try:
        GridSearchCV(pipe, {"bertembedder__pooling": ["cls", "mean"], "bertembedder__layers": order}, cv=3).fit(X, y)
    finally:
        for h in hooks:
            h.remove()
    assert calls[2] == 0 and calls[1] > 0
    passes = 1 if order[0] == 2 else 2
    assert BertEmbedder(tiny_bert).cache_info()["n_encoded"] - before == passes * len(set(X))


def test_a_database_from_before_entries_recorded_their_depth_is_read_as_every_layer(tmp_path):
    """A cache directory written before the index had its ``hidden`` column (all its entries hold every
    hidden state) gets the column on opening, and its entries serve requests for any layer."""
    from skbert._disk import DiskTier

    key = b"k" * 16
    tier = DiskTier(tmp_path, 10**9)
    tier.write(_block([key]))
    tier.close()
    connection = sqlite3.connect(tmp_path / DATABASE)
    connection.execute("ALTER TABLE entries DROP COLUMN hidden")  # as the earlier schema had it
    connection.commit()
    connection.close()
    old = DiskTier(tmp_path, 10**9)
    assert list(old.get_many([key], hidden=100)) == [key]
    deeper = _block([key])
    deeper.values = np.zeros((1, 1, 4, 5, 4), np.float16)
    old.write(deeper)  # not deeper than "every hidden state": left as it is
    old.flush()
    assert old.totals()[0] == 1 and old.get_many([key])[key][0].hidden == 2
    old.close()


def test_the_disk_tier_serves_and_replaces_by_depth(tmp_path):
    from skbert._disk import DiskTier

    keys = [b"a" * 16, b"b" * 16]
    shallow = _block(keys)  # 2 hidden states
    deep = _block(keys[:1])
    deep.values = np.ones((1, 1, 4, 3, 4), np.float16)
    tier = DiskTier(tmp_path, 10**9)
    tier.write(shallow)
    tier.flush()
    assert set(tier.get_many(keys, hidden=2)) == set(keys) and tier.get_many(keys, hidden=3) == {}
    tier.write(deep)
    tier.write(_block(keys[:1]))  # shallower than what is stored now: left out
    tier.flush()
    fresh = DiskTier(tmp_path, 10**9)
    found = fresh.get_many(keys, hidden=3)
    assert list(found) == keys[:1] and found[keys[0]][0].hidden == 3 and float(found[keys[0]][0].values.max()) == 1
    assert fresh.totals()[0] == 2
    fresh.close()
    tier.close()


def test_non_finite_statistics_are_handed_out_with_a_warning_but_never_cached(tiny_bert, monkeypatch):
    """A float16 overflow in the model (older cards) must not live on in the cache; an empty text's max of
    -inf is by design and is cached."""
    from skbert import _source

    texts = ["the river bank", "a loan at the bank", "", "money"]
    real = _source.iter_statistics

    def overflowing(loaded, chosen, **kwargs):
        for batch in real(loaded, chosen, **kwargs):
            for row, position in enumerate(batch.positions):
                if chosen[position] == "a loan at the bank":
                    batch.values[row, 0, 2, -1, 0] = np.inf  # a mean that overflowed
            yield batch

    monkeypatch.setattr(_source, "iter_statistics", overflowing)
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", precision="float32").fit(texts)
    with pytest.warns(UserWarning, match="1 text.*NaN or infinite values.*not cached"):
        first, report = embedder.transform_with_report(texts)
    assert report.n_encoded == 4 and np.isinf(first[1]).any() and np.isfinite(first[[0, 3]]).all()
    monkeypatch.setattr(_source, "iter_statistics", real)
    again, report = embedder.transform_with_report(texts)
    assert report.n_encoded == 1 and report.n_cache_hits == 3  # only the overflowed text is encoded again
    assert np.isfinite(again[1]).all()
    assert_allclose(again[[0, 2, 3]], first[[0, 2, 3]], rtol=0, atol=0)


def test_a_text_that_overflows_float16_is_encoded_again_and_kept_in_float32(tiny_bert, monkeypatch):
    """A 16-bit store's entries are narrowed on the device; a text whose statistics would overflow float16 there
    is flagged, encoded again in float32 and stored in float32: its vector is the one an uncached run gives."""
    from skbert import _encoding

    texts = ["a", "the river bank", "w w w w w w w w w w", "money"]
    real = _encoding.window_statistics
    calls = []

    def huge_for_the_long_text(states, attention_mask, content_mask, *args, **kwargs):
        long = (attention_mask.sum(1) == 12)[:, None, None]  # only "w w ... w" has 12 tokens
        calls.append((kwargs["dtype"], int(long.sum())))
        return real((torch.where(long, s.float() * 1e6, s.float()) for s in states), attention_mask, content_mask,
                    *args, **kwargs)

    monkeypatch.setattr(_encoding, "window_statistics", huge_for_the_long_text)
    uncached = BertEmbedder(tiny_bert, pooling="mean_max", layers="all", cache=None, device="cpu").fit(texts)
    want = uncached.transform(texts)
    stored = []
    real_put = Store.put
    monkeypatch.setattr(Store, "put", lambda self, block: (stored.append(block), real_put(self, block))[1])
    embedder = BertEmbedder(tiny_bert, pooling="mean_max", layers="all", device="cpu").fit(texts)
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite in float32: nothing to warn about
        before = TOTALS.n_encoded
        got, report = embedder.transform_with_report(texts)
    assert calls[0] == (torch.float16, 1) and calls[-1] == (torch.float32, 1)  # flagged, then encoded again
    assert report.n_encoded == 4 == TOTALS.n_encoded - before  # distinct texts, each once
    lengths = [len(ids) for ids in embedder._load().tokenizer(texts)["input_ids"]]
    assert report.n_tokens_encoded == sum(lengths) + 12  # the model ran the long text's 12 tokens twice
    assert sorted(str(b.values.dtype) for b in stored) == ["float16", "float32"]
    assert np.abs(got[2]).max() > 1e5
    scale = np.abs(want).max(axis=1, keepdims=True)  # float16 rounding is relative to each row's size
    assert_allclose(got / scale, want / scale, rtol=2e-3, atol=2e-3)
    again, report = embedder.transform_with_report(texts)
    assert report.n_cache_hits == 4 and report.n_encoded == 0
    assert_allclose(again, got, rtol=0, atol=0)


def test_hits_on_entries_of_different_depths_in_one_call(tiny_bert):
    """Shallow entries (a call that stopped the encoder at layer 1) and full-depth ones (with the pooler) are both
    hits for a layer-1 call; small blocks of each are joined with their own kind only."""
    from skbert._cache import clear_stores

    clear_stores()
    shallow, deep = ["the river bank", "a"], ["she paid the loan", "money money"]
    params = dict(precision="float32", device="cpu", pooling="mean")
    BertEmbedder(tiny_bert, layers=1, **params).fit(shallow).transform(shallow)
    BertEmbedder(tiny_bert, layers=-1, **params).fit(deep).transform(deep)
    embedder = BertEmbedder(tiny_bert, layers=1, **params).fit(shallow + deep)
    got, report = embedder.transform_with_report(shallow + deep)
    assert report.n_cache_hits == 4
    want = BertEmbedder(tiny_bert, layers=1, cache=None, **params).fit(["a"]).transform(shallow + deep)
    assert_allclose(got, want, rtol=1e-3, atol=1e-3)  # float16 entries


def test_a_write_interrupted_while_the_queue_is_full_is_neither_pending_nor_lost(tmp_path):
    """Ctrl-C while a transform waits on a full writer queue: the block was never queued, so the process must
    not serve its keys as stored (they would never reach the database); written again, they are stored."""
    from skbert._disk import DiskTier

    tier = DiskTier(tmp_path, 10**9)
    real_put = tier._queue.put

    def interrupted(item, *args, **kwargs):
        raise KeyboardInterrupt

    block = _block([b"k" * 16, b"j" * 16])
    tier._queue.put = interrupted
    with pytest.raises(KeyboardInterrupt):
        tier.write(block)
    assert tier.get_many([b"k" * 16, b"j" * 16]) == {} and not block.on_disk
    tier._queue.put = real_put
    tier.write(block)
    tier.flush()
    fresh = DiskTier(tmp_path, 10**9)
    assert set(fresh.get_many([b"k" * 16, b"j" * 16])) == {b"k" * 16, b"j" * 16}
    tier.close()
    fresh.close()
