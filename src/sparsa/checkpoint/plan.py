"""Which dense-with-zeros modules to pack, and packing them in place.

A module is packed when its weight holds zeros and its packed tensors take fewer bytes than the dense weight;
otherwise it stays dense (a few accidental zeros, or a structure that does not fit, would make it larger).
Its structure comes from, in order: ``sparsa_structure`` (recorded by ``sparsa.prune`` or a ``sparsa.json``),
the ``structure`` argument, or detection from the zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..detect import detect_structure
from ..formats import pack
from ..modules import DEFAULT_TARGETS, select_modules, weight_out_in
from ..nn import SparseLinear
from ..structure import StructureLike, parse_structure
from .errors import CheckpointError

__all__ = ["PackedModule", "pack_modules"]


@dataclass
class PackedModule:
    name: str
    shape: tuple[int, int]
    structure: str
    format: str         # "dense" when kept dense
    sparsity: float
    dense_bytes: int    # the weight stored dense, in its dtype
    sparse_bytes: int   # its packed tensors (equal to dense_bytes when kept dense)
    packed: bool



@torch.no_grad()
def pack_modules(model: nn.Module, names: Iterable[str] | None = None, structure: StructureLike | None = None,
                 dtype: torch.dtype | None = None) -> list[PackedModule]:
    """Replace, in place, the linear-like modules of ``model`` (all, or those named) by SparseLinear modules
    where that saves bytes; returns one record per module that holds zeros."""
    fixed = parse_structure(structure) if structure is not None else None
    chosen = select_modules(model, list(names) if names is not None else DEFAULT_TARGETS, ignore=())
    report = []
    for name, m in chosen:
        w = weight_out_in(m)
        zeros = int((w == 0).sum())
        if zeros == 0:
            continue
        recorded = getattr(m, "sparsa_structure", None)
        st = parse_structure(recorded) if recorded else fixed or detect_structure(w)
        try:
            p = pack(w, st, dtype)
        except ValueError as e:
            raise CheckpointError(None, f"module '{name}' cannot be packed as {st}: {e}") from None
        dense_bytes = w.numel() * w.element_size()
        row = PackedModule(name, tuple(w.shape), str(st), p.format_name, zeros / w.numel(), dense_bytes, p.nbytes, True)
        if p.nbytes >= dense_bytes:
            row.format, row.sparse_bytes, row.packed = "dense", dense_bytes, False
            if recorded:
                del m.sparsa_structure  # so that nothing later packs it after all
        else:
            model.set_submodule(name, SparseLinear(p, getattr(m, "bias", None)))
        report.append(row)
    return report
