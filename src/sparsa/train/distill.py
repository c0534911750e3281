"""Distillation losses, pure functions of student and teacher outputs (the teacher is the dense model).

* :func:`squarehead` -- SquareHead (Kurtic et al. 2023, "Sparse Finetuning for Inference Acceleration of
  LLMs"): for each layer l, MSE(student_l, teacher_l) / MSE(teacher_l, 0), averaged over layers. Normalising
  by the teacher's own mean square puts every layer on the same scale, whatever the size of its activations.
* :func:`kl_logits` -- KL(teacher || student) of the next-token distributions at temperature T, times T^2 (so
  gradients keep their size as T changes), averaged over real tokens.
* :func:`embedding_cosine` / :func:`embedding_mse` -- for sentence encoders: 1 - cosine, or MSE, between the
  student's and the teacher's pooled embeddings, averaged over the batch.

``token_mask`` (B, T) marks real tokens (1) against padding (0); padding never enters a loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

__all__ = ["squarehead", "kl_logits", "embedding_cosine", "embedding_mse", "masked_mean_square"]


def masked_mean_square(x: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x^2 over the real tokens of x (B, T, H) -- over all positions when ``token_mask`` is None."""
    sq = x.float().pow(2).mean(-1)  # (B, T)
    if token_mask is None:
        return sq.mean()
    m = token_mask.to(sq.dtype)
    return (sq * m).sum() / m.sum().clamp(min=1.0)


def squarehead(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               token_mask: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Mean over layers of MSE(s_l, t_l) / MSE(t_l, 0); each hidden state is (B, T, H)."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"squarehead needs the same number of hidden states from student and teacher "
                         f"(got {len(student)} and {len(teacher)})")
    losses = []
    for s, t in zip(student, teacher):
        t = t.detach()
        losses.append(masked_mean_square(s.float() - t.float(), token_mask)
                      / masked_mean_square(t, token_mask).clamp(min=eps))
    return torch.stack(losses).mean()


def kl_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, token_mask: torch.Tensor | None = None,
              temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per token at ``temperature``, times T^2, averaged over real tokens. (B, T, V)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B, T)
    if token_mask is None:
        return kl.mean() * t * t
    m = token_mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1.0) * t * t


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine(student_b, teacher_b), averaged over the batch. (B, H)."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the embeddings. (B, H)."""
    return (student.float() - teacher.detach().float()).pow(2).mean()
