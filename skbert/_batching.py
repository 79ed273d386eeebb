"""Tokenising texts, fitting them into the model's window, and batching the windows.

Texts are tokenised in bulk by the fast (Rust) tokenizer, untruncated. Each text then
becomes one or more *windows* of at most ``max_length`` tokens, by the long-text
strategy:

- ``"truncate"``: the first tokens;
- ``"head_tail"``: the first quarter of the window from the start of the text, the
  rest from its end;
- ``"chunk"``: overlapping windows that cover the whole text. Every token is
  *counted* in exactly one window, the one where it has the most context on both
  sides, so sums, maxima and counts over windows combine exactly.

A text that fits gives one window with every token, whatever the strategy.
Windows are sorted by length and grouped under a row cap and a token budget, so
each batch is padded only to its own longest window.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

LONG_TEXT_STRATEGIES = ("truncate", "head_tail", "chunk")


@dataclass
class TokenizedText:
    """One text's tokens, special tokens included, untruncated.

    Attributes
    ----------
    ids : ndarray of int64, shape (t,)
    special : ndarray of bool, shape (t,)
    offsets : ndarray of int64, shape (t, 2), or None
        Character span of each token in the text ((0, 0) for special tokens); for
        a pair, in its own side's text. None when the tokenizer cannot tell (slow
        tokenizers).
    type_ids : ndarray of int64, shape (t,), or None
        Token types of a sentence pair as the tokenizer gives them (0 for ``[CLS] A
        [SEP]``, 1 for ``B [SEP]`` in BERT's template; all 0 in RoBERTa's); None
        for a single text.
    segments : ndarray of int64, shape (t,), or None
        Which side of a pair each token belongs to, from the tokenizer's layout
        (:mod:`skbert._layout`): 0 for A and the special tokens before it and the
        one that closes it, 1 for B and the rest; None for a single text.
    pair_kept : (int, int) or None
        For a pair longer than the window it was tokenised for: how many tokens of A
        and of B the tokenizer's own ``longest_first`` truncation keeps (asked of the
        tokenizer, so it is its rule whatever its version); None otherwise.
    """

    ids: np.ndarray
    special: np.ndarray
    offsets: np.ndarray | None
    type_ids: np.ndarray | None = None
    segments: np.ndarray | None = None
    pair_kept: tuple[int, int] | None = None


def pair_middle(special: np.ndarray, before: int) -> int:
    """Position of the first special token between a pair's sides (``before``: special tokens before A)."""
    specials = np.flatnonzero(special)
    return int(specials[before]) if len(specials) > before else len(special)


def side_of_tokens(special: np.ndarray, before: int) -> np.ndarray:
    """0 for A's tokens (and the special tokens before A and the one that closes it), 1 for B's and after."""
    return (np.arange(len(special)) > pair_middle(special, before)).astype(np.int64)


def n_segments(texts) -> int:
    """2 for a list of sentence pairs (tuples), 1 for single texts (and for no texts)."""
    return 2 if texts and isinstance(texts[0], tuple) else 1


