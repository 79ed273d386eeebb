import numpy as np
from transformers import AutoTokenizer

from skbert._batching import collate, length_sorted_batches, tokenize


def test_batches_cover_every_position_once_sorted_by_length():
    lengths = np.array([5, 2, 9, 2, 7, 1, 9])
    batches = length_sorted_batches(lengths, 3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(7))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert list(lengths[flat]) == sorted(lengths, reverse=True)


def test_tokenize_and_collate_pad_on_the_right(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["the river bank", "", "money " * 40]
    tokenized = tokenize(tokenizer, texts, max_length=10)
    assert list(tokenized.lengths) == [5, 2, 10]
    assert tokenized.input_ids[1] == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    batch = collate(tokenized, np.array([2, 0, 1]), tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (3, 10)
    assert batch["attention_mask"].sum(1).tolist() == [10, 5, 2]
    assert batch["input_ids"][1, 5:].tolist() == [tokenizer.pad_token_id] * 5
    assert batch["special_mask"][1].tolist() == [1, 0, 0, 0, 1] + [0] * 5
    assert batch["input_ids"][0, -1].item() == tokenizer.sep_token_id  # truncation keeps [SEP]
