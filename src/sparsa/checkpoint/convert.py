"""Folder-to-folder jobs behind the CLI: pack a model folder into a checkpoint, export one as a dense folder.

They return plain dataclasses; printing is the CLI's business. The source folder is only read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import CheckpointError
from .integrity import atomic_folder
from .plan import PackedModule, pack_modules
from .reader import is_packed, recipe_of
from .schema import INDEX_NAME
from .writer import DEFAULT_MAX_SHARD_SIZE, save

__all__ = ["PackResult", "ExportResult", "pack_folder", "export_dense", "folder_disk_bytes", "VALUE_DTYPES"]

VALUE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def folder_disk_bytes(path: str | os.PathLike) -> int:
    """Bytes of the weight files of a model folder: *.safetensors, *.bin and their index files."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.iterdir()
               if f.is_file() and (f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json")))


@dataclass
class PackResult:
    source: str
    out: str
    dtype: str
    modules: list[PackedModule] = field(default_factory=list)
    dense_bytes: int = 0        # the packed modules' weights stored dense
    sparse_bytes: int = 0       # the same weights packed
    source_disk_bytes: int = 0  # weight files of the source folder
    out_disk_bytes: int = 0     # weight files of the checkpoint (shards + index)

    def to_dict(self) -> dict:
        return asdict(self)


def pack_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    structure: str | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    status: Callable[[str], None] | None = None,
) -> PackResult:
    """Pack the model in folder ``source`` (dense-with-zeros, any Hugging Face folder, or a packed checkpoint to
    re-pack) into a packed checkpoint at ``out``.

    Structures: recorded ones (``sparsa.json``, or the source checkpoint's) first, then ``structure`` for
    modules without one, else detected from the zeros. ``dtype``: 'float32' or 'bfloat16' for every floating
    tensor (default: keep the source's).
    """
    from ..runtime.models import _load_tokenizer, load_pretrained
    from .model import load_packed

    step = status or (lambda _msg: None)
    src = Path(source)
    if dtype is not None and dtype not in VALUE_DTYPES:
        raise CheckpointError(None, f"dtype must be one of {', '.join(VALUE_DTYPES)}, got '{dtype}'")
    step("loading the model")
    if is_packed(src):
        model, ckpt = load_packed(src, dense=True)
        recipe = dict(ckpt.index.sparsa.recipe) if ckpt.index.sparsa.recipe is not None else None
        for name, e in ckpt.index.sparsa.modules.items():
            model.get_submodule(name).sparsa_structure = e.structure
        tokenizer = _load_tokenizer(src)
    else:
        model, tokenizer, _ = load_pretrained(src)
        recipe = recipe_of(src) or None
    if dtype is not None:
        model.to(VALUE_DTYPES[dtype])
    step("packing the weights")
    report = pack_modules(model, structure=structure)
    step(f"writing {out}")
    path = save(model, out, tokenizer, recipe=recipe, source=src, max_shard_size=max_shard_size, overwrite=overwrite)
    packed = [r for r in report if r.packed]
    some = next((p for p in model.parameters() if p.is_floating_point()), None)
    return PackResult(
        source=str(src),
        out=str(path),
        dtype=dtype or (str(some.dtype).replace("torch.", "") if some is not None else "float32"),
        modules=report,
        dense_bytes=sum(r.dense_bytes for r in packed),
        sparse_bytes=sum(r.sparse_bytes for r in packed),
        source_disk_bytes=folder_disk_bytes(src),
        out_disk_bytes=folder_disk_bytes(path),
    )


@dataclass
class ExportResult:
    source: str
    out: str
    modules: int           # packed weights written back dense
    dtype: str
    source_disk_bytes: int
    out_disk_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def export_dense(source: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                 status: Callable[[str], None] | None = None) -> ExportResult:
    """Write the packed checkpoint ``source`` as a plain Hugging Face folder (dense weights with zeros, written by
    transformers' own ``save_pretrained``) that transformers loads without sparsa; a ``sparsa.json`` beside it
    records each module's structure so that ``sparsa pack`` can pack it again."""
    from ..runtime.models import SPARSA_METADATA, _load_tokenizer
    from .model import load_packed

    step = status or (lambda _msg: None)
    src = Path(source)
    if not is_packed(src):
        raise CheckpointError(src / INDEX_NAME, "missing: not a packed checkpoint (a dense folder needs no export)")
    step("loading the packed checkpoint")
    model, ckpt = load_packed(src, dense=True)
    tokenizer = _load_tokenizer(src)
    meta = dict(ckpt.index.sparsa.recipe or {})
    meta["modules"] = {n: e.structure for n, e in ckpt.index.sparsa.modules.items()}
    step(f"writing {out}")
    with atomic_folder(out, source=src, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SPARSA_METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    some = next((p for p in model.parameters() if p.is_floating_point()), None)
    return ExportResult(
        source=str(src),
        out=str(Path(out).resolve()),
        modules=len(ckpt.packed),
        dtype=str(some.dtype).replace("torch.", "") if some is not None else "float32",
        source_disk_bytes=folder_disk_bytes(src),
        out_disk_bytes=folder_disk_bytes(out),
    )
