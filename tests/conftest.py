"""Shared fixtures: tiny random BERTs saved to disk, so the real loading code runs.

Tests never reach a model hub: the offline switches below are set before
transformers is imported.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# what precision="auto" runs on a CPU: OpenVINO where installed (the default, as users get it) or, with
# SKBERT_TEST_RUNTIME=torch, torch eager; explicit precisions run torch eager either way; subprocesses inherit it
os.environ["SKBERT_RUNTIME"] = os.environ.get("SKBERT_TEST_RUNTIME", "openvino")

import string  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from support import TEXTS, WORDS  # noqa: E402


def _write_tiny_bert(path, *, pooler=True, seed=0, layers=3):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    vocab = specials + chars + ["##" + c for c in chars] + list(".,!?'-") + WORDS
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(path)
    return str(path)


#: ``SKBERT_TEST_AUTO=bfloat16`` runs the suite as on a CPU with native bfloat16 (AVX512-BF16, AMX),
#: whatever CPU runs it; the default runs it as on an AVX2-only CPU. Both must pass.
AUTO_IS_BFLOAT16 = os.environ.get("SKBERT_TEST_AUTO", "float32") == "bfloat16"


@pytest.fixture(autouse=True)
def auto_precision_is_fixed(monkeypatch):
    """``precision="auto"`` resolves the same way whatever CPU runs the tests: as on a CPU
    without native bfloat16 (the default), or with it (``SKBERT_TEST_AUTO=bfloat16``). A test
    that needs a precision asks for it; tests that compare with a float32 reference ask for
    float32 or use a 16-bit tolerance. Subprocesses and worker processes do not see this
    patch: tests that start them ask for ``precision="float32"``."""
    monkeypatch.setattr("skbert._device.cpu_has_native_bf16", lambda: AUTO_IS_BFLOAT16)


@pytest.fixture(autouse=True)
def empty_cache():
    """Every test starts from empty stores, so a test of encoding never compares a cached
    result with a cached result (stores are per process: made anew on first use)."""
    from skbert._cache import clear_stores

    clear_stores()
    yield
    clear_stores()


@pytest.fixture(autouse=True)
def no_batch_ceiling():
    """Models are shared by every test of the process: a budget one test lowered with a simulated
    out-of-memory error must not shrink the next test's batches."""
    from skbert import _models

    for loaded in list(_models._REGISTRY.values()):
        loaded.batch_ceiling.forget()
    yield


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Path of a 3-layer, 32-wide random BERT with a pooler and a WordPiece tokenizer."""
    return _write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_bert_no_pooler(tmp_path_factory):
    """Like ``tiny_bert`` but saved without pooler weights."""
    return _write_tiny_bert(tmp_path_factory.mktemp("tiny_bert_no_pooler"), pooler=False, seed=1)


@pytest.fixture
def texts():
    return list(TEXTS)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
