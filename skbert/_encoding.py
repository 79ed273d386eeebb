"""Running the encoder over texts, window by window, down to what the caller keeps.

Two products come out of the same tokenising, windowing and batching:

- :func:`iter_statistics`: per text, the per-layer statistics that every pooling
  mode is computed from (:mod:`skbert._statistics`);
- :func:`iter_token_vectors`: per text, one vector per token from chosen layers.

Memory stays bounded however many texts come in: texts are tokenised a chunk at a
time, and each batch's hidden states are reduced on the device before the next
batch runs. On an out-of-memory error (CUDA's, in practice) a batch is split in half
and retried; the results are the same as without the error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ._batching import (
    BatchLimits,
    TokenizedText,
    Window,
    length_sorted_batches,
    make_windows,
    n_segments,
)
from ._device import one_thread_after_fork
from ._models import LoadedModel
from ._options import EncodingOptions
from ._statistics import KINDS, Statistics, finish_texts, window_statistics
from ._transfer import PendingCopies, Transfers, one_batch_behind

CHUNK_SIZE = 4096


@dataclass
class EncodingReport:
    """Counts of what one encoding call did (a call runs in one thread: no lock needed).

    Attributes
    ----------
    n_encoded : int
        Texts tokenised and run through the model.
    n_long : int
        Of those, texts longer than ``max_length`` tokens.
    n_tokens : int
        Real (non-padding) tokens run through the model.
    n_oom_splits : int
        Batches split in half after a CUDA out-of-memory error.
    n_cache_hits : int
        Texts served from the cache without a forward pass.
    runtime_setup_s : float
        Seconds spent converting and compiling the network the call runs (OpenVINO, a
        depth this process had not run yet); 0 otherwise.
    """

    n_encoded: int = 0
    n_long: int = 0
    n_tokens: int = 0
    n_oom_splits: int = 0
    n_cache_hits: int = 0
    runtime_setup_s: float = 0.0


class SecondPass(EncodingReport):
    """The report of texts encoded again (in float32, after a float16 overflow): the model's work counts, the
    texts do not (they were counted on their first pass)."""


#: What a second pass does not add to the process's totals.
_COUNTED_ONCE = frozenset({"n_encoded", "n_long"})


class Totals:
    """What the model has encoded in this process, over every call and thread.

    Calls running at once (threads sharing an estimator) all add to it, so every
    update and read holds a lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = EncodingReport()

    def add(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self._counts, name, getattr(self._counts, name) + value)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            return getattr(self._counts, name)


#: What the model has encoded in this process, over every call.
TOTALS = Totals()


def _count(report: EncodingReport, **increments: int) -> None:
    """Add to a call's report and to the process's totals alike (a :class:`SecondPass` adds no texts to the
    totals)."""
    for name, value in increments.items():
        setattr(report, name, getattr(report, name) + value)
    if isinstance(report, SecondPass):
        increments = {name: value for name, value in increments.items() if name not in _COUNTED_ONCE}
    TOTALS.add(**increments)


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (oom and isinstance(error, oom)) or "out of memory" in str(error).lower()


