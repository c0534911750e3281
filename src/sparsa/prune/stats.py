"""Statistics of a linear layer's inputs, accumulated over calibration tokens, and the reconstruction error
they make exact.

Every data-aware method needs only these sums over the N calibration tokens x_t (rows of X, shape (N, in)):

* ``hessian`` = X^T X (in, in): SparseGPT's layer Hessian (up to a factor 2/N), and the exact
  reconstruction error ||W X^T - W' X^T||^2 = tr(D H D^T) with D = W - W', without keeping X;
* ``sumsq`` = diag(X^T X) (in,): ||X_j||^2 per input feature (Wanda);
* ``sum`` (in,): for the mean E[X_j] and variance Var[X_j] (DSnoT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["InputStats", "relative_error"]


@dataclass
class InputStats:
    """Running sums over the calibration tokens seen by one (out, in) weight."""

    in_features: int
    with_hessian: bool = True
    n: int = 0
    sum: torch.Tensor = field(default=None)  # (in,) float64
    sumsq: torch.Tensor = field(default=None)  # (in,) float64
    hessian: torch.Tensor | None = field(default=None)  # (in, in) float32

    def __post_init__(self) -> None:
        self.sum = torch.zeros(self.in_features, dtype=torch.float64)
        self.sumsq = torch.zeros(self.in_features, dtype=torch.float64)
        if self.with_hessian:
            self.hessian = torch.zeros(self.in_features, self.in_features, dtype=torch.float32)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add tokens ``x`` of shape (..., in); every leading position is one token."""
        x = x.detach().reshape(-1, self.in_features)  # (N, in)
        if x.shape[0] == 0:
            return
        xf = x.float()
        self.n += x.shape[0]
        self.sum += xf.sum(0, dtype=torch.float64)
        self.sumsq += xf.square().sum(0, dtype=torch.float64)
        if self.hessian is not None:
            self.hessian.addmm_(xf.T, xf)  # (in, in) += X^T X

    @property
    def mean(self) -> torch.Tensor:
        """E[X_j] over the tokens (in,)."""
        return (self.sum / max(1, self.n)).float()

    @property
    def var(self) -> torch.Tensor:
        """Var[X_j] over the tokens (in,), population variance."""
        m = self.sum / max(1, self.n)
        return (self.sumsq / max(1, self.n) - m * m).clamp(min=0).float()

    @property
    def norm(self) -> torch.Tensor:
        """||X_j||_2 over the tokens (in,)."""
        return self.sumsq.sqrt().float()


def relative_error(dense: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor, rows: int = 256) -> float:
    """||W X^T - W' X^T||_F^2 / ||W X^T||_F^2 computed exactly from H = X^T X (no activations kept).

    Both quadratic forms are computed ``rows`` output rows at a time against the float32 H (products in
    float32, their sums in float64): the products are (rows, in), so the check adds almost nothing to the peak
    memory of pruning (a float64 copy of H and two (out, in) products held four matrices of the module's size
    for a number that is logged).
    """
    h = hessian.float()
    num = torch.zeros((), dtype=torch.float64)
    den = torch.zeros((), dtype=torch.float64)
    for r in range(0, dense.shape[0], rows):
        w = dense[r : r + rows].float()  # (rows, in)
        d = w - pruned[r : r + rows].float()
        num += ((d @ h) * d).sum(dtype=torch.float64)
        den += ((w @ h) * w).sum(dtype=torch.float64)
    return float(num / den) if den > 0 else 0.0
