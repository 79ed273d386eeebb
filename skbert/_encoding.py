"""Running the encoder over texts, batch by batch, down to per-layer statistics.

Memory stays bounded however many texts come in: texts are tokenised a chunk at a
time, and each batch's hidden states are reduced on the device to
:func:`~skbert._pooling.layer_statistics` before the next batch runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ._batching import collate, length_sorted_batches, tokenize
from ._models import LoadedModel
from ._pooling import layer_statistics


@dataclass
class EncodedBatch:
    """Per-layer statistics of some texts.

    Attributes
    ----------
    positions : ndarray of shape (b,)
        Input positions of the rows.
    statistics : ndarray of shape (b, len(STATISTICS), n_layers + 1, d), float32
    n_content : ndarray of shape (b,)
        Non-special real tokens per text.
    n_all : ndarray of shape (b,)
        Real tokens per text.
    pooler : ndarray of shape (b, d) or None
        The model's pooler output, if it has one.
    """

    positions: np.ndarray
    statistics: np.ndarray
    n_content: np.ndarray
    n_all: np.ndarray
    pooler: np.ndarray | None


def encode_batch(loaded: LoadedModel, batch: dict[str, torch.Tensor]) -> tuple:
    """Run the model on one padded batch and reduce it to statistics.

    Parameters
    ----------
    loaded : LoadedModel
    batch : dict
        As made by :func:`~skbert._batching.collate`.

    Returns
    -------
    statistics : ndarray, float32
    n_content, n_all : ndarray of int
    pooler : ndarray or None
    """
    device = loaded.device
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    special_mask = batch["special_mask"].to(device)
    with torch.inference_mode():
        output = loaded.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True
        )
        statistics = layer_statistics(output.hidden_states, attention_mask, special_mask)
        pooler = getattr(output, "pooler_output", None) if loaded.has_pooler else None
        statistics = statistics.cpu().numpy()
        pooler = None if pooler is None else pooler.float().cpu().numpy()
    n_all = batch["attention_mask"].sum(dim=1).numpy()
    n_content = (batch["attention_mask"] * (1 - batch["special_mask"])).sum(dim=1).numpy()
    return statistics, n_content, n_all, pooler


def iter_encoded(
    loaded: LoadedModel, texts: list[str], max_length: int, batch_size: int, chunk_size: int = 4096
) -> Iterator[EncodedBatch]:
    """Encode texts and yield their statistics batch by batch (not in input order).

    Parameters
    ----------
    loaded : LoadedModel
    texts : list of str
    max_length : int
        Tokens per text at most, special tokens included; longer texts are truncated.
    batch_size : int
        Texts per forward pass at most.
    chunk_size : int, default=4096
        Texts tokenised and length-sorted together.

    Yields
    ------
    EncodedBatch
    """
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        tokenized = tokenize(loaded.tokenizer, chunk, max_length)
        for positions in length_sorted_batches(tokenized.lengths, batch_size):
            statistics, n_content, n_all, pooler = encode_batch(loaded, collate(tokenized, positions, pad_id))
            yield EncodedBatch(positions + start, statistics, n_content, n_all, pooler)
