"""Sparse modules, model conversion and the runtime fusions around the kernels."""

from .attention import use_sparsa_attention
from .convert import ConvertedModule, sparsify
from .fuse import fuse_activations, optimize_runtime
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "sparsify", "ConvertedModule", "optimize_runtime", "fuse_activations",
           "use_sparsa_attention"]
