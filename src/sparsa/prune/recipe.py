"""Recipes: per-module pruning settings in YAML, validated when loaded (unknown keys are errors).

A recipe is a list of entries, or a mapping with ``prune:`` (the list) and an optional ``calibration:``::

    calibration: {samples: 256, seq_len: 128, seed: 0}
    prune:
      - targets: [Linear]                     # module class names, 're:<regex>' on names, or full names
        ignore: ['re:.*pooler.*']
        method: sparsegpt                     # magnitude | wanda | sparsegpt
        sparsity: 0.7
        structure: unstructured               # unstructured | N:M | RxC
        allocation: owl                       # uniform | owl | erk, over this entry's modules
        dsnot: true                           # DSnoT refinement on top of the method's mask
      - targets: ['re:.*attention\\.self\\.(query|key)']
        method: wanda
        sparsity: 0.5

A module matched by several entries takes the settings of the last one, so general entries come first and
overrides after. ``sparsa.prune(model, method=..., sparsity=..., ...)`` is a one-entry recipe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config_types import Patterns
from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS
from ..structure import check_sparsity, parse_structure
from .allocation import check_allocation
from .calibration import CALIBRATION_MODES, CalibrationConfig
from .methods import get_method

__all__ = ["Recipe", "RecipeEntry", "CalibrationSection", "RecipeError", "load_recipe"]


class RecipeError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipeEntry(_Strict):
    targets: Patterns = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    ignore: Patterns = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    method: str = "magnitude"
    sparsity: Optional[float] = None
    structure: str = "unstructured"
    scope: Optional[str] = None  # None: the method's own (magnitude: tensor, wanda: row, sparsegpt: tensor)
    allocation: str = "uniform"
    dsnot: bool = False
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5)
    owl_m: float = Field(5.0, gt=0.0)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        get_method(v)
        return v

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, v: str) -> str:
        return check_allocation(v)

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: Optional[str]) -> Optional[str]:
        from ..masks import SCOPES

        if v is not None and v not in SCOPES:
            raise ValueError(f"unknown scope '{v}'; known scopes: {', '.join(SCOPES)}")
        return v

    @model_validator(mode="after")
    def _structure_and_sparsity(self) -> "RecipeEntry":
        st = parse_structure(self.structure)
        sp = self.sparsity if self.sparsity is not None or st.implied_sparsity is not None else 0.5
        resolved = st.resolve_sparsity(sp)
        if self.allocation != "uniform" and st.implied_sparsity is not None:
            raise ValueError(f"allocation '{self.allocation}' varies sparsity per layer, but structure "
                             f"'{st}' fixes it at {resolved:g}; use allocation 'uniform' with N:M")
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        return self

    @property
    def resolved_sparsity(self) -> float:
        st = parse_structure(self.structure)
        return st.resolve_sparsity(self.sparsity if self.sparsity is not None or st.implied_sparsity is not None
                                   else 0.5)


class CalibrationSection(_Strict):
    samples: int = Field(128, ge=1)
    seq_len: int = Field(128, ge=1)
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    mode: str = "auto"

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in CALIBRATION_MODES:
            raise ValueError(f"unknown calibration mode '{v}'; known modes: {', '.join(CALIBRATION_MODES)}")
        return v

    def config(self) -> CalibrationConfig:
        return CalibrationConfig(self.samples, self.seq_len, self.seed, self.batch_size, self.mode)


class Recipe(_Strict):
    prune: list[RecipeEntry] = Field(min_length=1)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)

    @property
    def needs_data(self) -> bool:
        return any(get_method(e.method).needs_data or e.dsnot or e.allocation == "owl" for e in self.prune)

    def summary(self) -> str:
        e = self.prune
        if len(e) == 1:
            x = e[0]
            extra = "".join([f", {x.allocation}" if x.allocation != "uniform" else "", ", dsnot" if x.dsnot else ""])
            return f"{x.method}, {parse_structure(x.structure)}, {x.resolved_sparsity:.0%}{extra}"
        return f"recipe of {len(e)} entries"


def _format(e: ValidationError, where: str) -> str:
    msgs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "recipe"
        if err["type"] == "extra_forbidden":
            msgs.append(f"{loc}: unknown key")
        else:
            msgs.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return f"invalid recipe {where}: " + "; ".join(msgs)


def _allowed_keys() -> str:
    return (f"recipe keys: prune, calibration; entry keys: {', '.join(RecipeEntry.model_fields)}; "
            f"calibration keys: {', '.join(CalibrationSection.model_fields)}")


def load_recipe(source: Union[Recipe, dict, list, str, os.PathLike]) -> Recipe:
    """A validated Recipe from a Recipe, a dict/list, YAML text, or a YAML file path."""
    if isinstance(source, Recipe):
        return source
    where = "(given as data)"
    data = source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if isinstance(source, os.PathLike) or (str(source).endswith((".yaml", ".yml")) and "\n" not in str(source)):
            if not p.is_file():
                raise RecipeError(f"recipe file '{p}' does not exist")
            where, text = f"'{p}'", p.read_text(encoding="utf-8")
        else:
            text = str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(f"recipe {where} is not valid YAML: {e}") from None
    if isinstance(data, list):
        data = {"prune": data}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {where} must be a list of entries or a mapping with 'prune:'")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        msg = _format(e, where)
        if "unknown key" in msg:
            msg += f" ({_allowed_keys()})"
        raise RecipeError(msg) from None
