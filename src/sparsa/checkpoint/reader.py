"""Read a packed checkpoint's tensors, verified: the decoder that every loader goes through.

Order of checks, each failing with one CheckpointError that names the file and the tensor:
the index (schema, version, cross-references) -> each shard's size -> the safetensors header (through the
safetensors library) -> the set of tensors in each file -> each tensor's dtype, shape and checksum -> each packed
weight's full structural validation (``PackedWeight.from_tensors``; the C++ kernels trust validated inputs).
Nothing here builds a model; :mod:`sparsa.checkpoint.model` does that from a :class:`Checkpoint`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..formats import FORMATS, FormatError, PackedWeight
from ..structure import parse_structure
from .errors import CheckpointError
from .integrity import checksum, read_header
from .schema import INDEX_NAME, SAFETENSORS_DTYPES, Index, parse_index

__all__ = ["Checkpoint", "read_checkpoint", "is_packed", "recipe_of"]


@dataclass
class Checkpoint:
    path: Path
    index: Index
    packed: dict[str, PackedWeight]   # module name -> validated packed weight
    tensors: dict[str, torch.Tensor]  # every other tensor (and aliases), by state-dict key

    def file_of(self, key: str) -> Path:
        return self.path / self.index.weight_map[key]

    @property
    def disk_bytes(self) -> int:
        """Bytes of the shard files and the index on disk."""
        return sum(e.bytes for e in self.index.sparsa.files.values()) + (self.path / INDEX_NAME).stat().st_size


def is_packed(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder holding a packed sparsa checkpoint (it has the index file)."""
    return (Path(path) / INDEX_NAME).is_file()


def recipe_of(path: str | os.PathLike) -> dict:
    """How a model folder was made: the recipe a packed checkpoint keeps in its index, else the folder's
    sparsa.json (a dense-with-zeros folder of ``sparsa prune``); {} when it has neither. A file that is not a
    JSON object raises CheckpointError naming it."""
    from ..runtime.models import SPARSA_METADATA

    root = Path(path)
    f = root / INDEX_NAME if is_packed(root) else root / SPARSA_METADATA
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f, f"is not valid JSON: {e}") from None
    if f.name == INDEX_NAME:  # the index itself was validated by whoever wrote it; its recipe is informational
        data = ((data.get("sparsa") or {}).get("recipe") or {}) if isinstance(data, dict) else {}
    if not isinstance(data, dict):
        raise CheckpointError(f, "must hold a JSON object")
    return data


def _truncation_detail(file: Path, size: int) -> tuple[str, str | None]:
    """Say where a file of the wrong size is cut: the first tensor whose bytes lie past its end."""
    try:
        start, header = read_header(file, size)
    except (OSError, ValueError):
        return "its header is damaged", None
    spans = sorted(
        (v["data_offsets"][1], k) for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
        and len(v["data_offsets"]) == 2 and isinstance(v["data_offsets"][1], int)
    )
    for end, key in spans:
        if start + end > size:
            return "the data of this tensor and all after it is missing", key
    return "it has bytes beyond its last tensor", None


def _read_file(root: Path, fname: str, index: Index, verify: bool) -> dict[str, torch.Tensor]:
    file = root / fname
    expected = index.sparsa.files[fname].bytes
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(file, "missing (the index lists it)") from None
    if size != expected:
        what, key = _truncation_detail(file, size)
        kind = "truncated" if size < expected else "longer than written"
        raise CheckpointError(file, f"{kind}: {size} bytes, the index says {expected}; {what}", tensor=key)
    wanted = index.keys_in(fname)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(file, framework="pt") as f:
            present = set(f.keys())
            for key in wanted:
                if key not in present:
                    raise CheckpointError(file, "missing from the file (the index maps it here)", tensor=key)
            for key in sorted(present - set(wanted)):
                raise CheckpointError(file, "in the file but not in the index", tensor=key)
            for key in wanted:
                entry = index.sparsa.tensors[key]
                t = f.get_tensor(key)  # a view of the memory-mapped file, not a copy
                if t.dtype != SAFETENSORS_DTYPES[entry.dtype]:
                    raise CheckpointError(file, f"dtype {t.dtype}, the index says {entry.dtype}", tensor=key)
                if list(t.shape) != entry.shape:
                    raise CheckpointError(file, f"shape {list(t.shape)}, the index says {entry.shape}", tensor=key)
                if verify:
                    got = checksum(t)
                    if got != entry.checksum:
                        raise CheckpointError(
                            file, f"checksum mismatch (index {entry.checksum}, data {got}): the file is corrupted "
                                  f"or belongs to another checkpoint", tensor=key
                        )
                out[key] = t
    except SafetensorError as e:
        raise CheckpointError(file, f"not a valid safetensors file: {e}") from None
    except (OSError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(file, f"cannot be read: {e}") from None
    return out


def read_checkpoint(path: str | os.PathLike, verify: bool = True) -> Checkpoint:
    """Read and verify every tensor of the packed checkpoint in folder ``path``.

    ``verify=False`` skips the checksums (structure and consistency are always checked). Tensors are views of
    the memory-mapped shard files.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(root, "not a folder")
    index = parse_index(root / INDEX_NAME)
    tensors: dict[str, torch.Tensor] = {}
    for fname in index.files():
        tensors.update(_read_file(root, fname, index, verify))
    for alias, target in index.sparsa.aliases.items():
        tensors[alias] = tensors[target]

    packed: dict[str, PackedWeight] = {}
    owned = index.packed_keys()
    for name, entry in index.sparsa.modules.items():
        cls = FORMATS[entry.format]
        parts = {tn: tensors[f"{name}.{tn}"] for tn in cls.tensor_names}
        try:
            packed[name] = cls.from_tensors(tuple(entry.shape), parse_structure(entry.structure), parts)
        except FormatError as e:
            raise CheckpointError(root / index.weight_map[f"{name}.values"], f"module '{name}': {e}") from None
    rest = {k: t for k, t in tensors.items() if k not in owned}
    return Checkpoint(path=root, index=index, packed=packed, tensors=rest)
