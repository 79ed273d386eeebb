"""Resolving where the encoder runs and in which floating-point precision."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from numbers import Integral

import torch

from ._warnings import warn_user

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@contextmanager
def torch_threads(threads: int | None):
    """Give torch ``threads`` threads in the calling thread while the block runs (None: leave it), then what it
    had before.

    Dask starts worker processes with ``OMP_NUM_THREADS=1`` and runs tasks in their
    own thread, where this is the setting that reaches torch; under Dask's local
    schedulers the task runs in the caller's process, whose setting is given back.
    """
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_threads(threads) -> None:
    """``threads`` is None or a positive int (a ValueError otherwise)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1):
        raise ValueError(f"threads={threads!r}: a positive int, or None to leave torch's setting as it is.")


_FORKED = False


def _note_fork() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_note_fork)


def one_thread_after_fork() -> None:
    """In a process forked from another, run torch on one thread (once, with a warning).

    torch's CPU builds run their threads on OpenMP, whose GNU implementation cannot
    start its threads again in a forked child once the parent has used them: the
    child's first parallel torch operation would wait for ever (a ``multiprocessing``
    pool with the "fork" start method, Linux's default before Python 3.14, or joblib's
    "multiprocessing" backend). One thread is safe, and with a process per core it is
    what a pool of processes wants anyway. Called where skbert loads or runs a model.
    """
    global _FORKED
    if not _FORKED:
        return
    _FORKED = False
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        warn_user("skbert is running in a process forked from another, where torch's CPU threads cannot be "
                  "started again: torch runs on one thread in this process. For parallel work start processes "
                  "with 'spawn' or 'forkserver', or use joblib's default backend or skbert.dask.")


def dask_worker_rank() -> int | None:
    """The number of the Dask worker running this code, or None outside a numbered worker.

    ``LocalCluster`` names its workers 0, 1, ...; ``dask worker --name N`` does the
    same on other machines. Dask is never imported here: only a process where it is
    already loaded can be a worker.
    """
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        name = distributed.get_worker().name
    except ValueError:  # not inside a worker's task
        return None
    try:
        return int(name)
    except (TypeError, ValueError):
        return None


def resolve_device(device: str | torch.device, precision: str = "auto") -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available, else MPS, else CPU; on a Dask worker that
        sees several GPUs, GPU ``rank % n_gpus`` for worker number ``rank``, so one
        worker per GPU spreads over them; in a process forked from one that had
        already used CUDA, the CPU, with one warning), any string that
        :class:`torch.device` accepts, such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``,
        or a :class:`torch.device`.
    precision : str, default="auto"
        ``"int8"`` runs on the CPU only (dynamic quantisation), so with it
        ``"auto"`` means the CPU whatever accelerator there is.

    Returns
    -------
    torch.device
        The device to run the encoder on; a CUDA device always with its number
        (``"cuda"`` is the current device), so ``"cuda"`` and ``"cuda:0"`` are one device.

    Raises
    ------
    ValueError
        If the string is not a device, or names a device this machine lacks.
        Also for a CUDA device asked for in a process forked after CUDA was
        initialised, where it cannot start (the message says what to do instead).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if precision == "int8":
            return torch.device("cpu")
        if not _cuda_lost_to_fork(warn=True) and torch.cuda.is_available():  # the fork first: it touches no CUDA
            rank = dask_worker_rank() if torch.cuda.device_count() > 1 else None
            return torch.device("cuda", _current_cuda_index() if rank is None else rank % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if resolved.type == "cuda":
        if _cuda_lost_to_fork(warn=False):
            raise ValueError(
                f"device={device!r} was asked for in a process forked from one that had already used CUDA, where "
                "CUDA cannot start again. Start worker processes with 'spawn' or 'forkserver' "
                "(multiprocessing.get_context('spawn')), use joblib's default backend ('loky') or skbert.dask, "
                "or give the workers device='cpu'."
            )
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for, but CUDA is not available here; use 'auto' or 'cpu'.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
        if resolved.index is None:  # the current device now, by its number: later set_device calls do not move it
            resolved = torch.device("cuda", _current_cuda_index())
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r} was asked for, but MPS is not available here; use 'auto' or 'cpu'.")
    return resolved


