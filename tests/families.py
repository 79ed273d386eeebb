"""Tiny random models of the BERT family, each with a tokenizer of its own kind trained here.

Every family gets the tokenizer its real checkpoints use (WordPiece for BERT,
DistilBERT and ELECTRA; byte-level BPE with ``<s>``/``</s>`` for RoBERTa; Unigram for
ALBERT, DeBERTa-v2 and XLM-RoBERTa; BPE with [CLS]/[SEP] for ModernBERT), trained by
the ``tokenizers`` library on a few hundred texts in well under a second, and the
special-token template of the family (``[CLS] A [SEP] B [SEP]`` with token types 1
for B, or ``<s> A </s></s> B </s>`` with none). Nothing is downloaded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from support import TEXTS, WORDS


@dataclass(frozen=True)
class Family:
    """How to build one family's tiny model.

    Attributes
    ----------
    name : str
    kind : {"wordpiece", "bpe", "bytelevel", "unigram"}
        The tokenizer model.
    bert_style : bool
        [CLS]/[SEP] (True) or <s>/</s> (False).
    token_types : bool
        Whether the pair template gives B token type 1 (and the model has type embeddings).
    """

    name: str
    kind: str
    bert_style: bool
    token_types: bool


FAMILIES = [
    Family("bert", "wordpiece", True, True),
    Family("distilbert", "wordpiece", True, False),
    Family("albert", "unigram", True, True),
    Family("electra", "wordpiece", True, True),
    Family("deberta-v2", "unigram", True, True),
    Family("roberta", "bytelevel", False, False),
    Family("xlm-roberta", "unigram", False, False),
    Family("modernbert", "bpe", True, False),
]

MAX_POSITIONS = 64


def _corpus() -> list[str]:
    rows = [" ".join(words) for words in itertools.permutations(WORDS[:9], 4)][:300]
    return rows + [t for t in TEXTS if t.strip()] + ["Riverbanks flood. The bank paid!"]


def _tokenizer(family: Family, limit: bool = True):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if family.bert_style:
        cls, sep, pad, unk, mask = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"
        specials = [pad, unk, cls, sep, mask]
    else:
        cls, sep, pad, unk, mask = "<s>", "</s>", "<pad>", "<unk>", "<mask>"
        specials = [cls, pad, sep, unk, mask]
    if family.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    elif family.kind == "bytelevel":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif family.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=250, special_tokens=specials, unk_token=unk)
    tokenizer.train_from_iterator(_corpus(), trainer)
    ids = {token: tokenizer.token_to_id(token) for token in (cls, sep)}
    if family.kind == "bytelevel":
        tokenizer.post_processor = processors.RobertaProcessing((sep, ids[sep]), (cls, ids[cls]),
                                                                add_prefix_space=False)
    else:
        b_type = 1 if family.token_types else 0
        pair = f"{cls} $A {sep} $B:{b_type} {sep}:{b_type}" if family.bert_style else f"{cls} $A {sep} {sep} $B {sep}"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=pair, special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
    from transformers import PreTrainedTokenizerFast

    names = dict(cls_token=cls, sep_token=sep, pad_token=pad, unk_token=unk, mask_token=mask)
    if not family.bert_style:
        names.update(bos_token=cls, eos_token=sep)
    limits = {"model_max_length": MAX_POSITIONS} if limit else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **limits, **names)


def _config(family: Family, tokenizer, layers: int):
    import transformers

    common = dict(vocab_size=len(tokenizer), num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    if family.name == "bert":
        return transformers.BertConfig(hidden_size=32, max_position_embeddings=MAX_POSITIONS, **common)
    if family.name == "electra":
        return transformers.ElectraConfig(hidden_size=32, embedding_size=16, max_position_embeddings=MAX_POSITIONS,
                                          **common)
    if family.name == "albert":
        return transformers.AlbertConfig(hidden_size=32, embedding_size=16, max_position_embeddings=MAX_POSITIONS,
                                         **common)
    if family.name == "distilbert":
        return transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=layers, n_heads=4,
                                             hidden_dim=64, max_position_embeddings=MAX_POSITIONS,
                                             pad_token_id=tokenizer.pad_token_id)
    if family.name == "deberta-v2":
        return transformers.DebertaV2Config(hidden_size=32, max_position_embeddings=MAX_POSITIONS,
                                            relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                            pos_att_type=["p2c", "c2p"], position_biased_input=False, **common)
    if family.name in ("roberta", "xlm-roberta"):
        config = transformers.RobertaConfig if family.name == "roberta" else transformers.XLMRobertaConfig
        # positions start after the padding index, as in the real checkpoints (514 positions hold 512 tokens)
        return config(hidden_size=32, max_position_embeddings=MAX_POSITIONS + tokenizer.pad_token_id + 1,
                      type_vocab_size=1, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                      **common)
    if family.name == "modernbert":
        return transformers.ModernBertConfig(hidden_size=32, max_position_embeddings=MAX_POSITIONS,
                                             global_attn_every_n_layers=2, local_attention=16,
                                             cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                                             bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                             **common)
    raise ValueError(family.name)


def write_family(path, family: Family, layers: int = 2, seed: int = 0, tokenizer_limit: bool = True) -> str:
    """Save a tiny random model of ``family`` and its trained tokenizer under ``path``; returns the folder.

    ``tokenizer_limit=False`` leaves the tokenizer without a length limit (as some hub checkpoints do), so
    only the model's position table bounds the window.
    """
    from transformers import AutoModel

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(family, tokenizer_limit)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    AutoModel.from_config(_config(family, tokenizer, layers)).save_pretrained(path)
    return str(path)
