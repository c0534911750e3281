"""Packed weight formats: one file per format, registered here, chosen by structure.

| structure        | formats (default first)  | classes                  |
|------------------|--------------------------|--------------------------|
| "RxC" blocks     | "bsr"                    | BsrWeight                |
| "unstructured"   | "bitmask", "csr"         | BitmaskWeight, CsrWeight |
| "N:M"            | "nm"                     | NMWeight                 |

Where a structure has two layouts, which one runs faster depends on sparsity and on the number of tokens per
call; ``sparsa.sparsify`` measures them (see BENCHMARKS.md) and the user may force one with ``format=``.
"""

from __future__ import annotations

import torch

from ..structure import NM, Block, Structure, StructureLike, Unstructured, parse_structure
from .base import FormatError, PackedWeight
from .bitmask import BitmaskWeight
from .bsr import BsrWeight
from .csr import CsrWeight
from .nm import NMWeight

__all__ = ["FORMATS", "PackedWeight", "FormatError", "BsrWeight", "BitmaskWeight", "CsrWeight", "NMWeight", "pack",
           "format_for", "formats_for", "preferred_format", "CSR_FROM_SPARSITY"]

FORMATS: dict[str, type[PackedWeight]] = {
    cls.format_name: cls for cls in (BsrWeight, BitmaskWeight, CsrWeight, NMWeight)
}


def format_for(structure: Structure) -> type[PackedWeight]:
    """The packed format that holds ``structure``."""
    if isinstance(structure, Block):
        return BsrWeight
    if isinstance(structure, NM):
        return NMWeight
    if isinstance(structure, Unstructured):
        return BitmaskWeight
    raise FormatError(f"no format holds structure {structure!r}")


def formats_for(structure: Structure) -> list[type[PackedWeight]]:
    """Every format that holds ``structure``, the default first."""
    if isinstance(structure, Unstructured):
        return [BitmaskWeight, CsrWeight]
    return [format_for(structure)]


# Unstructured weights at least this sparse run faster in CSR than as a bitmask (decode, 4096 x 4096, 2 threads:
# CSR 7.0x vs bitmask 3.5x over dense at 90%, bitmask 3.0x vs CSR 2.8x at 70%; batched they are within noise of
# each other), and from 15/16 sparsity CSR is also the smaller of the two. See BENCHMARKS.md.
CSR_FROM_SPARSITY = 0.85


def preferred_format(structure: Structure, sparsity: float) -> type[PackedWeight]:
    """The layout sparsa runs a weight of this structure and sparsity in (measured rule, see above)."""
    if isinstance(structure, Unstructured) and sparsity >= CSR_FROM_SPARSITY:
        return CsrWeight
    return format_for(structure)


def pack(weight: torch.Tensor, structure: StructureLike = "unstructured", dtype: torch.dtype | None = None,
         format: str | None = None) -> PackedWeight:
    """Pack a dense-with-zeros (out, in) weight in the format of ``structure`` (or the named ``format``, which
    must hold it); ``dtype`` of the stored values (float32 or bfloat16; default float32, or bfloat16 for a
    bfloat16 weight)."""
    st = parse_structure(structure)
    if format is None:
        return format_for(st).pack(weight, st, dtype)
    allowed = {c.format_name: c for c in formats_for(st)}
    if format not in allowed:
        raise FormatError(f"format '{format}' does not hold structure '{st}'; allowed: {', '.join(allowed)}")
    return allowed[format].pack(weight, st, dtype)
