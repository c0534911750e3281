"""Scores -> mask, for every structure, in one place.

``mask_from_scores(scores, structure, sparsity)`` returns a boolean mask (True = keep) of the scores' shape
(out, in). Higher scores are kept. Selection is exact and deterministic: ties are broken by position (the
earlier element is pruned first), so the same scores always give the same mask.

Granularity (``scope``):

* ``"tensor"``: the lowest-scoring ``round(sparsity * count)`` elements (or blocks) of the whole matrix go.
* ``"row"``: the same, within each output row (or block-row), as Wanda compares weights.
* N:M is always per group of M consecutive inputs of a row; ``scope`` does not apply.
"""

from __future__ import annotations

import torch

from .structure import NM, Block, Structure, StructureError, StructureLike, Unstructured, parse_structure

__all__ = ["mask_from_scores", "block_scores", "SCOPES"]

SCOPES = ("tensor", "row")


def _prune_lowest(scores: torch.Tensor, fraction: float, scope: str) -> torch.Tensor:
    """Keep-mask of a 2-D score matrix with the lowest ``fraction`` pruned per tensor or per row."""
    if scope == "tensor":
        flat = scores.reshape(-1)
        k = int(round(fraction * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=scores.device)
        if k:
            # stable ascending sort: among equal scores the lower index is pruned first
            order = torch.argsort(flat, stable=True)
            keep[order[:k]] = False
        return keep.view_as(scores)
    if scope == "row":
        k = int(round(fraction * scores.shape[1]))
        keep = torch.ones_like(scores, dtype=torch.bool)
        if k:
            order = torch.argsort(scores, dim=1, stable=True)
            keep.scatter_(1, order[:, :k], False)
        return keep
    raise StructureError(f"unknown scope '{scope}': allowed values are {', '.join(SCOPES)}")


def block_scores(scores: torch.Tensor, block: Block) -> torch.Tensor:
    """Sum of the scores in each R x C block: (out, in) -> (out / R, in / C)."""
    out, inp = scores.shape
    r, c = block.rows, block.cols
    return scores.reshape(out // r, r, inp // c, c).sum(dim=(1, 3))  # (out/R, in/C)


def mask_from_scores(
    scores: torch.Tensor,
    structure: StructureLike,
    sparsity: float | None = None,
    scope: str = "tensor",
) -> torch.Tensor:
    """Keep-mask (bool, shape of ``scores``) that prunes the lowest scores under ``structure``.

    ``sparsity`` is the fraction pruned; for N:M it may be omitted (it is implied) and must otherwise match.
    """
    st: Structure = parse_structure(structure)
    if scores.dim() != 2:
        raise StructureError(f"scores must be 2-D (out, in), got shape {tuple(scores.shape)}")
    st.check_shape(tuple(scores.shape), "scores")
    if scope not in SCOPES:
        raise StructureError(f"unknown scope '{scope}': allowed values are {', '.join(SCOPES)}")
    sp = st.resolve_sparsity(sparsity)
    s = scores.detach().float()
    if torch.isnan(s).any():
        raise StructureError("scores contain NaN")

    if isinstance(st, Unstructured):
        return _prune_lowest(s, sp, scope)
    if isinstance(st, Block):
        keep_blocks = _prune_lowest(block_scores(s, st), sp, scope)  # (out/R, in/C)
        return keep_blocks.repeat_interleave(st.rows, 0).repeat_interleave(st.cols, 1)
    if isinstance(st, NM):
        out, inp = s.shape
        groups = s.reshape(out, inp // st.m, st.m)  # (out, in/M, M)
        # descending stable sort: among equal scores the lower index is kept first
        order = torch.argsort(groups, dim=-1, descending=True, stable=True)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, order[..., : st.n], True)
        return keep.reshape(out, inp)
    raise StructureError(f"no mask rule for structure {st!r}")  # unreachable while the vocabulary is closed
