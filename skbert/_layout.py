"""Where a tokenizer puts its special tokens: the layout of a single text and of a pair.

Every BERT-family tokenizer wraps a text in special tokens, and a sentence pair in
its own template: ``[CLS] A [SEP] B [SEP]`` (BERT, DistilBERT, ALBERT, ELECTRA,
DeBERTa, ModernBERT), ``<s> A </s></s> B </s>`` (RoBERTa, XLM-RoBERTa). The layout
is read off the tokenizer itself, by tokenising a probe text and a probe pair and
counting the special tokens before, between and after the sides, never assumed.

What skbert's statistics need (:mod:`skbert._statistics`): one special token before
a text and one after it, and for a pair one before A, one after B, and one or two
between them. With one between (BERT), it closes A and opens B; with two
(RoBERTa), the first closes A and the second opens B. Each side's opening and
closing tokens are what "special tokens included" counts for that side; the whole
pair counts every special token once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpecialLayout:
    """The special tokens a tokenizer adds, as counts.

    Attributes
    ----------
    single : tuple of (int, int)
        Special tokens before and after a single text.
    pair : tuple of (int, int, int) or None
        Before A, between A and B, after B; None when the tokenizer has no pair template.
    single_template, pair_template : str
        How the layout reads, e.g. ``"[CLS] text [SEP]"``, ``"<s> A </s></s> B </s>"``.
    """

    single: tuple
    pair: tuple | None
    single_template: str
    pair_template: str | None

    @property
    def shared_boundary(self) -> bool:
        """Whether one special token both closes A and opens B (BERT's middle [SEP])."""
        return self.pair is not None and self.pair[1] == 1

    @property
    def pair_specials(self) -> int:
        """Special tokens a pair carries."""
        return 0 if self.pair is None else sum(self.pair)


def _encode(tokenizer, *sides) -> tuple[list, np.ndarray]:
    encoded = tokenizer(*sides, add_special_tokens=True, return_special_tokens_mask=True, truncation=False)
    return tokenizer.convert_ids_to_tokens(encoded["input_ids"]), np.asarray(encoded["special_tokens_mask"], bool)


def _counts(special: np.ndarray) -> list[int]:
    """Lengths of the runs of special tokens: before the first content token, between content runs, after the last."""
    runs, count = [], 0
    for flag in special:
        if flag:
            count += 1
        else:
            if count or not runs:
                runs.append(count)
            count = 0
    runs.append(count)
    return runs


def _describe(tokens: list[str], special: np.ndarray, names: tuple[str, ...]) -> str:
    """``"<s> A </s></s> B </s>"``: special tokens as they are, each run of content tokens by its side's name."""
    words, side, in_content = [], 0, False
    for token, flag in zip(tokens, special):
        if flag:
            words.append(token)
            in_content = False
        elif not in_content:
            words.append(names[min(side, len(names) - 1)])
            side, in_content = side + 1, True
    return " ".join(words)


def special_layout(tokenizer) -> SpecialLayout:
    """Read the special-token layout off a tokenizer, by tokenising a probe text and a probe pair.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase

    Returns
    -------
    SpecialLayout
    """
    probe_a, probe_b = "river", "money"
    tokens, special = _encode(tokenizer, probe_a)
    runs = _counts(special)
    single = (runs[0], runs[-1]) if len(runs) == 2 else (runs[0], sum(runs[1:]))
    single_template = _describe(tokens, special, ("text",))
    pair = pair_template = None
    try:
        tokens, special = _encode(tokenizer, probe_a, probe_b)
    except Exception:  # a tokenizer that takes no second sequence
        tokens = None
    if tokens is not None:
        runs = _counts(special)
        if len(runs) == 3:
            pair = tuple(runs)
            pair_template = _describe(tokens, special, ("A", "B"))
        elif special.any():  # e.g. the sides run together: no place where one ends and the other starts
            pair_template = " ".join(t if s else "·" for t, s in zip(tokens, special))
    return SpecialLayout(single, pair, single_template, pair_template)


def check_layout(layout: SpecialLayout, pairs: bool, model_name) -> None:
    """Refuse a layout skbert cannot pool exactly, naming what is missing and what would work.

    Raises
    ------
    ValueError
        For single texts: not exactly one special token before and one after the
        text. For pairs: no pair template, or not one special token before A, one
        or two between the sides and one after B.
    """
    works = ("'[CLS] text [SEP]' and, for pairs, '[CLS] A [SEP] B [SEP]' or '<s> A </s></s> B </s>' "
             "(the templates of BERT, DistilBERT, ALBERT, ELECTRA, DeBERTa, ModernBERT, RoBERTa and XLM-RoBERTa)")
    if layout.single != (1, 1):
        raise ValueError(
            f"model {str(model_name)!r}: its tokenizer lays out a text as {layout.single_template!r} "
            f"({layout.single[0]} special token(s) before it, {layout.single[1]} after); skbert pools inputs with "
            f"one special token on each side, as in {works}."
        )
    if not pairs:
        return
    if layout.pair is None:
        seen = "" if layout.pair_template is None else f" (a pair comes out as {layout.pair_template!r})"
        raise ValueError(
            f"model {str(model_name)!r}: its tokenizer has no pair template that marks where A ends and B "
            f"starts{seen}, so pairs=True cannot tell the sides apart. Encode the texts apart (pairs=False), or "
            f"use a model whose tokenizer has one, as in {works}."
        )
    before, between, after = layout.pair
    if before != 1 or after != 1 or between not in (1, 2):
        raise ValueError(
            f"model {str(model_name)!r}: its tokenizer lays out a pair as {layout.pair_template!r} ({before} "
            f"special token(s) before A, {between} between, {after} after B); skbert pools pairs with one before, "
            f"one or two between and one after, as in {works}."
        )
