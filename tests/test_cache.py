"""The encoding cache: correctness, keys, eviction, disk sharing and damage."""

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skbert import BertEmbedder
from skbert import _cache
from skbert._cache import Entry, MemoryStore, decode_entry, encode_entry

RTOL, ATOL = 1e-4, 2e-5
MANY = [f"{w} river bank {i} money" * (1 + i % 4) for i, w in enumerate("the a of and to in is was on at".split())]


@pytest.fixture(autouse=True)
def fresh_memory_cache():
    _cache.clear_memory()
    yield
    _cache.clear_memory()


def test_every_combination_from_the_cache_equals_an_uncached_run(tiny_bert, texts):
    BertEmbedder(tiny_bert, layers="all").fit(texts).transform(texts)  # fills the cache
    poolings = ["cls", "mean", "max", "mean_max", "last", "pooler", ("cls", "max")]
    layer_specs = [-1, 0, (1, 2), "all"]
    for pooling, layers, aggregation, special, normalize in itertools.product(
        poolings, layer_specs, ["concat", "mean", "sum"], [False, True], [False, True]
    ):
        if pooling == "pooler" and layers != -1:
            continue
        params = dict(pooling=pooling, layers=layers, layer_aggregation=aggregation,
                      include_special_tokens=special, normalize=normalize)
        cached = BertEmbedder(tiny_bert, **params).fit(texts)
        got = cached.transform(texts)
        assert cached.n_encoded_ == 0 and cached.n_cache_hits_ == len(set(texts))
        want = BertEmbedder(tiny_bert, cache=None, **params).fit_transform(texts)
        assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_a_grid_search_encodes_each_text_once(tiny_bert):
    X = MANY * 2
    y = np.arange(len(X)) % 2
    pipe = make_pipeline(BertEmbedder(tiny_bert), LogisticRegression(max_iter=100))
    grid = {"bertembedder__pooling": ["cls", "mean", "max", "last"], "bertembedder__layers": [-1, 0, "all"]}
    before = BertEmbedder(tiny_bert).cache_info()["n_encoded"]
    GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert BertEmbedder(tiny_bert).cache_info()["n_encoded"] - before == len(set(X))


@pytest.mark.parametrize(
    "change",
    [{"max_length": 16}, {"precision": "bfloat16"}, {"long_text": "chunk"}, {"long_text": "chunk", "stride": 2},
     {"long_text": "head_tail"}],
)
@pytest.mark.filterwarnings("ignore:precision='bfloat16' on this CPU is emulated")
def test_settings_that_change_the_numbers_never_share_entries(tiny_bert, change):
    base = {"max_length": 32, "long_text": "truncate"}
    BertEmbedder(tiny_bert, **base).fit(MANY).transform(MANY)
    if change.get("stride"):
        BertEmbedder(tiny_bert, **{**base, "long_text": "chunk"}).fit(MANY).transform(MANY)
    other = BertEmbedder(tiny_bert, **{**base, **change}).fit(MANY)
    other.transform(MANY)
    assert other.n_encoded_ == len(MANY) and other.n_cache_hits_ == 0
    again = BertEmbedder(tiny_bert, **base, pooling="max", layers=0, normalize=True).fit(MANY)
    again.transform(MANY)
    assert again.n_encoded_ == 0  # pooling, layers and normalize are applied after the cache


def test_a_different_model_never_gets_stale_vectors(tiny_bert, tiny_bert_no_pooler, tmp_path):
    a = BertEmbedder(tiny_bert).fit(MANY).transform(MANY)
    other = BertEmbedder(tiny_bert_no_pooler).fit(MANY)
    b = other.transform(MANY)
    assert other.n_encoded_ == len(MANY) and not np.allclose(a, b)
    # the same weights copied elsewhere share entries: the key is the content, not the path
    import shutil

    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    moved = BertEmbedder(str(copy)).fit(MANY)
    assert_allclose(moved.transform(MANY), a, rtol=RTOL, atol=ATOL)
    assert moved.n_encoded_ == 0


def test_duplicates_are_encoded_once_and_rows_come_back_in_order(tiny_bert):
    texts = [MANY[3], MANY[0], MANY[3], "", MANY[9], MANY[0], "", MANY[3]]
    embedder = BertEmbedder(tiny_bert, cache=None, batch_size=2).fit(texts)
    got = embedder.transform(texts)
    assert embedder.n_encoded_ == 4
    one_by_one = np.stack([embedder.transform([t])[0] for t in texts])
    assert_allclose(got, one_by_one, rtol=RTOL, atol=ATOL)


