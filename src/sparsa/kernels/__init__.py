"""The kernel registry as Python sees it, and the call into the C++ core.

Every kernel compiled into ``sparsa._C`` appears in :data:`KERNELS` (available on this CPU or not); tests and
benchmarks iterate this one list. ``spmm(packed, x, bias, kernel)`` computes y = x W^T + b with a kernel for the
packed format; ``packed.reference_matmul`` is the plain-PyTorch definition each kernel is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _C
from ..formats import BitmaskWeight, BsrWeight, NMWeight, PackedWeight

__all__ = ["KernelSpec", "KERNELS", "kernels_for", "best_kernel", "get_kernel", "spmm", "KernelError"]

# Preference when several kernels can run a weight: the widest ISA this CPU has, specialised tiles first.
_ISA_RANK = {"avx512": 0, "avx2": 1, "neon": 2, "scalar": 3}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class KernelError(ValueError):
    """An unknown kernel name, or a kernel that cannot run a given weight on this machine."""


@dataclass(frozen=True)
class KernelSpec:
    index: int
    name: str
    format: str
    isa: str
    weight_dtype: torch.dtype
    block: tuple[int, int] | None  # the BSR tile it is specialised for; None = any
    available: bool  # this CPU has the ISA

    def supports(self, packed: PackedWeight) -> bool:
        if packed.format_name != self.format or packed.value_dtype != self.weight_dtype:
            return False
        if isinstance(packed, BsrWeight) and self.block is not None:
            return tuple(packed.block) == tuple(self.block)
        return True


KERNELS: tuple[KernelSpec, ...] = tuple(
    KernelSpec(
        index=k["index"],
        name=k["name"],
        format=k["format"],
        isa=k["isa"],
        weight_dtype=_DTYPES[k["weight_dtype"]],
        block=tuple(k["block"]) if k["block"] is not None else None,
        available=bool(k["available"]),
    )
    for k in _C.kernels()
)
_BY_NAME = {k.name: k for k in KERNELS}


def kernels_for(packed: PackedWeight, available_only: bool = True) -> list[KernelSpec]:
    """Kernels that can run ``packed``, best first (widest ISA, then specialised before generic)."""
    ks = [k for k in KERNELS if k.supports(packed) and (k.available or not available_only)]
    return sorted(ks, key=lambda k: (_ISA_RANK.get(k.isa, 9), k.block is None, k.index))


def get_kernel(name: str) -> KernelSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KernelError(f"unknown kernel '{name}'; known kernels: {', '.join(sorted(_BY_NAME))}") from None


def best_kernel(packed: PackedWeight) -> KernelSpec:
    ks = kernels_for(packed)
    if not ks:
        raise KernelError(
            f"no kernel on this CPU runs format '{packed.format_name}' with {packed.value_dtype} values"
            + (f" and {packed.block[0]}x{packed.block[1]} blocks" if isinstance(packed, BsrWeight) else "")
        )
    return ks[0]


def spmm(
    packed: PackedWeight,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    kernel: KernelSpec | str | None = None,
    out: torch.Tensor | None = None,
    threads: int = 0,
) -> torch.Tensor:
    """y = x W^T + b for x (N, in) float32 on the CPU with a packed W; returns y (N, out) float32.

    ``kernel``: a KernelSpec or name (default: :func:`best_kernel`). ``threads``: 0 follows
    ``torch.get_num_threads()``.
    """
    spec = best_kernel(packed) if kernel is None else (get_kernel(kernel) if isinstance(kernel, str) else kernel)
    if not spec.supports(packed):
        raise KernelError(
            f"kernel {spec.name} cannot run format '{packed.format_name}' with {packed.value_dtype} values"
        )
    if not spec.available:
        raise KernelError(f"kernel {spec.name} needs {spec.isa}, which this CPU lacks")
    n_out, n_in = packed.shape
    if x.dim() != 2 or x.shape[1] != n_in:
        raise KernelError(f"x must have shape (N, {n_in}), got {tuple(x.shape)}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise KernelError(f"x must be a float32 CPU tensor, got {x.dtype} on {x.device}")
    if x.stride(1) != 1:
        x = x.contiguous()
    y = torch.empty(x.shape[0], n_out, dtype=torch.float32) if out is None else out
    nthreads = threads or torch.get_num_threads()
    if isinstance(packed, BsrWeight):
        r, c = packed.block
        _C.spmm_bsr(spec.index, x, packed.values, packed.row_ptr, packed.col_idx, r, c, n_in, n_out, bias, y, nthreads)
    elif isinstance(packed, BitmaskWeight):
        _C.spmm_bitmask(spec.index, x, packed.values, packed.row_ptr, packed.mask, 0, 0, n_in, n_out, bias, y, nthreads)
    elif isinstance(packed, NMWeight):
        n, m = packed.nm
        _C.spmm_bitmask(spec.index, x, packed.values, None, packed.mask, n, m, n_in, n_out, bias, y, nthreads)
    else:
        raise KernelError(f"no kernel entry point for format '{packed.format_name}'")
    return y
