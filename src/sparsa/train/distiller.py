"""Distillation from the dense teacher: runs the teacher (no gradients) and the student on the same batch and
combines the losses of distill.py. Encoders: SquareHead over every block's output plus 1 - cosine of the
mean-pooled sentence embeddings. Decoders: KL on the logits plus SquareHead (and, if weighted, the plain
next-token loss on the text).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..eval.embeddings import mean_pool
from .distill import embedding_cosine, embedding_mse, kl_logits, squarehead

__all__ = ["LossWeights", "Distiller", "check_teacher", "TeacherMismatchError", "PRECISIONS"]

# compute precision of the forward and backward passes: "fp32", or "bf16" = torch autocast to bfloat16 (matmuls
# in bf16; parameters, optimizer state and masks stay fp32; the losses are computed in fp32). On the 2-core test
# machine (x86, avx512_bf16 in its flags) it made all-MiniLM-L6-v2's distillation step 1.33x faster
# (benchmarks/recover_step_precision.py); without native bf16 instructions it may be slower than fp32.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class TeacherMismatchError(ValueError):
    pass


def check_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """The teacher must be the student's architecture: same model type and the same parameters by name and
    shape. Raises TeacherMismatchError naming the first difference."""
    st = getattr(getattr(student, "config", None), "model_type", None)
    tt = getattr(getattr(teacher, "config", None), "model_type", None)
    if st != tt:
        raise TeacherMismatchError(f"the teacher is a '{tt}' model but the student is a '{st}' model; the teacher "
                                   f"must be the dense model the student was pruned from")
    sp = {n: tuple(p.shape) for n, p in student.named_parameters()}
    tp = {n: tuple(p.shape) for n, p in teacher.named_parameters()}
    for name, shape in sp.items():
        base = name.replace(".parametrizations.weight.original", ".weight")
        if base not in tp:
            raise TeacherMismatchError(f"the teacher has no parameter '{base}' (the student does): not the same "
                                       f"architecture")
        if tp[base] != shape:
            raise TeacherMismatchError(f"parameter '{base}' is {shape} in the student but {tp[base]} in the teacher: "
                                       f"not the same architecture")
    extra = sorted(set(tp) - {n.replace(".parametrizations.weight.original", ".weight") for n in sp})
    if extra:
        raise TeacherMismatchError(f"the teacher has parameter '{extra[0]}' that the student lacks: not the same "
                                   f"architecture")


@dataclass(frozen=True)
class LossWeights:
    squarehead: float = 1.0
    kl: float = 1.0  # decoders
    cosine: float = 1.0  # encoders
    mse: float = 0.0  # encoders: MSE of the embeddings
    lm: float = 0.0  # decoders: plain next-token loss on the text
    temperature: float = 1.0


class Distiller:
    """``loss(batch)`` -> (total loss with gradient, {part: float}) for one batch of token ids."""

    def __init__(self, student: nn.Module, teacher: nn.Module, kind: str, weights: LossWeights = LossWeights(),
                 precision: str = "fp32"):
        if kind not in ("encoder", "decoder"):
            raise ValueError(f"kind must be 'encoder' or 'decoder', got '{kind}'")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        check_teacher(student, teacher)
        self.student, self.teacher, self.kind, self.w = student, teacher, kind, weights
        self.precision = precision
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch.get("attention_mask")
        with self._autocast():
            with torch.no_grad():
                t_out = self.teacher(**batch, output_hidden_states=True)
            s_out = self.student(**batch, output_hidden_states=True)
        parts: dict[str, torch.Tensor] = {}
        if self.w.squarehead:
            # hidden_states[0] is the embedding output, which sparsity does not touch; the rest: one per block
            parts["squarehead"] = squarehead(s_out.hidden_states[1:], t_out.hidden_states[1:], mask)
        if self.kind == "encoder":
            am = mask if mask is not None else torch.ones(batch["input_ids"].shape, dtype=torch.long)
            s_emb = mean_pool(s_out.last_hidden_state.float(), am)  # (B, H)
            t_emb = mean_pool(t_out.last_hidden_state.float(), am)
            if self.w.cosine:
                parts["cosine"] = embedding_cosine(s_emb, t_emb)
            if self.w.mse:
                parts["mse"] = embedding_mse(s_emb, t_emb)
        else:
            if self.w.kl:
                parts["kl"] = kl_logits(s_out.logits, t_out.logits, mask, self.w.temperature)
            if self.w.lm:
                logits = s_out.logits[:, :-1].float()  # (B, T-1, V): token t predicts t+1
                labels = batch["input_ids"][:, 1:]
                if mask is not None:
                    labels = labels.masked_fill(mask[:, 1:] == 0, -100)
                parts["lm"] = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                          ignore_index=-100)
        weight = {"squarehead": self.w.squarehead, "kl": self.w.kl, "cosine": self.w.cosine, "mse": self.w.mse,
                  "lm": self.w.lm}
        if not parts:
            raise ValueError("every distillation loss has weight 0: nothing to train on")
        total = sum(weight[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return nullcontext()
        device = next(self.student.parameters()).device.type
        return torch.autocast(device, dtype=dtype)
