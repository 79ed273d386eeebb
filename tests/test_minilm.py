"""Real-model tests with the offline all-MiniLM-L6-v2 package."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from support import MINILM_ID, minilm

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A bank is a financial institution that accepts deposits from the public.",
    "",
    "We walked along the bank of the river at dawn.",
    "skbert turns texts into contextual embeddings inside scikit-learn pipelines, "
    "so that grid searches over pooling modes and layers are easy to run.",
    "Hi",
]


@minilm
def test_parity_with_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from skbert._models import resolve_source

    reference = sentence_transformers.SentenceTransformer(resolve_source(MINILM_ID).location, device="cpu")
    want = reference.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    embedder = BertEmbedder(MINILM_ID, pooling="mean", include_special_tokens=True, normalize=True, batch_size=4,
                            precision="float32")
    got = embedder.fit_transform(SENTENCES)
    assert got.shape == want.shape == (len(SENTENCES), 384)
    cosine = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99999, cosine


@minilm
def test_bfloat16_on_the_cpu_stays_close_to_float32():
    import warnings

    from support import DATA

    texts = pd.read_csv(DATA)["text"].head(10).tolist() + SENTENCES  # small: bfloat16 may be emulated (slow) here
    exact = BertEmbedder(MINILM_ID, device="cpu", precision="float32", max_length=96).fit_transform(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # slow where the CPU emulates bfloat16, but still right
        fast = BertEmbedder(MINILM_ID, device="cpu", precision="bfloat16", max_length=96).fit_transform(texts)
    cosine = (exact * fast).sum(axis=1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    assert cosine.min() > 0.999, cosine.min()
    assert not np.allclose(exact, fast, rtol=0, atol=1e-6)  # it did compute in bfloat16


@minilm
def test_similar_sentences_are_closer_than_unrelated_ones():
    X = BertEmbedder(MINILM_ID, normalize=True).fit_transform(
        ["I deposited money at the bank.", "The bank gave me a loan.", "Penguins live in Antarctica."]
    )
    similarity = X @ X.T
    assert similarity[0, 1] > similarity[0, 2] + 0.1


@minilm
def test_every_layer_and_mode_is_finite_and_distinct():
    embedder = BertEmbedder(MINILM_ID, pooling=("cls", "mean", "max", "last", "pooler"), layers=-1)
    X = embedder.fit_transform(SENTENCES)
    assert X.shape == (len(SENTENCES), 5 * 384) and np.all(np.isfinite(X))
    blocks = np.split(X, 5, axis=1)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.allclose(blocks[i], blocks[j])
    all_layers = BertEmbedder(MINILM_ID, layers="all").fit_transform(SENTENCES[:2])
    assert all_layers.shape == (2, 7 * 384)
    assert_allclose(all_layers[:, -384:], BertEmbedder(MINILM_ID).fit_transform(SENTENCES[:2]), atol=1e-5)


def _quickstart():
    """The README demo's module (examples/quickstart.py): its sentences and cosine matrix are what this test
    checks the demo's claim with."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "quickstart", Path(__file__).resolve().parent.parent / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_DEMO = _quickstart()
RIVER, MONEY = _DEMO.RIVER, _DEMO.MONEY


def _cosines(vectors):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


@minilm
def test_bank_separates_by_sense_in_context_but_not_in_the_embedding_layer():
    texts = RIVER + MONEY
    embedder = BertEmbedder(MINILM_ID, layers=-2).fit(texts)
    similarity = _cosines(embedder.embed_words(texts, ["bank"] * 6))
    same = [similarity[i, j] for i in range(6) for j in range(i + 1, 6) if (i < 3) == (j < 3)]
    cross = [similarity[i, j] for i in range(3) for j in range(3, 6)]
    assert min(same) > max(cross)  # every same-sense pair is closer than every cross-sense pair
    assert np.mean(same) - np.mean(cross) > 0.05
    layer0 = _cosines(embedder.set_params(layers=0).fit(texts).embed_words(texts, ["bank"] * 6))
    assert layer0.min() > 0.95  # the embedding layer barely moves: same token, only the position differs
    assert np.ptp(layer0) < np.ptp(similarity)


