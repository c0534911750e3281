"""Pruning: scores -> masks -> dense-with-zeros weights, per module, with one registry of methods."""

from .api import METHODS, PruneReport, ModuleReport, prune

__all__ = ["prune", "METHODS", "PruneReport", "ModuleReport"]
