"""Pruning a model larger than the memory allowed: the model is built on the meta device (no weights), the
non-block weights (embeddings, final norm, head) are read from the safetensors checkpoint, and each
transformer block's weights are read when the calibration walk reaches it and written out (pruned) and
dropped when it leaves, so peak memory is about one block plus the calibration activations.

The output is a sharded Hugging Face folder (one shard per block plus one for the rest, with
``model.safetensors.index.json``), written beside the destination and renamed into place when complete. The
checkpoint's own key names are kept, so ``from_pretrained`` loads the result like any other checkpoint.
Checkpoints whose keys need transformers' load-time renaming (e.g. per-expert MoE weights fused on load) are
not supported here: the error names the first weight that could not be found.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["checkpoint_bytes", "skeleton", "SafetensorsBlockLoader", "prune_checkpoint"]


def _index(folder: Path) -> dict[str, Path]:
    """Checkpoint key -> safetensors file."""
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), "pt") as f:
            return {k: single for k in f.keys()}
    idx = folder / "model.safetensors.index.json"
    if idx.is_file():
        wm = json.loads(idx.read_text())["weight_map"]
        return {k: folder / v for k, v in wm.items()}
    raise FileNotFoundError(f"'{folder}' has no model.safetensors (or index); bounded-memory pruning reads "
                            f"safetensors checkpoints")


def checkpoint_bytes(folder: str | os.PathLike) -> int:
    files = set(_index(Path(folder)).values())
    return sum(f.stat().st_size for f in files)


def skeleton(folder: str | os.PathLike) -> nn.Module:
    """The model of a folder's config.json with every parameter on the meta device (buffers real, so that
    values computed at construction, such as rotary frequencies, are right)."""
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    with init_empty_weights(include_buffers=False):
        model = (cls or AutoModel).from_config(config) if cls is None else cls(config)
    return model.eval()


class SafetensorsBlockLoader:
    """Brings a meta-device model's weights in from a safetensors checkpoint, block by block, and writes each
    block out once pruned. Use ``load_rest()`` first, then pass it as the engine's loader, then ``finish()``."""

    def __init__(self, model: nn.Module, folder: Path, out_dir: Path, block_names: list[str]):
        self.model, self.folder, self.out_dir = model, folder, out_dir
        self.files = _index(folder)
        self.prefix = getattr(model, "base_model_prefix", "") or ""
        self.blocks = block_names
        self.n_shards = len(block_names) + 1
        self.weight_map: dict[str, str] = {}
        self.total = 0
        self.written: set[str] = set()

    def _read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The tensors of ``keys``, copied into process memory; each file is opened only for the read, so
        that none of its pages stays mapped (and counted as resident) after the block is done."""
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        by_file: dict[Path, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.files[k], []).append(k)
        for f, ks in by_file.items():
            with safe_open(str(f), "pt") as h:
                for k in ks:
                    out[k] = h.get_tensor(k).clone()
        return out

    def _key(self, name: str) -> str:
        p = self.prefix + "."
        for k in (name, name.removeprefix(p) if name.startswith(p) else None, p + name):
            if k is not None and k in self.files:
                return k
        raise KeyError(f"weight '{name}' is not in the checkpoint of '{self.folder}' (bounded-memory pruning needs "
                       f"a checkpoint whose keys match the model, as save_pretrained writes them)")

    def _tensors(self, prefix: str, module: nn.Module):
        for name, _ in list(module.named_parameters(recurse=True)) + [
                (n, b) for n, b in module.named_buffers(recurse=True)]:
            full = f"{prefix}.{name}" if prefix else name
            yield full, name

    def _assign(self, module: nn.Module, local: str, value: torch.Tensor) -> None:
        owner_name, _, attr = local.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
        else:
            owner._buffers[attr] = value

    def _load(self, prefix: str, module: nn.Module, only_missing: bool) -> None:
        todo: list[tuple[str, str]] = []
        for full, local in self._tensors(prefix, module):
            owner_name, _, attr = local.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            t = owner._parameters.get(attr) if attr in owner._parameters else owner._buffers.get(attr)
            is_meta = t is not None and t.device.type == "meta"
            if attr not in owner._parameters and not is_meta:
                try:
                    self._key(full)
                except KeyError:
                    continue  # a buffer computed at construction, not stored
            if only_missing and not is_meta:
                continue
            todo.append((self._key(full), local))
        data = self._read([k for k, _ in todo])
        for key, local in todo:
            self._assign(module, local, data[key])

    def load_rest(self) -> None:
        """Read every weight outside the blocks (embeddings, norms, head) and re-tie tied weights."""
        inside = tuple(b + "." for b in self.blocks)
        todo = []
        for name, mod in self.model.named_modules():
            for pname, p in list(mod._parameters.items()):
                full = f"{name}.{pname}" if name else pname
                if p is None or full.startswith(inside) or p.device.type != "meta":
                    continue
                try:
                    todo.append((mod, pname, self._key(full)))
                except KeyError:
                    continue  # tied to another weight (e.g. lm_head = embeddings): re-tied below
        data = self._read([k for _, _, k in todo])
        for mod, pname, key in todo:
            mod._parameters[pname] = nn.Parameter(data[key], requires_grad=False)
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights()
        left = [n for n, p in self.model.named_parameters() if p.device.type == "meta" and not n.startswith(inside)]
        if left:
            raise KeyError(f"weights not found in the checkpoint of '{self.folder}': {', '.join(left[:5])}")

    def enter(self, name: str, block: nn.Module) -> None:
        self._load(name, block, only_missing=True)

    def _write(self, shard: int, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        fname = f"model-{shard:05d}-of-{self.n_shards:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(self.out_dir / fname),
                  metadata={"format": "pt"})
        for k, v in tensors.items():
            self.weight_map[k] = fname
            self.total += v.numel() * v.element_size()
            self.written.add(k)

    def exit(self, name: str, block: nn.Module) -> None:
        out = {}
        for full, local in self._tensors(name, block):
            try:
                key = self._key(full)
            except KeyError:
                continue
            owner_name, _, attr = local.rpartition(".")
            owner = block.get_submodule(owner_name) if owner_name else block
            t = owner._parameters[attr] if attr in owner._parameters else owner._buffers[attr]
            out[key] = t.detach()
        self._write(self.blocks.index(name) + 1, out)
        self.drop(name, block)

    def drop(self, name: str, block: nn.Module) -> None:
        """Put the block's weights back on the meta device, so their memory is returned."""
        for mod in block.modules():
            for pname, p in list(mod._parameters.items()):
                if p is not None:
                    mod._parameters[pname] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        _trim()


    def finish(self) -> None:
        """Write every checkpoint key not yet written (the non-block weights) and the shard index."""
        state = {}
        named = dict(self.model.named_parameters(remove_duplicate=False))
        named.update(dict(self.model.named_buffers()))
        for k in self.files:
            if k in self.written:
                continue
            src = next((n for n in (k, f"{self.prefix}.{k}", k.removeprefix(self.prefix + ".")) if n in named), None)
            if src is None:
                raise KeyError(f"checkpoint key '{k}' has no matching weight in the model")
            state[k] = named[src].detach()
        self._write(self.n_shards, state)
        (self.out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": self.weight_map}, indent=2) + "\n")


def prune_checkpoint(folder: str | os.PathLike, out: str | os.PathLike, recipe, calibration, metadata: dict,
                     tokenizer=None, overwrite: bool = False, progress: bool = False):
    """Prune the checkpoint in ``folder`` block by block into ``out`` (a new folder); returns the report."""
    from ..runtime.models import SPARSA_METADATA, ModelLoadError
    from .api import prune
    from .blocks import find_blocks

    folder, out = Path(folder).resolve(), Path(out).resolve()
    if out == folder:
        raise ModelLoadError(f"refusing to write over the source model '{out}'; choose another --out")
    if out.exists() and not overwrite:
        raise ModelLoadError(f"'{out}' already exists; choose another --out or pass --overwrite")
    model = skeleton(folder)
    blocks = [n for n, _ in find_blocks(model)]
    if blocks == [""]:
        raise ValueError("bounded-memory pruning needs a model made of repeated blocks")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        loader = SafetensorsBlockLoader(model, folder, tmp, blocks)
        loader.load_rest()
        model, report = prune(model, recipe, calibration=calibration, tokenizer=tokenizer, loader=loader,
                              progress=progress)
        loader.finish()
        for f in folder.iterdir():  # config, generation config, tokenizer files: everything but the weights
            if f.is_file() and not f.name.startswith("model") and f.suffix != ".safetensors" and \
                    f.name != SPARSA_METADATA:
                shutil.copy2(f, tmp / f.name)
        (tmp / SPARSA_METADATA).write_text(json.dumps({**metadata, "modules": report.structures()}, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps large freed blocks otherwise, and a block-sized
    allocation per block would ratchet the resident size up)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
