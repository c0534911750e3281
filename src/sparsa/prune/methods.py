"""Pruning methods as scores: a method maps a module's (out, in) weight (and, for data-aware methods,
statistics of its inputs) to importance scores; masks.mask_from_scores turns scores into a mask.
Registered in METHODS; unknown names fail with the list of known ones."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["magnitude_scores", "METHODS", "method_scores", "UnknownMethodError"]


class UnknownMethodError(ValueError):
    pass


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|: the smallest weights matter least (the data-free baseline)."""
    return weight.detach().abs()


METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "magnitude": magnitude_scores,
}


def method_scores(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown pruning method '{name}'; known methods: {', '.join(METHODS)}") from None