@minilm
def test_a_100k_character_text_chunks_through_the_real_model():
    import pandas as pd

    from support import DATA

    text = " ".join(pd.read_csv(DATA)["text"])[:100_000]
    embedder = BertEmbedder(MINILM_ID, pooling="mean", long_text="chunk", batch_size=16).fit(["a"])
    whole, report = embedder.transform_with_report([text, text[:2000]])
    assert np.all(np.isfinite(whole)) and report.n_long == 1 and report.n_truncated == 0
    assert _cosines(whole)[0, 1] < 0.99  # the whole text is not just its start


@minilm
def test_16_bit_cache_entries_fit_25_kb_and_stay_within_cosine_0_99999_of_float32(monkeypatch):
    """The default cache keeps float16 entries; every pooling mode and layer choice served from
    them stays within cosine 0.99999 of the float32 model, row by row, on real texts."""
    from support import DATA

    # on a CPU without native bfloat16, "auto" computes in float32 and keeps 16-bit entries: what is measured is
    # the entries' rounding alone (on a GPU "auto" would also compute in bfloat16)
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: False)
    texts = pd.read_csv(DATA)["text"].str.slice(0, 400).tolist()[:48] + SENTENCES
    filled = BertEmbedder(MINILM_ID, device="cpu", cache_memory_bytes=10**9)
    filled.fit(texts).transform(texts)  # 16-bit entries
    info = filled.cache_info()
    assert info["memory_bytes"] / info["memory_entries"] <= 25_000
    for pooling, layers, special in [("mean", -1, True), ("max", "all", False), ("cls", -2, False),
                                     ("last", 0, False), ("mean_max", "last_four", False)]:
        params = dict(pooling=pooling, layers=layers, include_special_tokens=special)
        cached = BertEmbedder(MINILM_ID, device="cpu", cache_memory_bytes=10**9, **params).fit(texts)
        got, report = cached.transform_with_report(texts)
        assert report.n_encoded == 0
        want = BertEmbedder(MINILM_ID, device="cpu", precision="float32", cache=None, **params).fit_transform(texts)
        cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cosine.min() > 0.99999, (params, cosine.min())


@minilm
def test_a_process_killed_mid_transform_resumes_from_the_disk_cache(tmp_path):
    """SIGKILL a disk-cached transform of 2,000 real texts part way; the next run encodes only
    what was not stored and returns exactly what an uncached run returns."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import textwrap
    import time

    from skbert._disk import DATABASE
    from support import DATA

    base = pd.read_csv(DATA)["text"].str.slice(0, 100).tolist()  # about 25 tokens each
    texts = [f"{i}: {base[i % len(base)]}" for i in range(2000)]
    (tmp_path / "texts.txt").write_text("\n".join(texts))
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from skbert import BertEmbedder
        texts = Path(sys.argv[2]).read_text().split("\\n")
        BertEmbedder(sys.argv[1], cache=Path(sys.argv[3]), precision="float32").fit(["a"]).transform(texts)
    """)
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", code, MINILM_ID, str(tmp_path / "texts.txt"), str(cache)],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE)

    def stored():
        try:
            with sqlite3.connect(cache / DATABASE, timeout=30) as db:
                return db.execute("SELECT count(*) FROM entries").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 240
    while stored() < 200 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    kept = stored()
    assert 200 <= kept < len(texts)  # the kill landed mid-run
    embedder = BertEmbedder(MINILM_ID, cache=cache, precision="float32").fit(["a"])
    got, report = embedder.transform_with_report(texts)
    assert report.n_encoded == len(texts) - kept and report.n_cache_hits == kept
    want = BertEmbedder(MINILM_ID, cache=None, precision="float32").fit(["a"]).transform(texts)
    assert_allclose(got, want, rtol=1e-5, atol=1e-5)