class TextTokenizer:
    """Bulk tokenisation without truncation or padding.

    Uses a private copy of the fast tokenizer's Rust backend (so the shared
    tokenizer's settings are never changed); falls back to the Python tokenizer.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    layout : SpecialLayout, optional
        Its special-token layout; tells the sides of a pair apart (``segments``).
    """

    def __init__(self, tokenizer, layout=None):
        self.tokenizer = tokenizer
        self._before = 1 if layout is None or layout.pair is None else layout.pair[0]
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._backend = None
        self._truncating: dict = {}  # max_length -> a private copy that truncates pairs to it, newest last
        self._truncating_lock = threading.Lock()
        if backend is not None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(backend.to_str())
            self._backend.no_truncation()
            self._backend.no_padding()

    @property
    def has_offsets(self) -> bool:
        """Whether character offsets are available."""
        return self._backend is not None

    def __call__(self, texts: list, max_length: int | None = None, offsets: bool = True) -> list[TokenizedText]:
        """Tokenise texts, or sentence pairs, special tokens added.

        Parameters
        ----------
        texts : list of str, or list of (str, str)
            Single texts, or pairs (A, B), encoded as the tokenizer encodes
            ``tokenizer(a, b)``: ``[CLS] A [SEP] B [SEP]`` with token types.
        max_length : int, optional
            The window pairs will be cut to: each longer pair's
            :attr:`~TokenizedText.pair_kept` is asked of the tokenizer.
        offsets : bool, default=True
            Whether to give character offsets (token-level output needs them);
            without, the fast tokenizer skips computing them, a quarter or more of
            its time, and :attr:`~TokenizedText.offsets` is None.

        Returns
        -------
        list of TokenizedText
        """
        tokenized = self._tokenize(texts, offsets)
        if max_length is not None and n_segments(texts) == 2:
            self._ask_truncation(texts, tokenized, max_length)
        return tokenized

    def _tokenize(self, texts: list, offsets: bool = True) -> list[TokenizedText]:
        pairs = n_segments(texts) == 2
        if self._backend is not None:
            encode = self._backend.encode_batch
            if not offsets:  # the same ids, special tokens and types, without offsets (tokenizers >= 0.20)
                encode = getattr(self._backend, "encode_batch_fast", encode)
            tokenized = [
                TokenizedText(
                    np.asarray(enc.ids, dtype=np.int64),
                    np.asarray(enc.special_tokens_mask, dtype=bool),
                    np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) if offsets else None,
                    np.asarray(enc.type_ids, dtype=np.int64) if pairs else None,
                )
                for enc in encode(texts, add_special_tokens=True)
            ]
            return self._with_sides(tokenized) if pairs else tokenized
        sides = ([a for a, _ in texts], [b for _, b in texts]) if pairs else (texts,)
        encoded = self.tokenizer(
            *sides, add_special_tokens=True, truncation=False, padding=False, return_special_tokens_mask=True,
            return_token_type_ids=pairs,
        )
        types = encoded["token_type_ids"] if pairs else [None] * len(texts)
        tokenized = [
            TokenizedText(np.asarray(ids, dtype=np.int64), np.asarray(special, dtype=bool), None,
                          None if type_ids is None else np.asarray(type_ids, dtype=np.int64))
            for ids, special, type_ids in zip(encoded["input_ids"], encoded["special_tokens_mask"], types)
        ]
        return self._with_sides(tokenized) if pairs else tokenized

    def _with_sides(self, tokenized: list[TokenizedText]) -> list[TokenizedText]:
        for text in tokenized:
            text.segments = side_of_tokens(text.special, self._before)
        return tokenized

    #: Truncating copies kept (a search over max_length would otherwise keep one per value).
    TRUNCATING_COPIES = 4

    def _truncating_copy(self, max_length: int):
        """A private copy of the backend that truncates pairs to ``max_length`` (longest first, on the right)."""
        with self._truncating_lock:
            truncating = self._truncating.pop(max_length, None)
            if truncating is None:
                from tokenizers import Tokenizer

                truncating = Tokenizer.from_str(self._backend.to_str())
                truncating.no_padding()
                truncating.enable_truncation(max_length, strategy="longest_first", direction="right")
            self._truncating[max_length] = truncating  # the most recently used last
            while len(self._truncating) > self.TRUNCATING_COPIES:
                del self._truncating[next(iter(self._truncating))]
            return truncating

    def _ask_truncation(self, pairs: list, tokenized: list[TokenizedText], max_length: int) -> None:
        """Set :attr:`~TokenizedText.pair_kept` of the pairs longer than ``max_length``: each is encoded again,
        truncated by the tokenizer itself (``longest_first``, on the right), and its kept tokens counted by side."""
        specials = int(tokenized[0].special.sum()) if tokenized else 0
        longer = [k for k, text in enumerate(tokenized) if len(text.ids) > max_length]
        if not longer or max_length < specials:  # nothing to cut, or no room at all (refused when windowed)
            return
        chosen = [pairs[k] for k in longer]
        if self._backend is not None:
            truncating = self._truncating_copy(max_length)
            sides = [np.array([-1 if side is None else side for side in encoding.sequence_ids])
                     for encoding in truncating.encode_batch(chosen, add_special_tokens=True)]
        else:
            encoded = self.tokenizer([a for a, _ in chosen], [b for _, b in chosen], add_special_tokens=True,
                                     truncation="longest_first", max_length=max_length,
                                     return_special_tokens_mask=True)
            sides = []
            for mask in encoded["special_tokens_mask"]:
                special = np.asarray(mask, dtype=bool)
                sides.append(np.where(special, -1, side_of_tokens(special, self._before)))
        for k, side in zip(longer, sides):
            tokenized[k].pair_kept = (int((side == 0).sum()), int((side == 1).sum()))


