"""Quality measures: embedding fidelity (encoders), perplexity (decoders), and evaluating a pruned folder."""

from .data import heldout_sentences
from .embeddings import EmbeddingFidelity, embedding_fidelity, encode, mean_pool
from .perplexity import perplexity

__all__ = ["heldout_sentences", "encode", "mean_pool", "embedding_fidelity", "EmbeddingFidelity", "perplexity"]
