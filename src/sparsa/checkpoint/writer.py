"""Write a model as a packed checkpoint: config.json, tokenizer files, safetensors shards and the index.

Every SparseLinear is stored as the tensors of its canonical packed weight (``packed.tensors()``, whatever format
it is) under ``<module>.<tensor name>``; every other tensor of the state dict is stored as it is. The folder is
written under a temporary name and renamed when complete (see :func:`atomic_folder`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from ..modules import is_linear_like
from ..nn import SparseLinear
from .errors import CheckpointError
from .integrity import atomic_folder, checksum, checksum_bytes
from .plan import pack_modules
from .schema import CHECKSUM_ALGORITHM, FORMAT_VERSION, INDEX_NAME, Index, dtype_code, shard_name

__all__ = ["save", "parse_size", "DEFAULT_MAX_SHARD_SIZE"]

DEFAULT_MAX_SHARD_SIZE = 2 * 1024**3

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as '2GB', '500MB', '1.5GiB'."""
    if isinstance(size, int) and not isinstance(size, bool):
        n = size
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"invalid size '{size}': use bytes or a number with KB, MB, GB, KiB, MiB or GiB")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return n


def _pack_pruned_modules(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose dense modules that ``sparsa.prune`` marked (``sparsa_structure``) are packed, so
    that saving a pruned model stores it compact; ``model`` itself if there are none."""
    marked = [n for n, m in model.named_modules()
              if n and is_linear_like(m) and getattr(m, "sparsa_structure", None)]
    if not marked:
        return model
    model = copy.deepcopy(model)
    pack_modules(model, names=marked)
    return model


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _tensors_to_store(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(stored tensors, aliases): tensors that are the same view of the same memory (tied weights) are stored
    once and the other names recorded as aliases; other memory sharing is broken by copying."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_of_view: dict[tuple, str] = {}
    storages: set[int] = set()
    for key, t in state.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.numel() > 0:
            view = _storage_key(t)
            if view in first_of_view:
                aliases[key] = first_of_view[view]
                continue
            first_of_view[view] = key
            ptr = view[0]
            if ptr in storages or not t.is_contiguous():
                t = t.contiguous().clone()  # safetensors stores each tensor's own bytes; no shared storage
            storages.add(t.untyped_storage().data_ptr())
        stored[key] = t.contiguous()
    return stored, aliases


def _groups(model: nn.Module, stored: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Keys that go into the same shard: a packed module's tensors (and bias) together; every other tensor alone."""
    module_of: dict[str, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear):
            for tn in (*m.packed.tensor_names, "bias"):
                module_of[f"{name}.{tn}"] = name
    groups: dict[str, list[str]] = {}
    for key in stored:
        groups.setdefault(module_of.get(key, "\0" + key), []).append(key)
    return list(groups.values())


def _shard(groups: list[list[str]], stored: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for g in groups:
        gb = sum(stored[k].numel() * stored[k].element_size() for k in g)
        if shards[-1] and size + gb > max_bytes:
            shards.append([])
            size = 0
        shards[-1].extend(g)
        size += gb
    return shards


def _model_class_name(model: nn.Module) -> str:
    import transformers

    name = type(model).__name__
    if getattr(transformers, name, None) is not type(model) or not hasattr(model, "config"):
        raise CheckpointError(
            None, f"sparsa.save stores models whose class transformers provides (the loader rebuilds them from "
                  f"config.json); got {type(model).__module__}.{name}"
        )
    return name


def save(
    model: nn.Module,
    out: str | os.PathLike,
    tokenizer=None,
    *,
    recipe: Mapping | None = None,
    source: str | os.PathLike | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Save a (sparse) transformers model to the folder ``out`` as a packed checkpoint; returns the folder.

    SparseLinear modules are stored packed; modules that ``sparsa.prune`` pruned but that are still dense are
    packed first (on a copy); everything else is stored as it is. ``recipe``: JSON data saying how the model was
    made (e.g. the ``sparsa.json`` of a pruned folder), kept in the index and never interpreted. ``source``: the
    folder the model was read from, which is never written to. ``max_shard_size``: bytes per shard file (a packed
    weight is never split across files).
    """
    max_bytes = parse_size(max_shard_size)
    arch = _model_class_name(model)
    if recipe is not None:
        try:
            recipe = json.loads(json.dumps(dict(recipe), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise CheckpointError(None, f"recipe must be JSON data: {e}") from None
    model = _pack_pruned_modules(model)

    method = recipe.get("method") if recipe else None
    recipe_modules = recipe.get("modules", {}) if recipe else {}
    modules = {}
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear):
            p = m.packed
            modules[name] = {
                "format": p.format_name,
                "structure": str(p.structure),
                "shape": list(p.shape),
                "dtype": str(p.value_dtype).replace("torch.", ""),
                "method": method if isinstance(method, str) and name in recipe_modules else None,
            }

    stored, aliases = _tensors_to_store(model.state_dict())
    shards = _shard(_groups(model, stored), stored, max_bytes)
    from .. import __version__

    with atomic_folder(out, source=source, overwrite=overwrite) as tmp:
        config = copy.deepcopy(model.config)
        config.architectures = [arch]
        config.save_pretrained(tmp)
        gen = getattr(model, "generation_config", None)
        if gen is not None and getattr(model, "can_generate", lambda: False)():
            gen.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

        weight_map, tensors, files = {}, {}, {}
        for i, keys in enumerate(shards, 1):
            fname = shard_name(i, len(shards))
            part = {k: stored[k] for k in keys}
            save_file(part, tmp / fname, metadata={"format": "pt"})
            files[fname] = {"bytes": (tmp / fname).stat().st_size}
            for k, t in part.items():
                weight_map[k] = fname
                tensors[k] = {"dtype": dtype_code(t.dtype), "shape": list(t.shape), "checksum": checksum(t)}
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in stored.values())},
            "weight_map": weight_map,
            "sparsa": {
                "format_version": FORMAT_VERSION,
                "writer": f"sparsa {__version__}",
                "checksum_algorithm": CHECKSUM_ALGORITHM,
                "config_checksum": checksum_bytes((tmp / "config.json").read_bytes()),
                "recipe": recipe,
                "modules": modules,
                "tensors": tensors,
                "aliases": aliases,
                "files": files,
            },
        }
        # compact: whitespace would be ~half the index, which matters next to small packed weights (90% sparse)
        text = json.dumps(index, separators=(",", ":")) + "\n"
        Index.model_validate_json(text)  # what we write must be what the reader accepts
        (tmp / INDEX_NAME).write_text(text)
        return_path = Path(out).resolve()
    return return_path
