"""``sparsify``: replace the pruned linear-like modules of a model by SparseLinear modules.

Each module's structure comes from, in order: the ``structures`` mapping (name -> structure), the
``sparsa_structure`` attribute that ``sparsa.prune`` leaves on the modules it pruned, the ``structure``
argument, or detection from the zeros (:func:`sparsa.detect.detect_structure`). Modules whose weight holds
fewer zeros than ``min_sparsity`` stay dense: a kernel cannot win there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..detect import detect_structure
from ..formats import pack, preferred_format
from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, Pattern, select_modules, weight_out_in
from ..structure import StructureLike, parse_structure
from .fuse import optimize_runtime
from .sparse_linear import SparseLinear

__all__ = ["sparsify", "ConvertedModule"]


@dataclass
class ConvertedModule:
    name: str
    structure: str
    format: str
    sparsity: float
    kernel: str
    dense_bytes: int
    sparse_bytes: int



@torch.no_grad()
def sparsify(
    model: nn.Module,
    structure: StructureLike | None = None,
    structures: Mapping[str, StructureLike] | None = None,
    targets: Sequence[Pattern] = DEFAULT_TARGETS,
    ignore: Sequence[Pattern] = DEFAULT_IGNORE,
    dtype: torch.dtype | None = None,
    kernel: str | None = "auto",
    format: str | None = None,
    min_sparsity: float = 0.0,
    inplace: bool = False,
    runtime: bool = True,
) -> tuple[nn.Module, list[ConvertedModule]]:
    """Convert pruned modules to SparseLinear; returns (model, per-module report).

    ``dtype``: the dtype to store values in (float32 or bfloat16; default float32). ``kernel``: "auto" (default:
    per call size, the fastest of dense and every sparse kernel, measured once and cached), None (always the best
    sparse kernel), or a kernel name to force. ``format``: the packed layout (default: the measured rule of
    :func:`sparsa.formats.preferred_format`, e.g. CSR for unstructured weights from 85% sparsity). With
    ``inplace=False`` (default) the model is copied first and the original keeps its dense modules. ``runtime``
    (default True): also apply :func:`sparsa.nn.optimize_runtime` (sparsa's attention kernel, GELU fused into the
    sparse kernels), which changes speed, not results.
    """
    if not inplace:
        model = copy.deepcopy(model)
    fixed = parse_structure(structure) if structure is not None else None
    report: list[ConvertedModule] = []
    for name, module in select_modules(model, targets, ignore):
        w = weight_out_in(module)
        zeros = int((w == 0).sum())
        if zeros == 0 or zeros / w.numel() < min_sparsity:
            continue
        if structures and name in structures:
            st = parse_structure(structures[name])
        elif getattr(module, "sparsa_structure", None):
            st = parse_structure(module.sparsa_structure)
        elif fixed is not None:
            st = fixed
        else:
            st = detect_structure(w)
        fmt = format or preferred_format(st, zeros / w.numel()).format_name
        sparse = SparseLinear(pack(w, st, dtype, format=fmt), getattr(module, "bias", None), kernel)
        model.set_submodule(name, sparse)
        p = sparse.packed
        report.append(
            ConvertedModule(
                name=name,
                structure=str(st),
                format=p.format_name,
                sparsity=p.sparsity,
                kernel="auto" if sparse.auto else (sparse.kernel.name if sparse.kernel else "torch"),
                dense_bytes=w.numel() * w.element_size(),
                sparse_bytes=p.nbytes,
            )
        )
    if runtime and report:
        optimize_runtime(model)
    return model, report
