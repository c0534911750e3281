"""The index of a packed checkpoint: its JSON schema (format version 1), parsed and cross-checked.

The index (``sparsa-model.safetensors.index.json``) is the one metadata block of a checkpoint. It is plain data:
nothing in it is executed or imported. Its ``metadata.total_size`` and ``weight_map`` keys follow the Hugging Face
sharded-index convention; everything sparsa adds sits under ``"sparsa"``. docs/FORMAT.md describes every field.

Parsing is strict (pydantic, unknown keys rejected, no type coercion) and is followed by cross-checks between the
fields, so that the reader afterwards only has to compare the files against a self-consistent index.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError

from ..formats import FORMATS
from ..structure import StructureError, parse_structure
from .errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "CHECKSUM_ALGORITHM",
    "SAFETENSORS_DTYPES",
    "VALUE_DTYPE_NAMES",
    "Index",
    "ModuleEntry",
    "TensorEntry",
    "parse_index",
    "shard_name",
    "dtype_code",
    "nbytes_of",
]

FORMAT_VERSION = 1
INDEX_NAME = "sparsa-model.safetensors.index.json"
CHECKSUM_ALGORITHM = "xxh3_64"

# safetensors dtype codes this reader accepts, and the torch dtype each one is (all little-endian).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "U16": torch.uint16,
    "I16": torch.int16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "U32": torch.uint32,
    "I32": torch.int32,
    "F32": torch.float32,
    "U64": torch.uint64,
    "I64": torch.int64,
    "F64": torch.float64,
}
_CODE_OF = {v: k for k, v in SAFETENSORS_DTYPES.items()}
# value dtype names in the module table -> torch dtype (the formats' VALUE_DTYPES)
VALUE_DTYPE_NAMES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Shard files are named by the writer, never by the reader: a name in the index must be a bare file name, so that
# an index can never point outside its folder ("../x", "/etc/x").
_FILE_RE = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}\.safetensors$"
_NAME_RE = r"^[^\x00-\x1f]{1,1024}$"  # tensor and module names: printable, bounded

Name = Annotated[str, StringConstraints(pattern=_NAME_RE)]
FileName = Annotated[str, StringConstraints(pattern=_FILE_RE)]
Dim = Annotated[int, Field(ge=0, lt=2**40)]
Checksum = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
DtypeCode = Literal["BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32", "U64", "I64", "F64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TensorEntry(_Strict):
    dtype: DtypeCode
    shape: Annotated[list[Dim], Field(max_length=8)]
    checksum: Checksum  # xxh3_64 of the tensor's bytes in the file, 16 lowercase hex digits


class ModuleEntry(_Strict):
    format: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
    structure: Annotated[str, StringConstraints(max_length=64)]
    shape: tuple[Dim, Dim]  # (out, in) of the dense weight
    dtype: Literal["float32", "bfloat16"]  # of the stored values
    method: Optional[Annotated[str, StringConstraints(max_length=256)]] = None  # pruning method, if known


class FileEntry(_Strict):
    bytes: Annotated[int, Field(ge=0)]


class SparsaBlock(_Strict):
    format_version: int
    writer: Annotated[str, StringConstraints(max_length=256)]
    checksum_algorithm: Literal["xxh3_64"]
    config_checksum: Checksum  # of config.json's bytes: a changed config would silently change the model
    recipe: Optional[dict[str, JsonValue]] = None  # how the model was pruned (sparsa.json); informational only
    modules: dict[Name, ModuleEntry]
    tensors: dict[Name, TensorEntry]
    aliases: dict[Name, Name]
    files: dict[FileName, FileEntry]


class IndexMetadata(_Strict):
    total_size: Annotated[int, Field(ge=0)]


class Index(_Strict):
    metadata: IndexMetadata
    weight_map: dict[Name, FileName]
    sparsa: SparsaBlock

    def files(self) -> list[str]:
        """Shard files in name order."""
        return sorted(self.sparsa.files)

    def keys_in(self, file: str) -> list[str]:
        return [k for k, f in self.weight_map.items() if f == file]

    def packed_keys(self) -> dict[str, str]:
        """Stored key -> module, for every packed tensor of every module."""
        out = {}
        for m, e in self.sparsa.modules.items():
            for tn in FORMATS[e.format].tensor_names:
                out[f"{m}.{tn}"] = m
        return out


def shard_name(i: int, n: int) -> str:
    """File name of shard ``i`` (1-based) of ``n``."""
    return f"sparsa-model-{i:05d}-of-{n:05d}.safetensors"


def dtype_code(dtype: torch.dtype) -> str:
    try:
        return _CODE_OF[dtype]
    except KeyError:
        raise CheckpointError(None, f"tensors of dtype {dtype} cannot be stored (allowed: {', '.join(_CODE_OF.values())})")


def nbytes_of(entry: TensorEntry) -> int:
    n = 1
    for d in entry.shape:
        n *= d
    return n * SAFETENSORS_DTYPES[entry.dtype].itemsize


def _version_of(raw: bytes):
    """The format_version an index claims, or None when it cannot be read (for the version-error message only)."""
    try:
        v = json.loads(raw)["sparsa"]["format_version"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
    return f"invalid index at '{where}': {err.get('msg', 'invalid')}{more}"


def parse_index(path: str | os.PathLike) -> Index:
    """Read and fully check an index file; raise CheckpointError naming the file and the offending entry."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CheckpointError(path, "missing: not a packed sparsa checkpoint (no index file)") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot be read: {e.strerror or e}") from None
    version = _version_of(raw)
    if version is not None and version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise CheckpointError(
            path, f"format version {version} was written by {newer} sparsa; this sparsa reads format version "
                  f"{FORMAT_VERSION}"
        )
    try:
        index = Index.model_validate_json(raw)
    except ValidationError as e:
        raise CheckpointError(path, _first_error(e)) from None
    except (ValueError, RecursionError) as e:  # pydantic-core rejects some malformed JSON before validation
        raise CheckpointError(path, f"not a valid index: {e}") from None
    if index.sparsa.format_version != FORMAT_VERSION:
        raise CheckpointError(path, f"format version {index.sparsa.format_version}; this sparsa reads {FORMAT_VERSION}")
    _cross_check(index, path)
    return index


