"""``sparsa.prune``: prune the chosen modules of a model to a uniform sparsity, leaving dense-with-zeros
weights (the contract with everything below: a dense weight with zeros in it plus the structure that made it).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..masks import mask_from_scores
from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, Pattern, select_modules, weight_out_in
from ..structure import StructureLike, parse_structure
from .methods import METHODS, method_scores

__all__ = ["prune", "PruneReport", "ModuleReport", "METHODS"]


@dataclass
class ModuleReport:
    name: str
    type: str
    shape: tuple[int, int]
    structure: str
    sparsity: float  # achieved: fraction of exact zeros after pruning


@dataclass
class PruneReport:
    method: str
    structure: str
    sparsity: float  # requested
    modules: list[ModuleReport] = field(default_factory=list)

    @property
    def achieved_sparsity(self) -> float:
        """Zeros over all pruned weights."""
        total = sum(m.shape[0] * m.shape[1] for m in self.modules)
        zeros = sum(m.sparsity * m.shape[0] * m.shape[1] for m in self.modules)
        return zeros / max(1, total)

    def structures(self) -> dict[str, str]:
        """Module name -> structure string: what ``sparsify`` needs to pack each weight."""
        return {m.name: m.structure for m in self.modules}

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def prune(
    model: nn.Module,
    method: str = "magnitude",
    sparsity: float | None = 0.5,
    structure: StructureLike = "unstructured",
    targets: Sequence[Pattern] = DEFAULT_TARGETS,
    ignore: Sequence[Pattern] = DEFAULT_IGNORE,
    scope: str = "tensor",
    inplace: bool = True,
    progress: bool = False,
) -> tuple[nn.Module, PruneReport]:
    """Prune the selected linear-like modules of ``model`` to ``sparsity`` under ``structure``.

    Returns (model, report); with ``inplace=False`` the model is deep-copied first and the original is left
    untouched. Each module's weight is multiplied by its keep-mask in place, so it stays a dense tensor with
    zeros in it. The structure is recorded on each pruned module as ``module.sparsa_structure``.
    """
    st = parse_structure(structure)
    sp = st.resolve_sparsity(sparsity)
    score_fn = method_scores(method)
    if not inplace:
        model = copy.deepcopy(model)
    chosen = select_modules(model, targets, ignore)
    report = PruneReport(method=method, structure=str(st), sparsity=sp)
    it = chosen
    if progress:
        from rich.progress import track

        it = track(chosen, description=f"pruning ({method}, {st}, {sp:.0%})", transient=True)
    for name, module in it:
        w = weight_out_in(module)  # (out, in) view of the parameter
        st.check_shape(tuple(w.shape), f"module '{name}' ({type(module).__name__})")
        keep = mask_from_scores(score_fn(w), st, sp, scope=scope)
        w.mul_(keep.to(w.dtype))
        module.sparsa_structure = str(st)
        zeros = int((w == 0).sum())
        report.modules.append(
            ModuleReport(name, type(module).__name__, (int(w.shape[0]), int(w.shape[1])), str(st), zeros / w.numel())
        )
    return model, report
