"""Copies between host and device: staging buffers reused safely, results read only after their copy.

A GPU runs copies whenever it gets to them, so reading a result before its event, or
refilling a buffer whose result was not read yet, gives wrong numbers only sometimes.
``DeferredOps`` stands in for the device on a CPU (its "device" tensors are CPU tensors, so
the tests that run the encoder through it say ``device="cpu"``) and makes the worst case happen
every time: a device-to-host copy runs only when some event is waited on, and then
every copy queued so far runs (the device got ahead). Code that orders its copies
right gives the same results through it as through plain copies.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from skbert import BertEmbedder
from skbert import _encoding
from skbert._transfer import Transfers, one_batch_behind

TEXTS = [f"{i} the river bank by the money bank " * (1 + i % 5) for i in range(40)] + ["", "a"]


class DeferredOps:
    """A device whose device-to-host copies run late: at the first wait after them, all at once."""

    def __init__(self):
        self.queued = []  # copies not run yet
        self.pinned_sizes = []

    def pinned(self, numel, dtype):
        self.pinned_sizes.append(numel)
        return torch.full((numel,), -1, dtype=dtype)  # garbage until a copy lands

    def to_device(self, staged):
        return staged.clone()  # a copy at once: the batch runs on the CPU right after

    def record(self):
        return _Event(self)

    def copy_to_host(self, source, target):
        self.queued.append((source.clone(), target))
        return _Event(self)


class _Event:
    def __init__(self, ops):
        self.ops = ops

    def synchronize(self):
        with torch.inference_mode():  # as the device would, in the mode the copy was queued in
            for source, target in self.ops.queued:
                target.copy_(source)
        self.ops.queued.clear()


@dataclass(frozen=True)
class _Batch:
    """A batch as the runtimes make them: a dataclass of tensors."""

    ids: torch.Tensor
    max_length: torch.Tensor


def deferred_transfers(device):
    return Transfers(device, DeferredOps())


def test_results_come_out_right_when_copies_land_late():
    transfers = deferred_transfers(torch.device("cpu"))
    tensors = [torch.full((3, 4), float(i)) for i in range(5)]
    pending = [(i, transfers.to_host(t)) for i, t in enumerate(tensors)]
    for i, result in one_batch_behind(iter(pending)):
        assert_allclose(result, tensors[i].numpy())


def test_a_staging_buffer_is_not_refilled_before_its_result_is_read():
    transfers = deferred_transfers(torch.device("cpu"))

    def started():
        for i in range(6):
            yield i, transfers.to_host(torch.full((2, 8), float(i)))

    got = list(one_batch_behind(started()))
    assert [float(r[0, 0]) for _, r in got] == [0, 1, 2, 3, 4, 5]
    assert len(transfers._slots) <= 3  # two in flight at most: buffers are reused, not made per batch


def test_a_buffer_that_is_too_small_is_replaced_by_a_larger_one():
    transfers = deferred_transfers(torch.device("cpu"))
    for size in (4, 16, 8, 40):
        assert_allclose(transfers.to_host(torch.arange(size, dtype=torch.float32)).result(), np.arange(size))
    assert len(transfers._slots) == 1  # one at a time in flight: one buffer, grown twice


def test_pinned_buffers_never_grow_past_their_ceiling_and_larger_tensors_copy_unpinned(monkeypatch):
    from skbert import _transfer

    monkeypatch.setattr(_transfer, "PINNED_BYTES_MAX", 400)  # 100 float32 values
    transfers = deferred_transfers(torch.device("cpu"))
    for size in (40, 90, 100, 60):  # doubling 40 would give 80, then 160: capped at 100
        assert_allclose(transfers.to_host(torch.arange(size, dtype=torch.float32)).result(), np.arange(size))
        moved = transfers.to_device(_Batch(torch.arange(size, dtype=torch.float32), torch.tensor(size)))
        assert torch.equal(moved.ids, torch.arange(size, dtype=torch.float32))
    allocated = transfers.pinned_allocations
    big = torch.arange(101, dtype=torch.float32)  # over the ceiling: pageable memory, no pinned buffer
    assert_allclose(transfers.to_host(big).result(), big.numpy())
    assert torch.equal(transfers.to_device(_Batch(big, torch.tensor(101))).ids, big)
    assert transfers.pinned_allocations == allocated
    assert max(transfers.ops.pinned_sizes) == 100


def test_host_to_device_staging_reuses_two_sets_of_buffers():
    transfers = deferred_transfers(torch.device("cpu"))
    for step in range(5):
        batch = _Batch(torch.arange(10 + step).unsqueeze(0), torch.tensor(7))
        moved = transfers.to_device(batch)
        assert torch.equal(moved.ids, batch.ids) and moved.ids is not batch.ids
        assert moved.max_length is batch.max_length  # a 0-d length stays on the host
    assert transfers.pinned_allocations <= 6  # two sets, each grown at most a few times, not one per batch


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.filterwarnings("ignore:.*were truncated from the longer side")  # truncation is meant: long pairs
def test_encoding_through_late_copies_gives_the_same_vectors(tiny_bert, monkeypatch, attention, pairs):
    """The whole encoder (statistics, long texts in windows, the pooler) through the deferred device."""
    texts = list(zip(TEXTS, reversed(TEXTS))) if pairs else TEXTS
    # on the CPU: DeferredOps's "device" tensors are CPU tensors
    params = dict(attention=attention, pooling=("cls", "mean", "max") if pairs else ("cls", "mean", "max", "pooler"),
                  layers=-1 if not pairs else "all", long_text="truncate" if pairs else "chunk", max_length=16,
                  batch_size=4, cache=None, precision="float32", pairs=pairs, device="cpu")
    want = BertEmbedder(tiny_bert, **params).fit(texts).transform(texts)
    monkeypatch.setattr(_encoding.Transfers, "for_device", staticmethod(deferred_transfers))
    got = BertEmbedder(tiny_bert, **params).fit(texts).transform(texts)
    assert_allclose(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("shape, dtype", [((7, 3, 5), np.float16), ((1001,), np.float32), ((0, 4), np.float16),
                                          ((13, 2), np.int64)])
def test_host_copy_is_a_whole_copy_in_new_memory_whatever_the_split(monkeypatch, threads, shape, dtype):
    from skbert import _transfer

    monkeypatch.setattr(_transfer, "SPLIT_COPY_BYTES", 1)  # split even these small arrays
    source = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    copied = _transfer.host_copy(source, threads)
    assert copied.shape == source.shape and copied.dtype == source.dtype and np.array_equal(copied, source)
    assert not np.shares_memory(copied, source)
    source[...] = 0  # the source (a pinned buffer) is refilled by the next copy: the result must not change
    assert np.array_equal(copied.reshape(-1), np.arange(copied.size, dtype=dtype))


def test_host_copy_of_a_strided_view_copies_it_plainly():
    from skbert import _transfer

    source = np.arange(40, dtype=np.float32).reshape(8, 5)[:, ::2]
    assert np.array_equal(_transfer.host_copy(source, 4), source)


def test_copy_threads_split_a_large_result_and_a_forked_child_makes_its_own(monkeypatch):
    from skbert import _transfer

    used = []
    real = np.copyto

    def copyto(target, source):
        import threading

        used.append(threading.current_thread().name)
        real(target, source)

    monkeypatch.setattr(_transfer.np, "copyto", copyto)
    source = np.random.default_rng(0).standard_normal(_transfer.SPLIT_COPY_BYTES // 8 + 3)  # float64: just over
    assert np.array_equal(_transfer.host_copy(source, 3), source)
    # three parts: one copied by this thread, two by the pool's (an idle one may take both)
    assert len(used) == 3 and sum(name.startswith("skbert-copy") for name in used) == 2
    pool = _transfer._copy_pool()
    monkeypatch.setattr(_transfer.os, "getpid", lambda: -1)  # as a forked child sees it: another process
    assert _transfer._copy_pool() is not pool


def test_encoding_through_late_copies_split_over_threads(tiny_bert, monkeypatch):
    """Results copied out of the (deferred) pinned buffers in parts, by threads, as on a many-core GPU machine."""
    from skbert import _transfer

    params = dict(pooling=("cls", "mean", "max"), layers="all", long_text="chunk", max_length=16, batch_size=8,
                  precision="float32", device="cpu")  # DeferredOps's "device" tensors are CPU tensors
    want = BertEmbedder(tiny_bert, cache=None, **params).fit(TEXTS).transform(TEXTS)
    monkeypatch.setattr(_transfer, "COPY_THREADS", 3)
    monkeypatch.setattr(_transfer, "SPLIT_COPY_BYTES", 1)
    monkeypatch.setattr(_encoding.Transfers, "for_device", staticmethod(deferred_transfers))
    for cache in (None, "memory"):
        got = BertEmbedder(tiny_bert, cache=cache, **params).fit(TEXTS).transform(TEXTS)
        assert_allclose(got, want, rtol=0, atol=0 if cache is None else 2e-3)


def test_token_vectors_through_late_copies(tiny_bert, monkeypatch):
    embedder = BertEmbedder(tiny_bert, device="cpu", layers=(1, 2), max_length=16, long_text="chunk",
                            cache=None).fit(TEXTS)  # DeferredOps stands in for a device on the CPU
    want = embedder.transform_tokens(TEXTS[:6])
    monkeypatch.setattr(_encoding.Transfers, "for_device", staticmethod(deferred_transfers))
    got = embedder.transform_tokens(TEXTS[:6])
    assert len(got) == len(want) == 6
    for a, b in zip(got, want):
        assert_allclose(a.vectors, b.vectors, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("pairs", [False, True])
def test_a_batch_never_makes_the_host_wait_for_the_device(tiny_bert, monkeypatch, layout, pairs):
    """Every batch's device work (forward, statistics of every kind and layer, pooler, the float16 check) runs on
    the meta device, which has shapes and no numbers: any read of the device's numbers on the host (``item``,
    ``bool``, ``tolist``, ``nonzero``, transformers' ``mask.all()``) fails there. On a GPU each such read makes the
    host wait for the device to finish, every batch, so the next batch is not queued while this one runs. Only the
    copies to the host read numbers (deferred by a batch on CUDA); here they hand back zeros of their shapes.
    (The CPU reference for the GPU's packed kernel: a stand-in of its shape on meta.)"""
    import skbert._packing as packing
    from skbert._models import _load, resolve_source
    from skbert._options import EncodingOptions
    from skbert._runtimes import TorchPacked, TorchPadded
    from skbert._transfer import PendingCopy

    loaded = _load(resolve_source(tiny_bert), torch.device("meta"), torch.float32)
    assert packing.routed(loaded.model)
    monkeypatch.setattr(packing, "varlen_kernel", lambda: lambda query, *args, **kwargs: torch.empty_like(query))
    shipped = []

    def to_host(self, tensor):
        assert tensor.device.type == "meta"
        shipped.append(tuple(tensor.shape))
        return PendingCopy(None, None, None, np.zeros(tensor.shape, dtype=str(tensor.dtype).removeprefix("torch.")))

    monkeypatch.setattr(Transfers, "to_host", to_host)
    runtime = (TorchPacked if layout == "packed" else TorchPadded)(loaded)
    options = EncodingOptions(12, "chunk" if not pairs else "truncate", 4, "float16", 4, 2048, runtime)
    words = ["the river bank", "money " * 30, "", "a muddy bank of the river was here", "bank", "the money"]
    texts = list(zip(words, words[::-1])) if pairs else words
    out = list(_encoding.iter_statistics(loaded, texts, layers=(0, 1, 3), with_pooler=True, options=options,
                                         dtype="float16"))
    assert sorted(np.concatenate([s.positions for s in out]).tolist()) == list(range(len(texts)))
    assert len(shipped) >= 3 * 2  # several batches (4 rows at most), each values, extras and pooler
