"""Moving batches between the host and the device, without making either wait on the other.

On a CUDA device:

- host to device: each batch's tensors are copied into pinned (page-locked) staging
  buffers that are reused from batch to batch (pinning memory for every batch is a
  ``cudaHostAlloc`` each time), two sets used in turn, each refilled only once the
  copy that last read it has run (an event); a buffer grows by doubling, never past
  :data:`PINNED_BYTES_MAX`, and a tensor larger than that is copied through pageable
  memory instead;
- device to host: a batch's reduced output is copied on a side stream into a reused
  pinned buffer, without waiting, and the host asks for it (:meth:`PendingCopy.result`)
  only after the next batch's work has been queued (:func:`one_batch_behind`), so the
  copy runs while the device computes the next batch, and the host's work on one batch
  (pooling, the cache) overlaps the device's on the next. The host's copy out of the
  pinned buffer (into new memory: a cached batch's statistics are kept as they are
  copied) runs over a few threads (:func:`host_copy`): writing memory for the first
  time costs page faults as well as bandwidth, and one thread does neither at the
  rate a GPU hands results back.

Elsewhere both are plain copies and results are ready at once; the same code runs, so
CPU tests exercise it, and a deferred stand-in for the device (``DeferredOps`` in the
tests) checks the ordering that a GPU would otherwise get wrong silently: a copy is
read only after its event, and a buffer is refilled only after its result was read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import numpy as np
import torch


#: The largest pinned staging buffer kept (bytes): a larger tensor is copied through pageable memory, at once.
#: Pinned memory is taken from the host's RAM and never swapped, so it is bounded whatever a batch holds.
PINNED_BYTES_MAX = 512 * 2**20


#: The most threads that copy a large result out of its pinned buffer (:func:`host_copy`): a copy is
#: memory-bound, and more threads than this add little.
MAX_COPY_THREADS = 4

#: Threads :func:`host_copy` uses by default: a quarter of the cores, at most :data:`MAX_COPY_THREADS` (so one,
#: a plain copy, on a machine of fewer than 8 cores).
COPY_THREADS = max(1, min(MAX_COPY_THREADS, (os.cpu_count() or 1) // 4))

#: The smallest copy split over threads (bytes): below it, handing the parts to threads costs more than it saves.
SPLIT_COPY_BYTES = 8 * 2**20

_COPY_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)
_COPY_POOL_LOCK = threading.Lock()


def _copy_pool() -> ThreadPoolExecutor:
    """This process's copy threads, started as needed (a forked child makes its own: its parent's threads did not
    come along)."""
    global _COPY_POOL
    with _COPY_POOL_LOCK:
        if _COPY_POOL is None or _COPY_POOL[0] != os.getpid():
            pool = ThreadPoolExecutor(max_workers=MAX_COPY_THREADS - 1, thread_name_prefix="skbert-copy")
            _COPY_POOL = (os.getpid(), pool)
        return _COPY_POOL[1]


def host_copy(source: np.ndarray, threads: int | None = None) -> np.ndarray:
    """A copy of ``source`` in new memory, made in contiguous parts by ``threads`` threads (this one and pool
    threads; default :data:`COPY_THREADS`, at most :data:`MAX_COPY_THREADS`) where it is at least
    :data:`SPLIT_COPY_BYTES` and contiguous; a plain copy otherwise.

    numpy releases the GIL while it copies, so the parts run at once, and each
    thread takes the page faults of the new memory it writes.
    """
    threads = min(MAX_COPY_THREADS, COPY_THREADS if threads is None else threads)
    if threads <= 1 or source.nbytes < SPLIT_COPY_BYTES or not source.flags.c_contiguous:
        return source.copy()
    target = np.empty_like(source)
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    bounds = np.linspace(0, flat_source.size, threads + 1).astype(np.int64)
    parts = [(flat_target[start:end], flat_source[start:end]) for start, end in zip(bounds[:-1], bounds[1:])]
    pool = _copy_pool()
    others = [pool.submit(np.copyto, *part) for part in parts[1:]]
    np.copyto(*parts[0])  # this thread copies the first part
    for other in others:
        other.result()
    return target


def _grown(numel: int, old: int, dtype: torch.dtype) -> int:
    """Elements of a staging buffer replacing one of ``old`` for a tensor of ``numel``: twice the old one (fewer
    reallocations as batches grow), never past :data:`PINNED_BYTES_MAX` unless the tensor itself needs it."""
    ceiling = PINNED_BYTES_MAX // torch.empty((), dtype=dtype).element_size()
    return max(numel, min(2 * old, ceiling))


def _too_large(tensor: torch.Tensor) -> bool:
    return tensor.numel() * tensor.element_size() > PINNED_BYTES_MAX


class CudaOps:
    """The device operations :class:`Transfers` needs, on one CUDA device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.copy_stream = torch.cuda.Stream(device)

    def pinned(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(numel, dtype=dtype, pin_memory=True)

    def to_device(self, staged: torch.Tensor) -> torch.Tensor:
        return staged.to(self.device, non_blocking=True)

    def record(self):
        """An event after everything queued so far on the compute stream."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def copy_to_host(self, source: torch.Tensor, target: torch.Tensor):
        """Queue ``target.copy_(source)`` on the copy stream after the compute stream's work; returns its event."""
        compute = torch.cuda.current_stream(self.device)
        self.copy_stream.wait_stream(compute)
        with torch.cuda.stream(self.copy_stream):
            target.copy_(source, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        source.record_stream(self.copy_stream)  # the allocator must not hand its memory out before the copy ran
        return event


class PendingCopy:
    """A device-to-host copy that may still be running; :meth:`result` waits for it."""

    def __init__(self, view: torch.Tensor | None, event, slot: list | None, ready: np.ndarray | None = None):
        self._view, self._event, self._slot, self._ready = view, event, slot, ready

    def result(self) -> np.ndarray:
        """The copied array (waits for the copy; the staging buffer is free again afterwards)."""
        if self._ready is None:
            self._event.synchronize()
            self._ready = host_copy(self._view.numpy())  # out of the pinned buffer, which the next copies reuse
            self._slot[1] = False
            self._view = self._slot = None
        return self._ready


class Transfers:
    """Host-to-device and device-to-host copies for one encoding call.

    Parameters
    ----------
    device : torch.device
    ops : object, optional
        The device operations (:class:`CudaOps` on CUDA); None for a plain device,
        where copies are synchronous.
    """

    def __init__(self, device: torch.device, ops=None):
        self.device = device
        self.ops = ops
        self._staging: list[dict[str, torch.Tensor]] = [{}, {}]
        self._staged_events: list = [None, None]
        self._turn = 0
        self._slots: list[list] = []  # [pinned buffer, in use]
        self.pinned_allocations = 0

    @classmethod
    def for_device(cls, device: torch.device) -> Transfers:
        """Staged, overlapped copies on CUDA; plain ones elsewhere."""
        return cls(device, CudaOps(device) if device.type == "cuda" else None)

    def _pinned(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        self.pinned_allocations += 1
        return self.ops.pinned(numel, dtype)

    def to_device(self, batch):
        """A batch (a dataclass of tensors, such as :class:`~skbert._batching.PaddedBatch`) with its tensors on the
        device; 0-d tensors (a length) and other fields stay on the host."""
        tensors = {item.name: getattr(batch, item.name) for item in fields(batch)
                   if isinstance(getattr(batch, item.name), torch.Tensor) and getattr(batch, item.name).dim() > 0}
        return replace(batch, **self._moved(tensors))

    def _moved(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.ops is None:
            return {name: tensor.to(self.device) for name, tensor in tensors.items()}
        turn, self._turn = self._turn, 1 - self._turn
        if self._staged_events[turn] is not None:
            self._staged_events[turn].synchronize()  # the copies that last read these buffers have run
        staging, moved = self._staging[turn], {}
        for name, tensor in tensors.items():
            if _too_large(tensor):
                moved[name] = tensor.to(self.device)  # through pageable memory: no pinned buffer that large
                continue
            buffer = staging.get(name)
            if buffer is None or buffer.dtype != tensor.dtype or buffer.numel() < tensor.numel():
                size = _grown(tensor.numel(), 0 if buffer is None else buffer.numel(), tensor.dtype)
                buffer = staging[name] = self._pinned(size, tensor.dtype)
            staged = buffer[: tensor.numel()].view(tensor.shape)
            staged.copy_(tensor)
            moved[name] = self.ops.to_device(staged)
        self._staged_events[turn] = self.ops.record()
        return moved

    def to_host(self, tensor: torch.Tensor) -> PendingCopy:
        """Start copying a device tensor to the host."""
        if self.ops is None or _too_large(tensor):  # the latter waits for the device: rare, and bounded memory
            return PendingCopy(None, None, None, tensor.detach().cpu().numpy())
        slot = min((s for s in self._slots if not s[1] and s[0].dtype == tensor.dtype
                    and s[0].numel() >= tensor.numel()), key=lambda s: s[0].numel(), default=None)
        if slot is None:
            spare = next((s for s in self._slots if not s[1]), None)
            size = _grown(tensor.numel(), 0 if spare is None else spare[0].numel(), tensor.dtype)
            if spare is not None:
                self._slots.remove(spare)  # too small or another dtype: replaced by a larger one
            slot = [self._pinned(size, tensor.dtype), False]
            self._slots.append(slot)
        slot[1] = True
        view = slot[0][: tensor.numel()].view(tensor.shape)
        return PendingCopy(view, self.ops.copy_to_host(tensor, view), slot)


class PendingCopies:
    """Several device-to-host copies of one batch (:meth:`Transfers.to_host` of each); :meth:`result` waits for all."""

    def __init__(self, copies: tuple[PendingCopy, ...]):
        self._copies = copies

    def result(self) -> tuple[np.ndarray, ...]:
        """The copied arrays, in order."""
        return tuple(copy.result() for copy in self._copies)


def one_batch_behind(pending: Iterable[tuple[object, PendingCopy]]) -> Iterator[tuple[object, np.ndarray]]:
    """Hand out each batch's copied result once the next batch has been started.

    Parameters
    ----------
    pending : iterable of (item, PendingCopy)
        Pulling the next pair queues the next batch's work on the device.

    Yields
    ------
    (item, ndarray)
        In order; a result is waited for only after the next batch was queued (or
        at the end).
    """
    previous = None
    for item, copy in pending:
        if previous is not None:
            yield previous[0], previous[1].result()
        previous = (item, copy)
    if previous is not None:
        yield previous[0], previous[1].result()
