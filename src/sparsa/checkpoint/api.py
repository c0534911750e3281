"""``sparsa.load`` and ``sparsa.save``: the model-level entry points of the checkpoint format."""

from __future__ import annotations

import os

from torch import nn

from .model import load_packed
from .reader import is_packed
from .writer import save

__all__ = ["load", "save"]


def load(path: str | os.PathLike, dense: bool = False, verify: bool = True) -> nn.Module:
    """The sparse model stored in folder ``path``, in eval mode, ready to run on the CPU.

    * a packed checkpoint (written by :func:`sparsa.save` or ``sparsa pack``): every packed weight becomes a
      SparseLinear whose kernel is chosen here; every tensor is verified against its checksum (``verify``).
    * a dense-with-zeros folder (``sparsa prune``, or any Hugging Face folder): loaded with transformers and
      converted with :func:`sparsa.sparsify` (structures from its ``sparsa.json``, else detected from the zeros).

    ``dense=True`` returns the plain transformers model instead (packed weights unpacked), as ``sparsa export
    --dense`` writes it. A damaged or mismatched checkpoint raises :class:`CheckpointError` naming the file and
    the tensor.
    """
    if is_packed(path):
        return load_packed(path, dense=dense, verify=verify)[0]
    from ..nn import sparsify
    from ..runtime.models import load_pretrained

    model, _, _ = load_pretrained(path)
    if dense:
        return model
    model, _ = sparsify(model, inplace=True)
    return model
