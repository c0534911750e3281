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

from typing import Callable

import torch

from .structure import NM, Block, Structure, StructureError, StructureLike, Unstructured, parse_structure

__all__ = ["mask_from_scores", "mask_by_rows", "zero_pruned_", "block_scores", "SCOPES"]

SCOPES = ("tensor", "row")


_CHUNK = 1 << 20  # elements sorted at a time by the per-row rules (int64 sort indices are 2x the scores' bytes)


def _row_chunks(n_rows: int, row_len: int):
    step = max(1, _CHUNK // max(1, row_len))
    for r0 in range(0, n_rows, step):
        yield slice(r0, min(n_rows, r0 + step))


def _prune_lowest(scores: torch.Tensor, fraction: float, scope: str) -> torch.Tensor:
    """Keep-mask of a 2-D score matrix with the lowest ``fraction`` pruned per tensor or per row."""
    if scope == "tensor":
        flat = scores.reshape(-1)
        k = int(round(fraction * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=scores.device)
        if k:
            # the k-th smallest score is the threshold: everything below it goes, and of the scores equal to
            # it the lowest indices go first (what a stable ascending sort would prune). A full argsort holds
            # int64 indices (twice the scores' bytes) and its sort buffers at once, for the largest modules.
            v = torch.kthvalue(flat, k).values
            keep = flat >= v
            ties = k - int((flat < v).sum())  # >= 1: the k-th smallest is itself one of the equal scores
            keep[torch.nonzero(flat == v).reshape(-1)[:ties]] = False
        return keep.view_as(scores)
    if scope == "row":
        k = int(round(fraction * scores.shape[1]))
        keep = torch.ones_like(scores, dtype=torch.bool)
        if k:
            for rows in _row_chunks(scores.shape[0], scores.shape[1]):  # bounded sort buffers
                order = torch.argsort(scores[rows], dim=1, stable=True)
                keep[rows].scatter_(1, order[:, :k], False)
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
        keep = torch.zeros_like(groups, dtype=torch.bool)
        for rows in _row_chunks(out, inp):
            # descending stable sort: among equal scores the lower index is kept first
            order = torch.argsort(groups[rows], dim=-1, descending=True, stable=True)
            keep[rows].scatter_(-1, order[..., : st.n], True)
        return keep.reshape(out, inp)
    raise StructureError(f"no mask rule for structure {st!r}")  # unreachable while the vocabulary is closed


def mask_by_rows(
    scores_of: Callable[[slice], torch.Tensor],
    shape: tuple[int, int],
    structure: StructureLike,
    sparsity: float | None = None,
    scope: str = "tensor",
) -> torch.Tensor:
    """``mask_from_scores`` for scores made a slice of rows at a time by ``scores_of(rows)``: where the rule
    compares scores only within a row (N:M, ``scope="row"``; within a block-row for R x C blocks) the mask is
    built ~1M scores at a time, so that choosing it holds no (out, in) float matrix (44 MiB at a 1B model's MLP,
    the largest part of Wanda's working set); with ``scope="tensor"`` every score is compared with every other
    and the whole matrix is made at once. Same mask as ``mask_from_scores(scores_of(slice(None)), ...)``."""
    st: Structure = parse_structure(structure)
    if scope not in SCOPES:
        raise StructureError(f"unknown scope '{scope}': allowed values are {', '.join(SCOPES)}")
    if scope == "tensor" and not isinstance(st, NM):
        return mask_from_scores(scores_of(slice(None)), st, sparsity, scope)
    st.check_shape(tuple(shape), "scores")
    unit = st.rows if isinstance(st, Block) else 1  # a chunk holds whole block-rows
    out, inp = shape
    step = max(unit, _CHUNK // max(1, inp) // unit * unit)
    keep = torch.empty(out, inp, dtype=torch.bool)
    for r0 in range(0, out, step):
        rows = slice(r0, min(out, r0 + step))
        keep[rows] = mask_from_scores(scores_of(rows), st, sparsity, scope)
    return keep


def zero_pruned_(w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero ``w`` where ``keep`` is False, in place, ~1M elements at a time: ``w.masked_fill_(~keep, 0)`` makes
    a mask-sized ``~keep`` (43 MiB at a 7B down projection) and ``w *= keep`` a float copy of the mask."""
    for rows in _row_chunks(w.shape[0], w[0].numel() if w.shape[0] else 1):
        w[rows].masked_fill_(~keep[rows], 0)
    return w
