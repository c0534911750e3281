"""``sparsa.prune``: prune the chosen modules of a model, leaving dense-with-zeros weights (the contract with
everything below: a dense weight with zeros in it plus the structure that made it).

Settings come from a recipe (prune/recipe.py) or from keyword arguments (a one-entry recipe). Data-free
pruning (magnitude, no calibration) scores each weight on its own; anything else runs the calibration
engine (prune/engine.py) over the calibration text, block by block.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from typing import Sequence, Union

import torch
from torch import nn

from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, Pattern, _compile, _matches, select_modules, weight_out_in
from ..structure import StructureLike, parse_structure
from .allocation import erk_sparsities, outlier_ratio, owl_sparsities
from .calibration import CalibrationConfig, build_batches, split_batches
from .experts import eager_experts, expert_params
from .engine import (BlockLoader, Outcome, Plan, block_wanda_metrics, bounded_call_tokens, prune_modules, prune_one,
                     prune_without_data)
from .methods import METHODS, MissingCalibrationError, get_method
from .recipe import Recipe, RecipeEntry, load_recipe

__all__ = ["prune", "PruneReport", "ModuleReport", "METHODS", "plan_modules"]


@dataclass
class ModuleReport:
    name: str
    type: str
    shape: tuple[int, int]
    structure: str
    sparsity: float  # achieved: fraction of exact zeros after pruning
    method: str = "magnitude"
    target: float | None = None  # the sparsity this module was asked for (after allocation)
    recon_error: float | None = None  # ||WX - W'X||^2 / ||WX||^2 on the calibration inputs
    dsnot: bool = False
    tokens: int = 0  # calibration tokens that reached the module


@dataclass
class PruneReport:
    method: str
    structure: str
    sparsity: float  # requested (parameter-weighted over modules for a recipe)
    modules: list[ModuleReport] = field(default_factory=list)
    recipe: dict | None = None

    @property
    def achieved_sparsity(self) -> float:
        """Zeros over all pruned weights."""
        total = sum(m.shape[0] * m.shape[1] for m in self.modules)
        zeros = sum(m.sparsity * m.shape[0] * m.shape[1] for m in self.modules)
        return zeros / max(1, total)

    @property
    def mean_recon_error(self) -> float | None:
        errs = [m.recon_error for m in self.modules if m.recon_error is not None]
        return sum(errs) / len(errs) if errs else None

    def structures(self) -> dict[str, str]:
        """Module name -> structure string: what ``sparsify`` needs to pack each weight."""
        return {m.name: m.structure for m in self.modules}

    def to_dict(self) -> dict:
        return asdict(self)


def _is_recipe(x) -> bool:
    if isinstance(x, (Recipe, dict, list, os.PathLike)):
        return True
    return isinstance(x, str) and x not in METHODS and (x.endswith((".yaml", ".yml")) or "\n" in x)


def _expert_slices(model: nn.Module, targets: Sequence[str], ignore: Sequence[str]) -> list[tuple[str, nn.Module, str, int]]:
    """(name, module, parameter, expert) of the fused-expert slices an entry selects: all of them with the
    default targets (they are the MoE's linear layers), else those whose slice name, module name or module
    class a target names; ignore patterns apply the same way."""
    tp, ip = _compile(targets, "target"), _compile(ignore, "ignore")
    default = tuple(targets) == DEFAULT_TARGETS
    out = []
    for mname, mod, pname in expert_params(model):
        for e in range(getattr(mod, pname).shape[0]):
            name = f"{mname}.{pname}.{e}"

            def hit(pats):
                return any(_matches(k, p, name, mod) or (k != "re" and _matches(k, p, mname, mod)) for k, p in pats)

            if (default or hit(tp)) and not hit(ip):
                out.append((name, mod, pname, e))
    return out


def plan_modules(model: nn.Module, recipe: Recipe) -> list[Plan]:
    """One Plan per selected weight (the last matching entry wins), in model order, shapes checked."""
    chosen: dict[str, Plan] = {}
    for idx, e in enumerate(recipe.prune):
        st = parse_structure(e.structure)
        m = get_method(e.method)
        scope = e.scope or m.default_scope
        for name, mod in select_modules(model, e.targets, e.ignore):
            st.check_shape(tuple(weight_out_in(mod).shape), f"module '{name}' ({type(mod).__name__})")
            chosen[name] = Plan(name, mod, m, st, e.resolved_sparsity, scope, e.dsnot, idx)
        for name, mod, pname, ex in _expert_slices(model, e.targets, e.ignore):
            p = Plan(name, mod, m, st, e.resolved_sparsity, scope, e.dsnot, idx, pname, ex)
            st.check_shape(tuple(p.weight().shape), f"expert weight '{name}' ({type(mod).__name__})")
            chosen[name] = p
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    key = lambda p: (order[p.name.rsplit(".", 2)[0]] if p.param is not None else order[p.name], p.index or 0)  # noqa
    return sorted(chosen.values(), key=key)


def _allocate(model: nn.Module, recipe: Recipe, plans: list[Plan], batches, loader, progress: bool) -> None:
    """Set each plan's sparsity from its entry's allocation (uniform plans keep the entry's sparsity)."""
    for idx, e in enumerate(recipe.prune):
        mine = [p for p in plans if p.entry == idx]
        if not mine or e.allocation == "uniform":
            continue
        if e.allocation == "erk":
            sps = erk_sparsities({p.name: tuple(p.weight().shape) for p in mine}, e.resolved_sparsity)
            for p in mine:
                p.sparsity = sps[p.name]
        elif e.allocation == "owl":
            ratios = block_wanda_metrics(model, mine, batches, lambda ms, m=e.owl_m: outlier_ratio(ms, m),
                                         loader=loader, progress=progress)
            names = list(ratios)
            per_block = dict(zip(names, owl_sparsities([ratios[n] for n in names], e.resolved_sparsity,
                                                       e.owl_lambda)))
            for p in mine:
                owner = next((b for b in names if b == "" or p.name.startswith(b + ".")), None)
                if owner is not None:
                    p.sparsity = per_block[owner]


def _recipe_from_kwargs(method, sparsity, structure, targets, ignore, scope, allocation, dsnot, owl_lambda, owl_m,
                        cfg: CalibrationConfig | None) -> Recipe:
    st = parse_structure(structure)
    sp = st.resolve_sparsity(sparsity if sparsity is not None or st.implied_sparsity is not None else 0.5)
    get_method(method)
    entry = RecipeEntry(
        targets=[t if isinstance(t, str) else t.__name__ for t in ([targets] if isinstance(targets, (str, type))
                                                                     else targets)],
        ignore=[t if isinstance(t, str) else t.__name__ for t in ([ignore] if isinstance(ignore, (str, type))
                                                                  else ignore)],
        method=method, sparsity=sp, structure=str(st), scope=scope, allocation=allocation, dsnot=dsnot,
        owl_lambda=owl_lambda, owl_m=owl_m,
    )
    cal = {} if cfg is None else {"calibration": {"samples": cfg.samples, "seq_len": cfg.seq_len, "seed": cfg.seed,
                                                  "batch_size": cfg.batch_size, "mode": cfg.mode}}
    return Recipe(prune=[entry], **cal)


def _tokenizer_for(model: nn.Module):
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not path or not os.path.isdir(path):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None


@torch.no_grad()
def prune(
    model: nn.Module,
    method: Union[str, Recipe, dict, list, os.PathLike] = "magnitude",
    sparsity: float | None = 0.5,
    structure: StructureLike = "unstructured",
    targets: Sequence[Pattern] = DEFAULT_TARGETS,
    ignore: Sequence[Pattern] = DEFAULT_IGNORE,
    scope: str | None = None,
    inplace: bool = True,
    progress: bool = False,
    *,
    calibration=None,
    tokenizer=None,
    allocation: str = "uniform",
    dsnot: bool = False,
    owl_lambda: float = 0.08,
    owl_m: float = 5.0,
    calibration_config: CalibrationConfig | None = None,
    sequential: bool = True,
    true_sequential: bool = True,
    loader: BlockLoader | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Prune the selected linear-like modules of ``model``; returns (model, report).

    ``method`` is a method name (``magnitude``, ``wanda``, ``sparsegpt``) used with the keyword settings, or a
    recipe (a Recipe, its dict/list form, YAML text or a .yaml path) that replaces them. ``calibration`` is
    text (a file path or a list of strings, tokenised with ``tokenizer``, by default the model folder's own)
    or token batches; data-aware methods, DSnoT and OWL need it. With ``inplace=False`` the model is
    deep-copied first and the original is left untouched. Each pruned module records its structure as
    ``module.sparsa_structure``.
    """
    if _is_recipe(method):
        recipe = load_recipe(method)
    else:
        recipe = _recipe_from_kwargs(method, sparsity, structure, targets, ignore, scope, allocation, dsnot,
                                     owl_lambda, owl_m, calibration_config)
    if recipe.needs_data and calibration is None:
        e = next(e for e in recipe.prune if get_method(e.method).needs_data or e.dsnot or e.allocation == "owl")
        what = f"method '{e.method}'" if get_method(e.method).needs_data else ("DSnoT" if e.dsnot else "OWL")
        raise MissingCalibrationError(
            f"{what} needs calibration data: pass calibration=<text file, list of strings or token batches> "
            f"(on the command line: --calibration FILE)")
    if not inplace:
        model = copy.deepcopy(model)
    plans = plan_modules(model, recipe)
    if calibration is None:
        _allocate(model, recipe, plans, None, loader, progress)
        outcomes = [prune_one(p, None) for p in plans] if loader is None else prune_without_data(model, plans, loader)
    else:
        is_text = isinstance(calibration, (str, os.PathLike)) or (
            isinstance(calibration, (list, tuple)) and bool(calibration) and isinstance(calibration[0], str))
        if tokenizer is None and is_text:
            tokenizer = _tokenizer_for(model)
        batches = build_batches(model, tokenizer, calibration, recipe.calibration.config())
        if loader is not None:  # bounded memory: activations of a few samples at a time, not a whole batch
            batches = split_batches(batches, bounded_call_tokens(model))
        with eager_experts(model):
            _allocate(model, recipe, plans, batches, loader, progress)
            outcomes = prune_modules(model, plans, batches, sequential=sequential, true_sequential=true_sequential,
                                     loader=loader, progress=progress)
    return model, _report(recipe, outcomes)


def _report(recipe: Recipe, outcomes: list[Outcome]) -> PruneReport:
    mods = [ModuleReport(o.name, o.type, o.shape, o.structure, o.sparsity, o.method, o.target, o.recon_error,
                         o.dsnot, o.tokens) for o in outcomes]
    if len(recipe.prune) == 1:
        e = recipe.prune[0]
        method, structure, sp = e.method, str(parse_structure(e.structure)), e.resolved_sparsity
    else:
        numel = sum(m.shape[0] * m.shape[1] for m in mods)
        method = "+".join(sorted({m.method for m in mods})) or "none"
        structure = ", ".join(sorted({m.structure for m in mods})) or "none"
        sp = sum((m.target or 0) * m.shape[0] * m.shape[1] for m in mods) / max(1, numel)
    return PruneReport(method, structure, sp, mods, recipe.model_dump())

