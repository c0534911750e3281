"""SparseLinear: a drop-in replacement for nn.Linear whose weight is packed and multiplied by a C++ kernel.

Inference module: y = x W^T + b through ``sparsa.kernels.spmm`` for float32 CPU inputs without autograd. Other
cases (a tensor on another device, inputs that require grad) take the plain-PyTorch path through the unpacked
weight, which is correct but not fast. The packed tensors are registered as buffers, so ``state_dict``, ``.to``
and ``copy.deepcopy`` see them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..formats import PackedWeight, pack
from ..kernels import KernelSpec, Prepared, best_kernel, get_kernel
from ..structure import StructureLike

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, kernel: KernelSpec | str | None = None):
        super().__init__()
        packed.validate()
        self.out_features, self.in_features = packed.shape
        self._packed = packed
        for name, t in packed.tensors().items():
            self.register_buffer(name, t)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().to(torch.float32).clone(), requires_grad=False)
        else:
            self.bias = None
        self._kernel_request = kernel
        self._bind()

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        structure: StructureLike = "unstructured",
        dtype: torch.dtype | None = None,
        kernel: KernelSpec | str | None = None,
    ) -> "SparseLinear":
        """Pack a Linear (or transformers Conv1D) whose weight already holds the zeros of ``structure``."""
        from ..modules import weight_out_in

        return cls(pack(weight_out_in(linear), structure, dtype), getattr(linear, "bias", None), kernel)

    # ---- packed weight kept in step with the buffers ----
    @property
    def packed(self) -> PackedWeight:
        return self._packed

    def _choose_kernel(self) -> KernelSpec | None:
        req = self._kernel_request
        if self.values.device.type != "cpu":
            return None
        if req is None or req == "auto":
            return best_kernel(self._packed)
        spec = get_kernel(req) if isinstance(req, str) else req
        if not spec.supports(self._packed):
            raise ValueError(f"kernel {spec.name} cannot run this {self._packed.format_name} weight")
        return spec

    def _bind(self) -> None:
        """Choose the kernel and bind the packed tensors to the C++ core (on the CPU only)."""
        self.kernel = self._choose_kernel()
        self._prepared = Prepared(self._packed, self.bias) if self.kernel is not None else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        fields = {name: getattr(self, name) for name in self._packed.tensor_names}
        self._packed = dataclasses.replace(self._packed, **fields)
        self._bind()
        return self

    # ---- compute ----
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        fast = (
            self.kernel is not None
            and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and x.requires_grad)
        )
        if fast:
            y = self._prepared(x2.to(torch.float32), self.kernel)
        else:
            w = self._packed.to_dense().to(device=x.device, dtype=x.dtype)
            b = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)
            y = nn.functional.linear(x2, w, b)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight, unpacked on demand (for inspection and export, not for speed)."""
        return self._packed.to_dense()

    def extra_repr(self) -> str:
        p = self._packed
        k = self.kernel.name if self.kernel is not None else "torch"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"format={p.format_name}, structure={p.structure}, sparsity={p.sparsity:.3f}, "
            f"values={str(p.value_dtype).replace('torch.', '')}, kernel={k}"
        )