@dataclass
class Window:
    """A slice of one text that the model sees in one forward pass.

    Attributes
    ----------
    text : int
        Position of the text among those being encoded.
    index : int
        Window number within the text (0 first).
    token_indices : ndarray of int64
        Which of the text's tokens the window holds, in order.
    counted : ndarray of bool
        Which of those tokens this window counts (each token of the text is
        counted in at most one window).
    """

    text: int
    index: int
    token_indices: np.ndarray
    counted: np.ndarray


def _ends(special: np.ndarray) -> tuple[int, int]:
    """Number of leading and trailing special tokens around the text's own tokens."""
    content = np.flatnonzero(~special)
    if content.size == 0:
        return len(special), 0
    return int(content[0]), int(len(special) - 1 - content[-1])


def plan_windows(special: np.ndarray, max_length: int, strategy: str, stride: int) -> list[tuple]:
    """Cut one text's tokens into windows.

    Parameters
    ----------
    special : ndarray of bool, shape (t,)
        Special-token mask of the untruncated text.
    max_length : int
        Most tokens per window, special tokens included.
    strategy : {"truncate", "head_tail", "chunk"}
    stride : int
        With ``"chunk"``: how many tokens consecutive windows share.

    Returns
    -------
    list of (token_indices, counted)
        As in :class:`Window`.
    """
    n = len(special)
    if n <= max_length:
        return [(np.arange(n), np.ones(n, dtype=bool))]
    prefix, suffix = _ends(special)
    width = max_length - prefix - suffix
    if width < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text between {prefix + suffix} special tokens.")
    head = np.arange(prefix)
    tail = np.arange(n - suffix, n)
    content = np.arange(prefix, n - suffix)
    if strategy == "truncate":
        keep = np.concatenate([head, content[:width], tail])
        return [(keep, np.ones(len(keep), dtype=bool))]
    if strategy == "head_tail":
        first = width // 4
        keep = np.concatenate([head, content[:first], content[len(content) - (width - first) :], tail])
        return [(keep, np.ones(len(keep), dtype=bool))]
    if strategy != "chunk":
        raise ValueError(f"long_text={strategy!r} is not one of {LONG_TEXT_STRATEGIES}.")
    if not 0 <= stride < width:
        raise ValueError(f"stride={stride} must be at least 0 and below the {width} text tokens a window holds.")
    spans, start = [], 0
    while True:
        spans.append((start, min(start + width, len(content))))
        if start + width >= len(content):
            break
        start += width - stride
    windows = []
    for k, (start, end) in enumerate(spans):
        # a token shared with a neighbour goes to the window where it is farther from the edge
        own_start = start if k == 0 else (start + spans[k - 1][1]) // 2
        own_end = end if k == len(spans) - 1 else (spans[k + 1][0] + end) // 2
        positions = np.arange(start, end)
        counted = np.concatenate(
            [
                np.full(prefix, k == 0),
                (positions >= own_start) & (positions < own_end),
                np.full(suffix, k == len(spans) - 1),
            ]
        )
        windows.append((np.concatenate([head, content[start:end], tail]), counted))
    return windows