def test_eviction_keeps_the_memory_cache_within_its_budget(tiny_bert):
    entry_bytes = 6 * 4 * 32 * 4 + 32 * 4 + 64
    embedder = BertEmbedder(tiny_bert, cache_max_bytes=3 * entry_bytes).fit(MANY)
    got = embedder.transform(MANY)
    info = embedder.cache_info()
    assert info["entries"] == 3 and info["bytes"] <= 3 * entry_bytes and info["evictions"] == len(MANY) - 3
    embedder.transform(MANY)
    assert embedder.n_cache_hits_ == 3 and embedder.n_encoded_ == len(MANY) - 3  # only three stayed
    embedder.transform(MANY[:1])
    embedder.transform(MANY[:1])
    assert embedder.n_cache_hits_ == 1  # the most recent entry is kept
    assert_allclose(got, BertEmbedder(tiny_bert, cache=None).fit_transform(MANY), rtol=RTOL, atol=ATOL)


def test_memory_store_lru_order():
    entry = Entry(np.zeros((6, 2, 4), np.float32), 1, 3, None, 3)
    store = MemoryStore(max_bytes=2 * entry.nbytes)
    store.put(b"a", entry)
    store.put(b"b", entry)
    assert store.get(b"a") is entry  # "a" is now the most recent
    store.put(b"c", entry)
    assert store.get(b"b") is None and store.get(b"a") is entry and store.get(b"c") is entry
    assert store.stats.evictions == 1 and store.stats.hits == 3 and store.stats.misses == 1


def test_the_cache_survives_clone(tiny_bert):
    embedder = BertEmbedder(tiny_bert).fit(MANY)
    embedder.transform(MANY)
    copy = clone(embedder).fit(MANY)
    copy.transform(MANY)
    assert copy.n_encoded_ == 0


def test_cache_none_encodes_every_time(tiny_bert):
    embedder = BertEmbedder(tiny_bert, cache=None).fit(MANY)
    embedder.transform(MANY)
    embedder.transform(MANY)
    assert embedder.n_encoded_ == len(MANY) and "hits" not in embedder.cache_info()


# ---- disk cache ----------------------------------------------------------------------


def _entry_files(directory):
    return sorted(p for p in directory.rglob("*.skbc"))


def _run(code, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=env, timeout=300
    )
    return result


def test_disk_cache_is_shared_across_processes(tiny_bert, tmp_path):
    code = """
        import sys, json
        from skbert import BertEmbedder
        texts = json.loads(sys.argv[3])
        e = BertEmbedder(sys.argv[1], cache=sys.argv[2], pooling="mean_max", precision="float32").fit(texts)
        X = e.transform(texts)
        print(json.dumps([e.n_encoded_, e.cache_info()["disk_reads"], X.tolist()]))
    """
    import json

    first = _run(code, tiny_bert, str(tmp_path), json.dumps(MANY))
    assert first.returncode == 0, first.stderr
    encoded, reads, X1 = json.loads(first.stdout.splitlines()[-1])
    assert encoded == len(MANY) and reads == 0
    assert len(_entry_files(tmp_path)) == len(MANY)
    second = _run(code, tiny_bert, str(tmp_path), json.dumps(MANY))
    encoded, reads, X2 = json.loads(second.stdout.splitlines()[-1])
    assert encoded == 0 and reads == len(MANY)
    assert_allclose(np.array(X2), np.array(X1), rtol=0, atol=0)
    assert_allclose(np.array(X1), BertEmbedder(tiny_bert, pooling="mean_max", cache=None).fit_transform(MANY),
                    rtol=RTOL, atol=ATOL)


def test_entries_from_the_memory_cache_reach_a_disk_cache(tiny_bert, tmp_path):
    BertEmbedder(tiny_bert).fit(MANY).transform(MANY)  # memory only
    disk = BertEmbedder(tiny_bert, cache=str(tmp_path)).fit(MANY)
    disk.transform(MANY)
    assert disk.n_encoded_ == 0 and len(_entry_files(tmp_path)) == len(MANY)
    _cache.clear_memory()
    disk.transform(MANY)
    assert disk.n_encoded_ == 0 and disk.cache_info()["disk_reads"] == len(MANY)


