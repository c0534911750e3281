"""The contract every packed weight format fulfils.

A format turns a dense-with-zeros weight W of shape (out, in) into a few flat tensors, and back. It is pure
data: packing and unpacking are pure functions of the tensors, and ``reference_matmul`` is the plain-PyTorch
definition of what every kernel for the format must compute, y = x W^T + b, read from the packed tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..structure import Structure

__all__ = ["PackedWeight", "FormatError", "VALUE_DTYPES"]

VALUE_DTYPES = (torch.float32, torch.bfloat16)


class FormatError(ValueError):
    """A packed weight whose tensors are inconsistent, or a weight that a format cannot hold."""


@dataclass(frozen=True, eq=False)
class PackedWeight:
    shape: tuple[int, int]  # (out, in) of the dense weight
    structure: Structure    # the structure that made the zeros (decides the format)
    values: torch.Tensor    # every format keeps its weight values (float32 or bfloat16) in `values`

    format_name: ClassVar[str] = ""
    tensor_names: ClassVar[tuple[str, ...]] = ()

    # ---- to be provided by each format ----
    @classmethod
    def pack(cls, weight: torch.Tensor, structure: Structure, dtype: torch.dtype | None = None) -> "PackedWeight":
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:
        raise NotImplementedError

    def reference_matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> None:
        """Check every structural invariant (O(nnz)); raise FormatError naming the first violation."""
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        """Stored weight values (including zeros a format must store, e.g. inside a block)."""
        raise NotImplementedError

    @property
    def nonzeros(self) -> int:
        """Values that are actually nonzero."""
        return int(torch.count_nonzero(self.values))

    # ---- shared ----
    @classmethod
    def from_tensors(cls, shape: tuple[int, int], structure: Structure, tensors: dict[str, torch.Tensor]) -> "PackedWeight":
        """Rebuild a packed weight from its named tensors (as ``tensors()`` returns them), fully validated.

        Raises FormatError for a missing or unexpected tensor, or any inconsistency between them."""
        names = set(tensors)
        if names != set(cls.tensor_names):
            missing = sorted(set(cls.tensor_names) - names)
            extra = sorted(names - set(cls.tensor_names))
            raise FormatError(
                f"{cls.format_name}: expected tensors {', '.join(cls.tensor_names)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(extra)}" if extra else "")
            )
        obj = cls(shape=(int(shape[0]), int(shape[1])), structure=structure, **tensors)
        obj.validate()
        return obj

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.tensor_names}

    @property
    def value_dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def sparsity(self) -> float:
        out, inp = self.shape
        return 1.0 - self.nonzeros / max(1, out * inp)

    def dense_nbytes(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of the same weight stored dense in ``dtype`` (default: the value dtype)."""
        out, inp = self.shape
        return out * inp * torch.empty((), dtype=dtype or self.value_dtype).element_size()

    def _check_common(self, expected: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> None:
        """Check dtypes, shapes and contiguity of the tensors against ``expected`` (name -> (dtype, shape))."""
        if len(self.shape) != 2 or min(self.shape) < 0:
            raise FormatError(f"{self.format_name}: shape must be (out, in), got {self.shape}")
        if self.values.dtype not in VALUE_DTYPES:
            raise FormatError(f"{self.format_name}: values must be float32 or bfloat16, got {self.values.dtype}")
        for name, t in self.tensors().items():
            if not isinstance(t, torch.Tensor):
                raise FormatError(f"{self.format_name}: '{name}' must be a tensor, got {type(t).__name__}")
            if name in expected:
                dtype, shape = expected[name]
                if t.dtype != dtype:
                    raise FormatError(f"{self.format_name}: '{name}' must be {dtype}, got {t.dtype}")
                if tuple(t.shape) != shape:
                    raise FormatError(f"{self.format_name}: '{name}' must have shape {shape}, got {tuple(t.shape)}")
            if not t.is_contiguous():
                raise FormatError(f"{self.format_name}: '{name}' must be contiguous")


def value_dtype_for(weight: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype to store values in: the one asked for, else float32 (bfloat16 weights stay bfloat16)."""
    d = dtype or (torch.bfloat16 if weight.dtype == torch.bfloat16 else torch.float32)
    if d not in VALUE_DTYPES:
        raise FormatError(f"value dtype must be one of float32, bfloat16; got {d}")
    return d
