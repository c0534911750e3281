"""The kernel registry as Python sees it, and the call into the C++ core.

Every kernel compiled into ``sparsa._C`` appears in :data:`KERNELS` (available on this CPU or not); tests and
benchmarks iterate this one list. ``spmm(packed, x, bias, kernel)`` computes y = x W^T + b with a kernel for the
packed format; ``packed.reference_matmul`` is the plain-PyTorch definition each kernel is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _C
from ..formats import BitmaskWeight, BsrWeight, CsrWeight, NMWeight, PackedWeight

__all__ = ["KernelSpec", "KERNELS", "kernels_for", "best_kernel", "get_kernel", "spmm", "prepare", "Prepared",
           "activation_code", "KernelError", "DECODE_MAX_N"]

# Calls with at most this many tokens take the kernels' decode path (weights read once, applied to every token).
DECODE_MAX_N: int = _C.DECODE_MAX_N

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
    batched_only: bool = False  # at n <= DECODE_MAX_N it runs another kernel's decode code (the "rt" variants)

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
        batched_only=bool(k["batched_only"]),
    )
    for k in _C.kernels()
)
_BY_NAME = {k.name: k for k in KERNELS}


def kernels_for(packed: PackedWeight, available_only: bool = True, n: int | None = None) -> list[KernelSpec]:
    """Kernels that can run ``packed``, best first (widest ISA, then specialised before generic). With ``n``, only
    those that differ at that many tokens: batched-only variants run another kernel's decode code at n <=
    ``DECODE_MAX_N`` and are left out there."""
    decode = n is not None and n <= DECODE_MAX_N
    ks = [k for k in KERNELS
          if k.supports(packed) and (k.available or not available_only) and not (decode and k.batched_only)]
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


def _resolve(packed: PackedWeight, kernel: KernelSpec | str | None) -> KernelSpec:
    spec = best_kernel(packed) if kernel is None else (get_kernel(kernel) if isinstance(kernel, str) else kernel)
    if not spec.supports(packed):
        raise KernelError(
            f"kernel {spec.name} cannot run format '{packed.format_name}' with {packed.value_dtype} values"
            + (f" and {packed.block[0]}x{packed.block[1]} blocks" if isinstance(packed, BsrWeight) else "")
        )
    if not spec.available:
        raise KernelError(f"kernel {spec.name} needs {spec.isa}, which this CPU lacks")
    return spec


# Activations the kernels fuse into their output stage (codes of the C++ core's Act enum).
_ACTIVATIONS = {None: 0, "gelu": 1}


class Prepared:
    """A packed weight (and bias) bound once to the C++ core, for repeated products y = x W^T + b.

    Binding validates the packed arrays and imports them through DLPack once; each call then passes only x and y
    (their addresses, shapes and row strides: no array import at all), so a call's fixed cost is a few
    microseconds rather than one DLPack import per array.
    """

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None):
        if any(t.device.type != "cpu" for t in packed.tensors().values()):
            raise KernelError("sparsa kernels run on the CPU; the packed weight lives on another device")
        self.packed = packed
        self.bias = None if bias is None else bias.detach().to(torch.float32).contiguous()
        n_out, n_in = packed.shape
        t = packed.tensors()
        if isinstance(packed, BsrWeight):
            r, c = packed.block
            self._handle = _C.PackedHandle("bsr", n_in, n_out, t["values"], t["row_ptr"], t["col_idx"], None,
                                           br=r, bc=c, bias=self.bias)
        elif isinstance(packed, CsrWeight):
            self._handle = _C.PackedHandle("csr", n_in, n_out, t["values"], t["row_ptr"], t["col_idx"], None,
                                           bias=self.bias)
        elif isinstance(packed, BitmaskWeight):
            self._handle = _C.PackedHandle("bitmask", n_in, n_out, t["values"], t["row_ptr"], None, t["mask"],
                                           bias=self.bias)
        elif isinstance(packed, NMWeight):
            n, m = packed.nm
            self._handle = _C.PackedHandle("nm", n_in, n_out, t["values"], None, None, t["mask"], nm_n=n, nm_m=m,
                                           bias=self.bias)
        else:
            raise KernelError(f"no kernel entry point for format '{packed.format_name}'")
        self.default_kernel = best_kernel(packed)
        self._checked: KernelSpec | None = None  # the last explicit kernel __call__ checked against this weight

    def __reduce__(self):
        # the C++ handle holds raw pointers: copies and pickles rebind from the (copied) tensors instead
        return (Prepared, (self.packed, self.bias))

    def __call__(self, x: torch.Tensor, kernel: KernelSpec | str | None = None, out: torch.Tensor | None = None,
                 threads: int = 0, activation: str | None = None) -> torch.Tensor:
        """y = act(x W^T + b); ``activation`` None or "gelu" (erf form, fused into the kernel's output stage)."""
        act = _ACTIVATIONS.get(activation)
        if act is None:
            act = activation_code(activation)  # raises, naming the allowed values
        if kernel is None:
            spec = self.default_kernel
        elif kernel is self._checked:  # the spec of an earlier call, checked then (specs are frozen)
            spec = kernel
        else:
            spec = _resolve(self.packed, kernel)
            if isinstance(kernel, KernelSpec):
                self._checked = spec
        # the checks read each tensor attribute once: at ~0.1 us per access they were a third of a small call
        n_out, n_in = self.packed.shape
        xs = x.shape
        if len(xs) != 2 or xs[1] != n_in:
            raise KernelError(f"x must have shape (N, {n_in}), got {tuple(xs)}")
        if x.dtype is not torch.float32 or not x.is_cpu:
            raise KernelError(f"x must be a float32 CPU tensor, got {x.dtype} on {x.device}")
        n, ldx = xs[0], x.stride()
        if ldx[1] != 1:
            x = x.contiguous()
            ldx = x.stride()
        if out is None:
            y, ldy = torch.empty(n, n_out, dtype=torch.float32), n_out
        else:
            ys = out.shape
            if len(ys) != 2 or out.dtype is not torch.float32 or not out.is_cpu:
                raise KernelError(f"out must be a 2-D float32 CPU tensor, got {len(ys)}-D {out.dtype} on "
                                  f"{out.device}")
            if ys[0] != n or ys[1] != n_out:
                raise KernelError(f"out must have shape ({n}, {n_out}), got {tuple(ys)}")
            st = out.stride()
            if st[1] != 1 or (n > 1 and st[0] < n_out):
                raise KernelError(f"out must have rows of {n_out} contiguous floats that do not overlap, got "
                                  f"strides {st}")
            y, ldy = out, st[0]
        self._handle.run_at(spec.index, x.data_ptr(), n, n_in, ldx[0], y.data_ptr(), n, n_out, ldy,
                            threads or torch.get_num_threads(), act)
        return y

    def run_into(self, x: torch.Tensor, y: torch.Tensor, spec: KernelSpec, act: int = 0, threads: int = 0) -> None:
        """The per-call fast path for callers that checked the inputs themselves (SparseLinear): x (N, in) and
        y (N, out) float32 CPU tensors with unit stride along features, ``spec`` a kernel that runs this weight,
        ``act`` an activation code (see ``activation_code``). The C++ core still checks shapes and row strides."""
        # addresses rather than numpy views: two x.numpy() and their buffer imports took ~1 us more per call
        (n, n_in), (ny, n_out) = x.shape, y.shape
        self._handle.run_at(spec.index, x.data_ptr(), n, n_in, x.stride(0), y.data_ptr(), ny, n_out, y.stride(0),
                            threads or torch.get_num_threads(), act)


def activation_code(activation: str | None) -> int:
    """The core's code for an activation the kernels fuse; KernelError naming the allowed values otherwise."""
    act = _ACTIVATIONS.get(activation)
    if act is None:
        raise KernelError(f"unknown activation {activation!r}: allowed values are "
                          + ", ".join(repr(a) for a in _ACTIVATIONS))
    return act


def prepare(packed: PackedWeight, bias: torch.Tensor | None = None) -> Prepared:
    """Bind ``packed`` (and ``bias``) for repeated calls; see :class:`Prepared`."""
    return Prepared(packed, bias)


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
    ``torch.get_num_threads()``. For repeated calls with one weight, :func:`prepare` it once instead.
    """
    return Prepared(packed, bias)(x, _resolve(packed, kernel), out, threads)
