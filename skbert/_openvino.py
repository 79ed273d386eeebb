"""The OpenVINO runtime for CPUs: the same model, converted once per process, compiled for this CPU.

Optional (``pip install skbert[openvino]``) and imported only when used. Where it is
installed, ``precision="auto"`` on a CPU runs padded batches through it (``SKBERT_RUNTIME=torch``
keeps torch eager): OpenVINO converts the torch module (``openvino.convert_model``, dynamic
batch and length) and compiles it for the CPU it runs on, in bfloat16 where the CPU
multiplies it natively and float32 elsewhere, as ``"auto"`` chooses for torch. Measured
side by side (``benchmarks/peers.py``) it is faster than torch's eager kernels. Every other
precision, packed attention and models it cannot convert run in torch eager, the
reference; the runtime is part of every cache key (:mod:`skbert._options`), so entries
of one are never served to the other.

The converted networks are kept with the loaded model (:class:`~skbert._models.Derived`),
one per layer it stops at: the whole model's always, the :data:`MAX_CUT_NETWORKS` most
recently used cut ones, nothing on disk (conversion and compilation take a few seconds
at ``fit``). A conversion that fails, or a runtime that cannot load, warns once and the
call runs in torch; a network that fails while running warns once, and that batch and
every later one of the model run in torch. Which runtime a call uses is chosen in one
place, :func:`~skbert._runtimes.choose_runtime`.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import time
import warnings

import numpy as np
import torch

from ._warnings import warn_user

#: Cut networks (a model stopped at a shallower depth) kept per model: each holds its own copy of the
#: weights of its layers, so a search over every depth would otherwise keep one per depth.
MAX_CUT_NETWORKS = 2


def available() -> bool:
    """Whether OpenVINO is installed (nothing is imported to find out)."""
    return importlib.util.find_spec("openvino") is not None


def preferred() -> bool:
    """Whether ``precision="auto"`` on a CPU uses OpenVINO: where it is installed, unless
    ``SKBERT_RUNTIME=torch`` asks for torch eager."""
    return os.environ.get("SKBERT_RUNTIME", "openvino") != "torch" and available()


class _Wrapped(torch.nn.Module):
    """The model as a function of plain tensors returning every hidden state (what conversion needs; the
    pooler is applied to them by the caller, as for every runtime)."""

    def __init__(self, model, token_types: bool):
        super().__init__()
        self.model, self.token_types = model, token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        output = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids if self.token_types else None,
                            output_hidden_states=True, return_dict=True)
        return tuple(output.hidden_states)


def to_openvino(model: torch.nn.Module, token_types: bool):
    """The model as an OpenVINO graph (not compiled), in float32, returning every hidden state.

    Parameters
    ----------
    model : torch.nn.Module
        On the CPU; converted from a float32 copy, let go once converted.
    token_types : bool
        Whether it takes token type ids.

    Returns
    -------
    openvino.Model
        Inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``), dynamic in batch and length.
    """
    import openvino

    # a padded example: tracing must take the masked path (an all-ones mask may be dropped as "no padding")
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    example = {"input_ids": torch.ones(2, 8, dtype=torch.int64), "attention_mask": mask}
    inputs = [("input_ids", [-1, -1], openvino.Type.i64), ("attention_mask", [-1, -1], openvino.Type.i64)]
    if token_types:
        example["token_type_ids"] = torch.zeros(2, 8, dtype=torch.int64)
        inputs.append(("token_type_ids", [-1, -1], openvino.Type.i64))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing notices
        float_copy = copy.deepcopy(model).float().eval()
        converted = openvino.convert_model(_Wrapped(float_copy, token_types).eval(), example_input=example,
                                           input=[openvino.PartialShape(shape) for _, shape, _ in inputs])
        del float_copy
    for port, (name, _, _) in zip(converted.inputs, inputs):
        port.get_tensor().set_names({name})
    return converted


def compile_for_cpu(converted, bf16: bool):
    """An OpenVINO graph compiled for this CPU, computing in bfloat16 (where not int8) or float32, on torch's
    thread count."""
    import openvino

    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": str(torch.get_num_threads())}
    return openvino.Core().compile_model(converted, "CPU", config)


def convert(model: torch.nn.Module, token_types: bool, bf16: bool):
    """The model converted (:func:`to_openvino`) and compiled for this CPU (:func:`compile_for_cpu`).

    Parameters
    ----------
    model : torch.nn.Module
        On the CPU (the view cut at the call's depth, or the whole model); converted
        from a float32 copy, which is let go once compiled.
    token_types : bool
        Whether it takes token type ids.
    bf16 : bool
        Compute in bfloat16 (where the CPU has it natively), else float32.

    Raises
    ------
    Exception
        Whatever OpenVINO raises for a model it cannot convert or a CPU it cannot use.
    """
    return compile_for_cpu(to_openvino(model, token_types), bf16)


def forward(network, batch, token_types: bool):
    """Run a compiled model on a padded batch (:class:`~skbert._batching.PaddedBatch`); returns its hidden
    states, a sequence of tensors like a transformers model's."""
    feed = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
    if token_types:
        feed["token_type_ids"] = (np.zeros_like(feed["input_ids"]) if batch.token_type_ids is None
                                  else batch.token_type_ids.numpy())
    request = network.create_infer_request()
    request.infer(feed, share_inputs=False, share_outputs=True)
    return _Outputs(request, len(network.outputs))


def _copied(request, index: int) -> torch.Tensor:
    """Output ``index`` of a finished request, copied out of the request's own buffers."""
    return torch.from_numpy(np.array(request.get_output_tensor(index).data, copy=True))


class _Outputs:
    """A request's outputs as a sequence of tensors, each copied out of the request's own buffers
    the first time it is read (a call pooling one hidden state copies one, not every layer's); the
    request, and so its buffers, lives as long as this does."""

    def __init__(self, request, n: int):
        self._request, self._n, self._copies = request, n, {}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self._n <= index < self._n:
            raise IndexError(index)
        index %= self._n
        copy = self._copies.get(index)
        if copy is None:
            copy = self._copies[index] = _copied(self._request, index)
        return copy

    def __iter__(self):
        return (self[i] for i in range(self._n))


def network(loaded, depth: int | None):
    """The compiled model of a loaded model at a depth (None: all layers), made once and kept with the model,
    or None where it cannot be (a failed conversion warns once; a model that failed while running is never
    run here again)."""
    from ._device import cpu_has_native_bf16

    state = loaded.derived
    stop = loaded.n_layers if depth is None else loaded.stops_at(depth)
    with state.lock:
        if state.broken or stop in state.failed:
            return None
        known = state.networks.get(stop)
        if known is not None:
            state.networks.move_to_end(stop)  # now the most recently used
            return known
        try:
            compiled = convert(loaded.view(stop), loaded.has_token_types, bf16=cpu_has_native_bf16())
        except Exception as error:  # not installed after all, a model it cannot convert, a CPU it cannot use
            state.failed.add(stop)
            where = ("it runs in torch instead" if stop == loaded.n_layers else
                     "a call that stops there runs the whole model's network instead (or torch, where that fails)")
            warn_user(f"skbert could not run this model through OpenVINO ({type(error).__name__}: "
                      f"{str(error)[:200]}); {where}. Results are not affected.")
            return None
        state.networks[stop] = compiled
        cuts = [key for key in state.networks if key != loaded.n_layers]
        for key in cuts[: max(0, len(cuts) - MAX_CUT_NETWORKS)]:  # the whole model's network always stays
            del state.networks[key]
        return compiled


def converts_exactly(config) -> bool:
    """Whether a model's OpenVINO network gives torch's numbers on padded batches: not for attention within local
    windows (ModernBERT's ``local_attention``, a ``sliding_window``). There a padding position whose window holds
    no real token gets NaN from the converted network (a softmax over nothing), and the next global layer spreads
    it into the real tokens of the row (0 x NaN is NaN), so a short text batched with a much longer one came out
    NaN. Such models run on torch, which keeps those positions finite."""
    return not (getattr(config, "local_attention", None) or getattr(config, "sliding_window", None))


def wanted(precision: str, attention: str, device_type: str) -> bool:
    """Whether a call with these settings asks for OpenVINO: ``precision="auto"`` on a CPU with OpenVINO
    preferred (:func:`preferred`), and not packed attention (a torch path). Nothing is converted to tell."""
    return precision == "auto" and attention != "packed" and device_type == "cpu" and preferred()


def prepare(loaded, depth: int | None) -> float:
    """Convert and compile the network a call at ``depth`` runs, if not made yet; the seconds it took (about 0
    when it was made before, or cannot be)."""
    start = time.perf_counter()
    network(loaded, depth)
    return time.perf_counter() - start


def run(loaded, batch, depth: int | None):
    """A padded batch through OpenVINO, cut at ``depth`` where the family allows: its hidden states, or None
    if it cannot run (the caller runs torch)."""
    compiled = network(loaded, depth)
    if compiled is None:
        return None
    try:
        return forward(compiled, batch, loaded.has_token_types)
    except Exception as error:  # e.g. an input shape it cannot run: never a crash mid-run
        _give_up(loaded, error)
        return None


def _give_up(loaded, error: Exception) -> None:
    """Forget every network of ``loaded`` and remember the failure: this batch and every later one run in
    torch eager; warns once."""
    with loaded.derived.lock:
        loaded.derived.networks.clear()
        loaded.derived.broken = True
    warn_user(f"OpenVINO failed while running this model ({type(error).__name__}: {str(error)[:200]}); skbert "
              "runs it in torch eager from this batch on. Results are not affected.")
