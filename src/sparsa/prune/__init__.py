"""Pruning: calibration engine, methods (scores + updates) registered in one place, layer-wise allocation,
recipes, and the ``prune`` entry point that leaves dense-with-zeros weights."""

from .api import METHODS, ModuleReport, PruneReport, prune
from .calibration import CalibrationConfig
from .methods import MissingCalibrationError, UnknownMethodError
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["prune", "METHODS", "PruneReport", "ModuleReport", "CalibrationConfig", "Recipe", "RecipeError",
           "load_recipe", "MissingCalibrationError", "UnknownMethodError"]
