"""Pruning methods, registered in one place (METHODS). A method is a score (magnitude, Wanda) turned into a
mask by masks.mask_from_scores, plus, for OBS-type methods (SparseGPT), a weight update. Each is a pure
function of a weight (out, in) and the statistics of its inputs; unknown names fail with the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..masks import mask_by_rows
from ..structure import Structure
from .sparsegpt import sparsegpt
from .stats import InputStats

__all__ = [
    "Method",
    "METHODS",
    "get_method",
    "method_scores",
    "magnitude_scores",
    "wanda_scores",
    "UnknownMethodError",
    "MissingCalibrationError",
]


class UnknownMethodError(ValueError):
    pass


class MissingCalibrationError(ValueError):
    pass


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|: the smallest weights matter least (the data-free baseline)."""
    return weight.detach().abs()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """Wanda (Sun et al., 2024): |W_ij| * ||X_j||_2, a weight times the norm of the input feature it reads."""
    return weight.detach().abs() * input_norm.to(weight.device, torch.float32).unsqueeze(0)  # (out, in)


PruneFn = Callable[[torch.Tensor, "InputStats | None", Structure, float, str], "tuple[torch.Tensor, torch.Tensor]"]
MaskFn = Callable[[torch.Tensor, "InputStats | None", Structure, float, str], torch.Tensor]


def _mask_by_scores(score: Callable[[torch.Tensor, "InputStats | None"], torch.Tensor]) -> MaskFn:
    def mask(w, stats, st, sp, scope):
        return mask_by_rows(lambda rows: score(w[rows], stats), tuple(w.shape), st, sp, scope=scope)

    return mask


def _masking(mask: MaskFn) -> PruneFn:
    def run(w, stats, st, sp, scope):
        keep = mask(w, stats, st, sp, scope)
        return w.masked_fill(~keep, 0), keep

    return run


def _sparsegpt(w, stats, st, sp, scope):
    return sparsegpt(w, stats.inverse_factor(), st, sp, scope=scope)


def _sparsegpt_refit(w, stats, st, keep):
    """OBS weights for a given mask (after DSnoT changed SparseGPT's mask)."""
    return sparsegpt(w, stats.inverse_factor(), st, None if st.implied_sparsity is not None else 0.0,
                     mask=keep)[0]


@dataclass(frozen=True)
class Method:
    name: str
    needs_data: bool
    needs_hessian: bool
    default_scope: str  # how scores are compared when the caller does not say ("tensor" or "row")
    run: PruneFn  # (weight (out, in), stats or None, structure, sparsity, scope) -> (new weight, keep)
    summary: str
    # for methods that update the weights they keep: new weights for a mask changed afterwards (DSnoT)
    refit: Callable[[torch.Tensor, InputStats, Structure, torch.Tensor], torch.Tensor] | None = None
    # for methods that only choose what goes (no update): the keep-mask alone, so that the caller can zero the
    # weight in place instead of holding a pruned copy beside it (``run`` is this mask applied to a copy)
    mask: MaskFn | None = None

    @classmethod
    def by_scores(cls, name: str, needs_data: bool, default_scope: str, score, summary: str) -> "Method":
        """A method that keeps the highest ``score(w, stats)`` under the structure (magnitude, Wanda)."""
        mask = _mask_by_scores(score)
        return cls(name, needs_data, False, default_scope, _masking(mask), summary, mask=mask)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method.by_scores("magnitude", False, "tensor", lambda w, s: magnitude_scores(w),
                         "|W|, compared over the whole tensor (data-free)"),
        Method.by_scores("wanda", True, "row", lambda w, s: wanda_scores(w, s.norm),
                         "|W| * ||X_j||, compared within each output row"),
        Method("sparsegpt", True, True, "tensor", _sparsegpt,
               "OBS updates from the layer Hessian, column blocks of 128, 1% dampening", _sparsegpt_refit),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown pruning method '{name}'; known methods: {', '.join(METHODS)}") from None


def method_scores(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The data-free score function of a method (kept for callers that score a bare weight)."""
    m = get_method(name)
    if m.needs_data:
        raise MissingCalibrationError(f"method '{name}' needs calibration data; it has no data-free score")
    return magnitude_scores
