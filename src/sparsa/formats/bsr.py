"""BSR: block compressed sparse rows, for block structures ("4x1", "8x1", "16x1", "1x4", any R x C).

Memory layout of a weight W (out, in) with R x C blocks, nbr = out / R block-rows, nbc = in / C block-columns:

* ``row_ptr``: int64 (nbr + 1). Block-row i owns blocks ``row_ptr[i] : row_ptr[i+1]``; row_ptr[0] = 0,
  row_ptr[nbr] = nnzb.
* ``col_idx``: (nnzb,) block-column index j of each stored block (input columns j*C .. j*C+C-1), strictly
  increasing within a block-row. uint16 when nbc <= 65536 (the common case: 2 bytes per block instead of 4),
  else int32.
* ``values``: float32 or bfloat16 (nnzb * R * C,). Block b occupies ``values[b*R*C : (b+1)*R*C]`` as an R x C
  row-major tile: element (i, c) of block b in block-row r is W[r*R + i, col_idx[b]*C + c].

A block is stored when any of its R*C weights is nonzero; zeros inside a stored block are stored as zeros.
Kernels read exactly these bytes (no over-read past the end of any tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..structure import Block, Structure
from .base import FormatError, PackedWeight, value_dtype_for

__all__ = ["BsrWeight"]


def index_dtype(n_block_cols: int) -> torch.dtype:
    return torch.uint16 if n_block_cols <= 65536 else torch.int32


@dataclass(frozen=True, eq=False)
class BsrWeight(PackedWeight):
    row_ptr: torch.Tensor
    col_idx: torch.Tensor

    format_name: ClassVar[str] = "bsr"
    tensor_names: ClassVar[tuple[str, ...]] = ("values", "row_ptr", "col_idx")

    @property
    def block(self) -> tuple[int, int]:
        assert isinstance(self.structure, Block)
        return self.structure.rows, self.structure.cols

    @property
    def nnzb(self) -> int:
        return int(self.col_idx.numel())

    @property
    def nnz(self) -> int:
        r, c = self.block
        return self.nnzb * r * c

    @classmethod
    def pack(cls, weight: torch.Tensor, structure: Structure, dtype: torch.dtype | None = None) -> "BsrWeight":
        if not isinstance(structure, Block):
            raise FormatError(f"bsr holds block structures ('4x1', ...), not '{structure}'")
        structure.check_shape(tuple(weight.shape))
        out, inp = weight.shape
        r, c = structure.rows, structure.cols
        vd = value_dtype_for(weight, dtype)
        w = weight.detach().to("cpu")
        blocks = w.reshape(out // r, r, inp // c, c).permute(0, 2, 1, 3)  # (nbr, nbc, R, C)
        present = blocks.ne(0).any(dim=3).any(dim=2)  # (nbr, nbc)
        brow, bcol = present.nonzero(as_tuple=True)  # row-major: sorted by block-row, then block-column
        row_ptr = torch.zeros(out // r + 1, dtype=torch.int64)
        row_ptr[1:] = present.sum(dim=1).cumsum(0)
        values = blocks[brow, bcol].reshape(-1).to(vd).contiguous()  # (nnzb * R * C,)
        col_idx = bcol.to(index_dtype(inp // c)).contiguous()
        return cls(shape=(out, inp), structure=structure, values=values, row_ptr=row_ptr, col_idx=col_idx)

    def validate(self) -> None:
        if not isinstance(self.structure, Block):
            raise FormatError(f"bsr: structure must be a block, got '{self.structure}'")
        out, inp = self.shape
        r, c = self.block
        if out % r or inp % c:
            raise FormatError(f"bsr: {r}x{c} blocks do not tile shape {self.shape}")
        nbc = inp // c
        if self.col_idx.dtype not in (torch.uint16, torch.int32):
            raise FormatError(f"bsr: col_idx must be uint16 or int32, got {self.col_idx.dtype}")
        if self.col_idx.dtype == torch.uint16 and nbc > 65536:
            raise FormatError("bsr: uint16 col_idx cannot address more than 65536 block-columns")
        nnzb = self.col_idx.numel()
        self._check_common(
            {"row_ptr": (torch.int64, (out // r + 1,)), "col_idx": (self.col_idx.dtype, (nnzb,)),
             "values": (self.values.dtype, (nnzb * r * c,))}
        )
        from .. import _C

        try:
            _C.validate_bsr(self.row_ptr, self.col_idx, nbc)
        except ValueError as e:
            raise FormatError(f"bsr: {e}") from None

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        r, c = self.block
        nbr = out // r
        counts = self.row_ptr[1:] - self.row_ptr[:-1]
        brow = torch.repeat_interleave(torch.arange(nbr), counts)
        bcol = self.col_idx.to(torch.int64)
        blocks = torch.zeros(nbr, inp // c, r, c, dtype=self.values.dtype)
        blocks[brow, bcol] = self.values.reshape(-1, r, c)
        return blocks.permute(0, 2, 1, 3).reshape(out, inp)

    def reference_matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """y = x W^T + b computed block by block from the packed tensors (float64 accumulation)."""
        out, inp = self.shape
        r, c = self.block
        nbr = out // r
        counts = self.row_ptr[1:] - self.row_ptr[:-1]
        brow = torch.repeat_interleave(torch.arange(nbr), counts)  # (nnzb,)
        cols = self.col_idx.to(torch.int64)[:, None] * c + torch.arange(c)  # (nnzb, C)
        xd = x.to(torch.float64)
        xg = xd[:, cols]  # (N, nnzb, C): the inputs each block multiplies
        vals = self.values.to(torch.float64).reshape(-1, r, c)  # (nnzb, R, C)
        contrib = torch.einsum("nbc,brc->nbr", xg, vals)  # (N, nnzb, R)
        y = torch.zeros(x.shape[0], nbr, r, dtype=torch.float64)
        y.index_add_(1, brow, contrib)
        y = y.reshape(x.shape[0], out)
        if bias is not None:
            y = y + bias.to(torch.float64)
        return y.to(torch.float32)
