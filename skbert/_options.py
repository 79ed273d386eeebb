"""What an encoding pass runs with, and the one definition of what changes its numbers.

:class:`EncodingOptions` is made once per call from the fitted estimator and the
loaded model (:func:`encoding_options`) and handed, unchanged, to everything that
encodes: the statistics source, the token-level path, the streaming parts. Each of
its fields says whether it enters the cache key (``metadata["keyed"]``), and
:func:`numbers_fingerprint` is the only digest of "what changes the numbers": the
cache's keys and a dataset part's record are both made from it, so the two can
never disagree.

What changes the numbers: the weights and tokenizer (their digest, not their path),
the device type and the compute dtype as resolved on this machine (not the
``precision`` parameter as written: ``"auto"`` resolves differently on different
CPUs), the stored dtype, the window (``max_length``), the long-text strategy, the
chunk ``stride`` (under ``long_text="chunk"`` only; elsewhere it changes nothing),
and the torch, transformers and tokenizers versions (a pair's truncation is the
tokenizer's own, whose rule has changed between versions). Batching (``batch_size``,
``token_budget``, packed or padded attention) does not: it changes results only
within float tolerance, and entries are shared across it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

import torch

from ._device import default_token_budget
from ._entries import FORMAT_VERSION
from ._models import LoadedModel
from ._runtimes import TorchPadded, choose_runtime


def _keyed(when=True, value=None):
    """A field's metadata: whether it enters the key (a bool, or a function of the options), and, where the
    field holds an object, the value of it that does."""
    return field(metadata={"keyed": when, "value": value})


@dataclass(frozen=True)
class EncodingOptions:
    """How texts are encoded: the window, long texts, batching, the runtime and how entries are stored.

    Attributes
    ----------
    max_length : int
        Tokens per window at most, special tokens included. Keyed.
    long_text : {"truncate", "head_tail", "chunk"}
        What happens to a longer text. Keyed.
    stride : int
        Tokens consecutive windows share; keyed under ``long_text="chunk"`` only,
        the one strategy it affects.
    stored : {"float16", "float32"}
        The dtype entries (and the statistics handed to pooling) are kept in:
        float32 with ``precision="float32"``, else float16. Keyed.
    batch_size : int or None
        Windows per forward pass at most. Not keyed.
    token_budget : int
        Padded tokens per forward pass at most. Not keyed.
    runtime : TorchPadded, TorchPacked, OpenVINO or OpenVINOInt8
        What runs the model (:mod:`skbert._runtimes`). Its key is keyed ("torch",
        "openvino", or "openvino-int8:" and the calibration's digest: OpenVINO's
        numbers are its own, and an int8 network's depend on its calibration texts);
        packed or padded is not.
    """

    max_length: int = _keyed()
    long_text: str = _keyed()
    stride: int = _keyed(lambda options: options.long_text == "chunk")
    stored: str = _keyed()
    batch_size: int | None = _keyed(False)
    token_budget: int = _keyed(False)
    runtime: TorchPadded = _keyed(value=lambda runtime: runtime.key)

    def keyed(self) -> dict:
        """The values that change the numbers, by field name (those whose ``keyed`` holds for these options)."""
        chosen = {}
        for item in fields(self):
            when, value = item.metadata["keyed"], item.metadata["value"]
            if when(self) if callable(when) else when:
                chosen[item.name] = getattr(self, item.name) if value is None else value(getattr(self, item.name))
        return chosen


def stored_dtype(precision: str) -> str:
    """How entries are kept for a ``precision`` parameter: float32 when asked for, else float16."""
    return "float32" if precision == "float32" else "float16"


def encoding_options(loaded: LoadedModel, *, max_length: int, long_text: str, stride: int, precision: str,
                     batch_size, token_budget, attention: str, int8=None) -> EncodingOptions:
    """The options of a fitted estimator on the machine its model was loaded on.

    Parameters
    ----------
    loaded : LoadedModel
        The model, on its device and in its dtype.
    max_length, stride : int
        The fitted ``max_length_`` and ``stride_``.
    long_text, precision, attention : str
        The estimator's parameters.
    batch_size, token_budget : int or None
        The estimator's parameters (None: no row limit; the device's default budget).
    int8 : Int8Check or None, default=None
        ``fit``'s int8 check (``int8_check_``), for ``precision="int8"``.

    Returns
    -------
    EncodingOptions
        With the runtime :func:`~skbert._runtimes.choose_runtime` gives.
    """
    return EncodingOptions(
        max_length=int(max_length), long_text=long_text, stride=int(stride), stored=stored_dtype(precision),
        batch_size=batch_size, token_budget=int(token_budget or default_token_budget(loaded.device)),
        runtime=choose_runtime(loaded, precision, attention, int8),
    )


def compute_dtype(loaded: LoadedModel) -> str:
    """What the model computes in, as resolved when it was loaded (``"int8"`` for quantised Linear layers)."""
    return "int8" if loaded.quantized else str(loaded.dtype).removeprefix("torch.")


def numbers_fingerprint(loaded: LoadedModel, options: EncodingOptions) -> bytes:
    """The digest of everything that changes what the encoder produces for a text.

    Cache keys are made under it (:func:`~skbert._entries.text_keys`), and a streamed
    dataset's parts record it, so a part or an entry made otherwise is never reused.

    Parameters
    ----------
    loaded : LoadedModel
    options : EncodingOptions

    Returns
    -------
    bytes
        32 bytes.
    """
    import tokenizers  # the modules in sys.modules, whatever imported them first
    import transformers

    described = {
        "format": FORMAT_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,  # its truncation rule has changed between versions
        "device": loaded.device.type,
        "dtype": compute_dtype(loaded),
        **options.keyed(),
    }
    digest = hashlib.blake2b(loaded.fingerprint(), digest_size=32)
    digest.update(repr(sorted(described.items())).encode())
    return digest.digest()
