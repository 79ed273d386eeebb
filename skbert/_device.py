"""Resolving where the encoder runs and in which floating-point precision."""

from __future__ import annotations

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


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Pick the compute dtype for a precision name on a device.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16", "float16", "int8"}
        ``"auto"`` means bfloat16 on a GPU that supports it (float16 on one that
        does not) and float32 on the CPU. ``"int8"`` computes in float32 around
        int8 matrix products (CPU only; see :func:`~skbert._models.quantize_linear_layers`).
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
            return _DTYPES[precision]
        except KeyError:
            raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


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
