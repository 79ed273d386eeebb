"""skbert: contextual BERT embeddings as a scikit-learn transformer."""

from ._embedder import BertEmbedder

__version__ = "0.1.0"

__all__ = ["BertEmbedder", "__version__"]
