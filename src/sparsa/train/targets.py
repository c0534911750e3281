"""The weights a sparse training run keeps sparse: chosen with the foundation's module selection (types and
``re:`` names, heads and poolers left dense by default) and checked against the structure before anything runs.

A :class:`Target` gives the weight as (out, in) (GPT-2's Conv1D stores it transposed as (in, out)) and turns
an (out, in) mask into the parameter's own layout, so masks, scores and structures are always (out, in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, ModuleSelectionError, Pattern, select_modules
from ..structure import Structure, StructureError

__all__ = ["Target", "find_targets", "is_transposed", "overridden"]


@dataclass
class Target:
    name: str
    module: nn.Module
    structure: Structure
    sparsity: float  # the final sparsity this module trains towards
    # transformers' GPT-2 Conv1D stores its weight as (in, out); fixed at selection, because a parametrization
    # renames the module's class (ParametrizedConv1D)
    transposed: bool = False

    @property
    def param(self) -> nn.Parameter:
        """The trained parameter (under a parametrization: the dense original it holds)."""
        parametrizations = getattr(self.module, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            return parametrizations["weight"].original
        return self.module.weight

    @property
    def shape(self) -> tuple[int, int]:
        s = tuple(self.param.shape)
        return (s[1], s[0]) if self.transposed else (s[0], s[1])

    def weight(self) -> torch.Tensor:
        """(out, in) view of the parameter's data (shares storage)."""
        w = self.param.data
        return w.T if self.transposed else w

    def grad(self) -> torch.Tensor | None:
        g = self.param.grad
        return None if g is None else (g.T if self.transposed else g)

    def to_param(self, t: torch.Tensor) -> torch.Tensor:
        """An (out, in) tensor in the parameter's layout."""
        return t.T if self.transposed else t

    def from_param(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor in the parameter's layout as (out, in)."""
        return t.T if self.transposed else t


def is_transposed(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def find_targets(model: nn.Module, structure: Structure, targets: Sequence[Pattern] = DEFAULT_TARGETS,
                 ignore: Sequence[Pattern] = DEFAULT_IGNORE) -> list[tuple[str, nn.Module]]:
    """The linear-like modules to train sparse, each checked to carry ``structure`` (an error names the first
    module whose shape does not allow it); an empty selection is an error too."""
    chosen = select_modules(model, targets, ignore)
    if not chosen:
        raise StructureError("no linear layer of the model matches the targets; nothing would be trained sparse")
    for name, mod in chosen:
        w = mod.weight
        shape = (w.shape[1], w.shape[0]) if is_transposed(mod) else tuple(w.shape)
        structure.check_shape(tuple(shape), f"module '{name}' ({type(mod).__name__})")
    return chosen


def overridden(model: nn.Module, overrides: Sequence, trained: Sequence[str]) -> dict[str, float]:
    """Trained module name -> its sparsity from a config's ``overrides`` (entries with ``targets`` and
    ``sparsity``; a later entry wins where several match). A pattern that matches no module is an error (as
    in module selection), and so is one that matches only modules that are not trained."""
    trained = list(trained)
    out: dict[str, float] = {}
    for ov in overrides:
        names = [n for n, _ in select_modules(model, ov.targets, ignore=[]) if n in trained]
        if not names:
            raise ModuleSelectionError(f"sparsity override {ov.targets} matches none of the {len(trained)} trained "
                                       f"modules (e.g. '{trained[0]}')")
        out.update((n, ov.sparsity) for n in names)
    return out
