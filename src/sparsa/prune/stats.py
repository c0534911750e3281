"""Statistics of a linear layer's inputs, accumulated over calibration tokens, and the reconstruction error
they make exact.

Every data-aware method needs only these sums over the N calibration tokens x_t (rows of X, shape (N, in)):

* ``hessian`` = X^T X (in, in): SparseGPT's layer Hessian (up to a factor 2/N), and the exact
  reconstruction error ||W X^T - W' X^T||^2 = tr(D H D^T) with D = W - W', without keeping X;
* ``sumsq`` = diag(X^T X) (in,): ||X_j||^2 per input feature (Wanda);
* ``sum`` (in,): for the mean E[X_j] and variance Var[X_j] (DSnoT).

SparseGPT needs the inverse factor of X^T X rather than X^T X itself. ``InputStats.inverse_factor`` computes it
once for all the weights that read one input (q, k and v share it) and, with ``consume_hessian``, in the
storage of X^T X: the largest allocation of pruning (an MLP down projection's (in, in) matrix, about as large
as its block's weights) is then held once instead of twice. The error check reads whichever of the two exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .sparsegpt import InverseFactor, inverse_hessian_factor

__all__ = ["InputStats", "relative_error", "diff_rows"]


@dataclass
class InputStats:
    """Running sums over the calibration tokens seen by one (out, in) weight."""

    in_features: int
    with_hessian: bool = True
    n: int = 0
    sum: torch.Tensor = field(default=None)  # (in,) float64
    sumsq: torch.Tensor = field(default=None)  # (in,) float64
    hessian: torch.Tensor | None = field(default=None)  # (in, in) float32; None once consumed by the factor
    consume_hessian: bool = False  # may inverse_factor overwrite ``hessian`` (nothing else reads it later)?
    factor: InverseFactor | None = field(default=None)
    factor_dtype: torch.dtype = torch.float32  # float64 where float32 already failed on these inputs

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

    def inverse_factor(self, damp: float = 0.01) -> InverseFactor:
        """SparseGPT's factor of the damped inverse of X^T X, computed on the first call and kept.

        Raises sparsegpt.HessianConsumedError where a float32 factorisation failed in place of X^T X (the
        statistics must then be gathered again, without ``consume_hessian``).
        """
        if self.factor is None:
            if self.hessian is None:
                raise ValueError("these input statistics were gathered without X^T X (with_hessian=False)")
            self.factor = inverse_hessian_factor(self.hessian, damp, self.factor_dtype,
                                                 overwrite=self.consume_hessian)
            if self.consume_hessian:
                self.hessian = None  # its storage now holds the factor
        elif self.factor.damp != damp:
            raise ValueError(f"the inverse factor was computed with damp={self.factor.damp}, asked for {damp}")
        return self.factor

    def relative_error(self, dense: torch.Tensor, pruned: torch.Tensor) -> float | None:
        """relative_error of a pruned weight (or keep-mask) from X^T X or, once that is consumed, its factor."""
        h = self.hessian if self.hessian is not None else self.factor
        return None if h is None else relative_error(dense, pruned, h)

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


def diff_rows(dense: torch.Tensor, pruned: torch.Tensor, rows: slice) -> torch.Tensor:
    """D = W - W' for ``rows`` of the weight, in float32. ``pruned`` is W' or, as a bool tensor, the keep-mask
    of W (W' is then W with the rest zeroed): a caller that zeroes the weight in place after measuring holds
    no pruned copy."""
    w = dense[rows].float()
    if pruned.dtype == torch.bool:
        return w.masked_fill(pruned[rows], 0)
    return w - pruned[rows].float()


def relative_error(dense: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor | InverseFactor,
                   rows: int | None = None) -> float:
    """||W X^T - W' X^T||_F^2 / ||W X^T||_F^2 computed exactly from H = X^T X or from SparseGPT's factor of
    its damped inverse (no activations kept). ``pruned``: W', or the keep-mask of W (see ``diff_rows``).

    Both quadratic forms are computed ``rows`` output rows at a time (products in float32, their sums in
    float64), by default slices of ~256K elements: the products are (rows, in), so the check adds almost
    nothing to the peak memory of pruning (a float64 copy of H and two (out, in) products held four matrices
    of the module's size for a number that is logged; 256-row slices of a 5632-column down projection still
    held ~35 MiB of temporaries, at the peak of bounded-memory SparseGPT).
    """
    if isinstance(hessian, InverseFactor):
        quadratic = hessian.quadratic
    else:
        h = hessian.float()

        def quadratic(m: torch.Tensor) -> torch.Tensor:
            return ((m @ h) * m).sum(dtype=torch.float64)

    num = torch.zeros((), dtype=torch.float64)
    den = torch.zeros((), dtype=torch.float64)
    rows = rows or max(1, (1 << 18) // max(1, dense.shape[1]))
    for r in range(0, dense.shape[0], rows):
        sl = slice(r, r + rows)
        num += quadratic(diff_rows(dense, pruned, sl))
        den += quadratic(dense[sl].float())
    # from the factor, a tiny error can come out a rounding below zero
    return max(0.0, float(num / den)) if den > 0 else 0.0
