"""Texts longer than the model's window: truncate, head_tail and chunk."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from reference import Reference

from skbert import BertEmbedder

RTOL, ATOL = 1e-4, 2e-5
LONG = " ".join(["the river bank and the money of the house"] * 6)  # ~56 words, many pieces


@pytest.fixture(scope="module")
def reference(tiny_bert):
    return Reference(tiny_bert)


def _windows_by_hand(reference, text, max_length, stride):
    """Overlapping windows cut from the text's own tokens (each ``max_length - 2`` pieces wide, ``stride`` shared
    with the previous one, between [CLS] and [SEP]), and each token's best window.

    Cut here rather than taken from the tokenizer's ``return_overflowing_tokens``, whose windows some
    transformers releases get wrong (5.17 returns two windows of a four-window text).
    """
    tok = reference.tokenizer
    full = tok(text)["input_ids"]
    body = len(full) - 2
    width, step = max_length - 2, max_length - 2 - stride
    starts = [0]
    while starts[-1] + width < body:
        starts.append(starts[-1] + step)
    windows = [[full[0], *full[1:-1][start : start + width], full[-1]] for start in starts]
    outputs = []
    for ids in windows:
        states, _, _ = reference.token_states(tok.decode(ids[1:-1]))  # re-run: same pieces
        assert tok(tok.decode(ids[1:-1]))["input_ids"] == ids
        outputs.append(states)
    # best window for text token j: the one where min(distance to either edge) is largest
    vectors = []
    for j in range(body):
        best, best_room = None, -1
        for k in range(len(windows)):
            start = k * step
            if start <= j < start + len(windows[k]) - 2:
                room = min(j - start, start + len(windows[k]) - 3 - j)
                if room > best_room:
                    best, best_room = (k, j - start + 1), room
        vectors.append(outputs[best[0]][:, best[1]])
    return outputs, np.stack(vectors, axis=1), len(full)


def test_chunked_mean_and_max_equal_a_direct_computation_over_windows(tiny_bert, reference):
    max_length, stride = 16, 4
    outputs, token_vectors, n_tokens = _windows_by_hand(reference, LONG, max_length, stride)
    assert len(outputs) > 4  # really long
    # on the CPU, as the reference runs: float32 within a float32 tolerance (a GPU's float32 differs from the
    # CPU's by more; tests/test_gpu.py compares the two)
    embedder = BertEmbedder(
        tiny_bert, device="cpu", precision="float32", pooling=("mean", "max", "cls", "last"), layers=(0, -1),
        max_length=max_length, long_text="chunk", stride=stride,
    )
    got, report = embedder.fit([LONG]).transform_with_report([LONG, "a"])
    layers = [0, 3]
    mean = token_vectors[layers].mean(axis=1)
    top = token_vectors[layers].max(axis=1)
    cls = outputs[0][layers, 0]
    last = outputs[-1][layers, -1]
    want = np.concatenate([mean.ravel(), top.ravel(), cls.ravel(), last.ravel()])
    assert_allclose(got[0], want, rtol=RTOL, atol=ATOL)
    assert report.n_long == 1 and report.n_truncated == 0

    with_specials = BertEmbedder(
        tiny_bert, device="cpu", precision="float32", pooling="mean", include_special_tokens=True,
        max_length=max_length, long_text="chunk", stride=stride,
    ).fit_transform([LONG])
    all_tokens = np.concatenate([outputs[0][3, :1], token_vectors[3], outputs[-1][3, -1:]])
    assert_allclose(with_specials[0], all_tokens.mean(0), rtol=RTOL, atol=ATOL)

    records = embedder.transform_tokens([LONG])
    assert len(records[0]) == n_tokens  # every token once
    assert_allclose(records[0].vectors[1:-1, 32:], token_vectors[3], rtol=RTOL, atol=ATOL)


def test_a_text_that_fits_is_the_same_under_every_strategy(tiny_bert, texts):
    """Bit for bit: the same windows in the same batches, on the CPU, whose kernels give the same bits for the
    same batch (a GPU's need not: its atomic sums, e.g. ``index_add_``, add in no fixed order)."""
    results = [
        BertEmbedder(
            tiny_bert, device="cpu", precision="float32", pooling=("mean", "max", "cls", "last", "pooler"),
            long_text=s, cache=None,
        ).fit_transform(texts)
        for s in ("truncate", "head_tail", "chunk")
    ]
    assert_allclose(results[1], results[0], rtol=0, atol=0)
    assert_allclose(results[2], results[0], rtol=0, atol=0)


def test_truncate_and_head_tail_match_the_reference(tiny_bert, reference):
    tok = reference.tokenizer
    ids = tok(LONG)["input_ids"]
    text_tokens = 14  # max_length 16 less [CLS] and [SEP]: a quarter (3) from the head, 11 from the tail
    head = text_tokens // 4
    kept = ids[: 1 + head] + ids[len(ids) - 1 - (text_tokens - head) :]
    assert len(kept) == 16
    states, _, _ = reference.token_states(tok.decode(kept[1:-1]))
    assert tok(tok.decode(kept[1:-1]))["input_ids"] == kept
    with pytest.warns(UserWarning, match="truncated"):
        truncated = BertEmbedder(tiny_bert, precision="float32", pooling="mean", max_length=16).fit_transform([LONG])
    got = BertEmbedder(tiny_bert, precision="float32", pooling="mean", max_length=16, long_text="head_tail").fit_transform([LONG])
    assert_allclose(got[0], states[3, 1:-1].mean(0), rtol=RTOL, atol=ATOL)
    want = reference.embed(LONG, ("mean",), (3,), max_length=16)
    assert_allclose(truncated[0], want, rtol=RTOL, atol=ATOL)


def test_truncation_is_counted_and_warned_once_per_call(tiny_bert):
    embedder = BertEmbedder(tiny_bert, precision="float32", max_length=16).fit(["a"])
    with pytest.warns(UserWarning, match="2 of 3 texts were longer than max_length=16") as caught:
        report = embedder.transform_with_report([LONG, "a", LONG])[1]
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert caught[0].filename == __file__  # attributed to the caller's line
    assert (report.n_long, report.n_truncated, report.n_unique) == (2, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert embedder.transform_with_report(["a"])[1].n_truncated == 0
        embedder.set_params(long_text="head_tail")  # chosen cutting: counted, no warning
        assert embedder.transform_with_report([LONG])[1].n_truncated == 1


def test_stride_must_leave_the_window_moving(tiny_bert):
    with pytest.raises(ValueError, match="stride=14 must be below the 14 text tokens"):
        BertEmbedder(tiny_bert, precision="float32", max_length=16, long_text="chunk", stride=14).fit(["a"])
    assert BertEmbedder(tiny_bert, precision="float32", max_length=16, long_text="chunk").fit(["a"]).stride_ == 3


def test_a_100k_character_text_is_embedded_whole(tiny_bert):
    words = "the river bank and the money of the house we sat at the water".split()
    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(words, size=25_000))[:100_000]
    assert len(text) == 100_000
    embedder = BertEmbedder(tiny_bert, precision="float32", pooling="mean_max", long_text="chunk", batch_size=64).fit(["a"])
    got = embedder.transform([text, "a"])
    assert np.all(np.isfinite(got))
    records = embedder.transform_tokens([text])
    assert records[0].offsets[-2, 1] == len(text)  # the last text token ends where the text ends
    assert len(records[0]) == len(embedder._load().tokenizer(text)["input_ids"])
