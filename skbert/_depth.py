"""Cutting a model after an encoder layer: hidden states ``0..depth`` at ``depth / n_layers`` of the cost.

A cut model is a view that shares every weight with the whole model (the modules on
the way to the layer list are shallow copies, the list a shorter one); the whole model
is never changed, so calls at other depths and in other threads are unaffected. A view
is used only where a probe shows it reads the whole model's numbers
(:func:`cut_model`). The loaded model keeps its views
(:meth:`~skbert._models.LoadedModel.view`).
"""

from __future__ import annotations

import copy

import torch

#: Families whose model may be cut after the highest layer a call reads (hidden state k is layer k's
#: output as it is): not ALBERT (one shared layer) nor ModernBERT (a final norm after the last layer).
PARTIAL_DEPTH_FAMILIES = frozenset({"bert", "distilbert", "electra", "deberta-v2", "roberta", "xlm-roberta",
                                    "camembert"})


def stop_layer(model_type: str, n_layers: int, depth: int) -> int:
    """The layer the encoder stops at for a call reading hidden states up to ``depth``: ``depth`` itself (at
    least 1: transformers records no hidden state without a layer) where the family can be cut, else the last."""
    if depth >= n_layers or model_type not in PARTIAL_DEPTH_FAMILIES:
        return n_layers
    return max(1, depth)


def cut_model(model: torch.nn.Module, n_layers: int, depth: int) -> torch.nn.Module:
    """``model`` cut after layer ``depth`` (< ``n_layers``), or the whole model where a cut view would not
    read its numbers (no single layer list, or a probe input that comes out otherwise)."""
    name = _layer_list(model, n_layers)
    return model if name is None else _checked_view(model, n_layers, name, depth)


def _layer_list(model: torch.nn.Module, n_layers: int) -> str | None:
    """The dotted name of the model's list of encoder layers (the one ModuleList of that length)."""
    found = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers]
    return found[0] if len(found) == 1 else None


def _checked_view(model: torch.nn.Module, n_layers: int, name: str, depth: int) -> torch.nn.Module:
    """The view cut at ``depth`` if, on a probe input, it reads the whole model's first hidden states and
    leaves the whole model's unchanged; else the whole model."""
    before = _probe(model)  # the model's own first forward, before any view exists
    view = _view(model, name, depth)
    shallow, after = _probe(view), _probe(model)
    if (len(after) == len(before) == n_layers + 1 and len(shallow) == depth + 1
            and all(_same(a, b) for a, b in zip(before, after)) and all(_same(a, b) for a, b in zip(before, shallow))):
        return view
    return model  # the view would change what the model reads: never cut this one


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3)


def _probe(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The hidden states of a two-token input (ids 0 and 1)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model(input_ids=torch.tensor([[0, 1]], device=device), output_hidden_states=True, return_dict=True)
    return tuple(output.hidden_states)


def _view(model: torch.nn.Module, name: str, depth: int) -> torch.nn.Module:
    """A shallow copy of ``model`` whose layer list ``name`` holds its first ``depth`` layers.

    transformers (5.x) records hidden states through forward hooks it installs on the
    layer modules at a model's first forward, and marks the model as hooked; a view
    copied after that forward shares both the hooked layers and the mark, so it
    records through the same hooks. One copied before would install a second set on
    the shared layers, and the whole model would record each of those layers twice:
    the caller runs the model once first (:func:`_probe`).
    """
    view = copy.copy(model)
    view._modules = dict(view._modules)
    parent, path = view, name.split(".")
    for part in path[:-1]:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[path[-1]] = torch.nn.ModuleList(list(parent._modules[path[-1]])[:depth])
    return view