def plan_pair_window(special: np.ndarray, max_length: int, layout: tuple = (1, 1, 1),
                     kept: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The one window of a sentence pair, in its tokenizer's layout, cut as its tokenizer cuts it.

    Parameters
    ----------
    special : ndarray of bool, shape (t,)
        Special-token mask of the untruncated pair.
    max_length : int
    layout : (int, int, int), default=(1, 1, 1)
        Special tokens before A, between the sides and after B
        (:attr:`~skbert._layout.SpecialLayout.pair`): (1, 1, 1) for ``[CLS] A [SEP]
        B [SEP]``, (1, 2, 1) for ``<s> A </s></s> B </s>``.
    kept : (int, int), optional
        How many tokens of A and of B the tokenizer's truncation keeps
        (:attr:`TokenizedText.pair_kept`); needed for a pair longer than ``max_length``.

    Returns
    -------
    (token_indices, counted)
        The first ``kept[0]`` tokens of A and ``kept[1]`` of B, with every special token.
    """
    n = len(special)
    if n <= max_length:
        return np.arange(n), np.ones(n, dtype=bool)
    before, between, after = layout
    if max_length < before + between + after:
        raise ValueError(f"max_length={max_length} leaves no room for a pair's {before + between + after} special "
                         "tokens.")
    if kept is None:
        raise ValueError("a pair longer than max_length needs its tokenizer's truncation (TokenizedText.pair_kept); "
                         "tokenise it with that max_length.")
    middle = pair_middle(special, before)
    b_start = middle + between
    keep_a, keep_b = kept
    keep = np.concatenate([np.arange(before + keep_a), np.arange(middle, b_start + keep_b), np.arange(n - after, n)])
    return keep, np.ones(len(keep), dtype=bool)


def window_segments(text: TokenizedText, window: Window) -> np.ndarray:
    """Which segment each of a window's tokens is counted in: 1 for A (or a single text), 2 for B, 0 for none.

    0 marks special tokens and tokens that another window counts. Segments are the
    stretches between special tokens (every content token after the special tokens
    between a pair's sides is B's, whether there is one of them or two), so this
    needs no token types.
    """
    special = text.special[window.token_indices]
    return np.where(window.counted & ~special, np.minimum(np.cumsum(special), 2), 0)


def make_windows(tokenized: list[TokenizedText], max_length: int, strategy: str, stride: int,
                 pair_layout: tuple = (1, 1, 1)) -> list[Window]:
    """Plan the windows of several texts.

    Parameters
    ----------
    tokenized : list of TokenizedText
    max_length, strategy, stride
        As in :func:`plan_windows`.
    pair_layout : (int, int, int), default=(1, 1, 1)
        As in :func:`plan_pair_window`.

    Returns
    -------
    list of Window
        Grouped by text, in text order.
    """
    windows = []
    # a text that fits (most do) is one window of all its tokens: read-only views of two shared arrays
    every, all_counted = np.arange(max_length), np.ones(max_length, dtype=bool)
    every.flags.writeable = all_counted.flags.writeable = False
    if strategy != "truncate" and any(text.type_ids is not None for text in tokenized[:1]):
        raise ValueError(f"long_text={strategy!r} works on single texts; sentence pairs are truncated.")
    for position, text in enumerate(tokenized):
        if len(text.ids) <= max_length:
            windows.append(Window(position, 0, every[: len(text.ids)], all_counted[: len(text.ids)]))
            continue
        if text.type_ids is not None:  # a sentence pair (all are, or none)
            planned = [plan_pair_window(text.special, max_length, pair_layout, text.pair_kept)]
        else:
            planned = plan_windows(text.special, max_length, strategy, stride)
        for k, (indices, counted) in enumerate(planned):
            windows.append(Window(position, k, indices, counted))
    return windows


#: A packed batch's padded layout (rows x longest, what its hidden states are unpacked to for the statistics) is
#: at most this many times its token budget: a few long windows among many short ones would otherwise make it huge.
PACKED_PADDED_FACTOR = 2


@dataclass
class BatchLimits:
    """How large a forward pass may be; lowered for the rest of a call after an out-of-memory error.

    Attributes
    ----------
    token_budget : int or None
        Most tokens in one batch: padded tokens (rows x longest), or with
        ``packed`` the real tokens (a packed batch has no padding to pay for), its
        padded layout then at most :data:`PACKED_PADDED_FACTOR` times the budget.
    max_rows : int or None
        Most windows in one batch.
    packed : bool, default=False
        Whether the budget counts real tokens.
    """

    token_budget: int | None = None
    max_rows: int | None = None
    packed: bool = False

    def tokens(self, lengths: np.ndarray) -> int:
        """What a batch of windows of these lengths (longest first) costs against the budget."""
        return int(np.sum(lengths)) if self.packed else len(lengths) * int(lengths[0])

    def rows(self, lengths: np.ndarray) -> int:
        """How many of these windows (their lengths, longest first) one batch takes, from the first; at least one."""
        cap = len(lengths) if self.max_rows is None else min(self.max_rows, len(lengths))
        if self.token_budget is not None and cap > 1:
            padded_budget = self.token_budget * (PACKED_PADDED_FACTOR if self.packed else 1)
            cap = min(cap, padded_budget // max(int(lengths[0]), 1))
            if self.packed:  # real tokens
                cap = min(cap, int(np.searchsorted(np.cumsum(lengths[:cap]), self.token_budget, side="right")))
        return max(1, cap)

    def lower(self, lengths: np.ndarray) -> None:
        """After a batch of windows of these lengths (longest first) ran out of memory: half of it from now on."""
        tokens = self.tokens(lengths)
        self.token_budget = max(1, min(self.token_budget or tokens, tokens) // 2)
        self.max_rows = max(1, min(self.max_rows or len(lengths), len(lengths)) // 2)


class BatchCeiling:
    """The token budget a model's device ran out of memory above, kept for every later call of that model.

    After an out-of-memory error a call lowers its own :class:`BatchLimits` and then
    this ceiling, so the next call (in any thread) starts below the size that failed
    instead of failing again. Only the token budget is kept: rows are capped per
    call by what a batch hands back.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.token_budget: int | None = None

    def cap(self, token_budget: int | None) -> int | None:
        """``token_budget``, at most the ceiling."""
        with self._lock:
            if self.token_budget is None:
                return token_budget
            return self.token_budget if token_budget is None else min(token_budget, self.token_budget)

    def forget(self) -> None:
        """No ceiling (as a freshly loaded model has none)."""
        with self._lock:
            self.token_budget = None

    def lower(self, token_budget: int | None) -> None:
        """Remember a budget lowered after an out-of-memory error."""
        if token_budget is None:
            return
        with self._lock:
            self.token_budget = token_budget if self.token_budget is None else min(self.token_budget, token_budget)


def length_sorted_batches(lengths: np.ndarray, limits: BatchLimits) -> Iterator[np.ndarray]:
    """Group positions into batches of similar length, longest first.

    Batches are cut one at a time from ``limits`` as they stand then, so a budget
    lowered while the batches run applies to every later batch.

    Parameters
    ----------
    lengths : ndarray of shape (n,)
        Token count of each window.
    limits : BatchLimits
        A window longer than the token budget still gets a batch of its own.

    Yields
    ------
    ndarray of int
        Positions into ``lengths``; together they cover every position once.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        ahead = len(order) - start if limits.max_rows is None else limits.max_rows  # at most these are looked at
        rows = limits.rows(lengths[order[start : start + ahead]])
        yield order[start : start + rows]
        start += rows


def segment_bounds(special: np.ndarray, pairs: bool) -> np.ndarray:
    """Each segment's opening and closing special token in a window, ``(segments, 2)``.

    A single text: its first and last tokens. A pair: A between the first special
    token and the next, B between the last but one and the last (in BERT's layout
    the middle [SEP] both closes A and opens B; in RoBERTa's, ``</s></s>``, each
    side has its own). A layout the statistics refuse (token vectors, which use no
    bounds, still run) gets the window's ends.
    """
    specials = np.flatnonzero(special)
    if pairs and len(specials) >= 3:
        return np.array([[specials[0], specials[1]], [specials[-2], specials[-1]]])
    if pairs:
        return np.array([[0, len(special) - 1]] * 2)
    return np.array([[0, len(special) - 1]])


@dataclass(frozen=True)
class PaddedBatch:
    """Some windows padded to their longest, on the right: what every runtime's statistics are reduced in.

    Attributes
    ----------
    input_ids, attention_mask : Tensor of int64, shape (n, longest)
    content_mask : Tensor of int64, shape (n, longest)
        The segment (1, or 2 for a pair's B) of each non-special token the window
        counts; 0 elsewhere.
    bounds : Tensor of int64, shape (n, segments, 2)
        Positions of each segment's opening and closing special tokens.
    token_type_ids : Tensor of int64 or None
        For sentence pairs.
    has_padding : bool
        Whether any row is shorter than the longest (known on the host: a batch
        without padding runs with no attention mask at all).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    content_mask: torch.Tensor
    bounds: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    has_padding: bool = True

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.attention_mask.sum())


def collate(tokenized: list[TokenizedText], windows: list[Window], pad_token_id: int) -> PaddedBatch:
    """Pad some windows to their longest, on the right (:func:`laid_out`'s padded batch)."""
    return laid_out(tokenized, windows, pad_token_id)[0]


@dataclass(frozen=True)
class EndToEnd:
    """A batch's windows' tokens laid end to end, without padding (what a packed batch is made of).

    Attributes
    ----------
    ids : ndarray of int64, shape (total,)
    type_ids : ndarray of int64, shape (total,), or None
        For sentence pairs.
    lengths, starts : ndarray of int64, shape (n,)
        Each window's token count and where its tokens start.
    """

    ids: np.ndarray
    type_ids: np.ndarray | None
    lengths: np.ndarray
    starts: np.ndarray


def laid_out(tokenized: list[TokenizedText], windows: list[Window], pad_token_id: int
             ) -> tuple[PaddedBatch, EndToEnd]:
    """Pad some windows to their longest, on the right.

    The whole batch is made with a few array operations over its windows' tokens laid
    end to end (no per-token and little per-window Python: on a GPU the host makes a
    batch while the device runs the one before, and must keep up with it). Each
    window's content segments and bounds are those of :func:`window_segments` and
    :func:`segment_bounds`.

    Parameters
    ----------
    tokenized : list of TokenizedText
        The texts the windows index into.
    windows : list of Window
        The batch, in batch order.
    pad_token_id : int

    Returns
    -------
    (PaddedBatch, EndToEnd)
        The batch, on the CPU, and its tokens without padding.
    """
    texts = [tokenized[w.text] for w in windows]
    pairs = texts[0].type_ids is not None
    whole = [len(w.token_indices) == len(t.ids) for w, t in zip(windows, texts)]  # the common case: no gather
    lengths = np.fromiter((len(w.token_indices) for w in windows), dtype=np.int64, count=len(windows))
    n, width = len(windows), int(lengths.max())

    def laid_end_to_end(field):
        return np.concatenate([getattr(t, field) if all_of else getattr(t, field)[w.token_indices]
                               for w, t, all_of in zip(windows, texts, whole)])

    ids, special = laid_end_to_end("ids"), laid_end_to_end("special")
    # a window that holds its whole text counts every token (only the windows of a cut text share tokens)
    counted = (np.ones(len(ids), dtype=bool) if all(whole)
               else np.concatenate([w.counted for w in windows]))
    real = np.arange(width) < lengths[:, None]  # filled row by row, in the order the tokens are laid out
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # segments: special tokens seen so far within the window (1 for A, 2 for B), on counted content tokens only
    seen = np.cumsum(special)
    seen -= np.repeat(np.append(0, seen)[starts], lengths)
    input_ids = np.full((n, width), pad_token_id, dtype=np.int64)
    input_ids[real] = ids
    content_mask = np.zeros((n, width), dtype=np.int64)
    content_mask[real] = np.where(counted & ~special, np.minimum(seen, 2), 0)
    type_ids = flat_types = None
    if pairs:
        flat_types = laid_end_to_end("type_ids")
        type_ids = np.zeros((n, width), dtype=np.int64)
        type_ids[real] = flat_types
    padded = PaddedBatch(
        torch.from_numpy(input_ids), torch.from_numpy(real.astype(np.int64)), torch.from_numpy(content_mask),
        torch.from_numpy(_bounds(special, starts, lengths, pairs)),
        None if type_ids is None else torch.from_numpy(type_ids), bool((lengths < width).any()),
    )
    return padded, EndToEnd(ids, flat_types, lengths, starts)


def _bounds(special: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pairs: bool) -> np.ndarray:
    """:func:`segment_bounds` of every window of a batch at once, from their special-token masks laid end to end
    (``starts``, ``lengths``: where each window's tokens are)."""
    n = len(lengths)
    if not pairs:
        return np.stack([np.zeros(n, dtype=np.int64), lengths - 1], axis=1)[:, None, :]
    at = np.flatnonzero(special)
    row = np.searchsorted(starts, at, side="right") - 1  # the window each special token is in
    local = np.append(at - starts[row], 0)  # its position there (one spare entry: rows without any index it)
    count = np.bincount(row, minlength=n)
    first = np.cumsum(count) - count
    last = first + count - 1
    ends = np.stack([np.zeros(n, dtype=np.int64), lengths - 1], axis=1)
    enough = (count >= 3)[:, None]  # fewer than three special tokens: the window's ends, as segment_bounds gives

    def local_at(index):
        return local[np.clip(index, 0, len(local) - 1)]

    a = np.where(enough, np.stack([local_at(first), local_at(first + 1)], axis=1), ends)
    b = np.where(enough, np.stack([local_at(last - 1), local_at(last)], axis=1), ends)
    return np.stack([a, b], axis=1).astype(np.int64)
