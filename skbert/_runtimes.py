"""What runs the model: four runtimes behind one interface, chosen in one place.

A runtime makes a batch of windows (:meth:`TorchPadded.batch`), and runs the model on
it, once it is on the device, up to a depth (:meth:`TorchPadded.hidden_states`),
handing back the hidden states in the batch's *padded* layout ``(n, longest, d)``.
Everything after that, the per-layer statistics and the pooler, is the same code for
every runtime (:mod:`skbert._encoding`), as text-embeddings-inference gives every
backend one batch and one ``embed``:

- :class:`TorchPadded`: torch eager on padded batches (the reference);
- :class:`TorchPacked`: torch eager on packed batches, no padding
  (:mod:`skbert._packing`; FlashAttention's variable-length kernel on CUDA);
- :class:`OpenVINO`: OpenVINO's compiled CPU kernels on padded batches
  (:mod:`skbert._openvino`), falling back to :class:`TorchPadded` for good when a
  network fails while running (saying so: :attr:`OpenVINO.fell_back`);
- :class:`OpenVINOInt8`: the same with the model quantised to int8 by NNCF
  (:mod:`skbert._int8`), for ``precision="int8"`` once ``fit``'s check passed.

:func:`choose_runtime` decides for ``fit`` and every call alike, and
:func:`wanted_runtime`, its first half, needs no model (an unpickled estimator names the
runtime of the machine it was unpickled on without loading anything). What a runtime
is called (:attr:`~TorchPadded.key`: "torch", "openvino" or "openvino-int8:" with the
calibration's digest and :func:`skbert._int8.toolchain`) is part of the numbers' fingerprint; packed or padded is not (they
agree within float tolerance and share cache entries).
"""

from __future__ import annotations

from ._batching import PaddedBatch, TokenizedText, Window, collate
from ._packing import PackedBatch, UnpackedStates, forward_packed, pack, prepared_mask, routed, use_packed


class TorchPadded:
    """torch eager on padded batches: the reference runtime.

    Parameters
    ----------
    loaded : LoadedModel

    Attributes
    ----------
    name : str
        What runs the model ("torch", "openvino"): ``runtime_``.
    key : str
        What produces its numbers: :attr:`name`, and for int8 the calibration's
        digest. Part of the cache's keys.
    packed : bool
    fell_back : bool
        Whether some batch ran on another runtime than :attr:`name` says (then its
        results must not be stored under that name).
    """

    name = "torch"
    packed = False
    fell_back = False

    def __init__(self, loaded):
        self.loaded = loaded
        pad = loaded.tokenizer.pad_token_id
        self.pad_token_id = 0 if pad is None else pad

    @property
    def key(self) -> str:
        return self.name

    def prepare(self, depth: int | None) -> float:
        """Make what a call at ``depth`` runs, if it is not made yet; the seconds it took (0 for torch)."""
        return 0.0

    def batch(self, tokenized: list[TokenizedText], windows: list[Window]) -> PaddedBatch | PackedBatch:
        """The windows as this runtime's batch (on the CPU)."""
        return collate(tokenized, windows, self.pad_token_id)

    def hidden_states(self, batch: PaddedBatch, depth: int | None):
        """The hidden states ``0..`` (at least ``depth``; all of them for None) of a batch on the model's device,
        each ``(n, longest, d)``. A batch without padding runs with no attention mask at all, which lets the
        attention kernels take their fast, unmasked path."""
        model = self.loaded.model if depth is None else self.loaded.view(depth)
        mask = batch.attention_mask if batch.has_padding else None
        output = model(
            input_ids=batch.input_ids,
            attention_mask=prepared_mask(mask) if routed(self.loaded.model) else mask,
            # sentence pairs, where the model has token types; None: all type 0
            token_type_ids=batch.token_type_ids if self.loaded.has_token_types else None,
            output_hidden_states=True,
            return_dict=True,
        )
        return output.hidden_states


class TorchPacked(TorchPadded):
    """torch eager on packed batches: each batch one row without padding, attention kept within each window.

    A batch whose windows all have one length carries no padding: it runs padded, with no mask at all (packing
    would take nothing out, and would add its index copies).
    """

    packed = True

    def batch(self, tokenized: list[TokenizedText], windows: list[Window]) -> PackedBatch | PaddedBatch:
        if len({len(window.token_indices) for window in windows}) == 1:
            return collate(tokenized, windows, self.pad_token_id)
        return pack(tokenized, windows, self.pad_token_id)

    def hidden_states(self, batch: PackedBatch | PaddedBatch, depth: int | None):
        if isinstance(batch, PaddedBatch):
            return super().hidden_states(batch, depth)
        model = self.loaded.model if depth is None else self.loaded.view(depth)
        output = forward_packed(model, batch, self.loaded.position_offset, self.loaded.has_token_types)
        return UnpackedStates(output.hidden_states, batch)


