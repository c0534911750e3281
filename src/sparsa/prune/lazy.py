"""Pruning a model larger than the memory allowed: the model is built on the meta device (no weights); the
non-block weights (embeddings, final norm, head) are read from the safetensors checkpoint only while the
calibration walk computes the first block's inputs, and each transformer block's weights are read when the
walk reaches it and written out (pruned) and dropped when it leaves, so peak memory is about one block plus
the calibration activations and one module's pruning working set. (The embeddings and head of a large-vocabulary
model weigh as much as a block or more, so they are not kept for the whole run.) While SparseGPT prunes a stage
of a block, the block's other weights are parked (``park``): pruned ones in a temporary file in the output
folder, the rest left to be read from the source again.

The output is a sharded Hugging Face folder (one shard per block, then the non-block weights copied unchanged
from the source in shards no larger than a block, with ``model.safetensors.index.json``), written beside the
destination and renamed into place when complete. The
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

from .heap import release_freed_memory

__all__ = ["checkpoint_bytes", "skeleton", "SafetensorsBlockLoader", "prune_checkpoint"]

# park() leaves weights smaller than 1/64 of their block in memory (norms, biases): not worth a file round trip
_PARK_SHARE = 64


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


_READ_CHUNK = 32 * 2**20  # bytes copied per opening of the file


def read_tensor(file: Path, key: str) -> torch.Tensor:
    """One tensor of a safetensors file, copied into process memory ``_READ_CHUNK`` bytes at a time.

    safetensors hands out tensors backed by a mapping of the file; copying a whole one held its mapped pages
    and the copy at once (a 250 MiB embedding matrix cost 500 MiB), and a mapping kept open keeps every page
    read through it resident. Each chunk is therefore read through its own opening of the file, so at most
    one chunk of mapped pages is resident beside the copy.
    """
    from safetensors import safe_open

    with safe_open(str(file), "pt") as h:
        t = h.get_tensor(key)  # mapped, not read: no page is touched yet
        if t.dim() == 0 or t.numel() * t.element_size() <= _READ_CHUNK:
            return t.clone()
        out = torch.empty(t.shape, dtype=t.dtype)
        step = max(1, _READ_CHUNK // (t[0].numel() * t.element_size()))
        del t
    for r0 in range(0, out.shape[0], step):
        with safe_open(str(file), "pt") as h:
            src = h.get_tensor(key)
            out[r0 : r0 + step].copy_(src[r0 : r0 + step])
            del src
    return out


class SafetensorsBlockLoader:
    """Brings a meta-device model's weights in from a safetensors checkpoint, block by block, and writes each
    block out once pruned. Pass it as the engine's loader (which calls ``load_rest``/``drop_rest`` around the
    capture of the first block's inputs and ``enter``/``exit`` per block), then call ``finish()``."""

    def __init__(self, model: nn.Module, folder: Path, out_dir: Path, block_names: list[str]):
        self.model, self.folder, self.out_dir = model, folder, out_dir
        self.files = _index(folder)
        self.prefix = getattr(model, "base_model_prefix", "") or ""
        self.blocks = block_names
        self.rest_shards = self._plan_rest()
        self.n_shards = len(block_names) + len(self.rest_shards)
        self.weight_map: dict[str, str] = {}
        self.total = 0
        self.written: set[str] = set()
        self.parked: dict[str, Path] = {}  # key -> its source file, for weights parked in a temporary file
        self.n_parks = 0

    def _plan_rest(self) -> list[list[str]]:
        """The checkpoint keys outside every block, grouped in file order into shards of at most one block's
        bytes (or one tensor, if a single tensor is larger), so that writing them holds no more than a block."""
        from safetensors import safe_open

        inside = tuple(b + "." for b in self.blocks)
        names = {k: (k, f"{self.prefix}.{k}", k.removeprefix(self.prefix + ".")) for k in self.files}
        nbytes: dict[str, int] = {}
        for f in dict.fromkeys(self.files.values()):
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    t = h.get_tensor(k)  # mapped, not read (see read_tensor): only its size is used
                    nbytes[k] = t.numel() * t.element_size()
                    del t
        block_bytes = [sum(n for k, n in nbytes.items() if any(v.startswith(b + ".") for v in names[k]))
                       for b in self.blocks]
        cap = max(block_bytes, default=0)
        shards: list[list[str]] = []
        size = 0
        for k in self.files:
            if any(v.startswith(inside) for v in names[k]):
                continue
            if not shards or (size + nbytes[k] > cap and shards[-1]):
                shards.append([])
                size = 0
            shards[-1].append(k)
            size += nbytes[k]
        return shards

    def _read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The tensors of ``keys``, copied into process memory (see ``read_tensor``)."""
        return {k: read_tensor(self.files[k], k) for k in keys}

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
        """Read every weight outside the blocks (embeddings, norms) that is not in memory, and re-tie tied
        weights. An untied output head is left out: it runs after the blocks, never to compute their inputs,
        and ``finish`` copies it from the source (for a 32000-token vocabulary it is as large as a block)."""
        inside = tuple(b + "." for b in self.blocks)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        todo = []
        for name, mod in self.model.named_modules():
            if mod is head:
                continue
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
        skipped = {id(p) for p in head.parameters()} if head is not None else set()
        left = [n for n, p in self.model.named_parameters()
                if p.device.type == "meta" and not n.startswith(inside) and id(p) not in skipped]
        if left:
            raise KeyError(f"weights not found in the checkpoint of '{self.folder}': {', '.join(left[:5])}")

    def drop_rest(self) -> None:
        """Put the weights outside the blocks back on the meta device: once the first block's inputs are
        captured the walk does not need them, and ``finish`` copies them from the source."""
        inside = tuple(b + "." for b in self.blocks)
        for name, mod in self.model.named_modules():
            if name.startswith(inside) or name in self.blocks:
                continue
            for pname, p in list(mod._parameters.items()):
                if p is not None and p.device.type != "meta":
                    mod._parameters[pname] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        release_freed_memory()

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

    def park(self, name: str, block: nn.Module, keep: list[nn.Module], changed: list[nn.Module]) -> None:
        """Take the block's weights out of memory except those of ``keep`` (the modules a stage is pruning) and
        small ones (norms, biases): the weights of ``changed`` (modules already pruned) into a temporary
        safetensors file, the others back to the meta device, to be read from the source again by ``unpark``;
        ``keep``'s own weights are brought in if an enclosing park had taken them out.

        While SparseGPT prunes a stage nothing runs the block, and its working set (X^T X of the stage's input,
        460 MiB at a 7B model's down projection, and a copy of the weight) then replaces the block's other
        weights instead of adding to them."""
        kept, spill, gone = {id(m) for m in keep}, {}, []
        modified = {id(m) for m in changed}

        def key(mod_name: str, pname: str) -> str:
            return self._key(".".join(x for x in (name, mod_name, pname) if x))

        block_bytes = sum(p.numel() * p.element_size() for p in block.parameters())
        for mod_name, mod in block.named_modules():
            if id(mod) in kept:
                continue
            for pname, p in mod._parameters.items():
                if p is None or p.device.type == "meta" or p.numel() * p.element_size() * _PARK_SHARE < block_bytes:
                    continue
                if id(mod) in modified:
                    spill[key(mod_name, pname)] = p.detach()
                gone.append((mod, pname))
        if spill:
            from safetensors.torch import save_file

            self.n_parks += 1
            path = self.out_dir / f".park-{self.n_parks:05d}.safetensors"
            save_file({k: v.contiguous() for k, v in spill.items()}, str(path))
            self.parked.update({k: self.files[k] for k in spill})  # where they come from once written out
            self.files.update({k: path for k in spill})
        del spill
        for mod, pname in gone:
            mod._parameters[pname] = nn.Parameter(torch.empty_like(mod._parameters[pname], device="meta"),
                                                  requires_grad=False)
        release_freed_memory()
        # and ``keep``'s own weights in, where an earlier park (parks nest) took them out
        missing = [(mod, pname, key(mod_name, pname)) for mod_name, mod in block.named_modules() if id(mod) in kept
                   for pname, p in mod._parameters.items() if p is not None and p.device.type == "meta"]
        data = self._read([k for _, _, k in missing])
        for mod, pname, k in missing:
            mod._parameters[pname] = nn.Parameter(data[k], requires_grad=False)

    def unpark(self, name: str, block: nn.Module) -> None:
        """Bring back what ``park`` took out (parked pruned weights from the temporary file, which is removed)."""
        self._load(name, block, only_missing=True)
        spilled = {self.files[k] for k in self.parked}
        self.files.update(self.parked)
        self.parked = {}
        for path in spilled:
            path.unlink()

    def drop(self, name: str, block: nn.Module) -> None:
        """Put the block's weights back on the meta device, so their memory is returned."""
        for mod in block.modules():
            for pname, p in list(mod._parameters.items()):
                if p is not None:
                    mod._parameters[pname] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        release_freed_memory()

    def finish(self) -> None:
        """Write the weights outside the blocks (copied unchanged from the source: bounded-memory pruning
        never changes them), one planned shard at a time, and the shard index."""
        left = [k for shard in self.rest_shards for k in shard if k in self.written]
        if left:
            raise RuntimeError(f"checkpoint keys written twice (inside and outside the blocks): {left[:5]}")
        for i, keys in enumerate(self.rest_shards):
            self._write(len(self.blocks) + 1 + i, self._read(keys))
        missing = [k for k in self.files if k not in self.written]
        if missing:
            raise KeyError(f"checkpoint keys of '{self.folder}' that were not written: {', '.join(missing[:5])}")
        (self.out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": self.weight_map}, indent=2) + "\n")
        release_freed_memory()


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