def _cross_check(index: Index, path) -> None:
    s = index.sparsa
    stored, mapped = set(s.tensors), set(index.weight_map)
    for key in sorted(mapped - stored):
        raise CheckpointError(path, "listed in weight_map but has no entry in sparsa.tensors", tensor=key)
    for key in sorted(stored - mapped):
        raise CheckpointError(path, "has an entry in sparsa.tensors but no file in weight_map", tensor=key)
    used = set(index.weight_map.values())
    for f in sorted(used - set(s.files)):
        raise CheckpointError(path, f"weight_map names file '{f}', which sparsa.files does not list")
    for f in sorted(set(s.files) - used):
        raise CheckpointError(path, f"sparsa.files lists '{f}', which holds no tensor of the weight_map")
    for alias, target in s.aliases.items():
        if alias in stored:
            raise CheckpointError(path, "is both stored and an alias", tensor=alias)
        if target not in stored:
            raise CheckpointError(path, f"is an alias of '{target}', which is not stored", tensor=alias)
    total = sum(nbytes_of(e) for e in s.tensors.values())
    if total != index.metadata.total_size:
        raise CheckpointError(path, f"metadata.total_size is {index.metadata.total_size} but the tensors hold {total} bytes")
    for name, m in s.modules.items():
        if m.format not in FORMATS:
            raise CheckpointError(
                path, f"module '{name}': unknown format '{m.format}' (this sparsa reads {', '.join(sorted(FORMATS))})"
            )
        try:
            parse_structure(m.structure)  # whether the format can hold it is the format's validation to say
        except StructureError as e:
            raise CheckpointError(path, f"module '{name}': {e}") from None
        for tn in FORMATS[m.format].tensor_names:
            if f"{name}.{tn}" not in s.tensors:
                raise CheckpointError(path, f"module '{name}' ({m.format}) has no entry for it", tensor=f"{name}.{tn}")
        values = s.tensors[f"{name}.values"]
        if SAFETENSORS_DTYPES[values.dtype] != VALUE_DTYPE_NAMES[m.dtype]:
            raise CheckpointError(
                path, f"module '{name}' declares {m.dtype} values but the tensor is {values.dtype}",
                tensor=f"{name}.values",
            )
