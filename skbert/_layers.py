"""Layer selection: which hidden states to use, and how to combine several.

Hidden states are numbered as ``transformers`` returns them with
``output_hidden_states=True``: index 0 is the embedding layer's output and index
``i`` (1..n_layers) the output of encoder layer ``i``. A user's spec counts the same
way, with negative numbers counting from the top (-1 is the last encoder layer,
``-(n_layers + 1)`` the embedding layer).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

#: Named layer specs and the signed indices they stand for.
LAYER_PRESETS: dict[str, tuple[int, ...] | None] = {
    "last": (-1,),
    "second_to_last": (-2,),
    "last_four": (-4, -3, -2, -1),
    "all": None,  # every hidden state, embedding layer included
}

LAYER_AGGREGATIONS = ("concat", "mean", "sum")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def resolve_layers(spec, n_layers: int) -> tuple[int, ...]:
    """Turn a layer spec into hidden-state indices in ``0..n_layers``.

    Parameters
    ----------
    spec : int, tuple or list of int, or str
        One layer, several layers, or a name from :data:`LAYER_PRESETS`.
    n_layers : int
        The model's number of encoder layers.

    Returns
    -------
    tuple of int
        Non-negative indices into the hidden states, in the order given.

    Raises
    ------
    ValueError
        If a layer is out of range (the message names the model's layer count), the
        spec is empty, repeats a layer, or is not a known name.
    """
    if isinstance(spec, str):
        if spec not in LAYER_PRESETS:
            raise ValueError(f"layers={spec!r} is not a known name; use one of {sorted(LAYER_PRESETS)}.")
        preset = LAYER_PRESETS[spec]
        if preset is None:
            return tuple(range(n_layers + 1))
        if spec == "last_four" and n_layers < 4:
            raise ValueError(f"layers='last_four' needs at least 4 encoder layers; this model has {n_layers}.")
        spec = preset
    items = (spec,) if _is_int(spec) else tuple(spec) if isinstance(spec, (tuple, list)) else None
    if not items:
        raise ValueError(f"layers={spec!r}: expected an int, a non-empty tuple of ints or one of {sorted(LAYER_PRESETS)}.")
    indices = []
    for item in items:
        if not _is_int(item):
            raise ValueError(f"layers={spec!r}: {item!r} is not an int.")
        if not -(n_layers + 1) <= item <= n_layers:
            raise ValueError(
                f"layer {item} is out of range for a model with {n_layers} encoder layers: "
                f"use {-(n_layers + 1)}..{n_layers} (0 is the embedding layer, -1 the last encoder layer)."
            )
        indices.append(int(item) % (n_layers + 1))
    if len(set(indices)) != len(indices):
        raise ValueError(f"layers={spec!r} names a layer more than once.")
    return tuple(indices)


def aggregate_layers(per_layer: np.ndarray, how: str) -> np.ndarray:
    """Combine vectors taken from several layers.

    Parameters
    ----------
    per_layer : ndarray of shape (n, n_selected, d)
        One vector per row and selected layer, in the selected order.
    how : {"concat", "mean", "sum"}
        Concatenate along features (layer by layer), or average or add them.

    Returns
    -------
    ndarray of shape (n, n_selected * d) for "concat", else (n, d)
    """
    if how == "concat":
        return per_layer.reshape(per_layer.shape[0], -1)
    if how == "mean":
        return per_layer.mean(axis=1, dtype=np.float32)
    if how == "sum":
        return per_layer.sum(axis=1, dtype=np.float32)
    raise ValueError(f"layer_aggregation={how!r} is not one of {LAYER_AGGREGATIONS}.")


def describe_layers(indices: tuple[int, ...], how: str) -> list[str]:
    """Name the feature blocks that :func:`aggregate_layers` produces.

    Parameters
    ----------
    indices : tuple of int
        Resolved hidden-state indices.
    how : {"concat", "mean", "sum"}

    Returns
    -------
    list of str
        One label per block: ``"layer6"`` for each layer when concatenating, else a
        single ``"layers3+4+5+6_mean"``-style label.
    """
    if how == "concat" or len(indices) == 1:
        return [f"layer{i}" for i in indices]
    return ["layers" + "+".join(str(i) for i in indices) + f"_{how}"]
