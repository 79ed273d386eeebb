"""Token vectors of texts, and one word's vector in its context: the work behind the
estimator's ``transform_tokens`` and ``embed_words``.

Plain functions over a loaded model and :class:`~skbert._options.EncodingOptions`;
the estimator passes its fitted settings in and gets records or arrays back.
"""

from __future__ import annotations

import numpy as np

from ._encoding import EncodingReport, iter_token_vectors
from ._layers import aggregate_layers, describe_layers
from ._models import LoadedModel
from ._options import EncodingOptions
from ._tokens import WORD_POOLING, TokenEmbedding, find_word, pool_pieces, tokens_in_span


def token_feature_names(layer_indices: tuple[int, ...], layer_aggregation: str, hidden_size: int) -> list[str]:
    """Names of a token vector's columns: the layer label and the dimension."""
    return [f"{label}_{j}" for label in describe_layers(layer_indices, layer_aggregation) for j in range(hidden_size)]


def token_records(loaded: LoadedModel, texts: list, layer_indices: tuple[int, ...], layer_aggregation: str,
                  options: EncodingOptions, report: EncodingReport, progress) -> list[TokenEmbedding]:
    """One :class:`~skbert.TokenEmbedding` per text (or pair), in input order.

    Parameters
    ----------
    loaded : LoadedModel
    texts : list of str or of (str, str)
    layer_indices : tuple of int
    layer_aggregation : {"concat", "mean", "sum"}
    options : EncodingOptions
    report : EncodingReport
        Filled in with the call's counts.
    progress : tqdm-like
        Updated once per text.

    Raises
    ------
    ValueError
        If the tokenizer gives no character offsets (a slow tokenizer).
    """
    if not loaded.text_tokenizer().has_offsets:
        raise ValueError(
            f"token-level output needs a fast tokenizer with offsets; the model at {loaded.source.location!r} "
            "has none."
        )
    records: list = [None] * len(texts)
    for position, tokenized, kept, vectors in iter_token_vectors(
        loaded, texts, layer_indices, options=options, report=report
    ):
        records[position] = TokenEmbedding(
            tokens=loaded.tokenizer.convert_ids_to_tokens(tokenized.ids[kept].tolist()),
            offsets=tokenized.offsets[kept],
            vectors=aggregate_layers(vectors.transpose(1, 0, 2), layer_aggregation),
            special_mask=tokenized.special[kept],
            segments=None if tokenized.segments is None else tokenized.segments[kept],
        )
        progress.update(1)
    return records


def check_words(texts: list[str], words, pooling: str) -> list[tuple[int, int]]:
    """Each text's word as a character span, after checking ``words`` and ``pooling``.

    Raises
    ------
    ValueError
        For an unknown ``pooling``, a count of words other than one per text, or a
        word that does not occur in its text.
    """
    if pooling not in WORD_POOLING:
        renamed = {"first": "first_piece", "last": "last_piece"}
        hint = f" (renamed: use {renamed[pooling]!r})" if pooling in renamed else ""
        raise ValueError(f"pooling={pooling!r} is not one of {WORD_POOLING}{hint}.")
    if isinstance(words, str) or len(words) != len(texts):
        raise ValueError(
            f"words must hold one word or span per text: got {len(texts)} texts and "
            f"{'a single string' if isinstance(words, str) else len(words)} words."
        )
    return [find_word(text, word, row) for row, (text, word) in enumerate(zip(texts, list(words)))]


def word_vectors(records: list[TokenEmbedding], texts: list[str], spans: list[tuple[int, int]], pooling: str,
                 max_length: int) -> np.ndarray:
    """Pool each record's pieces that fall in its span: one row per text.

    Raises
    ------
    ValueError
        If a span covers no token the model saw; the message names the row.
    """
    output = np.empty((len(records), records[0].vectors.shape[1] if records else 0), dtype=np.float32)
    for row, record in enumerate(records):
        pieces = tokens_in_span(record.offsets, record.special_mask, spans[row])
        if pieces.size == 0:
            raise ValueError(
                f"row {row}: span {spans[row]} ({texts[row][slice(*spans[row])]!r}) covers no token"
                + (" that the model saw (the text was truncated)" if len(record) >= max_length else "")
                + "."
            )
        output[row] = pool_pieces(record.vectors[pieces], pooling)
    return output
