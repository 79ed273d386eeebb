"""The estimator's token-level methods: every token's vector, and one word in its context.

A mixin for :class:`~skbert.BertEmbedder`: it uses the fitted attributes and the
encoder helpers of :class:`~skbert._encoder_access.EncoderAccessMixin`, and owns
nothing of its own.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._encoder_access import EncoderAccessMixin
from ._encoding import EncodingReport, iter_token_vectors, text_tokenizer
from ._layers import aggregate_layers, describe_layers
from ._tokens import WORD_POOLING, TokenEmbedding, TokenEmbeddings, find_word, pool_pieces, tokens_in_span
from ._validation import validate_texts


class TokenLevelMixin(EncoderAccessMixin):
    """``transform_tokens`` and ``embed_words`` for :class:`~skbert.BertEmbedder`."""

    def _padded_options(self, loaded) -> dict:
        """Token vectors always run padded: the packed path reduces to statistics only."""
        options = self._encoding_options(loaded)
        del options["packed"]
        return options

    def transform_tokens(self, X) -> TokenEmbeddings:
        """Embed every token of each text, in context.

        Uses the fitted ``layers`` and ``layer_aggregation``; ``pooling`` and
        ``normalize`` do not apply. Under ``long_text="truncate"`` or
        ``"head_tail"`` only the kept tokens come back; under ``"chunk"`` every
        token does, with its vector from the window where it has the most context.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            With ``pairs=True``, sentence pairs as ``transform`` takes them.

        Returns
        -------
        TokenEmbeddings
            A list with one :class:`~skbert.TokenEmbedding` per text, in input
            order (``.tokens``, ``.offsets``, ``.vectors``, ``.special_mask``,
            ``.segments``: 1 for a pair's B tokens); ``.to_frame()`` gives one long
            DataFrame with a ``text_id`` column.

        Examples
        --------
        >>> from skbert import BertEmbedder
        >>> embedder = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2").fit(["a"])
        >>> record = embedder.transform_tokens(["Riverbanks flood."])[0]
        >>> record.tokens
        ['[CLS]', 'river', '##bank', '##s', 'flood', '.', '[SEP]']
        >>> record.offsets[1:4].tolist(), record.vectors.shape
        ([[0, 5], [5, 9], [9, 10]], (7, 384))
        """
        check_is_fitted(self)
        texts = self._read(X)
        index = X.index if hasattr(X, "iloc") else None  # pandas input: its row labels become text ids
        return TokenEmbeddings(self._token_records(texts), self._token_feature_names(), index)

    def embed_words(self, texts, words, *, pooling="mean") -> np.ndarray:
        """Embed one word per text, in the context of that text.

        Parameters
        ----------
        texts : list, tuple, ndarray or pandas Series of str
        words : sequence of str or (int, int), one per text
            A string stands for its first whole-word, case-insensitive occurrence in
            the text; a ``(start, end)`` pair is a character span.
        pooling : {"mean", "first_piece", "last_piece"}, default="mean"
            How the word's WordPiece vectors combine.

        Returns
        -------
        ndarray of shape (n_texts, n_token_features), float32
            Rows in input order, from the fitted ``layers`` and ``layer_aggregation``.

        Raises
        ------
        ValueError
            If a word does not occur in its text, or its span covers no token (for
            example because the text was truncated); the message names the row.

        Examples
        --------
        >>> from skbert import BertEmbedder
        >>> embedder = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2").fit(["a"])
        >>> embedder.embed_words(["The river bank flooded.", "I paid at the bank."], ["bank", "bank"]).shape
        (2, 384)
        """
        check_is_fitted(self)
        if self.pairs:
            raise ValueError(
                "embed_words takes single texts, and this estimator reads sentence pairs (pairs=True); "
                "transform_tokens gives each token of a pair with its segment and offsets."
            )
        texts = validate_texts(texts)
        if pooling not in WORD_POOLING:
            renamed = {"first": "first_piece", "last": "last_piece"}
            hint = f" (renamed: use {renamed[pooling]!r})" if pooling in renamed else ""
            raise ValueError(f"pooling={pooling!r} is not one of {WORD_POOLING}{hint}.")
        if isinstance(words, str) or len(words) != len(texts):
            raise ValueError(
                f"words must hold one word or span per text: got {len(texts)} texts and "
                f"{'a single string' if isinstance(words, str) else len(words)} words."
            )
        spans = [find_word(text, word, row) for row, (text, word) in enumerate(zip(texts, list(words)))]
        output = np.empty((len(texts), len(self._token_feature_names())), dtype=np.float32)
        for row, record in enumerate(self._token_records(texts)):
            pieces = tokens_in_span(record.offsets, record.special_mask, spans[row])
            if pieces.size == 0:
                raise ValueError(
                    f"row {row}: span {spans[row]} ({texts[row][slice(*spans[row])]!r}) covers no token"
                    + (" that the model saw (the text was truncated)" if len(record) >= self.max_length_ else "")
                    + "."
                )
            output[row] = pool_pieces(record.vectors[pieces], pooling)
        return output

    def _token_records(self, texts: list[str]) -> list[TokenEmbedding]:
        loaded = self._load()
        if not text_tokenizer(loaded).has_offsets:
            raise ValueError(f"token-level output needs a fast tokenizer with offsets; {self.model_name!r} has none.")
        records: list = [None] * len(texts)
        report = EncodingReport()
        with self._progress(len(texts)) as bar:
            for position, tokenized, kept, vectors in iter_token_vectors(
                loaded, texts, self.layer_indices_, report=report, **self._padded_options(loaded)
            ):
                records[position] = TokenEmbedding(
                    tokens=loaded.tokenizer.convert_ids_to_tokens(tokenized.ids[kept].tolist()),
                    offsets=tokenized.offsets[kept],
                    vectors=aggregate_layers(vectors.transpose(1, 0, 2), self.layer_aggregation),
                    special_mask=tokenized.special[kept],
                    segments=None if tokenized.type_ids is None else tokenized.type_ids[kept],
                )
                bar.update(1)
        self._report(report, len(texts), len(texts), report.n_long)  # warns if texts were cut
        return records

    def _token_feature_names(self) -> list[str]:
        return [
            f"{label}_{j}"
            for label in describe_layers(self.layer_indices_, self.layer_aggregation)
            for j in range(self.hidden_size_)
        ]
