"""Settings of a sparse training run, validated once (unknown keys, unknown names and contradictions are
errors before anything trains). The same object comes from keyword arguments, a dict or YAML.

    method: rigl            # fixed | random | gmp | set | rigl | granet | srste | decay
    sparsity: 0.9           # final sparsity (N:M: implied by the structure)
    structure: 4x1          # the foundation's vocabulary: unstructured | N:M | RxC blocks
    allocation: erk         # per-layer sparsity: uniform | erk
    overrides:              # modules at their own sparsity; the others absorb the difference (same overall)
      - {targets: ['re:encoder\\.layer\\.5\\..*'], sparsity: 0.7}
    init: random            # starting mask: current (the model's zeros) | dense | random | magnitude
    total_steps: 10000      # optimizer steps of the run (places the schedules)
    start_step: 0           # schedules run over [start_step, end_step]
    end_step: 7500          # default: 3/4 of total_steps (RigL's T_end)
    update_every: 100       # mask update interval (SR-STE / decay: 1)
    drop_fraction: 0.3      # SET / RigL / GraNet: fraction of kept weights replaced at the first update
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config_types import Patterns, Sparsity
from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS
from ..structure import NM, parse_structure
from .methods import METHODS
from .schedules import DECAY_SHAPES, ScheduleError, check_window

__all__ = ["SparseTrainingConfig", "load_config", "METHOD_NAMES", "INITS", "ConfigError"]

METHOD_NAMES = tuple(METHODS)
INITS = ("current", "dense", "random", "magnitude")


class ConfigError(ValueError):
    pass


class SparsityOverride(BaseModel):
    """Modules (types or ``re:`` names, as ``targets``) trained to their own sparsity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: Patterns
    sparsity: Sparsity


class SparseTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "fixed"
    sparsity: Optional[Sparsity] = None
    structure: str = "unstructured"
    allocation: Literal["uniform", "erk"] = "uniform"
    overrides: list[SparsityOverride] = Field(default_factory=list)  # later entries win where several match
    init: Optional[str] = None
    init_sparsity: Optional[Sparsity] = None  # GraNet from random: the starting sparsity (default 0.5)
    total_steps: Optional[int] = Field(None, ge=1)
    start_step: int = Field(0, ge=0)
    end_step: Optional[int] = Field(None, ge=1)
    update_every: Optional[int] = Field(None, ge=1)
    drop_fraction: float = Field(0.3, ge=0.0, le=1.0)
    srste_lambda: float = Field(2e-4, ge=0.0)  # SR-STE's lambda_W (the paper's 2e-4)
    decay_shape: str = "linear"
    decay_rate: float = Field(5.0, gt=0.0)  # exponential decay: exp(-rate * progress)
    reapply: bool = True  # multiply weights by their masks after each step (a guard; see hard.py)
    targets: Patterns = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    ignore: Patterns = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown training method '{v}'; known methods: {', '.join(METHOD_NAMES)}")
        return v

    @field_validator("structure")
    @classmethod
    def _structure(cls, v: str) -> str:
        return str(parse_structure(v))

    @field_validator("decay_shape")
    @classmethod
    def _shape(cls, v: str) -> str:
        if v not in DECAY_SHAPES:
            raise ValueError(f"unknown decay shape '{v}'; known shapes: {', '.join(DECAY_SHAPES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SparseTrainingConfig":
        m = METHODS[self.method]
        scheduled, inits = m.scheduled, m.inits
        st = parse_structure(self.structure)
        if self.init is not None and self.init not in inits:
            raise ValueError(f"method '{self.method}' starts from init {', '.join(inits)}; got '{self.init}'")
        if isinstance(st, NM):
            st.resolve_sparsity(self.sparsity)  # a sparsity that contradicts N:M is an error
            if m.moves_units:
                raise ValueError(f"method '{self.method}' drops and grows single weights or blocks; N:M structure "
                                 f"{st} keeps a fixed count per group: use method srste, decay or fixed")
        elif self.sparsity is None and (self.method != "fixed" or self.resolved_init != "current"):
            raise ValueError(f"method '{self.method}' with structure {st} needs a sparsity")
        if scheduled and self.total_steps is None:
            # the run length may come later (a Trainer's max_steps): check what is known now; SparseTraining
            # refuses to start without it
            if self.end_step is not None:
                try:
                    check_window(self.start_step, self.end_step)
                except ScheduleError as e:
                    raise ValueError(str(e)) from None
        elif scheduled:
            end = self.resolved_end
            try:
                check_window(self.start_step, end)
            except ScheduleError as e:
                raise ValueError(str(e)) from None
            if end > self.total_steps:
                raise ValueError(f"schedule ends at step {end}, after the run's last step {self.total_steps}")
        if self.overrides and (isinstance(st, NM) or self.sparsity is None):
            raise ValueError("sparsity overrides need an overall sparsity and an unstructured or block structure "
                             f"(got structure {st}, sparsity {self.sparsity})")
        if self.method == "granet" and self.resolved_init == "random":
            s0 = self.resolved_init_sparsity
            if self.sparsity is not None and s0 > self.sparsity:
                raise ValueError(f"granet starts at sparsity {s0:g}, above its target {self.sparsity:g}")
        return self

    @property
    def resolved_init(self) -> str:
        return self.init or METHODS[self.method].default_init

    @property
    def resolved_end(self) -> int:
        if self.end_step is not None:
            return self.end_step
        return max(self.start_step + 1, int(0.75 * (self.total_steps or 1)))

    @property
    def resolved_update_every(self) -> int:
        if self.update_every is not None:
            return self.update_every
        return 1 if self.method in ("srste", "decay") else 100

    @property
    def resolved_init_sparsity(self) -> float:
        return 0.5 if self.init_sparsity is None else self.init_sparsity

    @property
    def resolved_sparsity(self) -> float | None:
        st = parse_structure(self.structure)
        return st.implied_sparsity if isinstance(st, NM) else self.sparsity


def load_config(source: Union["SparseTrainingConfig", dict, str, os.PathLike, None] = None,
                **overrides: Any) -> SparseTrainingConfig:
    """A config from an object, a dict, YAML text or a .yaml path, with keyword overrides; one error line
    (ConfigError) for anything invalid."""
    if isinstance(source, SparseTrainingConfig):
        data = source.model_dump()
    elif source is None:
        data = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        text = Path(source).read_text() if (isinstance(source, os.PathLike) or not str(source).count("\n")
                                             and str(source).endswith((".yaml", ".yml"))) else str(source)
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError("a sparse training config is a mapping of settings (method, sparsity, ...)")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SparseTrainingConfig(**data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{loc}: {msg}" if loc else msg)
            if err["type"] == "extra_forbidden":
                msgs[-1] = f"{loc}: unknown key; known keys: {', '.join(SparseTrainingConfig.model_fields)}"
        raise ConfigError("invalid sparse training config: " + "; ".join(msgs)) from None
