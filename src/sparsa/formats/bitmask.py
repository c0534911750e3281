"""Bitmask: unstructured sparsity as a bitmap of the nonzeros plus the nonzero values.

Memory layout of a weight W (out, in):

* ``mask``: uint64 (out, ceil(in / 64)). Bit j (LSB first) of word w of row r is set iff W[r, 64*w + j] != 0
  (see :mod:`sparsa.formats.bits`); padding bits past ``in`` are zero.
* ``values``: float32 or bfloat16 (nnz,): the nonzeros of W in row-major order (row by row, ascending column),
  i.e. in the order of the set bits.
* ``row_ptr``: int64 (out + 1): row r's values are ``values[row_ptr[r] : row_ptr[r+1]]``; it equals the
  running popcount of the mask and is stored so that rows can be processed independently in parallel.

Bytes: in/8 per row for the mask, plus nnz * (4 or 2), plus 8 per row. At 50% sparsity with bf16 values that is
0.5625x of dense bf16. Kernels read exactly these bytes (no over-read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..structure import Structure, Unstructured
from .base import FormatError, PackedWeight, value_dtype_for
from .bits import pack_bits, unpack_bits, words_per_row

__all__ = ["BitmaskWeight", "masked_reference_matmul"]


def masked_reference_matmul(
    keep: torch.Tensor, values: torch.Tensor, shape: tuple[int, int], x: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Scatter ``values`` into the positions ``keep`` (row-major) and compute x W^T + b in float64."""
    w = torch.zeros(shape, dtype=torch.float64)
    w[keep] = values.to(torch.float64)
    y = x.to(torch.float64) @ w.T
    if bias is not None:
        y = y + bias.to(torch.float64)
    return y.to(torch.float32)


@dataclass(frozen=True, eq=False)
class BitmaskWeight(PackedWeight):
    mask: torch.Tensor
    row_ptr: torch.Tensor

    format_name: ClassVar[str] = "bitmask"
    tensor_names: ClassVar[tuple[str, ...]] = ("values", "mask", "row_ptr")

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @classmethod
    def pack(cls, weight: torch.Tensor, structure: Structure, dtype: torch.dtype | None = None) -> "BitmaskWeight":
        if weight.dim() != 2:
            raise FormatError(f"bitmask packs 2-D weights, got shape {tuple(weight.shape)}")
        vd = value_dtype_for(weight, dtype)
        w = weight.detach().to("cpu")
        nz = w.ne(0)  # (out, in)
        row_ptr = torch.zeros(w.shape[0] + 1, dtype=torch.int64)
        row_ptr[1:] = nz.sum(dim=1).cumsum(0)
        return cls(
            shape=(int(w.shape[0]), int(w.shape[1])),
            structure=structure,
            values=w[nz].to(vd).contiguous(),  # boolean indexing walks row-major: the order of the set bits
            mask=pack_bits(nz),
            row_ptr=row_ptr,
        )

    def validate(self) -> None:
        out, inp = self.shape
        self._check_common(
            {"mask": (torch.uint64, (out, words_per_row(inp))), "row_ptr": (torch.int64, (out + 1,)),
             "values": (self.values.dtype, (int(self.values.numel()),))}
        )
        if self.values.dim() != 1:
            raise FormatError("bitmask: values must be 1-D")
        from .. import _C

        try:
            _C.validate_bitmask(self.mask, self.row_ptr, inp)
        except ValueError as e:
            raise FormatError(f"bitmask: {e}") from None
        if int(self.row_ptr[-1]) != self.values.numel():
            raise FormatError(f"bitmask: row_ptr ends at {int(self.row_ptr[-1])} but there are {self.values.numel()} values")

    def keep(self) -> torch.Tensor:
        return unpack_bits(self.mask, self.shape[1])

    def to_dense(self) -> torch.Tensor:
        w = torch.zeros(self.shape, dtype=self.values.dtype)
        w[self.keep()] = self.values
        return w

    def reference_matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return masked_reference_matmul(self.keep(), self.values, self.shape, x, bias)


