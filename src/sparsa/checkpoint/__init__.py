"""The sparse checkpoint: a compact, safe on-disk format for packed models (docs/FORMAT.md).

A packed checkpoint is a Hugging Face-style folder: ``config.json``, tokenizer files, safetensors shards holding
each sparse weight's packed tensors and every dense tensor, and one JSON index (format version, per-module format,
structure, shape and dtype, per-tensor checksum, the recipe that made it). Data only: nothing is pickled, executed
or imported from it.

* :func:`save` writes one (atomically), :func:`load` reads one back into SparseLinear modules,
* :func:`read_checkpoint` is the verified decoder underneath (no model), raising :class:`CheckpointError`,
* :mod:`sparsa.checkpoint.convert` holds the folder-to-folder jobs behind ``sparsa pack`` and ``sparsa export``.
"""

from .api import load, save
from .errors import CheckpointError
from .reader import Checkpoint, is_packed, read_checkpoint
from .schema import FORMAT_VERSION, INDEX_NAME

__all__ = ["load", "save", "read_checkpoint", "is_packed", "Checkpoint", "CheckpointError", "FORMAT_VERSION",
           "INDEX_NAME"]
