"""Layer-wise sparsity allocation: how a target sparsity is spread over the modules of a model.

* ``uniform``: every module gets the target.
* ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020): density proportional to (in + out) / (in * out), so small
  and thin layers keep more; scaled so that the parameter-weighted sparsity equals the target exactly.
* ``owl`` (Outlier Weighed Layerwise, Yin et al. 2024): blocks with more outlier features (entries of the
  Wanda metric |W| ||X|| above ``m`` times its block mean) keep more weights; sparsities span
  target +- ``lam`` and average to the target over blocks.

Pure functions of shapes and ratios; the engine measures the outlier ratios on dense activations.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ALLOCATIONS", "erk_sparsities", "owl_sparsities", "outlier_ratio", "UnknownAllocationError"]

ALLOCATIONS = ("uniform", "owl", "erk")


class UnknownAllocationError(ValueError):
    pass


def check_allocation(name: str) -> str:
    if name not in ALLOCATIONS:
        raise UnknownAllocationError(f"unknown allocation '{name}'; known allocations: {', '.join(ALLOCATIONS)}")
    return name


def erk_sparsities(shapes: dict[str, tuple[int, int]], sparsity: float) -> dict[str, float]:
    """Per-module sparsity by ERK; modules that would need density > 1 are left dense and the rest rescaled."""
    numel = {k: o * i for k, (o, i) in shapes.items()}
    raw = {k: (o + i) / (o * i) for k, (o, i) in shapes.items()}
    budget = (1.0 - sparsity) * sum(numel.values())  # weights to keep
    dense: set[str] = set()
    while True:
        free = [k for k in shapes if k not in dense]
        left = budget - sum(numel[k] for k in dense)
        eps = left / max(1e-30, sum(raw[k] * numel[k] for k in free))
        over = [k for k in free if eps * raw[k] > 1.0]
        if not over:
            break
        dense.update(over)
    return {k: 0.0 if k in dense else float(1.0 - eps * raw[k]) for k in shapes}


def outlier_ratio(metrics: Sequence[torch.Tensor], m: float = 5.0) -> float:
    """Fraction of entries of the concatenated Wanda metrics of one block above ``m`` times their mean."""
    flat = torch.cat([x.reshape(-1).float() for x in metrics])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios: Sequence[float], sparsity: float, lam: float = 0.08) -> list[float]:
    """Per-block sparsity: outlier ratios min-max scaled to [0, 2*lam], centred, subtracted from the target."""
    r = torch.tensor(list(ratios), dtype=torch.float64)
    if len(r) == 0:
        return []
    span = float(r.max() - r.min())
    scaled = (r - r.min()) / span * 2 * lam if span > 0 else torch.zeros_like(r)
    out = sparsity - (scaled - scaled.mean())
    return [float(x) for x in out.clamp(0.0, 0.99)]
