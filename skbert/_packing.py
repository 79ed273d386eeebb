"""Padding-free batches: several windows packed into one token stream, attending within each.

A packed batch concatenates the windows' token ids into one row, with position ids
restarting at 0 for each window and the cumulative window lengths (``cu_seqlens``)
telling attention where each window starts and ends. No token is padding, so no
work is spent on it and no mask is needed: on CUDA the attention runs in
``torch.nn.attention.varlen.varlen_attn`` (FlashAttention's variable-length
kernel); on a CPU it runs window by window through ``scaled_dot_product_attention``,
the reference the packed path is tested against.

Where packing runs is decided once per loaded model (:func:`packing_blocker`): the
kernel needs CUDA, a 16-bit dtype, compute capability 8.0 or higher and a head width
it supports, and the family must pack exactly. ``attention="auto"`` packs only there;
an explicit ``"packed"`` where it cannot run warns and runs padded.

The attention function is registered with transformers' ``AttentionInterface`` under
:data:`ATTENTION`, together with the SDPA mask for it, and every model of a family that
packs exactly is routed through it once, when it is loaded (:func:`route_attention`),
whether or not it packs here. The function takes the cumulative lengths from the keyword
arguments ``BertModel.forward`` hands down to every attention layer (``cu_seq_lens_q``
and friends); a padded call, without them, runs transformers' own SDPA attention with
the padding mask skbert hands it ready-made (:func:`prepared_mask`). Nothing about the
shared model changes per call, so padded and packed calls may run at once in threads.

A packed batch carries its padded layout's masks too (:func:`pack` makes both from one pass,
:func:`~skbert._batching.laid_out`): its hidden states are laid out as a padded batch's
(:func:`unpack`) and reduced by the one padded reduction, so both layouts give their
statistics and the pooler through the same code, with no atomic additions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ._batching import TokenizedText, Window, laid_out

ATTENTION = "skbert_packed"
ATTENTION_CHOICES = ("auto", "packed", "padded")
_REGISTER = threading.Lock()
_REGISTERED = False
#: The widest attention head FlashAttention's kernel takes (head widths must also be a multiple of 8).
MAX_HEAD_DIM = 256


def varlen_kernel():
    """The variable-length attention kernel of this torch, or None (none at all, or a first version that
    takes no ``scale``, which the packed attention passes)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    import inspect

    return varlen_attn if "scale" in inspect.signature(varlen_attn).parameters else None


