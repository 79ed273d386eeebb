"""The BERT family: eight families, each with a tokenizer of its own kind, against a plain transformers loop.

The reference here tokenises with the family's tokenizer (``tokenizer(a, b, truncation=True)``,
Hugging Face's ``longest_first``), runs the model on one input at a time with no padding, and
pools with numpy over the positions the tokenizer's own special-token mask and sequence ids give.
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from families import FAMILIES, MAX_POSITIONS, write_family
from skbert import BertEmbedder
from skbert._batching import TextTokenizer, plan_pair_window
from skbert._layout import special_layout

TEXTS = ["The river bank was muddy.", "She paid the loan at the bank.", "", "a",
         "We sat on the bank of the river and watched the water.", "money money money"]
PAIRS = [("The river bank.", "She paid the loan."), ("", "money"), ("a", ""), ("", ""),
         ("We sat on the bank of the river and watched the water and the fish.", "a loan")]
LONG = " ".join(["the river bank was muddy and we sat on it"] * 12)
ATOL = 2e-5
NAMES = [family.name for family in FAMILIES]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family.name: write_family(root / family.name, family) for family in FAMILIES}


class Plain:
    """A plain transformers loop: one input at a time, float32, pooled over the tokenizer's own positions."""

    def __init__(self, path):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.token_types = getattr(self.model.config, "type_vocab_size", 0) > 1

    def encode(self, text, pair=None, max_length=None):
        """Hidden states, each token's side (-1 for special tokens) and the encoding. Batched calls, as
        ``tokenizer([a], [b])``: the one-pair call drops an empty B."""
        encoding = self.tokenizer([text], None if pair is None else [pair], truncation=max_length is not None,
                                  max_length=max_length, return_token_type_ids=True)
        ids = torch.tensor(encoding["input_ids"])
        types = torch.tensor(encoding["token_type_ids"]) if self.token_types else None
        with torch.no_grad():
            states = self.model(input_ids=ids, token_type_ids=types, output_hidden_states=True).hidden_states
        sides = np.array([-1 if s is None else s for s in encoding.sequence_ids(0)])
        return np.stack([h[0].double().numpy() for h in states]), sides, {"input_ids": encoding["input_ids"][0]}

    def pool(self, states, positions, mode):
        chosen = states[:, positions]
        return chosen.mean(axis=1) if mode == "mean" else chosen.max(axis=1)


