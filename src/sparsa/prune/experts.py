"""Mixture-of-experts weights stored fused, as one 3-D parameter (num_experts, out, in) per projection
(transformers' Mixtral, Qwen2-MoE, ... ``experts.gate_up_proj`` / ``experts.down_proj``): each expert's slice
is pruned as its own (out, in) weight, named ``<module>.<param>.<expert>``.

A module is an expert collection when it has an integer ``num_experts`` and 3-D parameters whose first
dimension is that number (the convention of transformers' fused experts; no class or attribute path is
named). Each slice's inputs are the tokens routed to that expert: while a block runs, a torch function mode
sees every ``F.linear`` whose weight is a view into a watched parameter and tells from the view's storage
offset which expert it is. The model is switched to transformers' "eager" experts implementation for the
walk (one ``F.linear`` per expert) and switched back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["expert_params", "expert_slice", "ExpertInputs", "eager_experts"]


def expert_params(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(module name, module, parameter name) of every fused expert parameter, in model order."""
    out = []
    for name, m in model.named_modules():
        n = getattr(m, "num_experts", None)
        if not isinstance(n, int) or n < 1:
            continue
        for pname, p in m.named_parameters(recurse=False):
            if p.dim() == 3 and p.shape[0] == n:
                out.append((name, m, pname))
    return out


def expert_slice(module: nn.Module, param: str, index: int) -> torch.Tensor:
    """Expert ``index``'s (out, in) view of a fused parameter (transposed layouts read through .T)."""
    w = getattr(module, param).data[index]
    return w.T if getattr(module, "is_transposed", False) else w


class ExpertInputs(TorchFunctionMode):
    """Calls ``on_input(param_key, expert_index, x)`` for every F.linear over a slice of a watched parameter."""

    def __init__(self, watched: dict[object, tuple[str, torch.Tensor]], on_input: Callable[[str, int, torch.Tensor], None]):
        super().__init__()
        # storage pointer -> (key, parameter)
        self.by_storage = {p.untyped_storage().data_ptr(): (k, p) for k, p in watched.values()}
        self.on_input = on_input

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x = args[0] if args else kwargs.get("input")
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            hit = self.by_storage.get(w.untyped_storage().data_ptr()) if isinstance(w, torch.Tensor) else None
            if hit is not None:
                key, p = hit
                self.on_input(key, (w.storage_offset() - p.storage_offset()) // p.stride(0), x)
        return func(*args, **kwargs)


@contextmanager
def eager_experts(model: nn.Module) -> Iterator[None]:
    """Run fused experts one F.linear per expert for the duration (so that their inputs can be seen)."""
    cfg = getattr(model, "config", None)
    before = getattr(cfg, "_experts_implementation", None)
    if before is None or before == "eager" or not hasattr(model, "set_experts_implementation"):
        yield
        return
    model.set_experts_implementation("eager")
    try:
        yield
    finally:
        model.set_experts_implementation(before)