def _current_cuda_index() -> int:
    """The current CUDA device's number, without starting CUDA to ask (0 until something has started it)."""
    return torch.cuda.current_device() if torch.cuda.is_initialized() else 0


def cuda_lost_to_fork() -> bool:
    """Whether this process was forked from one that had already used CUDA, where CUDA cannot start."""
    return _cuda_lost_to_fork(warn=False)


_FORK_WARNED = False


def _cuda_lost_to_fork(warn: bool) -> bool:
    """Whether this process was forked from one that had already initialised CUDA (CUDA cannot start here).

    With ``warn``, says once that ``device="auto"`` runs on the CPU in such a process.
    """
    check = getattr(torch.cuda, "_is_in_bad_fork", None)
    lost = bool(check is not None and check())
    global _FORK_WARNED
    if lost and warn and not _FORK_WARNED:
        _FORK_WARNED = True
        warn_user("skbert is running in a process forked from one that had already used CUDA, where CUDA cannot "
                  "start again: device='auto' runs on the CPU here. To use the GPU in worker processes, start them "
                  "with 'spawn' or 'forkserver', or use joblib's default backend ('loky') or skbert.dask.")
    return lost


def _cpu_supports(*helpers: str) -> bool:
    cpu = getattr(torch, "cpu", None)
    for name in helpers:
        check = getattr(cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # private torch helpers: absent or failing means no
            continue
    return False


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX).

    Without such instructions torch emulates bfloat16 on the CPU, slower than
    float32; with them a bfloat16 matrix product runs about twice as fast as a
    float32 one (measured in ``benchmarks/results``).

    Returns
    -------
    bool
    """
    return _cpu_supports("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def _warn_if_emulated(dtype: torch.dtype) -> None:
    native = {
        torch.bfloat16: cpu_has_native_bf16,
        torch.float16: lambda: _cpu_supports("_is_amx_fp16_supported"),
    }
    if dtype in native and not native[dtype]():
        name = str(dtype).removeprefix("torch.")
        warn_user(
            f"precision={name!r} on this CPU is emulated in software and much slower than float32 "
            "(it lacks native instructions for it); precision='auto' picks the fast choice here."
        )


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Pick the compute dtype for a precision name on a device.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16", "float16", "int8"}
        ``"auto"`` means bfloat16 where the hardware computes it natively: a GPU
        that supports it (float16 on one that does not) or a CPU with AVX512-BF16 or
        AMX (:func:`cpu_has_native_bf16`); float32 on other CPUs. ``"int8"``
        computes in float32 around int8 matrix products (CPU only; see
        :func:`~skbert._models.quantize_linear_layers`).
    device : torch.device
        The device the encoder runs on.

    Returns
    -------
    torch.dtype
        The dtype of the model's weights and activations.
    """
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError(f"precision='int8' runs on the CPU only; device is {device}. Use 'auto' on a GPU.")
        return torch.float32
    if precision != "auto":
        try:
            dtype = _DTYPES[precision]
        except KeyError:
            raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.") from None
        if device.type == "cpu":
            _warn_if_emulated(dtype)
        elif device.type == "cuda" and dtype == torch.bfloat16 and not cuda_has_native_bf16(device):
            warn_user(
                f"precision='bfloat16' on {device} (compute capability {cuda_capability(device)}) is emulated and "
                "much slower than float16; precision='auto' picks float16 there."
            )
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The compute capability of a CUDA device (an unindexed one: the current device)."""
    index = torch.cuda.current_device() if device.index is None else device.index
    return tuple(torch.cuda.get_device_capability(index))


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether this CUDA device computes bfloat16 in hardware (compute capability 8.0 or higher).

    ``torch.cuda.is_bf16_supported()`` is not the question: it is also true where
    bfloat16 is emulated (T4, V100), and it asks about the current device rather
    than the one chosen.
    """
    return cuda_capability(device) >= (8, 0)


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per forward pass when none is asked for.

    Small batches are faster on a CPU (they stay in cache); a GPU needs large ones
    to fill its matrix units.

    Parameters
    ----------
    device : torch.device

    Returns
    -------
    int
    """
    return 2048 if device.type == "cpu" else 65536