def _fit(path, texts, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation notices
        embedder = BertEmbedder(path, precision="float32", cache=None, **params).fit(texts[:1])
        return embedder, embedder.transform(texts)


@pytest.mark.parametrize("name", NAMES)
def test_single_texts_match_a_plain_loop_for_cls_mean_and_max(models, name):
    plain = Plain(models[name])
    embedder, got = _fit(models[name], TEXTS, pooling=("cls", "mean", "max"), layers=(0, -1))
    for row, text in enumerate(TEXTS):
        states, sides, _ = plain.encode(text)
        content = np.flatnonzero(sides == 0)
        content = content if content.size else np.arange(len(sides))  # an empty text: its special tokens
        want = np.concatenate([states[[0, -1], 0].reshape(-1), plain.pool(states[[0, -1]], content, "mean").reshape(-1),
                               plain.pool(states[[0, -1]], content, "max").reshape(-1)])
        assert_allclose(got[row], want, atol=ATOL, err_msg=f"{name} row {row}")


@pytest.mark.parametrize("name", NAMES)
def test_pairs_in_the_familys_own_layout_match_a_plain_loop(models, name):
    """Joint, each side and the sides compared, special tokens excluded and included, against positions
    taken from the tokenizer's sequence ids (A's special tokens: the one before it and the one after it;
    B's: the one before it and the last)."""
    plain = Plain(models[name])
    for include in (False, True):
        embedder, got = _fit(models[name], PAIRS, pairs=True, pooling="mean_max", segments=("joint", "a", "b"),
                             include_special_tokens=include, layers=-1)
        for row, (a, b) in enumerate(PAIRS):
            states, sides, _ = plain.encode(a, b)
            special = np.flatnonzero(sides == -1)
            middle = special[1]  # the first special token after the one before A
            b_open = special[-2]
            a_side = np.flatnonzero(sides == 0)
            b_side = np.flatnonzero(sides == 1)
            if include or not a_side.size:
                a_side = np.concatenate([a_side, [special[0], middle]])
            if include or not b_side.size:
                b_side = np.concatenate([b_side, [b_open, special[-1]]])
            joint = np.arange(len(sides)) if include or not (sides >= 0).any() else np.flatnonzero(sides >= 0)
            want = np.concatenate([plain.pool(states[-1:], positions, mode).reshape(-1)
                                   for positions in (joint, a_side, b_side) for mode in ("mean", "max")])
            assert_allclose(got[row], want, atol=ATOL, err_msg=f"{name} row {row} include={include}")


@pytest.mark.parametrize("name", NAMES)
def test_pair_truncation_is_longest_first_in_every_layout(models, name):
    """Our window of a pair equals the tokenizer's own truncation, for every small split of lengths."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models[name])
    layout = special_layout(tokenizer)
    word = "bank "
    for n_a in range(0, 7):
        for n_b in range(0, 7):
            a, b = (word * n_a).strip(), (word * n_b).strip()
            # batched calls, as ``tokenizer([a], [b])``: the one-pair call drops an empty B
            full = tokenizer([a], [b], return_special_tokens_mask=True)
            ids, special = np.array(full["input_ids"][0]), np.array(full["special_tokens_mask"][0], bool)
            for cut in (1, 2, 3, 5):
                max_length = len(ids) - cut
                if max_length < layout.pair_specials + 1:
                    continue
                want = tokenizer([a], [b], truncation="longest_first", max_length=max_length)["input_ids"][0]
                kept = TextTokenizer(tokenizer, layout)([(a, b)], max_length)[0].pair_kept
                keep, _ = plan_pair_window(special, max_length, layout.pair, kept)
                assert ids[keep].tolist() == want, (name, n_a, n_b, max_length)


@pytest.mark.parametrize("name", NAMES)
def test_long_texts_use_the_models_own_window(models, name):
    plain = Plain(models[name])
    embedder, truncated = _fit(models[name], [LONG], pooling="mean")
    assert embedder.max_length_ == MAX_POSITIONS  # RoBERTa's table has two more rows: its positions are offset
    states, sides, _ = plain.encode(LONG, max_length=MAX_POSITIONS)
    assert_allclose(truncated[0], plain.pool(states[-1:], np.flatnonzero(sides == 0), "mean")[0], atol=ATOL)
    # head_tail: [CLS], the first quarter of the window's text tokens, the rest from the end, [SEP]
    ids = plain.tokenizer(LONG)["input_ids"]
    width = MAX_POSITIONS - 2
    kept = [ids[0]] + ids[1:-1][: width // 4] + ids[1:-1][-(width - width // 4):] + [ids[-1]]
    with torch.no_grad():
        states = plain.model(input_ids=torch.tensor([kept]), output_hidden_states=True).hidden_states[-1][0].double()
    _, got = _fit(models[name], [LONG, "a"], long_text="head_tail", pooling="mean")
    assert_allclose(got[0], states[1:-1].mean(0).numpy(), atol=ATOL)
    _, got = _fit(models[name], [LONG, "a"], long_text="chunk", pooling="mean")
    assert got.shape == (2, 32) and np.isfinite(got).all()
    chunked, _ = _fit(models[name], [LONG], long_text="chunk")
    records = chunked.transform_tokens([LONG])
    assert len(records[0]) == len(plain.tokenizer(LONG)["input_ids"])  # every token, each once


@pytest.mark.parametrize("name", NAMES)
def test_without_a_tokenizer_limit_the_window_is_what_the_position_table_holds(tmp_path, name):
    """RoBERTa's positions start after the padding index: its 66-row table holds 64 tokens, not 66.
    DeBERTa's relative positions have no table to bound the window: max_length may exceed it."""
    family = FAMILIES[NAMES.index(name)]
    path = write_family(tmp_path / name, family, tokenizer_limit=False)
    embedder, got = _fit(path, [LONG * 3], pooling="mean")
    assert embedder.max_length_ == MAX_POSITIONS and np.isfinite(got).all()
    if name == "deberta-v2":
        longer, got = _fit(path, [LONG * 3], pooling="mean", max_length=2 * MAX_POSITIONS)
        assert longer.max_length_ == 2 * MAX_POSITIONS and np.isfinite(got).all()
    else:
        with pytest.raises(ValueError, match=f"max_length={MAX_POSITIONS + 1} exceeds the {MAX_POSITIONS} tokens"):
            BertEmbedder(path, max_length=MAX_POSITIONS + 1).fit(["a"])


@pytest.mark.parametrize("name", NAMES)
def test_token_lists_offsets_and_sides_are_the_tokenizers(models, name):
    plain = Plain(models[name])
    embedder, _ = _fit(models[name], PAIRS[:1], pairs=True)
    a, b = PAIRS[0]
    record = embedder.transform_tokens([(a, b)])[0]
    states, sides, encoding = plain.encode(a, b)
    assert record.tokens == plain.tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert_allclose(record.vectors, states[-1], atol=ATOL)
    content = sides >= 0
    assert (record.segments[content] == sides[content]).all()  # 1 for B, in any layout (RoBERTa has no types)
    offsets = plain.tokenizer([a], [b], return_offsets_mapping=True)["offset_mapping"][0]
    assert record.offsets.tolist() == [list(span) for span in offsets]  # each side's own characters
    single, _ = _fit(models[name], [a])
    text = single.transform_tokens([a])[0]
    assert text.offsets.tolist() == [list(span) for span in plain.tokenizer(a, return_offsets_mapping=True)[
        "offset_mapping"]]
    assert text.special_mask.tolist() == [bool(s) for s in plain.tokenizer(a, return_special_tokens_mask=True)[
        "special_tokens_mask"]]


@pytest.mark.parametrize("name", NAMES)
def test_packed_is_exact_or_falls_back_to_padded(models, name):
    from skbert._models import PACKED_FAMILIES

    params = dict(pooling=("cls", "mean", "max"), layers="all")
    _, padded = _fit(models[name], TEXTS + [LONG], attention="padded", **params)
    exact = name in PACKED_FAMILIES
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedder = BertEmbedder(models[name], attention="packed", precision="float32", cache=None, **params)
        packed = embedder.fit(TEXTS).transform(TEXTS + [LONG])
    notes = [str(w.message) for w in caught if "not exact for this model's family" in str(w.message)]
    assert bool(notes) != exact
    assert_allclose(packed, padded, atol=1e-5)
    pairs_params = dict(pairs=True, pooling="mean_max", segments=("joint", "a", "b"))
    _, padded_pairs = _fit(models[name], PAIRS, attention="padded", **pairs_params)
    _, packed_pairs = _fit(models[name], PAIRS, attention="packed", **pairs_params)
    assert_allclose(packed_pairs, padded_pairs, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_pair_and_its_concatenation_never_share_a_cache_entry(models, name):
    pair_embedder = BertEmbedder(models[name], pairs=True, precision="float32").fit(PAIRS[:1])
    single = BertEmbedder(models[name], precision="float32").fit(["a"])
    pair_embedder.transform(PAIRS[:2])
    joined = [a + b for a, b in PAIRS[:2]] + [f"{a} {b}" for a, b in PAIRS[:2]]
    assert single.transform_with_report(joined)[1].n_encoded == len(set(joined))
    assert pair_embedder.transform_with_report(PAIRS[:2])[1].n_encoded == 0


def _tokenizer_folder(path, *, pair_template=True, specials=True, pair="[CLS] $A [SEP] $B:1 [SEP]:1"):
    """A tiny BERT whose tokenizer has no pair template, no special tokens at all, or another pair template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(TEXTS * 3, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    if specials:
        ids = [("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))]
        pair = "[CLS] $A $B [SEP]" if not pair_template else pair
        tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair=pair,
                                                                 special_tokens=ids)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(fast), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    return str(path)


def test_a_tokenizer_without_a_pair_template_or_special_tokens_is_refused_at_fit(tmp_path):
    joined = _tokenizer_folder(tmp_path / "joined", pair_template=False)
    BertEmbedder(joined).fit(["a"])  # single texts: fine
    with pytest.raises(ValueError, match=r"no pair template that marks where A ends and B starts.*pairs=False"):
        BertEmbedder(joined, pairs=True).fit([("a", "b")])
    odd = _tokenizer_folder(tmp_path / "odd", pair="[CLS] $A [SEP] [SEP] [SEP] $B:1 [SEP]:1")
    with pytest.raises(ValueError, match=r"lays out a pair as '\[CLS\] A \[SEP\] \[SEP\] \[SEP\] B \[SEP\]' "
                                         r"\(1 special token\(s\) before A, 3 between, 1 after B\)"):
        BertEmbedder(odd, pairs=True).fit([("a", "b")])
    bare = _tokenizer_folder(tmp_path / "bare", specials=False)
    with pytest.raises(ValueError, match=r"lays out a text as 'text' \(0 special token\(s\) before it, 0 after\)"):
        BertEmbedder(bare).fit(["a"])


@pytest.mark.parametrize("name", NAMES)
def test_a_call_runs_only_up_to_the_highest_layer_it_needs(tmp_path, name):
    """layers=1 of 3 with cache=None gives the numbers of a full pass (the cache's, which computes every
    layer), token vectors too; and runs encoder layer 1 alone where the family is allowed to stop early
    (PARTIAL_DEPTH_FAMILIES)."""
    from skbert._depth import PARTIAL_DEPTH_FAMILIES

    family = FAMILIES[NAMES.index(name)]
    path = write_family(tmp_path / name, family, layers=3)
    embedder, got = _fit(path, TEXTS + [LONG], pooling=("cls", "mean", "max"), layers=1)
    full = BertEmbedder(path, precision="float32", pooling=("cls", "mean", "max"), layers=1, cache="memory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = full.fit(TEXTS).transform(TEXTS + [LONG])
    assert_allclose(got, want, atol=1e-3)  # the cached pass keeps float16 entries
    loaded = embedder._load()
    calls = []
    name_of_list = [n for n, m in loaded.model.named_modules()
                    if isinstance(m, torch.nn.ModuleList) and len(m) == 3]
    layers = loaded.model.get_submodule(name_of_list[0]) if name_of_list else []
    hooks = [layer.register_forward_hook(lambda module, args, out, k=k: calls.append(k))
             for k, layer in enumerate(layers)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = embedder.transform(TEXTS)
            tokens = embedder.transform_tokens(TEXTS[:2])
    finally:
        for hook in hooks:
            hook.remove()
    assert_allclose(again, got[: len(TEXTS)], atol=1e-6)
    if family.name in PARTIAL_DEPTH_FAMILIES:
        assert calls and set(calls) == {0}  # hidden state 1 is encoder layer 0's output: layers 1 and 2 never ran
    plain = Plain(path)
    for record, text in zip(tokens, TEXTS[:2]):
        states, _, _ = plain.encode(text)
        assert_allclose(record.vectors, states[1], atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_a_shallow_call_first_leaves_later_full_passes_right(tmp_path, name):
    """A model's first forward made at a shallow depth (token vectors at layers=0, then a pooled
    layers=1 call) must not change what later calls on the same loaded model read at the top layer:
    transformers installs its hidden-state hooks at the first forward, and a view made before that
    once doubled them on the shared layers (MiniLM's top layer then came out up to 2.9 off)."""
    family = FAMILIES[NAMES.index(name)]
    path = write_family(tmp_path / name, family, layers=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BertEmbedder(path, precision="float32", cache=None, layers=0).fit(TEXTS[:1]).transform_tokens(TEXTS[:2])
        _fit(path, TEXTS, pooling="mean", layers=1)
    _, got = _fit(path, TEXTS, pooling=("cls", "mean"), layers=(1, -1))
    plain = Plain(path)
    for row, text in enumerate(TEXTS):
        states, sides, _ = plain.encode(text)
        content = np.flatnonzero(sides == 0)
        content = content if content.size else np.arange(len(sides))
        want = np.concatenate([states[[1, -1], 0].reshape(-1), plain.pool(states[[1, -1]], content, "mean").reshape(-1)])
        assert_allclose(got[row], want, atol=ATOL, err_msg=f"{name} row {row}")


def test_a_view_that_would_read_other_numbers_is_never_used(tmp_path, monkeypatch):
    """The check made when a cut model is first built: a view whose hidden states differ from the whole
    model's (here one built from the last layers instead of the first) is dropped for the whole model."""
    import skbert._depth as depth_module

    def wrong(model, name, depth):
        view = copy.copy(model)
        view._modules = dict(view._modules)
        encoder = copy.copy(view._modules["encoder"])
        encoder._modules = dict(encoder._modules)
        encoder._modules["layer"] = torch.nn.ModuleList(list(encoder._modules["layer"])[-depth:])
        view._modules["encoder"] = encoder
        return view

    monkeypatch.setattr(depth_module, "_view", wrong)
    path = write_family(tmp_path / "bert", FAMILIES[NAMES.index("bert")], layers=3)
    embedder, got = _fit(path, TEXTS, pooling="mean", layers=1)
    loaded = embedder._load()
    assert loaded.view(1) is loaded.model
    plain = Plain(path)
    for row, text in enumerate(TEXTS):
        states, sides, _ = plain.encode(text)
        content = np.flatnonzero(sides == 0)
        content = content if content.size else np.arange(len(sides))
        assert_allclose(got[row], plain.pool(states[[1]], content, "mean").reshape(-1), atol=ATOL)


POOLER_FAMILIES = [name for name in NAMES if name in ("bert", "albert", "roberta", "xlm-roberta")]


@pytest.mark.parametrize("name", NAMES)
def test_the_pooler_is_the_models_own_packed_padded_and_cached(models, name):
    """One pooler for every layout: the model's own ``pooler_output`` of a plain forward (ALBERT's is a
    Linear with an activation of its own), through padded and packed batches, with and without the cache."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(models[name]).eval()
    if getattr(model, "pooler", None) is None:
        with pytest.raises(ValueError, match="needs pooler weights"):
            BertEmbedder(models[name], pooling="pooler").fit(TEXTS[:1])
        assert name not in POOLER_FAMILIES
        return
    assert name in POOLER_FAMILIES
    tokenizer = AutoTokenizer.from_pretrained(models[name])
    with torch.no_grad():
        want = np.stack([model(**tokenizer(text, return_tensors="pt")).pooler_output[0].numpy() for text in TEXTS])
    from skbert._cache import clear_stores

    for attention in ("padded", "packed"):
        for cache in (None, "memory"):
            clear_stores()  # each cached call encodes (a cached call pools every layer's statistics)
            embedder = BertEmbedder(models[name], pooling=("pooler", "cls"), attention=attention, cache=cache,
                                    precision="float32", batch_size=4).fit(TEXTS[:1])
            got = embedder.transform(TEXTS)[:, : want.shape[1]]
            assert_allclose(got, want, atol=1e-5, err_msg=f"{attention}, cache={cache}")