def run_batches(
    loaded: LoadedModel,
    runtime,
    tokenized: list[TokenizedText],
    windows: list[Window],
    reduce: Callable,
    report: EncodingReport,
    limits: BatchLimits | None = None,
    transfers: Transfers | None = None,
    depth: int | None = None,
) -> Iterator[tuple[list[Window], PendingCopies]]:
    """Run ``reduce(hidden_states, batch)`` on one batch of windows, splitting it on out-of-memory errors.

    Parameters
    ----------
    loaded : LoadedModel
    runtime : TorchPadded, TorchPacked or OpenVINO
        What makes the batch and runs the model (:mod:`skbert._runtimes`).
    tokenized : list of TokenizedText
    windows : list of Window
        One batch, longest first.
    reduce : callable
        ``reduce(hidden_states, batch_on_device) -> tuple of Tensor``, run under
        inference mode, with the hidden states in the batch's padded layout whatever
        the runtime; its results are copied to the host.
    report : EncodingReport
        Updated with the rows and tokens run and any split.
    limits : BatchLimits, optional
        Lowered to half a batch that ran out of memory; every part still waiting
        (halves of a failed batch included) is cut to the limits as they stand when
        it runs, so nothing runs again at a size that already failed, and the model's
        later calls start below it (:class:`~skbert._batching.BatchCeiling`). Without
        it, a failed batch is halved.
    transfers : Transfers, optional
        The call's copies between host and device (made for the model's device if
        not given).
    depth : int, optional
        The highest hidden state ``reduce`` reads (None: all of them run).

    Yields
    ------
    (windows, PendingCopies)
        For the batch, or for each part of it after an out-of-memory error: the
        copies of ``reduce``'s results to the host, maybe still running.
    """
    transfers = Transfers.for_device(loaded.device) if transfers is None else transfers
    pending = [windows]
    while pending:
        part = pending.pop(0)
        lengths = np.fromiter((len(w.token_indices) for w in part), np.int64, len(part))
        rows = len(part) if limits is None else limits.rows(lengths)
        if rows < len(part):
            pending[:0] = [part[i : i + rows] for i in range(0, len(part), rows)]
            continue
        batch = runtime.batch(tokenized, part)
        try:
            with torch.inference_mode():
                on_device = transfers.to_device(batch)
                result = PendingCopies(tuple(transfers.to_host(tensor)
                                             for tensor in reduce(runtime.hidden_states(on_device, depth), on_device)))
        except (RuntimeError, MemoryError) as error:
            if len(part) == 1 or not _is_oom(error):
                raise
            result = None  # leave the except block first, so its traceback frees the batch's tensors
        if result is None:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            _count(report, n_oom_splits=1)
            if limits is not None:
                limits.lower(lengths)
                loaded.batch_ceiling.lower(limits.token_budget)  # and for the model's later calls
            half = len(part) // 2
            pending[:0] = [part[:half], part[half:]]
            continue
        _count(report, n_tokens=batch.n_tokens)
        yield part, result


def _chunks(loaded, texts, max_length, long_text, stride, report, check_layout=True, offsets=False
            ) -> Iterator[tuple[int, list, list[Window]]]:
    """Tokenise and window texts a chunk at a time; on a GPU the next chunk is prepared meanwhile.

    With ``check_layout`` every text must have BERT's special-token layout (statistics rely on it);
    ``offsets``: with the tokens' character offsets (token-level output needs them).
    """
    tokenizer = loaded.text_tokenizer()
    layout = loaded.layout
    pair_layout = layout.pair or (1, 1, 1)  # no pair template: single texts only (pairs are refused at fit)

    def prepare(start):
        tokenized = tokenizer(texts[start : start + CHUNK_SIZE], max_length, offsets)
        return start, tokenized, make_windows(tokenized, max_length, long_text, stride, pair_layout)

    starts = range(0, len(texts), CHUNK_SIZE)
    if loaded.device.type == "cpu" or len(starts) == 1:
        prepared = map(prepare, starts)
    else:  # overlap tokenisation of the next chunk with the GPU's work on this one
        prepared = _prefetching(prepare, starts)
    for start, tokenized, windows in prepared:
        if check_layout:
            _check_layout(tokenized, layout)
        long = sum(len(t.ids) > max_length for t in tokenized)
        _count(report, n_encoded=len(tokenized), n_long=long)
        yield start, tokenized, windows


def _prefetching(prepare, starts):
    """``map(prepare, starts)``, with the next item prepared in a thread while this one is used."""
    pool = ThreadPoolExecutor(max_workers=1)
    pending = [pool.submit(prepare, start) for start in starts[:2]]
    try:
        for k in range(len(starts)):
            result = pending.pop(0).result()
            if k + 2 < len(starts):
                pending.append(pool.submit(prepare, starts[k + 2]))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: Most bytes of reduced output one batch may hand back (on the device, then on the host).
