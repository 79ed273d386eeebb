"""Tokenising texts and cutting them into length-sorted, padded batches.

Texts are tokenised in bulk by the (fast) tokenizer without padding, sorted by
token length, and grouped so that each batch is padded only to its own longest
text. Every batch carries the input positions of its rows, so results can be put
back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenizedTexts:
    """Token ids of several texts, unpadded.

    Attributes
    ----------
    input_ids : list of list of int
        Each text's ids, special tokens included.
    special_mask : list of list of int
        1 where a token is a special token ([CLS], [SEP], ...).
    lengths : ndarray of shape (n,)
        Number of tokens per text.
    """

    input_ids: list
    special_mask: list
    lengths: np.ndarray


def tokenize(tokenizer, texts: list[str], max_length: int) -> TokenizedTexts:
    """Tokenise texts with special tokens, truncating each to ``max_length`` tokens.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    texts : list of str
    max_length : int
        Longest result in tokens, special tokens included.

    Returns
    -------
    TokenizedTexts
    """
    encoded = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_special_tokens_mask=True,
    )
    ids = encoded["input_ids"]
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    return TokenizedTexts(ids, encoded["special_tokens_mask"], lengths)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Group positions into batches of similar length, longest first.

    Parameters
    ----------
    lengths : ndarray of shape (n,)
        Token count of each text.
    batch_size : int
        Most texts in one batch.

    Returns
    -------
    list of ndarray of int
        Positions into ``lengths``; together they cover every position once.
    """
    order = np.argsort(-lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def collate(tokenized: TokenizedTexts, positions: np.ndarray, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad the texts at ``positions`` to their longest, on the right.

    Parameters
    ----------
    tokenized : TokenizedTexts
    positions : ndarray of int
        Which texts go in the batch, in batch order.
    pad_token_id : int

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask`` and ``special_mask``, each a
        ``(len(positions), longest)`` int64 tensor on the CPU.
    """
    width = int(tokenized.lengths[positions].max())
    n = len(positions)
    input_ids = np.full((n, width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((n, width), dtype=np.int64)
    special_mask = np.zeros((n, width), dtype=np.int64)
    for row, pos in enumerate(positions):
        length = tokenized.lengths[pos]
        input_ids[row, :length] = tokenized.input_ids[pos]
        attention_mask[row, :length] = 1
        special_mask[row, :length] = tokenized.special_mask[pos]
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "special_mask": torch.from_numpy(special_mask),
    }
