"""Quality measures: embedding fidelity (encoders); perplexity arrives with the decoder work."""

from .data import heldout_sentences
from .embeddings import EmbeddingFidelity, embedding_fidelity, encode, mean_pool

__all__ = ["heldout_sentences", "encode", "mean_pool", "embedding_fidelity", "EmbeddingFidelity"]
