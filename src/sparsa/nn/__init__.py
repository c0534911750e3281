"""Sparse modules and model conversion."""

from .convert import ConvertedModule, sparsify
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "sparsify", "ConvertedModule"]
