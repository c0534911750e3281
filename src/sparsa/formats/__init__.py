"""Packed weight formats: one file per format, registered here, chosen by structure.

| structure        | format    | class        |
|------------------|-----------|--------------|
| "RxC" blocks     | "bsr"     | BsrWeight    |
| "unstructured"   | "bitmask" | BitmaskWeight|
| "N:M"            | "nm"      | NMWeight     |
"""

from __future__ import annotations

import torch

from ..structure import NM, Block, Structure, StructureLike, Unstructured, parse_structure
from .base import FormatError, PackedWeight
from .bitmask import BitmaskWeight
from .bsr import BsrWeight
from .nm import NMWeight

__all__ = ["FORMATS", "PackedWeight", "FormatError", "BsrWeight", "BitmaskWeight", "NMWeight", "pack", "format_for"]

FORMATS: dict[str, type[PackedWeight]] = {cls.format_name: cls for cls in (BsrWeight, BitmaskWeight, NMWeight)}


def format_for(structure: Structure) -> type[PackedWeight]:
    """The packed format that holds ``structure``."""
    if isinstance(structure, Block):
        return BsrWeight
    if isinstance(structure, NM):
        return NMWeight
    if isinstance(structure, Unstructured):
        return BitmaskWeight
    raise FormatError(f"no format holds structure {structure!r}")


def pack(weight: torch.Tensor, structure: StructureLike = "unstructured", dtype: torch.dtype | None = None) -> PackedWeight:
    """Pack a dense-with-zeros (out, in) weight in the format of ``structure``; ``dtype`` of the stored values
    (float32 or bfloat16; default float32, or bfloat16 for a bfloat16 weight)."""
    st = parse_structure(structure)
    return format_for(st).pack(weight, st, dtype)
