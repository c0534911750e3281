"""sparsa: make transformer models sparse, and make the sparsity pay.

Prune a model (``sparsa.prune``), pack its zeros into compact formats and run them through C++ sparse
kernels (``sparsa.sparsify``), and measure the result against the dense model. See README.md.
"""

# torch first: it loads its own OpenMP runtime (libgomp.so.1), which the C++ core then shares instead of
# starting a second thread pool on the same cores.
import torch as _torch  # noqa: F401

from . import _C  # noqa: E402

__version__ = "0.1.0"

from .detect import detect_structure  # noqa: E402
from .formats import FORMATS, PackedWeight, pack  # noqa: E402
from .kernels import KERNELS, spmm  # noqa: E402
from .masks import mask_from_scores  # noqa: E402
from .modules import select_modules  # noqa: E402
from .nn import SparseLinear, sparsify  # noqa: E402
from .prune import prune  # noqa: E402
from .structure import NM, Block, Structure, StructureError, Unstructured, parse_structure  # noqa: E402

__all__ = [
    "__version__",
    "prune",
    "sparsify",
    "load",
    "save",
    "CheckpointError",
    "SparseLinear",
    "pack",
    "spmm",
    "mask_from_scores",
    "parse_structure",
    "detect_structure",
    "select_modules",
    "Structure",
    "Unstructured",
    "NM",
    "Block",
    "StructureError",
    "PackedWeight",
    "FORMATS",
    "KERNELS",
]


def __getattr__(name: str):
    # The checkpoint format (pydantic, xxhash, safetensors) loads on first use: it would add ~0.25 s to every
    # `import sparsa` and to every command that never reads or writes a checkpoint.
    if name in ("load", "save", "CheckpointError"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'sparsa' has no attribute '{name}'")
