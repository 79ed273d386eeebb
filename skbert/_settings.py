"""Checking an estimator's parameters against the loaded model, and what fitting records."""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import InvalidParameterError, Interval, StrOptions

from ._batching import LONG_TEXT_STRATEGIES
from ._device import PRECISIONS
from ._layers import LAYER_AGGREGATIONS, LAYER_PRESETS, resolve_layers
from ._layout import check_layout
from ._models import LoadedModel
from ._packing import ATTENTION_CHOICES
from ._pooling import POOLING_MODES, expand_segments

#: ``BertEmbedder._parameter_constraints``: the type and range of every parameter.
PARAMETER_CONSTRAINTS: dict = {
    "model_name": [str, os.PathLike],
    "pooling": [StrOptions(set(POOLING_MODES)), tuple, list],
    "layers": [Integral, StrOptions(set(LAYER_PRESETS)), tuple, list],
    "layer_aggregation": [StrOptions(set(LAYER_AGGREGATIONS))],
    "include_special_tokens": ["boolean"],
    "normalize": ["boolean"],
    "pairs": ["boolean"],
    "segments": [str, tuple, list],
    "max_length": [Interval(Integral, 2, None, closed="left"), None],
    "long_text": [StrOptions(set(LONG_TEXT_STRATEGIES))],
    "stride": [Interval(Integral, 0, None, closed="left"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left"), None],
    "token_budget": [Interval(Integral, 1, None, closed="left"), None],
    "attention": [StrOptions(set(ATTENTION_CHOICES))],
    "device": [str, torch.device],
    "precision": [StrOptions(set(PRECISIONS))],
    "revision": [str, None],
    "show_progress": ["boolean"],
    "cache": [str, os.PathLike, None],
    "cache_memory_bytes": [Interval(Integral, 0, None, closed="left")],
    "cache_disk_bytes": [Interval(Integral, 0, None, closed="left"), None],
}


#: The parameters that take integers, for which True and False are not numbers (Python counts a bool as an int,
#: and so do the constraints: ``stride=True`` would be a stride of 1).
INTEGER_PARAMETERS = tuple(
    name for name, constraints in PARAMETER_CONSTRAINTS.items()
    if any(c is Integral or (isinstance(c, Interval) and c.type is Integral) for c in constraints)
)


def check_no_booleans(params: dict) -> None:
    """Refuse True or False for a parameter that takes an integer (``fit``, after scikit-learn's own checks).

    Raises
    ------
    InvalidParameterError
        A ``ValueError`` and a ``TypeError``, as scikit-learn's parameter errors are.
    """
    for name in INTEGER_PARAMETERS:
        if isinstance(params[name], (bool, np.bool_)):
            raise InvalidParameterError(f"The {name!r} parameter of BertEmbedder must be an int, not a bool; got "
                                        f"{params[name]!r}.")


def fitted_settings(params: dict, modes: tuple[str, ...], loaded: LoadedModel) -> dict:
    """Resolve the parameters that depend on the model into the fitted attributes.

    Parameters
    ----------
    params : dict
        The estimator's parameters (``get_params()``).
    modes : tuple of str
        The pooling modes, expanded (:func:`~skbert._pooling.expand_pooling`).
    loaded : LoadedModel

    Returns
    -------
    dict
        Attribute name -> value: ``n_layers_``, ``hidden_size_``, ``layer_indices_``,
        ``pooling_modes_``, ``segments_``, ``max_length_``, ``stride_``, ``device_``,
        ``precision_``, ``model_location_``, ``special_layout_``.

    Raises
    ------
    ValueError
        For a layer the model lacks, ``"pooler"`` on another layer or on a model
        without pooler weights, ``max_length`` beyond the model's positions or with no
        room for text beside the special tokens, or a
        chunk stride that leaves no new tokens per window, a ``segments`` choice
        that does not fit the input or the pooling, or a long-text strategy other
        than truncation for sentence pairs.
    """
    model_name = params["model_name"]
    segments = expand_segments(params["segments"], params["pairs"], modes)
    if params["pairs"] and params["long_text"] != "truncate":
        raise ValueError(
            f"long_text={params['long_text']!r} works on single texts; sentence pairs are truncated as Hugging "
            "Face's tokenizer(a, b, truncation='longest_first') does (tokens come off the longer side). "
            "Use long_text='truncate'."
        )
    indices = resolve_layers(params["layers"], loaded.n_layers)
    if "pooler" in modes:
        if indices != (loaded.n_layers,):
            raise ValueError(
                f"pooling='pooler' works on the last layer only; layers={params['layers']!r} selects "
                f"hidden states {list(indices)}. Use layers=-1."
            )
        if not loaded.has_pooler:
            raise ValueError(
                f"pooling='pooler' needs pooler weights, and model {model_name!r} has none; "
                "use 'cls' for the raw [CLS] vector."
            )
    check_layout(loaded.layout, params["pairs"], model_name)
    if params["max_length"] is not None and loaded.window_limit is not None and \
            params["max_length"] > loaded.window_limit:
        raise ValueError(
            f"max_length={params['max_length']} exceeds the {loaded.window_limit} tokens model "
            f"{model_name!r} accepts."
        )
    max_length = loaded.max_positions if params["max_length"] is None else int(params["max_length"])
    specials = loaded.tokenizer.num_special_tokens_to_add(pair=bool(params["pairs"]))
    if max_length <= specials:
        raise ValueError(
            f"max_length={max_length} leaves no room for text: model {model_name!r} adds {specials} special tokens "
            f"to every {'pair' if params['pairs'] else 'text'}. Use at least max_length={specials + 1}."
        )
    window = max_length - loaded.tokenizer.num_special_tokens_to_add(pair=False)
    stride = window // 4 if params["stride"] is None else int(params["stride"])
    if params["long_text"] == "chunk" and stride >= window:
        raise ValueError(
            f"stride={stride} must be below the {window} text tokens a window of max_length={max_length} holds."
        )
    return {
        "n_layers_": loaded.n_layers,
        "hidden_size_": loaded.hidden_size,
        "layer_indices_": indices,
        "pooling_modes_": modes,
        "segments_": segments,
        "max_length_": max_length,
        "stride_": stride,
        "device_": str(loaded.device),
        "precision_": "int8" if loaded.quantized else str(loaded.dtype).removeprefix("torch."),
        "model_location_": loaded.source.location,
        "special_layout_": loaded.layout,
    }


def unused_parameters(params: dict, modes: tuple[str, ...]) -> list[str]:
    """What the parameters set that has no effect on this estimator's output, one sentence each.

    As scikit-learn's vectorizers warn about parameters their analyzer ignores: a
    setting that changes nothing is most likely a mistake (and it must not split the
    cache: :func:`~skbert._options.numbers_fingerprint` leaves such values out).

    Parameters
    ----------
    params : dict
        The estimator's parameters (``get_params()``).
    modes : tuple of str
        The pooling modes, expanded.
    """
    unused = []
    if params["stride"] is not None and params["long_text"] != "chunk":
        unused.append(f"stride={params['stride']!r} has no effect with long_text={params['long_text']!r}; "
                      "it sets the overlap of long_text='chunk' windows.")
    if params["include_special_tokens"] and not {"mean", "max"} & set(modes):
        unused.append(f"include_special_tokens=True has no effect with pooling={params['pooling']!r}; "
                      "it applies to 'mean' and 'max'.")
    if params["cache"] is None and params["cache_disk_bytes"] is not None:
        unused.append("cache_disk_bytes has no effect with cache=None.")
    return unused
