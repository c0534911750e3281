"""Soft masks for N:M training: the dense weights keep training while the forward pass sees them masked.

A :class:`SoftMask` parametrization (``torch.nn.utils.parametrize``) replaces ``module.weight`` in the forward
pass by W * (M + beta (1 - M)):

* SR-STE (Zhou et al. 2021): beta = 0, so the forward is exactly N:M sparse; the backward passes the gradient
  of the sparse weight straight through to every dense weight and adds the sparse-refined term
  lambda (1 - M) * W, which pulls pruned weights towards zero so the mask stops flipping
  (g_W = g_W~ + lambda (1 - M) W, the paper's update).
* decaying mask (Bambhaniya et al. 2024, MDGF): beta decays from 1 (dense) to 0 over training, so gradients to
  pruned weights fade out progressively instead of being cut at once; lambda = 0 and the gradient passes
  straight through, as in the paper's implementation.

The mask M is recomputed from |W| by the controller at each step, never inside the forward, so evaluation and
every micro-batch of a step see the same mask. ``finalize`` bakes W * M into a plain parameter (exact zeros).
"""

from __future__ import annotations

import torch
from torch import nn
from contextlib import contextmanager
from typing import Iterator

from torch.nn.utils import parametrize

from .targets import Target

__all__ = ["SoftMask", "soft_masked", "install_soft", "remove_soft", "lifted"]


class _SoftMaskFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.lam = lam
        return soft_masked(weight, mask, beta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, mask = ctx.saved_tensors
        g = grad
        if ctx.lam:
            g = g + ctx.lam * (~mask).to(weight.dtype) * weight
        return g, None, None, None


def soft_masked(weight: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """W * (M + beta (1 - M)): pruned weights scaled by ``beta`` (0: hard mask, 1: dense)."""
    if beta == 0.0:
        return weight * mask.to(weight.dtype)
    return weight * torch.where(mask, torch.ones((), dtype=weight.dtype), torch.full((), beta, dtype=weight.dtype))


class SoftMask(nn.Module):
    """Parametrization of a weight: mask (in the parameter's layout), pruned-weight multiplier ``beta``,
    SR-STE strength ``lam``."""

    def __init__(self, mask: torch.Tensor, beta: float = 0.0, lam: float = 0.0):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).clone(), persistent=True)
        self.beta = float(beta)
        self.lam = float(lam)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _SoftMaskFn.apply(weight, self.mask, self.beta, self.lam)


def install_soft(target: Target, mask: torch.Tensor, beta: float, lam: float) -> SoftMask:
    """Parametrize ``target``'s weight with a SoftMask (mask given as (out, in))."""
    sm = SoftMask(target.to_param(mask), beta, lam)
    parametrize.register_parametrization(target.module, "weight", sm)
    return sm


@torch.no_grad()
def remove_soft(target: Target) -> None:
    """Bake the hard-masked weight W * M into a plain parameter and drop the parametrization."""
    sm = target.module.parametrizations["weight"][0]
    original = target.module.parametrizations["weight"].original
    original.mul_(sm.mask.to(original.dtype))  # the plain parameter holds exact zeros where pruned
    parametrize.remove_parametrizations(target.module, "weight", leave_parametrized=False)


@contextmanager
def lifted(targets: list[Target], masks: dict[str, SoftMask]) -> Iterator[None]:
    """Inside the block the targets are plain modules holding their dense trained weights; afterwards the same
    SoftMask parametrizations are back, over the very same Parameter objects (optimizers keep them).

    What it is for: ``copy.deepcopy`` of a parametrized module shares its per-module class
    (``ParametrizedLinear``) with the copy, so removing the parametrization from a copy would break the original.
    """
    for t in targets:
        parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=False)
    try:
        yield
    finally:
        for t in targets:
            parametrize.register_parametrization(t.module, "weight", masks[t.name])
