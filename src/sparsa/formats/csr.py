"""CSR: unstructured sparsity as row pointers, column indices and values; the second unstructured layout.

Memory layout of a weight W (out, in):

* ``row_ptr``: int64 (out + 1): row r's entries are ``row_ptr[r] : row_ptr[r+1]``; row_ptr[0] = 0, row_ptr[out] = nnz.
* ``col_idx``: (nnz,) column index of each nonzero, strictly increasing within a row; uint16 when in <= 65536 (2 bytes
  per nonzero), else int32.
* ``values``: float32 or bfloat16 (nnz,): the nonzeros in row-major order.

Bytes: nnz * (4 or 2) + nnz * 2 + 8 * (out + 1). Against the bitmask layout (in / 8 bytes per row instead of 2 per
nonzero) CSR is smaller above 15/16 = 93.75% sparsity and lets decode kernels gather only the inputs that meet a
nonzero; the bitmask is smaller below it and its decode kernel streams whole chunks. Kernels for the two are
measured against each other in BENCHMARKS.md, and the automatic choice picks per weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..structure import Structure
from .base import FormatError, PackedWeight, value_dtype_for
from .bitmask import masked_reference_matmul
from .bsr import index_dtype

__all__ = ["CsrWeight"]


@dataclass(frozen=True, eq=False)
class CsrWeight(PackedWeight):
    row_ptr: torch.Tensor
    col_idx: torch.Tensor

    format_name: ClassVar[str] = "csr"
    tensor_names: ClassVar[tuple[str, ...]] = ("values", "row_ptr", "col_idx")

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @classmethod
    def pack(cls, weight: torch.Tensor, structure: Structure, dtype: torch.dtype | None = None) -> "CsrWeight":
        if weight.dim() != 2:
            raise FormatError(f"csr packs 2-D weights, got shape {tuple(weight.shape)}")
        vd = value_dtype_for(weight, dtype)
        w = weight.detach().to("cpu")
        out, inp = w.shape
        nz = w.ne(0)
        rows, cols = nz.nonzero(as_tuple=True)  # row-major: sorted by row, then column
        row_ptr = torch.zeros(out + 1, dtype=torch.int64)
        row_ptr[1:] = nz.sum(dim=1).cumsum(0)
        return cls(shape=(int(out), int(inp)), structure=structure, values=w[rows, cols].to(vd).contiguous(),
                   row_ptr=row_ptr, col_idx=cols.to(index_dtype(inp)).contiguous())

    def validate(self) -> None:
        out, inp = self.shape
        if self.col_idx.dtype not in (torch.uint16, torch.int32):
            raise FormatError(f"csr: col_idx must be uint16 or int32, got {self.col_idx.dtype}")
        if self.col_idx.dtype == torch.uint16 and inp > 65536:
            raise FormatError("csr: uint16 col_idx cannot address more than 65536 columns")
        nnz = self.col_idx.numel()
        self._check_common({"row_ptr": (torch.int64, (out + 1,)), "col_idx": (self.col_idx.dtype, (nnz,)),
                            "values": (self.values.dtype, (nnz,))})
        from .. import _C

        try:
            _C.validate_bsr(self.row_ptr, self.col_idx, inp)  # CSR is BSR with 1 x 1 blocks: same invariants
        except ValueError as e:
            raise FormatError(f"csr: {e}") from None

    def keep(self) -> torch.Tensor:
        out, inp = self.shape
        k = torch.zeros(self.shape, dtype=torch.bool)
        rows = torch.repeat_interleave(torch.arange(out), self.row_ptr[1:] - self.row_ptr[:-1])
        k[rows, self.col_idx.to(torch.int64)] = True
        return k

    def to_dense(self) -> torch.Tensor:
        w = torch.zeros(self.shape, dtype=self.values.dtype)
        w[self.keep()] = self.values
        return w

    def reference_matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return masked_reference_matmul(self.keep(), self.values, self.shape, x, bias)
