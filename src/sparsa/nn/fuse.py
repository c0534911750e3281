"""Runtime fusions around the sparse kernels: what a converted model runs besides its Linears.

* :func:`fuse_activations`: a GELU that consumes a SparseLinear's output (and nothing else does) moves into the
  kernel's output stage, so the (N, out) activation is written once instead of written, read and written again
  (for an FFN-up layer the GELU is a pure memory pass over its largest activation). The pattern is verified
  by tracing the parent module with torch.fx (its forward must be exactly ``act(linear(x))``), never assumed from
  attribute names; modules that do not trace or do more are left alone.
* :func:`optimize_runtime`: that, plus sparsa's attention kernel (:mod:`sparsa.nn.attention`).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import use_sparsa_attention
from .sparse_linear import SparseLinear

__all__ = ["fuse_activations", "optimize_runtime"]


def _is_exact_gelu(module: nn.Module) -> bool:
    """GELU in its erf form: torch's nn.GELU(approximate="none") or transformers' GELUActivation."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    if type(module).__name__ == "GELUActivation":  # transformers.activations, without importing it here
        return getattr(module, "act", None) is nn.functional.gelu
    return False


class _LeafTracer(torch.fx.Tracer):
    """Keeps sparse linears and activation modules as single nodes (fx would trace into transformers'
    GELUActivation, which is not a torch.nn leaf)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SparseLinear) or _is_exact_gelu(m) or super().is_leaf_module(m, qualname)


def _act_of_linear(parent: nn.Module) -> tuple[str, str] | None:
    """(linear child, activation child) when parent.forward(x) is exactly act(linear(x)), else None."""
    try:
        graph = _LeafTracer().trace(parent)
    except Exception:  # untraceable forwards (data-dependent control flow ...) are simply not fused
        return None
    nodes = [n for n in graph.nodes]
    ops = [n.op for n in nodes]
    if ops != ["placeholder", "call_module", "call_module", "output"]:
        return None
    _, lin, act, out = nodes
    if lin.args != (nodes[0],) or lin.kwargs or act.args != (lin,) or act.kwargs or out.args != (act,):
        return None
    return lin.target, act.target


def fuse_activations(model: nn.Module) -> list[str]:
    """Fuse each ``act(sparse_linear(x))`` module (act = exact GELU) into the kernel; returns the fused
    modules' names. The model computes the same function afterwards."""
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    fused = []
    # one trace per kind of parent (class and children's kinds): a model's layers repeat the same module, and
    # tracing each of them made loading a packed checkpoint measurably slower (~1 ms per trace)
    verdicts: dict[tuple, tuple[str, str] | None] = {}
    for name, parent in list(model.named_modules()):
        children = dict(parent.named_children())
        if not any(isinstance(c, SparseLinear) for c in children.values()):
            continue
        if not any(_is_exact_gelu(c) for c in children.values()):
            continue
        kind = (type(parent), tuple((n, type(c), isinstance(c, SparseLinear) and c.activation is None,
                                     _is_exact_gelu(c)) for n, c in children.items()))
        if kind not in verdicts:
            verdicts[kind] = _act_of_linear(parent)
        found = verdicts[kind]
        if found is None:
            continue
        lin_name, act_name = found
        lin, act = parent.get_submodule(lin_name), parent.get_submodule(act_name)
        if (not isinstance(lin, SparseLinear) or not _is_exact_gelu(act) or lin.activation is not None
                or uses.get(id(act), 0) != 1 or "." in act_name):
            continue
        lin.activation = "gelu"
        # the activation now happens inside the kernel: its module becomes the identity (GELU holds no state, so
        # the state dict is unchanged; copies and pickles of the model keep the fusion)
        setattr(parent, act_name, nn.Identity())
        fused.append(name)
    return fused


def optimize_runtime(model: nn.Module) -> list[str]:
    """Apply every runtime fusion sparsa has to a converted model, in place; returns what was done."""
    done = []
    if use_sparsa_attention(model):
        done.append("attention: sparsa kernel")
    fused = fuse_activations(model)
    if fused:
        done.append(f"gelu fused into {len(fused)} sparse linears")
    return done