def transformers_passes_lengths() -> bool:
    """Whether this transformers hands attention keyword arguments down from ``BertModel.forward``
    (transformers 5 does; the packed path needs it)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def packing_blocker(*, device_type: str, dtype: torch.dtype, capability: tuple[int, int] | None, head_dim: int,
                    exact: bool, kernel: bool, transformers_ok: bool) -> str | None:
    """Why batches of a model cannot run packed here, or None where they can.

    A pure function of what was found when the model was loaded, so that every case
    (cards and dtypes this machine lacks included) is tested on any machine.

    Parameters
    ----------
    device_type : str
        ``"cpu"``, ``"cuda"``, ``"mps"``.
    dtype : torch.dtype
        The compute dtype.
    capability : (int, int) or None
        The CUDA device's compute capability (None elsewhere).
    head_dim : int
        Width of one attention head.
    exact : bool
        Whether the model's family packs exactly (:data:`~skbert._models.PACKED_FAMILIES`).
    kernel : bool
        Whether this torch has the variable-length kernel (:func:`varlen_kernel`).
    transformers_ok : bool
        :func:`transformers_passes_lengths`.

    Returns
    -------
    str or None
        A sentence for a warning, or None. On a CPU packed batches run the per-window
        reference attention (any dtype).
    """
    if not transformers_ok:
        return "packed attention needs transformers >= 5"
    if not exact:
        return ("packed attention is not exact for this model's family (its attention has masks or position biases "
                "of its own)")
    if device_type == "cpu":
        return None
    if device_type != "cuda":
        return f"packed attention runs on CUDA (and on the CPU, as a reference), not on {device_type}"
    if not kernel:
        return "this torch has no variable-length attention kernel (torch.nn.attention.varlen)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"FlashAttention's variable-length kernel computes in float16 or bfloat16, not {str(dtype)[6:]}"
    if capability is None or tuple(capability) < (8, 0):
        return f"FlashAttention needs compute capability 8.0 or higher; this GPU has {capability}"
    if head_dim % 8 or head_dim > MAX_HEAD_DIM:
        return f"FlashAttention takes head widths that are multiples of 8 up to {MAX_HEAD_DIM}, not {head_dim}"
    return None


def use_packed(attention: str, device_type: str, blocker: str | None) -> bool:
    """Whether a call's batches run packed.

    Parameters
    ----------
    attention : {"auto", "packed", "padded"}
        The estimator's parameter: ``"auto"`` packs where the CUDA kernel runs.
    device_type : str
    blocker : str or None
        :func:`packing_blocker` for the loaded model. ``"packed"`` where it is not None
        warns with it and runs padded.

    Returns
    -------
    bool
    """
    if attention == "padded":
        return False
    if blocker is not None:
        if attention == "packed":
            from ._warnings import warn_user

            warn_user(f"attention='packed': {blocker}; batches run padded.")
        return False
    return attention == "packed" or device_type == "cuda"


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention within each packed window (an ``AttentionInterface`` function).

    ``query``, ``key`` and ``value`` are ``(1, heads, total_tokens, head_dim)``;
    returns ``(1, total_tokens, heads, head_dim)`` as transformers' functions do.
    Without packed lengths (a padded batch) it is transformers' SDPA attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kernel = varlen_kernel() if query.device.type != "cpu" else None  # CUDA (and meta, in the tests)
    if kernel is not None:
        longest = int(kwargs["max_length_q"])
        out = kernel(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu_seqlens,
                     cu_seqlens, longest, longest, scale=scaling)
        return out.unsqueeze(0), None
    bounds = cu_seqlens.tolist()
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], scale=scaling
        )
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts, dim=2).transpose(1, 2), None


def routed(model: torch.nn.Module) -> bool:
    """Whether a loaded model's attention runs :func:`packed_attention` (:func:`route_attention`)."""
    return getattr(model.config, "_attn_implementation", None) == ATTENTION


def prepared_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """A routed model's attention mask as its attention takes it, ``(n, 1, 1, longest)``, True where a token is real.

    transformers takes a 4-d mask as it is: it then skips its own preparation, which
    asks the device whether the mask has any padding at all (``mask.all()``, and for
    packed position ids whether they are packed), a read that makes the host wait for
    the device to finish the batch before, on every batch. The host knows already: a
    padded batch without padding has no mask at all, and a packed one is told apart
    by its lengths. None stays None.
    """
    return None if attention_mask is None else attention_mask[:, None, None, :].bool()


def _padding_mask(*args, attention_mask=None, **kwargs):
    """The mask function registered for :data:`ATTENTION`: SDPA's padding mask for a padded batch; none for a
    batch without padding or a packed one (its windows are told apart by their lengths)."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def _register() -> None:
    """Register :func:`packed_attention` and its mask with transformers, once per process."""
    global _REGISTERED
    with _REGISTER:
        if not _REGISTERED:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface

            AttentionInterface.register(ATTENTION, packed_attention)
            AttentionMaskInterface.register(ATTENTION, _padding_mask)
            _REGISTERED = True


def route_attention(model: torch.nn.Module) -> bool:
    """Route a freshly loaded model's attention through :func:`packed_attention`, once, before it is shared.

    Only a model on transformers' SDPA attention is routed (padded batches then run
    exactly as before); returns whether it was.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    model.config._attn_implementation = ATTENTION
    return True


