"""Padding-free batches: several windows packed into one token stream, attending within each.

A packed batch concatenates the windows' token ids into one row, with position ids
restarting at 0 for each window and the cumulative window lengths (``cu_seqlens``)
telling attention where each window starts and ends. No token is padding, so no
work is spent on it and no mask is needed: on CUDA the attention runs in
``torch.nn.attention.varlen.varlen_attn`` (FlashAttention's variable-length
kernel); elsewhere it runs window by window through ``scaled_dot_product_attention``,
the reference the packed path is tested against on a CPU.

The attention function is registered with transformers' ``AttentionInterface`` and
takes the cumulative lengths from the keyword arguments ``BertModel.forward`` hands
down to every attention layer (``cu_seq_lens_q`` and friends); a call without them
falls back to transformers' own SDPA attention, so the same model serves padded
batches unchanged.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import torch

from ._batching import TokenizedText, Window, segment_bounds, window_segments

ATTENTION = "skbert_packed"
ATTENTION_CHOICES = ("auto", "packed", "padded")
_SWITCH = threading.Lock()


def varlen_kernel():
    """The variable-length attention kernel of this torch, or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def transformers_passes_lengths() -> bool:
    """Whether this transformers hands attention keyword arguments down from ``BertModel.forward``
    (transformers 5 does; the packed path needs it)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def use_packed(attention: str, device: torch.device, exact: bool = True) -> bool:
    """Whether batches are packed: ``"auto"`` packs where the varlen kernel runs (CUDA).

    ``exact``: whether the model's family packs exactly
    (:data:`~skbert._models.PACKED_FAMILIES`); where it does not, batches run padded,
    with a warning if ``"packed"`` was asked for.

    Raises
    ------
    ValueError
        For ``"packed"`` with a transformers older than 5.
    """
    if attention == "packed" and not transformers_passes_lengths():
        raise ValueError("attention='packed' needs transformers >= 5; use 'padded' or 'auto' with this version.")
    if not exact:
        if attention == "packed":
            from ._warnings import warn_user

            warn_user("attention='packed' is not exact for this model's family (its attention has masks or "
                      "position biases of its own); batches run padded.")
        return False
    if attention == "auto":
        return device.type == "cuda" and varlen_kernel() is not None and transformers_passes_lengths()
    return attention == "packed"


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention within each packed window (an ``AttentionInterface`` function).

    ``query``, ``key`` and ``value`` are ``(1, heads, total_tokens, head_dim)``;
    returns ``(1, total_tokens, heads, head_dim)`` as transformers' functions do.
    """
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kernel = varlen_kernel() if query.is_cuda else None
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


_REGISTERED = False


