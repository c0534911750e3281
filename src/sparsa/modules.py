"""Choosing modules of any ``nn.Module`` by type and by name, and reading their weights as (out, in).

Patterns (``targets`` / ``ignore``), as in recipes and on the command line:

* a module class, or the name of one (``"Linear"``, ``"Conv1D"``): every module of that type;
* ``"re:<regex>"``: every module whose fully-qualified name matches the regular expression in full
  (``"re:.*attention.*"``, ``"re:encoder\\.layer\\.[0-2]\\..*"``);
* any other string: the module with exactly that fully-qualified name.

Only linear-like modules (a 2-D weight applied as x W^T) can be pruned and converted; the transformers
``Conv1D`` of GPT-2, which stores its weight transposed as (in, out), is read through a transposed view.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence, Union

import torch
from torch import nn

__all__ = [
    "ModuleSelectionError",
    "Pattern",
    "select_modules",
    "is_linear_like",
    "weight_out_in",
    "DEFAULT_TARGETS",
    "DEFAULT_IGNORE",
]

Pattern = Union[str, type]

DEFAULT_TARGETS: tuple[str, ...] = ("Linear", "Conv1D")
# Heads and poolers are left dense by default: they map to vocabularies or tasks rather than carrying the
# model's features, pruning them costs the most quality per byte, and sentence embeddings do not use the pooler.
DEFAULT_IGNORE: tuple[str, ...] = (r"re:(.*\.)?(lm_head|pooler(\.dense)?|classifier|score|qa_outputs|embed_out)",)


class ModuleSelectionError(ValueError):
    """A target or ignore pattern that is malformed or selects nothing."""


def is_linear_like(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        return False
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The module's weight as an (out, in) view that shares storage with the parameter."""
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 Conv1D: weight is (in, out)
        return module.weight.data.T
    return module.weight.data


def _compile(patterns: Iterable[Pattern], what: str) -> list[tuple[str, object]]:
    out = []
    for p in patterns:
        if isinstance(p, type):
            out.append(("type", p))
        elif isinstance(p, str) and p.startswith("re:"):
            try:
                out.append(("re", re.compile(p[3:])))
            except re.error as e:
                raise ModuleSelectionError(f"{what} pattern '{p}' is not a valid regular expression: {e}") from None
        elif isinstance(p, str) and p:
            out.append(("name", p))
        else:
            raise ModuleSelectionError(
                f"{what} pattern {p!r} must be a module class, a class name ('Linear'), 're:<regex>' or a module name"
            )
    return out


def _matches(kind: str, pat: object, name: str, module: nn.Module) -> bool:
    if kind == "type":
        return isinstance(module, pat)  # type: ignore[arg-type]
    if kind == "re":
        return pat.fullmatch(name) is not None  # type: ignore[union-attr]
    return type(module).__name__ == pat or name == pat


def select_modules(
    model: nn.Module,
    targets: Sequence[Pattern] = DEFAULT_TARGETS,
    ignore: Sequence[Pattern] = DEFAULT_IGNORE,
    linear_only: bool = True,
    strict: bool = True,
) -> list[tuple[str, nn.Module]]:
    """Modules of ``model`` matched by any target and by no ignore pattern, in traversal order.

    With ``strict``, a target pattern that matches no module at all is an error that lists the module types
    present, so a typo never silently prunes nothing. The default targets are never strict (a model may
    have Linear but no Conv1D).
    """
    if isinstance(targets, (str, type)):
        targets = [targets]
    if isinstance(ignore, (str, type)):
        ignore = [ignore]
    tpats = _compile(targets, "target")
    ipats = _compile(ignore, "ignore")
    named = [(n, m) for n, m in model.named_modules() if n]  # the root itself is never a target
    hit = [False] * len(tpats)
    chosen = []
    for name, mod in named:
        matched = False
        for i, (kind, pat) in enumerate(tpats):
            if _matches(kind, pat, name, mod):
                hit[i] = True
                matched = True
        if not matched or any(_matches(k, p, name, mod) for k, p in ipats):
            continue
        if linear_only and not is_linear_like(mod):
            continue
        chosen.append((name, mod))
    if strict and tuple(targets) != DEFAULT_TARGETS:
        missing = [str(t) for t, h in zip(targets, hit) if not h]
        if missing:
            types = sorted({type(m).__name__ for _, m in named})
            raise ModuleSelectionError(
                f"target pattern(s) {', '.join(repr(m) for m in missing)} match no module; module types in this "
                f"model: {', '.join(types)}; use a class name, 're:<regex>' on names, or a full module name"
            )
    return chosen
