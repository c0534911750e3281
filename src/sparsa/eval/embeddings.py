"""Sentence-embedding fidelity: how close a pruned encoder's embeddings stay to the dense model's.

Embeddings are computed the way sentence-transformers computes all-MiniLM-L6-v2's: mean of the last hidden
states over real (non-padding) tokens, then L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["encode", "mean_pool", "EmbeddingFidelity", "embedding_fidelity"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): mean over the tokens the mask marks as real."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.inference_mode()
def encode(model: nn.Module, tokenizer, sentences: list[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """(S, H) unit-norm sentence embeddings."""
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(
            sentences[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state  # (B, T, H)
        out.append(nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1))
    return torch.cat(out)


@dataclass
class EmbeddingFidelity:
    cosine_mean: float
    cosine_min: float
    nn_agreement: float  # fraction of sentences whose nearest neighbour (among the others) is unchanged
    n_sentences: int


def embedding_fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> EmbeddingFidelity:
    """Compare unit-norm embeddings (S, H) of the same sentences from two models."""
    cos = (reference * candidate).sum(-1)  # (S,) both are unit norm
    def nearest(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.argmax(-1)
    agree = (nearest(reference) == nearest(candidate)).float().mean()
    return EmbeddingFidelity(float(cos.mean()), float(cos.min()), float(agree), int(reference.shape[0]))