def test_grid_search_workers_share_the_disk_cache(tiny_bert, tmp_path):
    X = MANY * 2
    y = np.arange(len(X)) % 2
    # workers resolve precision="auto" on their own CPU, so ask for float32 outright
    BertEmbedder(tiny_bert, cache=str(tmp_path), precision="float32").fit(X).transform(X)
    files = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _entry_files(tmp_path)}
    assert len(files) == len(MANY)
    pipe = make_pipeline(BertEmbedder(tiny_bert, cache=str(tmp_path), precision="float32"),
                         LogisticRegression(max_iter=100))
    grid = {"bertembedder__pooling": ["cls", "mean"], "bertembedder__layers": [-1, 0]}
    GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    # a worker that missed would have encoded and written an entry anew
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _entry_files(tmp_path)} == files


def test_a_killed_writer_leaves_no_entry_that_reads_back_wrong(tiny_bert, tmp_path):
    code = """
        import os, signal, sys
        import skbert._cache as cache
        from skbert import BertEmbedder
        real_replace = os.replace
        def die(*args):  # killed after writing the temporary file, before it is renamed into place
            os.kill(os.getpid(), signal.SIGKILL)
        cache.os.replace = die
        BertEmbedder(sys.argv[1], cache=sys.argv[2]).fit(["a"]).transform(sys.argv[3:])
    """
    result = _run(code, tiny_bert, str(tmp_path), *MANY[:4])
    assert result.returncode == -9
    assert _entry_files(tmp_path) == [] and list(tmp_path.rglob(".tmp-*"))  # only a partial temporary file
    embedder = BertEmbedder(tiny_bert, cache=str(tmp_path)).fit(MANY)
    got = embedder.transform(MANY[:4])
    assert embedder.n_encoded_ == 4
    assert_allclose(got, BertEmbedder(tiny_bert, cache=None).fit_transform(MANY[:4]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "other_key"])
def test_a_corrupt_entry_is_detected_and_recomputed(tiny_bert, tmp_path, damage):
    embedder = BertEmbedder(tiny_bert, cache=str(tmp_path), pooling="mean_max").fit(MANY)
    want = embedder.transform(MANY)
    files = _entry_files(tmp_path)
    victim = files[3]
    blob = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        victim.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.write_bytes(files[4].read_bytes())  # a valid entry, filed under the wrong key
    _cache.clear_memory()  # forget the in-memory copies: read from disk
    again = BertEmbedder(tiny_bert, cache=str(tmp_path), pooling="mean_max").fit(MANY)
    got = again.transform(MANY)
    assert again.n_encoded_ == 1 and again.cache_info()["corrupt"] == 1
    assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert victim.read_bytes() == blob or decode_entry(bytes.fromhex(victim.stem), victim.read_bytes(), 6)


def test_entry_round_trip_and_checks():
    entry = Entry(np.random.default_rng(0).random((6, 3, 4), dtype=np.float32), 5, 7, np.ones(4, np.float32), 9)
    blob = encode_entry(b"k" * 16, entry)
    back = decode_entry(b"k" * 16, blob, 6)
    assert_allclose(back.statistics, entry.statistics) and back.pooler.tolist() == [1.0] * 4
    assert (back.n_content, back.n_all, back.n_tokens) == (5, 7, 9)
    assert decode_entry(b"x" * 16, blob, 6) is None
    assert decode_entry(b"k" * 16, blob[:-1], 6) is None


def test_an_interrupted_transform_resumes_from_the_cache(tiny_bert, tmp_path, monkeypatch):
    embedder = BertEmbedder(tiny_bert, cache=str(tmp_path), batch_size=3).fit(MANY)
    calls = {"n": 0}
    real_pool = BertEmbedder._pool

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_pool(self, batch)

    monkeypatch.setattr(BertEmbedder, "_pool", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embedder.transform(MANY)
    monkeypatch.setattr(BertEmbedder, "_pool", real_pool)
    stored = len(_entry_files(tmp_path))
    assert 0 < stored < len(MANY)
    _cache.clear_memory()
    embedder.transform(MANY)
    assert embedder.n_encoded_ == len(MANY) - stored


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(tiny_bert, monkeypatch):
    embedder = BertEmbedder(tiny_bert, cache=None, batch_size=8, pooling="mean_max").fit(MANY)
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
    assert _encoding.TOTALS.n_oom_splits - before >= 3  # 8 -> 4 -> 2 at least once
    monkeypatch.setattr(model, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        embedder.transform(MANY[:3])
