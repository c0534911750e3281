"""The one vocabulary for sparsity structure, parsed once.

Forms (the strings users type, and ``str()`` of the parsed objects):

* ``"unstructured"``: any weight may be zero.
* ``"N:M"``: in every group of M consecutive input columns of a row, at most N weights are kept
  (``"2:4"``, ``"4:8"``; any 0 < N < M <= 32). The sparsity is implied: 1 - N/M.
* ``"RxC"``: constant blocks of R output rows x C input columns are kept or zeroed together
  (``"4x1"``, ``"8x1"``, ``"16x1"``, ``"1x4"``). ``"1x1"`` is spelled ``"unstructured"``.

Every other layer takes a :class:`Structure`, never a string, so a spec is validated exactly once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Union

__all__ = [
    "Structure",
    "Unstructured",
    "NM",
    "Block",
    "StructureError",
    "parse_structure",
    "check_sparsity",
    "ALLOWED_FORMS",
]

ALLOWED_FORMS = (
    "'unstructured'; 'N:M' with 0 < N < M <= 32 (e.g. '2:4', '4:8'); "
    "'RxC' blocks of R output rows by C input columns, 1 <= R, C <= 256, not 1x1 (e.g. '4x1', '8x1', '16x1', '1x4')"
)

_MAX_M = 32
_MAX_BLOCK = 256


class StructureError(ValueError):
    """A structure spec, sparsity or weight shape that the structure vocabulary does not allow."""


@dataclass(frozen=True)
class Structure:
    kind: ClassVar[str] = ""

    @property
    def implied_sparsity(self) -> float | None:
        """The sparsity the structure itself fixes (N:M), or None when any sparsity is allowed."""
        return None

    def check_shape(self, shape: tuple[int, int], name: str = "weight") -> None:
        """Raise StructureError if a 2-D weight of ``shape`` (out, in) cannot carry this structure."""
        if len(shape) != 2:
            raise StructureError(f"{name}: expected a 2-D weight (out, in), got shape {tuple(shape)}")

    def resolve_sparsity(self, sparsity: float | None) -> float:
        """The sparsity to prune to: the given one, checked against what the structure implies."""
        implied = self.implied_sparsity
        if sparsity is None:
            if implied is None:
                raise StructureError(f"structure '{self}' needs a sparsity in [0, 1)")
            return implied
        check_sparsity(sparsity)
        if implied is not None and not math.isclose(sparsity, implied, abs_tol=1e-6):
            raise StructureError(
                f"structure '{self}' implies sparsity {implied:g}, but sparsity {sparsity:g} was asked for; "
                f"omit the sparsity or pass {implied:g}"
            )
        return sparsity


@dataclass(frozen=True)
class Unstructured(Structure):
    kind: ClassVar[str] = "unstructured"

    def __str__(self) -> str:
        return "unstructured"


@dataclass(frozen=True)
class NM(Structure):
    n: int
    m: int
    kind: ClassVar[str] = "nm"

    def __post_init__(self) -> None:
        if not (0 < self.n < self.m <= _MAX_M):
            raise StructureError(f"invalid N:M structure '{self.n}:{self.m}': need 0 < N < M <= {_MAX_M}")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def implied_sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def check_shape(self, shape: tuple[int, int], name: str = "weight") -> None:
        super().check_shape(shape, name)
        if shape[1] % self.m:
            raise StructureError(
                f"{name}: {self} needs the input dimension to be a multiple of {self.m}, got shape {tuple(shape)}"
            )


@dataclass(frozen=True)
class Block(Structure):
    rows: int
    cols: int
    kind: ClassVar[str] = "block"

    def __post_init__(self) -> None:
        if not (1 <= self.rows <= _MAX_BLOCK and 1 <= self.cols <= _MAX_BLOCK):
            raise StructureError(f"invalid block '{self.rows}x{self.cols}': allowed forms are {ALLOWED_FORMS}")
        if self.rows == 1 and self.cols == 1:
            raise StructureError("block '1x1' is spelled 'unstructured'")

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"

    def check_shape(self, shape: tuple[int, int], name: str = "weight") -> None:
        super().check_shape(shape, name)
        if shape[0] % self.rows or shape[1] % self.cols:
            raise StructureError(
                f"{name}: {self} blocks do not tile shape {tuple(shape)} "
                f"(out must be a multiple of {self.rows}, in a multiple of {self.cols})"
            )


_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")

StructureLike = Union[str, Structure]


def parse_structure(spec: StructureLike) -> Structure:
    """Parse a structure spec (see the module docstring); a :class:`Structure` passes through."""
    if isinstance(spec, Structure):
        return spec
    if not isinstance(spec, str):
        raise StructureError(f"structure must be a string, got {type(spec).__name__}; allowed forms are {ALLOWED_FORMS}")
    s = spec.strip().lower()
    if s in ("unstructured", "1x1"):
        return Unstructured()
    m = _NM_RE.match(s)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not (0 < n < mm <= _MAX_M):
            raise StructureError(f"invalid structure '{spec}': allowed forms are {ALLOWED_FORMS}")
        return NM(n, mm)
    m = _BLOCK_RE.match(s)
    if m:
        r, c = int(m.group(1)), int(m.group(2))
        if not (1 <= r <= _MAX_BLOCK and 1 <= c <= _MAX_BLOCK):
            raise StructureError(f"invalid structure '{spec}': allowed forms are {ALLOWED_FORMS}")
        return Block(r, c)
    raise StructureError(f"invalid structure '{spec}': allowed forms are {ALLOWED_FORMS}")


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float if it lies in [0, 1), else raise StructureError."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise StructureError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise StructureError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return s
