"""SparseGPT (Frantar & Alistarh, 2023): prune a weight and update the weights that stay so that the layer's
output on the calibration inputs changes as little as possible (Optimal Brain Surgeon updates from the
layer Hessian H = X^T X), processed in column blocks with lazy updates.

Pure tensor math, no hooks: ``sparsegpt(weight, hessian, structure, sparsity)`` -> (new weight, keep-mask).
The mask is chosen with masks.mask_from_scores (the one scores -> mask function) on the OBS saliency
w^2 / [H^-1]_jj^2, column block by column block, so that it sees the updates made to earlier columns:

* unstructured and RxC blocks: per column block of ``blocksize`` columns (a multiple of C), the lowest
  ``sparsity`` of the block's scores go, over the whole block (``scope="tensor"``, the published rule) or
  per row (``scope="row"``);
* N:M: each group of M columns is decided when the sweep reaches it.
"""

from __future__ import annotations

import torch

from ..masks import mask_from_scores
from ..structure import NM, Block, StructureLike, parse_structure

__all__ = ["sparsegpt", "inverse_hessian_factor"]


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1, so that U[i, i:] / U[i, i] is the OBS
    update row for column i once the columns before it are gone (what makes the sweep exact and cheap).

    Inputs that were never active (zero diagonal) get a unit diagonal: their weights have no effect on the
    calibration outputs, so any value is as good as another and the factorisation stays defined.
    """
    h = hessian.double().clone()  # (in, in); float64: Cholesky of a 1%-damped Gram matrix is ill-conditioned
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    lam = damp * torch.diag(h).mean()
    h.diagonal().add_(lam)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True)


@torch.no_grad()
def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    structure: StructureLike,
    sparsity: float | None,
    blocksize: int = 128,
    damp: float = 0.01,
    scope: str = "tensor",
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (out, in) with OBS updates from ``hessian`` (in, in) = X^T X.

    Returns (new weight with zeros, keep-mask), in the weight's dtype. With ``mask`` given (keep-mask from
    another method), only the updates are made: the OBS reconstruction of that mask.
    """
    st = parse_structure(structure)
    st.check_shape(tuple(weight.shape), "weight")
    sp = st.resolve_sparsity(sparsity)
    out_f, in_f = weight.shape
    unit = st.m if isinstance(st, NM) else st.cols if isinstance(st, Block) else 1
    bs = max(unit, (blocksize // unit) * unit)  # column blocks hold whole N:M groups and whole blocks

    w = weight.detach().double().clone()  # (out, in)
    u = inverse_hessian_factor(hessian, damp)  # (in, in) upper
    keep = torch.ones(out_f, in_f, dtype=torch.bool) if mask is None else mask.clone().bool()

    for i1 in range(0, in_f, bs):
        i2 = min(i1 + bs, in_f)
        w1 = w[:, i1:i2].clone()  # (out, B)
        u1 = u[i1:i2, i1:i2]  # (B, B)
        d1 = torch.diag(u1)  # (B,)
        err1 = torch.zeros_like(w1)
        if mask is None and not isinstance(st, NM):
            scores = w1.square() / d1.square()  # (out, B) OBS saliency
            keep[:, i1:i2] = mask_from_scores(scores, st, sp, scope=scope)
        for i in range(i2 - i1):
            if mask is None and isinstance(st, NM) and i % st.m == 0:
                scores = w1[:, i : i + st.m].square() / d1[i : i + st.m].square()  # (out, M)
                keep[:, i1 + i : i1 + i + st.m] = mask_from_scores(scores, st)
            col = w1[:, i]  # (out,)
            q = col * keep[:, i1 + i]
            e = (col - q) / d1[i]  # (out,)
            # the OBS update for the removed weights, spread over the columns of this block not yet swept
            w1[:, i:] -= e.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # lazy update of every later column, once per block
    w *= keep
    return w.to(weight.dtype), keep
