"""Token-level results and word-in-context lookup.

:class:`TokenEmbedding` holds one text's WordPiece tokens, their character offsets
and a vector per token; :class:`TokenEmbeddings` is a list of them that can turn
into one long pandas DataFrame. The functions below find a word in a text and pool
its sub-word pieces; none of them knows about models or scikit-learn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: How a word's WordPiece vectors combine. "first_piece"/"last_piece", not "first"/"last":
#: the estimator's pooling="last" means the closing [SEP], and one word keeps one meaning.
WORD_POOLING = ("mean", "first_piece", "last_piece")


@dataclass
class TokenEmbedding:
    """One text's tokens and their contextual vectors.

    Attributes
    ----------
    tokens : list of str
        WordPiece tokens, special tokens included (``"[CLS]"``, ``"[SEP]"``).
    offsets : ndarray of int64, shape (n_tokens, 2)
        ``text[start:end]`` is the piece of text each token came from; special
        tokens have ``(0, 0)``. For a sentence pair, offsets index the token's own
        side (A or B, as ``segments`` says).
    vectors : ndarray of float32, shape (n_tokens, n_features)
        One vector per token from the estimator's ``layers`` and
        ``layer_aggregation``.
    special_mask : ndarray of bool, shape (n_tokens,)
        True for special tokens.
    segments : ndarray of int64, shape (n_tokens,), optional
        Each token's segment (its token type): 0 for a single text and for
        ``[CLS] A [SEP]`` of a pair, 1 for ``B [SEP]``. None means all 0.
    """

    tokens: list
    offsets: np.ndarray
    vectors: np.ndarray
    special_mask: np.ndarray
    segments: np.ndarray | None = None

    def __post_init__(self):
        if self.segments is None:
            self.segments = np.zeros(len(self.tokens), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tokens)


class TokenEmbeddings(list):
    """A list of :class:`TokenEmbedding`, one per input text, in input order.

    Parameters
    ----------
    records : iterable of TokenEmbedding
    feature_names : sequence of str
        Names of the vector columns.
    index : sequence, optional
        The input's row labels (a pandas index), used as text ids.
    """

    def __init__(self, records, feature_names, index=None):
        super().__init__(records)
        self.feature_names = list(feature_names)
        self.index = index

    def to_frame(self):
        """Return one row per token: text id, position, token, offsets, special flag, segment, vector.

        Returns
        -------
        pandas.DataFrame
            Columns ``text_id`` (the input's index label, or its position),
            ``position``, ``token``, ``start``, ``end``, ``special``, ``segment``
            (0, or 1 for side B of a pair), then one column per feature.
        """
        import pandas as pd

        ids = range(len(self)) if self.index is None else list(self.index)
        sizes = [len(record) for record in self]
        frame = pd.DataFrame(
            {
                "text_id": np.repeat(np.asarray(ids, dtype=object), sizes),
                "position": np.concatenate([np.arange(n) for n in sizes]) if sizes else [],
                "token": [token for record in self for token in record.tokens],
                "start": np.concatenate([r.offsets[:, 0] for r in self]) if sizes else [],
                "end": np.concatenate([r.offsets[:, 1] for r in self]) if sizes else [],
                "special": np.concatenate([r.special_mask for r in self]) if sizes else [],
                "segment": np.concatenate([r.segments for r in self]) if sizes else [],
            }
        )
        vectors = np.concatenate([r.vectors for r in self]) if sizes else np.empty((0, len(self.feature_names)))
        return pd.concat([frame, pd.DataFrame(vectors, columns=self.feature_names)], axis=1)


def find_word(text: str, word, row: int) -> tuple[int, int]:
    """Character span of a word in a text.

    Parameters
    ----------
    text : str
    word : str or (int, int)
        A string: its first whole-word, case-insensitive occurrence. A pair: a
        ``(start, end)`` character span, used as given.
    row : int
        The row number, for error messages.

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        If the word does not occur as a whole word, or the span is not inside the text.
    """
    if isinstance(word, str):
        if not word.strip():
            raise ValueError(f"row {row}: the word to find is empty.")
        match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE)
        if match is None:
            raise ValueError(f"row {row}: {word!r} does not occur as a whole word in {text[:80]!r}.")
        return match.span()
    try:
        start, end = (int(v) for v in word)
    except (TypeError, ValueError):
        raise ValueError(f"row {row}: expected a word (str) or a (start, end) span, got {word!r}.") from None
    if not 0 <= start < end <= len(text):
        raise ValueError(f"row {row}: span {(start, end)} is not inside a text of {len(text)} characters.")
    return start, end


def tokens_in_span(offsets: np.ndarray, special_mask: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Positions of the non-special tokens that overlap a character span.

    Parameters
    ----------
    offsets : ndarray of shape (n_tokens, 2)
    special_mask : ndarray of bool, shape (n_tokens,)
    span : (int, int)

    Returns
    -------
    ndarray of int
    """
    start, end = span
    overlaps = (offsets[:, 0] < end) & (offsets[:, 1] > start) & (offsets[:, 1] > offsets[:, 0])
    return np.flatnonzero(overlaps & ~special_mask)


def pool_pieces(vectors: np.ndarray, how: str) -> np.ndarray:
    """Pool a word's sub-word vectors.

    Parameters
    ----------
    vectors : ndarray of shape (n_pieces, d)
    how : {"mean", "first_piece", "last_piece"}

    Returns
    -------
    ndarray of shape (d,), float32
    """
    if how == "mean":
        return vectors.mean(axis=0, dtype=np.float32)
    if how == "first_piece":
        return vectors[0].astype(np.float32, copy=False)
    if how == "last_piece":
        return vectors[-1].astype(np.float32, copy=False)
    raise ValueError(f"pooling={how!r} is not one of {WORD_POOLING}.")
