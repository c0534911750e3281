"""SparseLinear: a drop-in replacement for nn.Linear whose weight is packed and multiplied by a C++ kernel.

Inference module: y = x W^T + b. With ``kernel="auto"`` (the default) the path for a call with N tokens is the
automatic choice of :mod:`sparsa.kernels.autotune` between every sparse kernel that can run the weight and torch
dense: measured once per kind of weight and token bucket, cached, and never slower than dense (when dense wins, a
dense copy of the weight is materialised and kept beside the packed one). ``kernel=None`` always runs the best
sparse kernel for the CPU; a kernel name forces that kernel. Calls that the kernels do not serve (a tensor on
another device, inputs that require grad) take the plain-PyTorch path through the unpacked weight: correct, not
fast. The packed tensors are registered as buffers, so ``state_dict``, ``.to`` and ``copy.deepcopy`` see them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..formats import PackedWeight, pack
from ..kernels import KernelSpec, Prepared, activation_code, best_kernel, get_kernel
from ..kernels import autotune
from ..structure import StructureLike

__all__ = ["SparseLinear"]

AUTO = "auto"


class SparseLinear(nn.Module):
    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None,
                 kernel: KernelSpec | str | None = AUTO, validate: bool = True):
        """``validate=False`` skips the O(nnz) structural check for a weight that was just validated (e.g. by
        ``PackedWeight.from_tensors`` when loading a checkpoint); the kernels trust validated weights."""
        super().__init__()
        if validate:
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
        # Activation applied after the bias, fused into the kernel's output stage (set by
        # sparsa.nn.fuse_activations when a GELU consumes this module's output and nothing else does).
        self.activation = None
        self._bind()

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        structure: StructureLike = "unstructured",
        dtype: torch.dtype | None = None,
        kernel: KernelSpec | str | None = AUTO,
    ) -> "SparseLinear":
        """Pack a Linear (or transformers Conv1D) whose weight already holds the zeros of ``structure``."""
        from ..modules import weight_out_in

        return cls(pack(weight_out_in(linear), structure, dtype), getattr(linear, "bias", None), kernel)

    @property
    def activation(self) -> str | None:
        return self._activation

    @activation.setter
    def activation(self, value: str | None) -> None:
        self._act_code = activation_code(value)  # validates: None or "gelu"
        self._activation = value

    # ---- packed weight and dispatch, kept in step with the buffers ----
    @property
    def packed(self) -> PackedWeight:
        return self._packed

    @property
    def auto(self) -> bool:
        return self._kernel_request == AUTO

    def _bind(self) -> None:
        """Bind the packed tensors to the C++ core (CPU only) and reset the per-bucket dispatch."""
        self._dispatch: dict[int, KernelSpec | None] = {}  # token bucket -> kernel, or None for dense
        self._last_n, self._last_path = -1, None  # the previous call's size and path (models repeat sizes)
        self._dense_weight: torch.Tensor | None = None
        on_cpu = self.values.device.type == "cpu"
        self._prepared = Prepared(self._packed, self.bias) if on_cpu else None
        req = self._kernel_request
        if not on_cpu:
            self.kernel = None
        elif req is None or req == AUTO:
            self.kernel = best_kernel(self._packed)  # auto: the best sparse kernel, used whenever sparse wins
        else:
            spec = get_kernel(req) if isinstance(req, str) else req
            if not spec.supports(self._packed):
                raise ValueError(f"kernel {spec.name} cannot run this {self._packed.format_name} weight")
            self.kernel = spec

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        fields = {name: getattr(self, name) for name in self._packed.tensor_names}
        self._packed = dataclasses.replace(self._packed, **fields)
        self._bind()
        return self

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) float32 weight, unpacked once and kept (used when dense is the faster path)."""
        if self._dense_weight is None:
            self._dense_weight = self._packed.to_dense().to(torch.float32).contiguous()
        return self._dense_weight

    def path_for(self, n: int) -> KernelSpec | None:
        """The kernel that serves a call with ``n`` tokens (None: torch dense)."""
        if not self.auto:
            return self.kernel
        if n == self._last_n:
            return self._last_path
        nb = autotune.n_bucket(n)
        if nb not in self._dispatch:
            choice = autotune.choose(self._prepared, self.dense_weight(), nb)
            self._dispatch[nb] = None if choice.kernel == autotune.DENSE else get_kernel(choice.kernel)
            if all(v is not None for v in self._dispatch.values()):
                self._dense_weight = None  # sparse won every bucket so far: do not keep a dense copy
        self._last_n, self._last_path = n, self._dispatch[nb]
        return self._last_path

    def kernel_name_for(self, n: int) -> str:
        k = self.path_for(n)
        return "torch dense" if k is None else k.name

    # ---- compute ----
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        fast = self._prepared is not None and x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)
        if fast:
            k = self.path_for(x2.shape[0])
            if k is not None:
                # the per-call path is kept lean (a layer's fixed cost adds up over a model's 36+ calls): the
                # checks above plus the core's own shape checks are all it needs
                if x2.dtype != torch.float32 or x2.stride(-1) != 1:
                    x2 = x2.to(torch.float32).contiguous()
                y = torch.empty(x2.shape[0], self.out_features)
                self._prepared.run_into(x2, y, k, self._act_code)
                return y.to(x.dtype).reshape(*lead, self.out_features)
            y = nn.functional.linear(x2.to(torch.float32), self.dense_weight(), self.bias)
        else:
            w = self._packed.to_dense().to(device=x.device, dtype=x.dtype)
            b = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)
            y = nn.functional.linear(x2, w, b)
        if self.activation == "gelu":
            y = nn.functional.gelu(y)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight, unpacked on demand (for inspection and export, not for speed)."""
        return self._packed.to_dense()

    def extra_repr(self) -> str:
        p = self._packed
        if self.auto:
            k = "auto" + (" (" + ", ".join(f"n<={n}: {'dense' if s is None else s.name}"
                                          for n, s in sorted(self._dispatch.items())) + ")" if self._dispatch else "")
        else:
            k = self.kernel.name if self.kernel is not None else "torch"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"format={p.format_name}, structure={p.structure}, sparsity={p.sparsity:.3f}, "
            f"values={str(p.value_dtype).replace('torch.', '')}, kernel={k}"
            + (f", activation={self.activation}" if self.activation else "")
        )
