"""skbert: contextual BERT embeddings as a scikit-learn transformer."""

from ._embedder import BertEmbedder
from ._report import TransformReport
from ._study import search_table
from ._tokens import TokenEmbedding, TokenEmbeddings

__version__ = "0.1.0"

__all__ = ["BertEmbedder", "TokenEmbedding", "TokenEmbeddings", "TransformReport", "search_table", "__version__"]