def _register() -> None:
    """Register :func:`packed_attention` with transformers, once, on first packed use."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION, packed_attention)
        _REGISTERED = True


def pack(tokenized: list[TokenizedText], windows: list[Window]) -> dict[str, torch.Tensor]:
    """Concatenate some windows into one packed row.

    Returns
    -------
    dict
        ``input_ids``, ``position_ids``, ``token_type_ids`` (1, total) int64;
        ``content_mask`` (total,) the segment (1, or 2 for a pair's B) of each
        non-special token a window counts, 0 elsewhere; ``content_index`` the flat
        positions of those tokens and ``content_owner`` the row (window x segments +
        segment) each one is pooled into, worked out here so that the device never
        has to tell the host how many there are (a boolean mask would: a sync per
        batch); ``bounds`` (n, segments, 2) the flat positions of each segment's
        opening and closing special tokens; ``cu_seqlens`` (n + 1,) int32; ``max_length`` (a 0-d tensor,
        kept on the host); all on the CPU.
    """
    ids, positions, types, content, bounds, lengths = [], [], [], [], [], []
    offset = 0
    for window in windows:
        text = tokenized[window.text]
        ids.append(text.ids[window.token_indices])
        positions.append(np.arange(len(window.token_indices)))
        types.append(np.zeros(len(window.token_indices), np.int64) if text.type_ids is None
                     else text.type_ids[window.token_indices])
        content.append(window_segments(text, window))
        bounds.append(offset + segment_bounds(text.special[window.token_indices], text.type_ids is not None))
        lengths.append(len(window.token_indices))
        offset += len(window.token_indices)
    input_ids = torch.from_numpy(np.concatenate(ids)).unsqueeze(0)
    segment = np.concatenate(content)
    content_index = np.flatnonzero(segment)
    window_of_token = np.repeat(np.arange(len(windows)), lengths)
    n_segments = len(bounds[0])
    return {
        "content_index": torch.from_numpy(content_index),
        "content_owner": torch.from_numpy(window_of_token[content_index] * n_segments + segment[content_index] - 1),
        "input_ids": input_ids,
        "position_ids": torch.from_numpy(np.concatenate(positions)).unsqueeze(0),
        "token_type_ids": torch.from_numpy(np.concatenate(types)).unsqueeze(0),
        "content_mask": torch.from_numpy(segment),
        "bounds": torch.from_numpy(np.stack(bounds)),
        "cu_seqlens": torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
        "max_length": torch.tensor(max(lengths)),
    }


@contextmanager
def packed_attention_on(model):
    """Route the model's attention through :func:`packed_attention` for one forward.

    Serialised by a lock; a padded forward that runs meanwhile in another thread
    still gets SDPA (the function falls back to it without packed lengths).
    """
    with _SWITCH:
        _register()
        before = model.config._attn_implementation
        model.config._attn_implementation = ATTENTION
        try:
            yield
        finally:
            model.config._attn_implementation = before


def forward_packed(model, batch: dict[str, torch.Tensor], position_offset: int = 0, token_types: bool = True):
    """Run the model on a packed batch (already on its device); returns its output.

    ``position_offset``: where the model's position ids start (RoBERTa's after its
    padding index); ``token_types``: whether the model takes token type ids.
    """
    cu_seqlens, longest = batch["cu_seqlens"], int(batch["max_length"])
    with packed_attention_on(model):
        return model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"] + position_offset if position_offset else batch["position_ids"],
            token_type_ids=batch["token_type_ids"] if token_types else None,
            output_hidden_states=True,
            return_dict=True,
            cu_seq_lens_q=cu_seqlens,
            cu_seq_lens_k=cu_seqlens,
            max_length_q=longest,
            max_length_k=longest,
        )


def segment_statistics(hidden_states, content_index: torch.Tensor, content_owner: torch.Tensor, kinds,
                       bounds: torch.Tensor) -> torch.Tensor:
    """:func:`~skbert._statistics.window_statistics` for a packed batch, with no host-device sync.

    Parameters
    ----------
    hidden_states : sequence of Tensor of shape (1, total, d)
    content_index, content_owner : Tensor of int64
        From :func:`pack`: the counted content tokens and the (window, segment) row of each.
    kinds : sequence of str
    bounds : Tensor of shape (n_windows, segments, 2)
        Each segment's opening and closing special token (flat positions).

    Returns
    -------
    Tensor of shape (n_windows, segments, len(kinds), len(hidden_states), d), float32
    """
    n, n_segments = bounds.shape[0], bounds.shape[1]
    owner = content_owner
    firsts, lasts = bounds[:, :, 0].reshape(-1), bounds[:, :, 1].reshape(-1)
    per_layer = []
    for hidden in hidden_states:
        tokens = hidden[0]
        width = tokens.shape[-1]
        rows = []
        for kind in kinds:
            if kind == "cls":
                rows.append(tokens[firsts].float())
            elif kind == "last":
                rows.append(tokens[lasts].float())
            elif kind == "mean":  # the sum, as window_statistics gives it
                rows.append(torch.zeros(n * n_segments, width, device=tokens.device)
                            .index_add_(0, owner, tokens.index_select(0, content_index).float()))
            else:
                fill = torch.full((n * n_segments, width), torch.finfo(tokens.dtype).min, device=tokens.device)
                index = owner.unsqueeze(1).expand(-1, width)
                rows.append(fill.scatter_reduce_(0, index, tokens.index_select(0, content_index).float(), "amax"))
        per_layer.append(torch.stack(rows, dim=1).reshape(n, n_segments, len(kinds), width))
    return torch.stack(per_layer, dim=3)


def packed_pooler(model, last_hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """BERT's pooler on each packed window's first token (the model's own pooler sees only the row's first)."""
    first = last_hidden[0, cu_seqlens[:-1].long()]
    return model.pooler.activation(model.pooler.dense(first))
