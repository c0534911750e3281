"""N:M: in every group of M consecutive input columns of a row exactly N values are stored.

Memory layout of a weight W (out, in), in divisible by M, G = in / M groups per row:

* ``values``: float32 or bfloat16 (out * G * N,): the kept values of each row in ascending column order;
  row r starts at ``r * G * N`` (no row pointer is needed: every row holds the same count).
* ``mask``: uint64 (out, ceil(in / 64)), the bit layout of :mod:`sparsa.formats.bits`: bit k of row r marks
  column k as kept. Each group of M bits has exactly N set; these are the in-group indices of the kept values,
  stored as an M-bit membership mask (2:4: 4 bits per group, the same as two 2-bit indices; 4:8: 8 bits per
  group instead of four 3-bit indices).

A group with fewer than N nonzeros keeps its first zero positions as stored zeros, so every group holds N.
Bytes: out*in*(N/M)*(4 or 2) + out*ceil(in/64)*8; 2:4 with bf16 values is 0.5625x of dense bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..structure import NM, Structure
from .base import FormatError, PackedWeight, value_dtype_for
from .bitmask import masked_reference_matmul
from .bits import pack_bits, unpack_bits, words_per_row

__all__ = ["NMWeight"]


@dataclass(frozen=True, eq=False)
class NMWeight(PackedWeight):
    mask: torch.Tensor

    format_name: ClassVar[str] = "nm"
    tensor_names: ClassVar[tuple[str, ...]] = ("values", "mask")

    @property
    def nm(self) -> tuple[int, int]:
        assert isinstance(self.structure, NM)
        return self.structure.n, self.structure.m

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @classmethod
    def pack(cls, weight: torch.Tensor, structure: Structure, dtype: torch.dtype | None = None) -> "NMWeight":
        if not isinstance(structure, NM):
            raise FormatError(f"nm holds N:M structures ('2:4', ...), not '{structure}'")
        structure.check_shape(tuple(weight.shape))
        n, m = structure.n, structure.m
        vd = value_dtype_for(weight, dtype)
        w = weight.detach().to("cpu")
        out, inp = w.shape
        groups = w.reshape(out, inp // m, m)  # (out, G, M)
        nz = groups.ne(0)
        per_group = nz.sum(-1)
        if bool((per_group > n).any()):
            r, g = (per_group > n).nonzero()[0].tolist()
            raise FormatError(
                f"weight is not {structure} sparse: row {r}, columns {g * m}..{g * m + m - 1} hold "
                f"{int(per_group[r, g])} nonzeros (at most {n} allowed)"
            )
        # keep the nonzeros, then the first zeros of the group until it holds exactly n
        order = torch.argsort(nz.to(torch.int8), dim=-1, descending=True, stable=True)
        keep = torch.zeros_like(nz)
        keep.scatter_(-1, order[..., :n], True)
        keep = keep.reshape(out, inp)
        return cls(shape=(out, inp), structure=structure, values=w[keep].to(vd).contiguous(), mask=pack_bits(keep))

    def validate(self) -> None:
        if not isinstance(self.structure, NM):
            raise FormatError(f"nm: structure must be N:M, got '{self.structure}'")
        out, inp = self.shape
        n, m = self.nm
        if inp % m:
            raise FormatError(f"nm: {n}:{m} needs in_features divisible by {m}, got shape {self.shape}")
        self._check_common(
            {"mask": (torch.uint64, (out, words_per_row(inp))), "values": (self.values.dtype, (out * (inp // m) * n,))}
        )
        from .. import _C

        try:
            _C.validate_bitmask(self.mask, None, inp, n, m)
        except ValueError as e:
            raise FormatError(f"nm: {e}") from None

    def keep(self) -> torch.Tensor:
        return unpack_bits(self.mask, self.shape[1])

    def to_dense(self) -> torch.Tensor:
        w = torch.zeros(self.shape, dtype=self.values.dtype)
        w[self.keep()] = self.values
        return w

    def reference_matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return masked_reference_matmul(self.keep(), self.values, self.shape, x, bias)
