"""``SparseTraining``: the object a training loop drives. Build it on a model (it selects the weights, checks
the structure against their shapes, sets the starting masks), attach the optimizer, and call ``step()`` once
after every ``optimizer.step()``::

    sparse = SparseTraining(model, method="rigl", sparsity=0.9, structure="4x1", total_steps=10_000)
    sparse.attach(optimizer)
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        sparse.step()            # schedules advance, masks update on update steps
        optimizer.zero_grad()
    sparse.finalize()            # plain modules again, exact zeros, structures recorded for sparsa.sparsify

``state_dict()`` / ``load_state_dict()`` carry the masks (bit-packed), the step, the random generator and the
method's own state, so a resumed run continues with the very same masks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..structure import Structure, Unstructured, parse_structure
from .config import ConfigError, SparseTrainingConfig, load_config
from .dynamics import layer_sparsities, with_overrides
from .hard import HardMasks
from .methods import get_method
from .soft import SoftMask, install_soft, lifted, remove_soft
from .targets import Target, find_targets, is_transposed, overridden

__all__ = ["SparseTraining", "ModuleSparsity", "pack_mask", "unpack_mask", "planned_sparsities"]

_STATE_VERSION = 1


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool (out, in) -> uint8 bits (8 weights per byte, row-major)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1)))


def unpack_mask(bits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    n = shape[0] * shape[1]
    flat = np.unpackbits(bits.cpu().numpy(), count=n)
    return torch.from_numpy(flat.astype(bool)).reshape(shape)


def _own_structure(module: nn.Module) -> Structure:
    """The structure a pruned module records (sparsa.prune, sparsa.json), else unstructured: fixed masks taken
    from a one-shot result keep the structure that made them."""
    own = getattr(module, "sparsa_structure", None)
    return parse_structure(own) if own else Unstructured()


@dataclass
class ModuleSparsity:
    name: str
    structure: str
    shape: tuple[int, int]
    target: float
    sparsity: float  # zeros of the mask


def _out_in(module: nn.Module) -> tuple[int, int]:
    s = tuple(module.weight.shape)
    return (s[1], s[0]) if is_transposed(module) else s


def planned_sparsities(model: nn.Module, cfg: SparseTrainingConfig,
                       chosen: list[tuple[str, nn.Module]]) -> dict[str, float]:
    """Final sparsity per trained module: the allocation's, with the config's overrides (the rest keeping the
    overall sparsity); without an overall sparsity (fixed masks from the model's zeros), the zeros each has.
    Errors (an override that selects nothing or cannot be absorbed) come before anything is trained."""
    final = cfg.resolved_sparsity
    if final is None:
        return {name: float((mod.weight == 0).sum()) / mod.weight.numel() for name, mod in chosen}
    shapes = {name: _out_in(mod) for name, mod in chosen}
    return with_overrides(layer_sparsities(shapes, final, cfg.allocation), shapes,
                          overridden(model, cfg.overrides, list(shapes)), final)


class SparseTraining:
    """Masks over the model's linear weights and the schedule that moves them; see the module docstring.

    ``state``: a ``state_dict()`` to resume from. Its masks replace the method's starting masks *before* anything
    touches the weights (a random or magnitude start would otherwise zero weights the saved masks keep).
    """

    def __init__(self, model: nn.Module, config: SparseTrainingConfig | dict | str | None = None,
                 optimizer: torch.optim.Optimizer | None = None, state: dict | None = None, **settings):
        self.cfg = load_config(config, **settings)
        if get_method(self.cfg.method).scheduled and self.cfg.total_steps is None:
            raise ConfigError(f"method '{self.cfg.method}' needs total_steps (the optimizer steps of the run) to "
                              f"place its schedule")
        self.model = model
        self.structure = parse_structure(self.cfg.structure)
        self.method = get_method(self.cfg.method)
        chosen = find_targets(model, self.structure, self.cfg.targets, self.cfg.ignore)
        shapes = {name: _out_in(mod) for name, mod in chosen}
        sps = planned_sparsities(model, self.cfg, chosen)
        keep_own = self.method.name == "fixed" and self.cfg.resolved_init == "current"
        if keep_own and state is None and not any(bool((m.weight == 0).any()) for _, m in chosen):
            # "fixed" keeps the zeros the model has; on a dense model that would silently train it dense
            raise ConfigError("method 'fixed' keeps the model's zeros, and none of the selected weights has any: "
                              "prune the model first (sparsa.prune / sparsa prune), or pass init='magnitude' or "
                              "init='random' to make the fixed masks here")
        self.targets = [Target(n, m, _own_structure(m) if keep_own else self.structure, sps[n], is_transposed(m))
                        for n, m in chosen]
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.step_count = 0
        self.last_update: dict = {}
        self.finalized = False
        init = self.cfg.resolved_init
        init_sps: dict[str, float | None] = {n: None for n in shapes}
        if self.method.name == "granet" and init == "random":  # sparse-to-sparse GraNet starts below the target
            init_sps = layer_sparsities(shapes, self.cfg.resolved_init_sparsity, self.cfg.allocation)
        if state is not None:
            masks = self._saved_masks(state)
        else:
            masks = {t.name: self.method.initial_mask(self, t, init, init_sps[t.name]) for t in self.targets}
        self.soft: dict[str, SoftMask] = {}
        self.hard: HardMasks | None = None
        if self.method.soft:
            beta, lam = self.method.beta(self, 0), self.method.lam(self)
            self.soft = {t.name: install_soft(t, masks[t.name], beta, lam) for t in self.targets}
        else:
            self.hard = HardMasks(self.targets, masks, optimizer)
        self.optimizer = optimizer
        if hasattr(self.method, "start"):
            self.method.start(self)
        if state is not None:
            self._restore(state)
        self._arm()

    # -- what methods see (methods.Run) -------------------------------------------------------------------
    def mask(self, name: str) -> torch.Tensor:
        """Current keep-mask of ``name``, bool (out, in) (after ``finalize``: the final one)."""
        if self.finalized:
            return self._final_masks[name]
        if self.hard is not None:
            return self.hard.masks[name]
        t = self._target(name)
        return t.from_param(self.soft[name].mask)

    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        if self.hard is not None:
            self.hard.set(name, mask)
        else:
            t = self._target(name)
            self.soft[name].mask.copy_(t.to_param(mask.to(self.soft[name].mask.device)))

    def dense_grads(self) -> dict[str, torch.Tensor]:
        return self.hard.take_dense_grads() if self.hard is not None else {}

    def _target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    # -- the loop ---------------------------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> "SparseTraining":
        """Use ``optimizer``: its state at pruned positions is zeroed now and at every mask change."""
        self.optimizer = optimizer
        if self.hard is not None:
            self.hard.attach(optimizer)
        return self

    def _arm(self) -> None:
        # gradient regrowth ranks pruned weights by their dense gradient: keep it during the backward pass that
        # precedes an update step (the hook masks it for the optimizer either way)
        if self.hard is not None:
            self.hard.collect_dense = self.method.wants_dense_grads and self.method.is_update(self, self.step_count + 1)

    def step(self) -> dict:
        """Advance one optimizer step: update masks when the schedule says so; returns what changed."""
        if self.finalized:
            raise RuntimeError("step() after finalize(): this SparseTraining has ended")
        self.step_count += 1
        t = self.step_count
        info = self.method.update(self, t) if self.method.is_update(self, t) else {}
        if self.soft:
            beta = self.method.beta(self, t)
            for sm in self.soft.values():
                sm.beta = beta
            if info or beta:
                info = {**info, "beta": beta}
        elif self.cfg.reapply:
            self.hard.reapply()
        self._arm()
        if info:
            info["step"] = t
        self.last_update = info
        return info

    # -- reports, state, the end --------------------------------------------------------------------------------
    def report(self) -> list[ModuleSparsity]:
        out = []
        for t in self.targets:
            m = self.mask(t.name)
            out.append(ModuleSparsity(t.name, str(t.structure), t.shape, t.sparsity,
                                      1.0 - float(m.sum()) / m.numel()))
        return out

    def sparsity(self) -> float:
        """Pruned fraction over all target weights (of the masks)."""
        total = sum(t.shape[0] * t.shape[1] for t in self.targets)
        kept = sum(int(self.mask(t.name).sum()) for t in self.targets)
        return 1.0 - kept / max(1, total)

    def state_dict(self) -> dict:
        method_state = getattr(self.method, "s_init", None)
        return {
            "version": _STATE_VERSION,
            "config": self.cfg.model_dump(),
            "step": self.step_count,
            "masks": {t.name: pack_mask(self.mask(t.name)) for t in self.targets},
            "shapes": {t.name: t.shape for t in self.targets},
            "generator": self.generator.get_state(),
            "method_state": dict(method_state) if method_state is not None else None,
        }

    def _saved_masks(self, state: dict) -> dict[str, torch.Tensor]:
        """The masks of ``state_dict()`` output, checked against this run (same method, structure, modules, shapes)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"sparse training state version {state.get('version')} is not {_STATE_VERSION}")
        saved = state["config"]
        for key in ("method", "structure"):
            if saved[key] != getattr(self.cfg, key):
                raise ValueError(f"the saved sparse training state has {key} '{saved[key]}', this run "
                                 f"'{getattr(self.cfg, key)}'")
        names = {t.name for t in self.targets}
        if set(state["masks"]) != names:
            diff = sorted(names.symmetric_difference(state["masks"]))
            raise ValueError(f"the saved masks cover other modules than this run (first difference: '{diff[0]}')")
        masks = {}
        for t in self.targets:
            if tuple(state["shapes"][t.name]) != t.shape:
                raise ValueError(f"saved mask of '{t.name}' has shape {tuple(state['shapes'][t.name])}, "
                                 f"the weight is {t.shape}")
            masks[t.name] = unpack_mask(state["masks"][t.name], t.shape)
        return masks

    def _restore(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])
        if state.get("method_state") is not None and hasattr(self.method, "s_init"):
            self.method.s_init = dict(state["method_state"])
        if self.soft:
            beta = self.method.beta(self, self.step_count)
            for sm in self.soft.values():
                sm.beta = beta

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``: same masks, step, random stream and schedule state. (Weights the
        starting masks of this object zeroed stay zero: to resume a run, build it with ``state=`` instead.)"""
        for name, mask in self._saved_masks(state).items():
            self.set_mask(name, mask)
        self._restore(state)
        self._arm()

    def _record_structures(self, model: nn.Module) -> None:
        for t in self.targets:
            model.get_submodule(t.name).sparsa_structure = str(t.structure)

    def sparse_copy(self) -> nn.Module:
        """A deep copy of the model as it would be saved now: plain modules, masks applied (exact zeros)."""
        if not self.soft:
            model = copy.deepcopy(self.model)  # hard masks: the weights already hold exact zeros
        else:
            with lifted(self.targets, self.soft):
                model = copy.deepcopy(self.model)
            with torch.no_grad():
                for t in self.targets:
                    w = model.get_submodule(t.name).weight
                    w.mul_(self.soft[t.name].mask.to(w.dtype))  # the mask is stored in the parameter's layout
        self._record_structures(model)
        return model

    def finalize(self) -> list[ModuleSparsity]:
        """End sparse training: exact zeros baked into plain parameters, hooks removed, each module's structure
        recorded (``module.sparsa_structure``) for sparsa.sparsify and save. Returns the per-module report."""
        if self.finalized:
            return self._final_report
        rep = self._final_report = self.report()
        self._final_masks = {t.name: self.mask(t.name).clone() for t in self.targets}
        if self.soft:
            for t in self.targets:
                remove_soft(t)
            self.soft = {}
        else:
            self.hard.reapply()
            self.hard.remove()
        self._record_structures(self.model)
        self.finalized = True
        return rep