class OpenVINO(TorchPadded):
    """OpenVINO's compiled CPU kernels on padded batches; torch eager where the model's networks cannot run.

    A depth whose cut network does not convert runs the whole model's network (its
    numbers are OpenVINO's all the same). Where OpenVINO cannot run at all any more
    (it failed while running), the batch runs in torch, and :attr:`fell_back` says so:
    those numbers are torch's, never to be stored under this runtime's name.
    """

    name = "openvino"

    def __init__(self, loaded):
        super().__init__(loaded)
        self.fell_back = False

    def prepare(self, depth: int | None) -> float:
        from ._openvino import prepare

        return prepare(self.loaded, depth)

    def hidden_states(self, batch: PaddedBatch, depth: int | None):
        from ._openvino import run

        states = run(self.loaded, batch, depth)
        if states is None and depth is not None:
            states = run(self.loaded, batch, None)  # the whole model's network
        if states is None:
            self.fell_back = True
            return super().hidden_states(batch, depth)
        return states


class OpenVINOInt8(OpenVINO):
    """The model quantised to int8 with NNCF (:mod:`skbert._int8`), compiled by OpenVINO, on padded batches; the
    whole model at every depth. Where the quantised network cannot be made again or fails while running, the batch
    runs in float32 torch and :attr:`fell_back` says so.

    Parameters
    ----------
    loaded : LoadedModel
        In float32.
    check : Int8Check
        ``fit``'s check, passed: its calibration makes the network.
    """

    def __init__(self, loaded, check):
        super().__init__(loaded)
        self.check = check
        #: The quantised network this call runs, held for the call's length (the model keeps only the most
        #: recently used few: another calibration's call must not make this one quantise again mid-call).
        self._network = None

    def _quantized(self):
        from ._int8 import network

        if self._network is None and not self.fell_back:
            self._network = network(self.loaded, self.check)
        return self._network

    @property
    def key(self) -> str:
        from ._int8 import toolchain

        return f"openvino-int8:{self.check.calibration.digest}:{toolchain()}"

    def prepare(self, depth: int | None) -> float:
        from time import perf_counter

        start = perf_counter()
        self._quantized()
        return perf_counter() - start

    def hidden_states(self, batch: PaddedBatch, depth: int | None):
        from ._int8 import give_up
        from ._openvino import forward

        compiled = self._quantized()
        if compiled is not None:
            try:
                return forward(compiled, batch, self.loaded.has_token_types)
            except Exception as error:  # never a crash mid-run
                give_up(self.loaded, self.check, error)
                self._network = None
        self.fell_back = True
        return TorchPadded.hidden_states(self, batch, depth)


def wanted_runtime(precision: str, attention: str, device_type: str) -> str:
    """Which runtime these settings ask for, with no model at hand: ``"openvino"`` for ``precision="auto"`` on a
    CPU where OpenVINO is installed and preferred (not ``attention="packed"``, a torch path), and for
    ``precision="int8"`` on a CPU where OpenVINO and NNCF are (:func:`skbert._int8.available`); else ``"torch"``."""
    from ._int8 import available
    from ._openvino import wanted

    if precision == "int8" and device_type == "cpu" and available():
        return "openvino"
    return "openvino" if wanted(precision, attention, device_type) else "torch"


def choose_runtime(loaded, precision: str, attention: str, int8=None) -> TorchPadded:
    """The runtime a loaded model runs with these settings: for ``fit`` and every call alike.

    For ``precision="int8"`` with ``fit``'s check (``int8``): :class:`OpenVINOInt8`
    where it passed, else as ``precision="auto"`` would run the (float32) model.
    Otherwise OpenVINO where it is wanted (:func:`wanted_runtime`), the model is not
    quantised nor one whose network OpenVINO gets wrong
    (:func:`~skbert._openvino.converts_exactly`: local attention windows), and its
    network converts (converted here, once per model; a failure warns once) or has
    not failed while running; else torch, packed where the kernel
    runs for this model (:func:`~skbert._packing.use_packed`), padded otherwise.

    Parameters
    ----------
    loaded : LoadedModel
    precision, attention : str
        The estimator's parameters.
    int8 : Int8Check or None, default=None
        What ``fit`` found when it quantised (None: it did not, e.g. without NNCF).

    Returns
    -------
    TorchPadded, TorchPacked, OpenVINO or OpenVINOInt8
    """
    from ._openvino import converts_exactly

    openvino_ok = not loaded.quantized and converts_exactly(loaded.model.config)
    if precision == "int8" and int8 is not None and openvino_ok and loaded.device.type == "cpu":
        from ._int8 import available

        if int8.passed and available() and int8.calibration.digest not in loaded.derived.int8_failed:
            return OpenVINOInt8(loaded, int8)
        precision = "auto"  # the check failed, NNCF is missing here, or the network failed: as "auto" runs
    if openvino_ok and wanted_runtime(precision, attention, loaded.device.type) == "openvino":
        from ._openvino import network

        if network(loaded, None) is not None:
            return OpenVINO(loaded)
    if use_packed(attention, loaded.device.type, loaded.packing_blocker):
        return TorchPacked(loaded)
    return TorchPadded(loaded)
