"""Sparse training methods, registered in one place (METHODS). A method says where masks start and how they
change; the math is in dynamics.py / schedules.py, the enforcement in hard.py / soft.py, the bookkeeping in
controller.py. Methods see the run through a small context (:class:`Run`): targets, masks, step, settings.

| method | masks | start | change |
|---|---|---|---|
| fixed  | hard | the model's zeros (a one-shot result), or magnitude / random | never |
| random | hard | random at ERK or uniform layer sparsities (sparse from scratch) | never |
| gmp    | hard | dense, or the model's zeros | pruned by magnitude along the cubic schedule (Zhu & Gupta) |
| set    | hard | random (ERK) or the model's zeros | drop smallest |W|, regrow at random (Mocanu et al.) |
| rigl   | hard | random (ERK) or the model's zeros | drop smallest |W|, regrow largest |dense grad| (Evci et al.) |
| granet | hard | random at ``init_sparsity``, dense, or the model's zeros | cubic pruning, then drop and regrow by gradient (Liu et al.) |
| srste  | soft | magnitude | N:M of |W| every step; forward sparse, gradient straight through + lambda (1 - M) W |
| decay  | soft | magnitude | N:M of |W| every step; pruned weights scaled by a factor decaying 1 -> 0 (MDGF) |

SET, RigL and GraNet replace a cosine-decayed fraction of each layer's kept units at every update.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..masks import mask_from_scores
from ..structure import Structure
from .dynamics import active_units, drop_lowest, grow_highest, prune_to, random_mask, random_scores
from .schedules import cosine_fraction, cubic_sparsity, mask_decay
from .targets import Target

__all__ = ["METHODS", "Method", "Run", "UnknownTrainingMethodError", "get_method"]


class UnknownTrainingMethodError(ValueError):
    pass


class Run(Protocol):
    """What a method may read and change."""

    cfg: object  # SparseTrainingConfig
    structure: Structure
    targets: list[Target]
    generator: torch.Generator

    def mask(self, name: str) -> torch.Tensor: ...
    def set_mask(self, name: str, mask: torch.Tensor) -> None: ...
    def dense_grads(self) -> dict[str, torch.Tensor]: ...


def _magnitude(t: Target) -> torch.Tensor:
    return t.weight().detach().abs().float()  # (out, in)


class Method:
    name = ""
    soft = False  # True: SoftMask parametrization (dense weights train), False: HardMasks
    scheduled = False
    default_init = "current"
    inits: tuple[str, ...] = ("current",)
    wants_dense_grads = False  # the hook keeps the dense gradient on update steps (gradient regrowth)
    moves_units = False  # drops or grows single weights / blocks: impossible under N:M's fixed count per group

    def initial_mask(self, run: Run, t: Target, init: str, init_sparsity: float | None) -> torch.Tensor:
        if init == "current":
            return t.weight() != 0
        if init == "dense":
            return torch.ones(t.shape, dtype=torch.bool)
        if init == "random":
            sp = t.sparsity if init_sparsity is None else init_sparsity
            return random_mask(t.shape, run.structure, None if t.structure.implied_sparsity is not None else sp,
                               run.generator)
        if init == "magnitude":
            sp = None if t.structure.implied_sparsity is not None else t.sparsity
            return mask_from_scores(_magnitude(t), run.structure, sp)
        raise ValueError(f"unknown init '{init}'")

    def is_update(self, run: Run, step: int) -> bool:
        return False

    def update(self, run: Run, step: int) -> dict:
        """Change masks at ``step`` (called only when ``is_update``); returns what changed, for logs."""
        return {}

    # soft methods
    def beta(self, run: Run, step: int) -> float:
        return 0.0

    def lam(self, run: Run) -> float:
        return 0.0


class Fixed(Method):
    name = "fixed"
    inits = ("current", "magnitude", "random")


class Random(Method):
    name = "random"
    default_init = "random"
    inits = ("random",)


def _update_window(run: Run, step: int) -> bool:
    from .schedules import is_update_step

    cfg = run.cfg
    return is_update_step(step, cfg.start_step, cfg.resolved_end, cfg.resolved_update_every)


class GMP(Method):
    name = "gmp"
    scheduled = True
    moves_units = True
    default_init = "dense"
    inits = ("dense", "current")

    def __init__(self) -> None:
        self.s_init: dict[str, float] = {}

    def start(self, run: Run) -> None:
        # the cubic schedule starts from each layer's sparsity at the start (0 from dense, or a one-shot mask's)
        for t in run.targets:
            m = run.mask(t.name)
            self.s_init[t.name] = 1.0 - float(m.sum()) / m.numel()

    def is_update(self, run: Run, step: int) -> bool:
        return _update_window(run, step)

    def target_sparsity(self, run: Run, t: Target, step: int) -> float:
        cfg = run.cfg
        return cubic_sparsity(step, cfg.start_step, cfg.resolved_end, min(self.s_init[t.name], t.sparsity),
                              t.sparsity)

    def update(self, run: Run, step: int) -> dict:
        pruned = 0
        for t in run.targets:
            old = run.mask(t.name)
            new = prune_to(_magnitude(t), old, self.target_sparsity(run, t, step), run.structure)
            pruned += int((old & ~new).sum())
            run.set_mask(t.name, new)
        return {"pruned": pruned}


def drop_and_grow(run: Run, step: int, by_gradient: bool) -> dict:
    """One SET/RigL update: every layer replaces a cosine-decayed fraction of its kept units."""
    cfg = run.cfg
    frac = cosine_fraction(step, cfg.start_step, cfg.resolved_end, cfg.drop_fraction)
    grads = run.dense_grads() if by_gradient else {}
    moved = 0
    for t in run.targets:
        old = run.mask(t.name)
        n = int(round(frac * active_units(old, run.structure)))
        if n == 0:
            continue
        dropped = drop_lowest(_magnitude(t), old, n, run.structure)
        if by_gradient:
            g = grads.get(t.name)
            if g is None:
                raise RuntimeError(f"no gradient was recorded for '{t.name}' before the update at step {step}: "
                                   f"call step() after optimizer.step(), once per optimizer step")
            scores = g.abs().float().to(old.device)
        else:
            scores = random_scores(t.shape, run.structure, run.generator)
        new = grow_highest(scores, dropped, n, run.structure)
        moved += int((new & ~old).sum())
        run.set_mask(t.name, new)  # grown weights start at zero (they were pruned), as in RigL
    return {"fraction": frac, "regrown": moved}


class SET(Method):
    name = "set"
    scheduled = True
    moves_units = True
    default_init = "random"
    inits = ("random", "current", "magnitude")

    def is_update(self, run: Run, step: int) -> bool:
        return _update_window(run, step)

    def update(self, run: Run, step: int) -> dict:
        return drop_and_grow(run, step, by_gradient=False)


class RigL(SET):
    name = "rigl"
    wants_dense_grads = True

    def update(self, run: Run, step: int) -> dict:
        return drop_and_grow(run, step, by_gradient=True)


class GraNet(GMP):
    name = "granet"
    default_init = "random"
    inits = ("random", "dense", "current")
    wants_dense_grads = True

    def update(self, run: Run, step: int) -> dict:
        info = super().update(run, step)  # gradual pruning to the cubic schedule's sparsity...
        info.update(drop_and_grow(run, step, by_gradient=True))  # ...then neuroregeneration
        return info


class SRSTE(Method):
    name = "srste"
    soft = True
    default_init = "magnitude"
    inits = ("magnitude",)

    def is_update(self, run: Run, step: int) -> bool:
        return step % run.cfg.resolved_update_every == 0

    def update(self, run: Run, step: int) -> dict:
        flips = 0
        for t in run.targets:
            old = run.mask(t.name)
            sp = None if t.structure.implied_sparsity is not None else t.sparsity
            new = mask_from_scores(_magnitude(t), run.structure, sp)
            flips += int((new & ~old).sum())
            run.set_mask(t.name, new)
        return {"flips": flips}

    def lam(self, run: Run) -> float:
        return run.cfg.srste_lambda


class Decay(SRSTE):
    name = "decay"
    scheduled = True

    def beta(self, run: Run, step: int) -> float:
        cfg = run.cfg
        return mask_decay(step, cfg.start_step, cfg.resolved_end, cfg.decay_shape, cfg.decay_rate)

    def lam(self, run: Run) -> float:
        return 0.0


METHODS: dict[str, type[Method]] = {m.name: m for m in (Fixed, Random, GMP, SET, RigL, GraNet, SRSTE, Decay)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]()
    except KeyError:
        raise UnknownTrainingMethodError(
            f"unknown training method '{name}'; known methods: {', '.join(METHODS)}") from None