@dataclass(frozen=True)
class PackedBatch:
    """Some windows packed into one row, with their padded layout's masks (what the statistics are reduced in).

    Attributes
    ----------
    attention_mask, content_mask, bounds : Tensor
        As :class:`~skbert._batching.PaddedBatch`'s, for the same windows.
    ids, positions, token_types : Tensor of int64, shape (1, total)
        The windows' tokens in one row, positions restarting at 0 for each window.
    index : Tensor of int64, shape (total,)
        Where each packed token sits in the padded layout (row x longest + column).
    cu_seqlens : Tensor of int32, shape (n + 1,)
        Where each window starts and ends in the row.
    max_length : Tensor
        The longest window (0-d: kept on the host).
    """

    attention_mask: torch.Tensor
    content_mask: torch.Tensor
    bounds: torch.Tensor
    ids: torch.Tensor
    positions: torch.Tensor
    token_types: torch.Tensor
    index: torch.Tensor
    cu_seqlens: torch.Tensor
    max_length: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Real tokens (a packed batch has no padding)."""
        return int(self.ids.shape[1])


def pack(tokenized: list[TokenizedText], windows: list[Window], pad_token_id: int = 0) -> PackedBatch:
    """Concatenate some windows into one packed row, with the masks of its padded layout
    (:func:`~skbert._batching.laid_out` makes both from one pass over the windows).

    Returns
    -------
    PackedBatch
        On the CPU.
    """
    padded, flat = laid_out(tokenized, windows, pad_token_id)
    lengths = flat.lengths
    positions = np.arange(len(flat.ids)) - np.repeat(flat.starts, lengths)  # restarting at 0 in each window
    width = padded.attention_mask.shape[1]
    types = flat.type_ids if flat.type_ids is not None else np.zeros(len(flat.ids), dtype=np.int64)
    return PackedBatch(
        attention_mask=padded.attention_mask, content_mask=padded.content_mask, bounds=padded.bounds,
        ids=torch.from_numpy(flat.ids)[None], positions=torch.from_numpy(positions)[None],
        token_types=torch.from_numpy(types)[None],
        index=torch.from_numpy(np.repeat(np.arange(len(lengths)) * width, lengths) + positions),
        cu_seqlens=torch.from_numpy(np.append(0, np.cumsum(lengths)).astype(np.int32)),
        max_length=torch.tensor(int(lengths.max())),
    )


def forward_packed(model, batch: PackedBatch, position_offset: int = 0, token_types: bool = True):
    """Run a routed model (:func:`route_attention`) on a packed batch already on its device; returns its output.

    ``position_offset``: where the model's position ids start (RoBERTa's after its
    padding index); ``token_types``: whether the model takes token type ids.
    """
    longest = int(batch.max_length)
    return model(
        input_ids=batch.ids,
        # a 4-d mask that nothing reads (the windows are told apart by cu_seqlens), so that transformers does not
        # ask the device whether the position ids are packed (a wait for the device on every batch)
        attention_mask=torch.ones((1, 1, 1, 1), dtype=torch.bool, device=batch.ids.device),
        position_ids=batch.positions + position_offset if position_offset else batch.positions,
        token_type_ids=batch.token_types if token_types else None,
        output_hidden_states=True,
        return_dict=True,
        cu_seq_lens_q=batch.cu_seqlens,
        cu_seq_lens_k=batch.cu_seqlens,
        max_length_q=longest,
        max_length_k=longest,
    )


def unpack(hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """A packed hidden state ``(1, total, d)`` laid out as its padded batch's ``(n, longest, d)`` (zeros as padding).

    Each packed token goes to its own place (no two share one), so the result is the
    same run to run.
    """
    rows, longest = batch.attention_mask.shape
    padded = hidden.new_zeros(rows * longest, hidden.shape[-1])
    padded.index_copy_(0, batch.index, hidden[0])
    return padded.view(rows, longest, -1)


class UnpackedStates:
    """A packed forward's hidden states in the padded layout, each unpacked (:func:`unpack`) when read and not
    kept: a reduction that reads them one at a time holds one padded copy at most."""

    def __init__(self, states, batch: PackedBatch):
        self._states, self._batch = states, batch

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self._states) <= index < len(self._states):
            raise IndexError(index)
        return unpack(self._states[index], self._batch)
