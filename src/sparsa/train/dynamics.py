"""Mask dynamics of sparse training as pure tensor functions: drop the weakest, grow the strongest, prune to a
sparsity, draw random masks. Every mask is chosen by :func:`sparsa.masks.mask_from_scores` (the one place that
turns scores into a mask); this file only decides which scores and how many units.

A *unit* is what a structure keeps or zeroes together: one weight (unstructured) or one R x C block. Masks are
boolean (out, in), True = kept. N:M has a fixed number of kept weights per group, so it has no drop/grow
dynamics: it is trained with SR-STE or the decaying mask (train/soft.py) instead.
"""

from __future__ import annotations

import torch

from ..masks import mask_from_scores
from ..prune.allocation import erk_sparsities
from ..structure import NM, Block, Structure, StructureError

__all__ = ["unit_numel", "active_units", "total_units", "drop_lowest", "grow_highest", "prune_to",
           "random_scores", "random_mask", "layer_sparsities", "with_overrides", "LAYER_ALLOCATIONS"]

LAYER_ALLOCATIONS = ("uniform", "erk")


def _check_dynamic(structure: Structure) -> None:
    if isinstance(structure, NM):
        raise StructureError(f"structure {structure} keeps a fixed count per group of {structure.m}: it has no "
                             f"drop/grow dynamics; train N:M with method 'srste' or 'decay' (or 'fixed')")


def unit_numel(structure: Structure) -> int:
    """Weights per unit: R * C for blocks, 1 otherwise."""
    return structure.rows * structure.cols if isinstance(structure, Block) else 1


def total_units(shape: tuple[int, int], structure: Structure) -> int:
    return shape[0] * shape[1] // unit_numel(structure)


def active_units(mask: torch.Tensor, structure: Structure) -> int:
    """Kept units of ``mask``; a block counts as kept if any of its weights is."""
    if isinstance(structure, Block):
        out, inp = mask.shape
        r, c = structure.rows, structure.cols
        return int(mask.reshape(out // r, r, inp // c, c).any(dim=3).any(dim=1).sum())
    return int(mask.sum())


def _keep_best(scores: torch.Tensor, keep_units: int, structure: Structure) -> torch.Tensor:
    """Mask keeping the ``keep_units`` highest-scoring units (ties: the later position is kept)."""
    n = total_units(tuple(scores.shape), structure)
    keep_units = max(0, min(n, keep_units))
    if keep_units == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    return mask_from_scores(scores, structure, (n - keep_units) / n)


def drop_lowest(scores: torch.Tensor, mask: torch.Tensor, n_drop: int, structure: Structure) -> torch.Tensor:
    """``mask`` minus its ``n_drop`` lowest-scoring kept units. scores, mask: (out, in)."""
    _check_dynamic(structure)
    s = torch.where(mask, scores.float(), torch.tensor(float("-inf")))  # pruned units can only stay pruned
    return _keep_best(s, active_units(mask, structure) - max(0, n_drop), structure)


def grow_highest(scores: torch.Tensor, mask: torch.Tensor, n_grow: int, structure: Structure) -> torch.Tensor:
    """``mask`` plus the ``n_grow`` highest-scoring pruned units. scores, mask: (out, in)."""
    _check_dynamic(structure)
    s = torch.where(mask, torch.tensor(float("inf")), scores.float())  # kept units always stay kept
    return _keep_best(s, active_units(mask, structure) + max(0, n_grow), structure)


def prune_to(scores: torch.Tensor, mask: torch.Tensor, sparsity: float, structure: Structure) -> torch.Tensor:
    """Gradual pruning: ``mask`` reduced to at most (1 - sparsity) of the units, keeping the highest scores.
    Never grows: a mask already sparser than ``sparsity`` comes back unchanged."""
    _check_dynamic(structure)
    n = total_units(tuple(mask.shape), structure)
    keep = n - int(round(sparsity * n))
    return drop_lowest(scores, mask, active_units(mask, structure) - keep, structure)


def random_scores(shape: tuple[int, int], structure: Structure, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores, one draw per unit (a block's weights share theirs): (out, in)."""
    if isinstance(structure, Block):
        r, c = structure.rows, structure.cols
        per_block = torch.rand(shape[0] // r, shape[1] // c, generator=generator)
        return per_block.repeat_interleave(r, 0).repeat_interleave(c, 1)
    return torch.rand(*shape, generator=generator)


def random_mask(shape: tuple[int, int], structure: Structure, sparsity: float | None,
                generator: torch.Generator) -> torch.Tensor:
    """A uniformly random mask of ``structure`` at ``sparsity`` (N:M: a random N of every M)."""
    return mask_from_scores(random_scores(shape, structure, generator), structure, sparsity)


def with_overrides(sps: dict[str, float], shapes: dict[str, tuple[int, int]], fixed: dict[str, float],
                   sparsity: float) -> dict[str, float]:
    """``sps`` with the modules of ``fixed`` at their own sparsity, and the other modules' densities scaled by
    one factor so that the parameter-weighted sparsity stays ``sparsity`` (a denser last block is paid for by
    the rest, not by the overall target). An error when the rest cannot absorb it."""
    if not fixed:
        return dict(sps)
    size = {k: shapes[k][0] * shapes[k][1] for k in sps}
    rest = [k for k in sps if k not in fixed]
    kept_total = (1.0 - sparsity) * sum(size.values())
    kept_fixed = sum(size[k] * (1.0 - v) for k, v in fixed.items())
    kept_rest = sum(size[k] * (1.0 - sps[k]) for k in rest)
    if not rest or kept_rest <= 0:
        raise StructureError(f"the sparsity overrides cover every module; the overall sparsity {sparsity:g} "
                             "cannot be kept (drop an override or the overall sparsity)")
    scale = (kept_total - kept_fixed) / kept_rest
    out = {k: fixed.get(k, 1.0 - (1.0 - sps[k]) * scale) for k in sps}
    bad = [k for k in rest if not 0.0 <= out[k] < 1.0]
    if bad:
        raise StructureError(f"with the sparsity overrides, the other modules would need sparsity "
                             f"{out[bad[0]]:.3f} (module '{bad[0]}') to keep the overall {sparsity:g}; allowed: "
                             f"0 <= sparsity < 1: make the overrides closer to the overall sparsity")
    return out


def layer_sparsities(shapes: dict[str, tuple[int, int]], sparsity: float, allocation: str) -> dict[str, float]:
    """Per-module sparsity: the same for all (``uniform``) or ERK (density ~ (in + out) / (in * out), scaled so
    the parameter-weighted sparsity is ``sparsity``)."""
    if allocation == "uniform":
        return {k: sparsity for k in shapes}
    if allocation == "erk":
        return erk_sparsities(shapes, sparsity)
    raise StructureError(f"unknown allocation '{allocation}'; known allocations: {', '.join(LAYER_ALLOCATIONS)}")
