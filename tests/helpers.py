"""Test helpers: sparse weights with a given structure, and the error bound for fp32 sums."""

from __future__ import annotations

import torch

from sparsa.masks import mask_from_scores


def sparse_weight(out: int, inp: int, structure: str, sparsity: float | None, gen: torch.Generator,
                  zero_rows: int = 0) -> torch.Tensor:
    """A random (out, in) weight pruned to ``structure`` by random scores; ``zero_rows`` leading rows all zero."""
    w = torch.randn(out, inp, generator=gen)
    keep = mask_from_scores(torch.rand(out, inp, generator=gen), structure, sparsity)
    w = w * keep
    if zero_rows:
        w[:zero_rows] = 0
    return w


def assert_close_to_reference(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
                              ref: torch.Tensor, rtol: float = 2e-6) -> None:
    """|y - ref| <= rtol * K * (|x| @ |W|^T + |b|) + tiny: the forward-error bound of a K-term fp32 dot product,
    so the check is strict where values are large and does not flake where they cancel."""
    k = max(1, x.shape[1])
    scale = x.double().abs() @ w.double().abs().T
    if bias is not None:
        scale = scale + bias.double().abs()
    bound = rtol * k * scale + 1e-30
    diff = (y.double() - ref.double()).abs()
    bad = diff > bound
    assert not bool(bad.any()), (
        f"{int(bad.sum())} of {bad.numel()} outputs off; worst diff {float(diff.max()):.3e}, "
        f"bound there {float(bound.flatten()[int(diff.argmax())]):.3e}"
    )