OUTPUT_BYTES_PER_BATCH = 256 * 2**20


def _encoded_windows(loaded, texts, reduce, report, options: EncodingOptions, *, row_bytes=None, token_bytes=None,
                     check_layout=True, offsets=False, depth=None):
    """Tokenise, window, batch and run texts; yield each finished batch with what it needs to regroup.

    Batches hold at most ``batch_size`` rows and ``token_budget`` tokens (padded; real ones for packed batches), and
    what they hand back is at most ``OUTPUT_BYTES_PER_BATCH``: ``// row_bytes`` rows
    for an output per window (many short texts in a large GPU budget would otherwise
    make a huge output), ``// token_bytes`` padded tokens for one per token. After an
    out-of-memory error the budget is halved for the rest of the call, not only for
    the batch that failed, and the model's later calls start from it
    (:class:`~skbert._batching.BatchCeiling`).

    Yields
    ------
    (start, tokenized, n_windows, windows, result)
        The chunk's first input position, its tokenised texts, the number of
        windows of each of its texts, the windows of the batch, and ``reduce``'s
        results for them (a tuple of arrays), copied to the host (on a GPU, once
        the next batch has been queued: see :mod:`skbert._transfer`).
    """
    one_thread_after_fork()
    runtime = options.runtime
    report.runtime_setup_s += runtime.prepare(depth)  # made before the first batch, so its cost is reported apart
    caps = [c for c in (options.batch_size, row_bytes and max(1, OUTPUT_BYTES_PER_BATCH // row_bytes)) if c]
    budget = options.token_budget
    if token_bytes:  # an output per token (token vectors): the budget also caps what a batch hands back
        budget = min(budget, max(1, OUTPUT_BYTES_PER_BATCH // token_bytes))
    # a packed batch's budget counts its real tokens; not for token vectors, handed back padded per batch
    limits = BatchLimits(loaded.batch_ceiling.cap(budget), min(caps) if caps else None,
                         packed=runtime.packed and not token_bytes)
    transfers = Transfers.for_device(loaded.device)

    def started():
        for start, tokenized, windows in _chunks(loaded, texts, options.max_length, options.long_text, options.stride,
                                                 report, check_layout, offsets):
            n_windows = np.bincount([w.text for w in windows], minlength=len(tokenized))
            lengths = np.fromiter((len(w.token_indices) for w in windows), dtype=np.int64, count=len(windows))
            for batch in length_sorted_batches(lengths, limits):
                batch_windows = [windows[i] for i in batch]
                for done, copy in run_batches(loaded, runtime, tokenized, batch_windows, reduce, report, limits,
                                              transfers, depth):
                    yield (start, tokenized, n_windows, done), copy

    for (start, tokenized, n_windows, done), result in one_batch_behind(started()):
        yield start, tokenized, n_windows, done, result


def _check_layout(tokenized: list[TokenizedText], layout) -> None:
    """Every text must have its tokenizer's layout (checked at ``fit``): special tokens only where the
    template puts them. A text that spells a special token out (``"[SEP]"`` in its words) does not."""
    for text in tokenized:
        pair = text.type_ids is not None
        expected = layout.pair_specials if pair else sum(layout.single)
        if not (text.special[0] and text.special[-1] and np.count_nonzero(text.special) == expected):
            template = layout.pair_template if pair else layout.single_template
            raise ValueError(
                f"skbert pools inputs laid out as {template!r}; this {'pair' if pair else 'text'} has special tokens "
                f"elsewhere (special-token mask {text.special.astype(int).tolist()[:8]}...), e.g. a special token "
                "written out in the text."
            )


def iter_statistics(
    loaded: LoadedModel,
    texts: list[str],
    *,
    layers: tuple[int, ...],
    kinds: tuple[str, ...] = KINDS,
    with_pooler: bool = False,
    options: EncodingOptions,
    report: EncodingReport | None = None,
    dtype: str = "float32",
) -> Iterator[Statistics]:
    """Encode texts and yield their statistics (:mod:`skbert._statistics`), in no particular order.

    Only the hidden states in ``layers`` and the ``kinds`` asked for are computed
    and leave the device, and the encoder stops at the highest of those layers
    (:meth:`~skbert._models.LoadedModel.view`; all of them run for the pooler).
    A text that fits one window (most do) is finished on the device, in ``dtype``,
    and copied once, with its batch, into the array it is handed out in; the
    windows of a long text are combined on the host.

    Parameters
    ----------
    loaded : LoadedModel
    texts : list of str, or list of (str, str)
        Single texts, or sentence pairs (A, B) encoded in the tokenizer's pair
        layout (truncated as the tokenizer's own ``longest_first`` truncates them).
    layers : tuple of int
        Hidden states to keep (0 is the embedding layer).
    kinds : tuple of str, default=KINDS
        Which of :data:`~skbert._statistics.KINDS` to compute (``cls`` and ``last``
        always among them).
    with_pooler : bool, default=False
        Also return the model's pooler output (it must have one).
    options : EncodingOptions
        The window, the long-text strategy, batching and the runtime
        (:mod:`skbert._runtimes`: padded or packed batches, torch or OpenVINO).
        ``options.stored`` is the cache's business, not this.
    report : EncodingReport, optional
        Filled in with counts.
    dtype : {"float32", "float16"}, default="float32"
        What one-window texts are narrowed to on the device, shipped and handed out
        in. With ``"float16"`` (a 16-bit store) they are checked as they are
        narrowed (:attr:`~skbert._statistics.Statistics.checked`), and a text that
        would hold an infinity or a NaN in float16 is encoded again at the end and
        handed out in float32, unchecked (counted once in ``report``'s texts, twice
        in its tokens: the model ran them twice).

    Yields
    ------
    Statistics
        ``positions`` index ``texts``; ``dtype`` for one-window texts, float32 for
        long ones.
    """
    report = EncodingReport() if report is None else report
    layers, kinds = tuple(layers), tuple(kinds)
    shipped = {"float32": torch.float32, "float16": torch.float16}[dtype]
    check = shipped == torch.float16  # narrowing can overflow

    def reduce(states, batch):  # the same for every runtime: the states are in the batch's padded layout
        values, extras = window_statistics((states[i] for i in layers), batch.attention_mask, batch.content_mask,
                                           kinds, batch.bounds, dtype=shipped, check=check)
        if not with_pooler:
            return values, extras
        pooler = loaded.pooler_output(states[-1][:, 0]).to(shipped)
        if check:
            extras[:, -1] += (~pooler.isfinite()).any(dim=1)
        return values, extras, pooler

    partial: dict[int, list] = {}  # windows of long texts, until all of a text's are done
    again: set[int] = set()  # texts to encode again in float32
    width = loaded.hidden_size
    segments = n_segments(texts)
    row_bytes = shipped.itemsize * width * (segments * len(kinds) * len(layers) + with_pooler) + 4 * (segments + 1)
    depth = loaded.reads(layers, with_pooler)  # the layers above are not run
    for start, tokenized, n_windows, done, (values, extras, *pooler) in _encoded_windows(
            loaded, texts, reduce, report, options, row_bytes=row_bytes, depth=depth):
        pooler = pooler[0] if with_pooler else None
        content = extras[:, :segments].astype(np.int64)
        text_of = np.fromiter((w.text for w in done), np.int64, len(done))
        whole = n_windows[text_of] == 1
        if check and extras[:, segments].any():
            failed = start + np.unique(text_of[extras[:, segments] > 0])
            again.update(failed.tolist())
            whole &= ~np.isin(start + text_of, failed)
            for position in failed:
                partial.pop(position, None)
        rows = np.flatnonzero(whole)
        if rows.size:
            every = rows.size == len(done)  # the common case: the batch's arrays are handed over as they are
            yield Statistics(
                start + text_of[rows],
                values if every else values[rows],
                kinds,
                layers,
                content if every else content[rows],
                np.fromiter((len(tokenized[t].ids) for t in text_of[rows]), np.int64, rows.size),
                None if pooler is None else pooler if every else pooler[rows],
                checked=check,
            )
        for row in np.flatnonzero(~whole):
            window = done[row]
            position = window.text + start
            if position in again:
                continue
            parts = partial.setdefault(position, [])
            parts.append((window.index, values[row], content[row], None if pooler is None else pooler[row]))
            if len(parts) == n_windows[window.text]:
                parts.sort(key=lambda part: part[0])
                combined, n_content = finish_texts(np.stack([p[1] for p in parts]), np.stack([p[2] for p in parts]),
                                                   np.zeros(len(parts), dtype=np.int64), 1, kinds)
                yield Statistics(np.array([position]), combined, kinds, layers, n_content,
                                 np.array([len(tokenized[window.text].ids)]),
                                 None if pooler is None else parts[0][3][None].astype(np.float32))
                del partial[position]
    if again:
        positions = np.array(sorted(again))
        second = SecondPass()  # these texts are counted once: their second pass adds only the work it did
        try:
            for batch in iter_statistics(loaded, [texts[p] for p in positions], layers=layers, kinds=kinds,
                                         with_pooler=with_pooler, options=options, report=second):
                batch.positions = positions[batch.positions]
                yield batch
        finally:
            report.n_tokens += second.n_tokens
            report.n_oom_splits += second.n_oom_splits
            report.runtime_setup_s += second.runtime_setup_s


def iter_token_vectors(
    loaded: LoadedModel,
    texts: list[str],
    layer_indices: tuple[int, ...],
    *,
    options: EncodingOptions,
    report: EncodingReport | None = None,
) -> Iterator[tuple[int, TokenizedText, np.ndarray, np.ndarray]]:
    """Encode texts and yield, per text, a vector per kept token from chosen layers.

    Parameters
    ----------
    loaded : LoadedModel
    texts : list of str
    layer_indices : tuple of int
        Hidden states to keep.
    options : EncodingOptions
        As in :func:`iter_statistics` (every runtime, packed or padded). Under
        ``long_text="chunk"`` every token is kept, with its vector from the window
        where it has the most context.
    report : EncodingReport, optional

    Yields
    ------
    position : int
        The text's input position.
    tokenized : TokenizedText
        Its untruncated tokens.
    token_indices : ndarray of int
        Which of its tokens were kept, ascending.
    vectors : ndarray of shape (len(layer_indices), len(token_indices), d), float32
    """
    report = EncodingReport() if report is None else report
    selected = list(layer_indices)

    def reduce(states, batch):
        return (torch.stack([states[i] for i in selected], dim=1).float(),)

    partial: dict[int, list] = {}  # each text's windows, until all are done
    # token vectors need no particular layout
    token_bytes = 4 * len(selected) * loaded.hidden_size  # float32 vectors of every selected layer
    for start, tokenized, n_windows, done, (states,) in _encoded_windows(loaded, texts, reduce, report, options,
                                                                      token_bytes=token_bytes, check_layout=False, offsets=True,
                                                                      depth=max(selected)):
        for row, window in enumerate(done):
            rows = np.flatnonzero(window.counted)
            parts = partial.setdefault(window.text + start, [])
            parts.append((window.token_indices[rows], states[row][:, rows]))
            if len(parts) == n_windows[window.text]:
                indices = np.concatenate([p[0] for p in parts])
                vectors = np.concatenate([p[1] for p in parts], axis=1)
                order = np.argsort(indices, kind="stable")
                yield window.text + start, tokenized[window.text], indices[order], vectors[:, order]
                del partial[window.text + start]
