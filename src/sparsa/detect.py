"""Recognise the structure of a dense-with-zeros weight from its zeros alone.

Used when a model arrives already pruned (by sparsa without its metadata, or by another tool): the largest
block shape whose stored blocks are (almost) all nonzero wins, then N:M patterns whose groups are (almost)
all full, else "unstructured". Thresholds are tolerant of the odd weight that is exactly zero by chance.
"""

from __future__ import annotations

import torch

from .structure import NM, Block, Structure, Unstructured

__all__ = ["detect_structure", "BLOCK_CANDIDATES", "NM_CANDIDATES"]

BLOCK_CANDIDATES = ((16, 1), (8, 1), (4, 1), (1, 4), (2, 2))
NM_CANDIDATES = ((2, 4), (1, 4), (4, 8), (2, 8), (1, 8), (1, 2))
_FILL = 0.98  # stored blocks / groups must be at least this full of nonzeros


@torch.no_grad()
def detect_structure(weight: torch.Tensor) -> Structure:
    """The structure that best describes the zeros of an (out, in) weight."""
    w = weight.detach()
    out, inp = w.shape
    nz = w.ne(0)
    nnz = int(nz.sum())
    if nnz == 0 or nnz == w.numel():
        return Unstructured()
    for r, c in BLOCK_CANDIDATES:
        if out % r or inp % c:
            continue
        present = nz.reshape(out // r, r, inp // c, c).any(dim=3).any(dim=1)  # (out/R, in/C)
        stored = int(present.sum()) * r * c
        if stored and nnz / stored >= _FILL:
            return Block(r, c)
    for n, m in NM_CANDIDATES:
        if inp % m:
            continue
        per_group = nz.reshape(out, inp // m, m).sum(-1)
        if int(per_group.max()) <= n and float(per_group.float().mean()) >= _FILL * n:
            return NM(n, m)
    return Unstructured()
