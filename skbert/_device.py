"""Resolving where the encoder runs and in which floating-point precision."""

from __future__ import annotations

import warnings

import torch

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device : str
        ``"auto"`` (CUDA when available, else MPS, else CPU) or any string that
        :class:`torch.device` accepts, such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``.

    Returns
    -------
    torch.device
        The device to run the encoder on.

    Raises
    ------
    ValueError
        If the string is not a device, or names a device this machine lacks.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for, but CUDA is not available here; use 'auto' or 'cpu'.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r} was asked for, but MPS is not available here; use 'auto' or 'cpu'.")
    return resolved


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
        warnings.warn(
            f"precision={name!r} on this CPU is emulated in software and much slower than float32 "
            "(it lacks native instructions for it); precision='auto' picks the fast choice here.",
            UserWarning,
            stacklevel=4,
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
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


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
