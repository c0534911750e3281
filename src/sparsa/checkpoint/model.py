"""Rebuild a transformers model from a packed checkpoint: with SparseLinear modules, or dense for export.

The model class comes from ``config.json``'s ``architectures[0]`` and must be a model class that transformers
itself exports (a fixed allowlist: nothing is imported from a name in the checkpoint, no remote code runs). The
skeleton is built without weight initialisation (parameters are allocated but never written, so this costs
almost nothing) while buffers computed in ``__init__`` (position ids, rotary frequencies) get their real values;
then every parameter is replaced by a checkpoint tensor, and anything the model has that the checkpoint lacks,
or the other way round, is an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ..modules import is_linear_like
from ..nn import SparseLinear, optimize_runtime
from .errors import CheckpointError
from .integrity import checksum_bytes
from .reader import Checkpoint, read_checkpoint
from .schema import INDEX_NAME

__all__ = ["model_class", "build_skeleton", "load_packed"]


def _no_init_weights():
    try:  # transformers >= 5
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def model_class(config, config_path: Path):
    """The transformers class named by ``config.architectures[0]`` (or AutoModel's class for the config type)."""
    import transformers
    from transformers import AutoModel, PreTrainedModel

    archs = getattr(config, "architectures", None) or []
    if not archs:
        try:
            return AutoModel._model_mapping[type(config)]
        except KeyError:
            raise CheckpointError(config_path, f"no architectures and no model class for '{config.model_type}'") from None
    name = archs[0]
    cls = getattr(transformers, name, None) if isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) else None
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise CheckpointError(
            config_path, f"architecture {name!r} is not a model class of transformers {transformers.__version__}; "
                         f"sparsa loads only model classes built into transformers (no remote code)"
        )
    return cls


def build_skeleton(path: Path, config_checksum: str | None = None) -> nn.Module:
    """The model of ``path/config.json`` with uninitialised parameters and real buffers, in eval mode.
    ``config_checksum``: the checksum config.json must have (None: not checked)."""
    from transformers import AutoConfig

    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(config_path, "missing: a packed checkpoint keeps the model's config.json")
    if config_checksum is not None:
        got = checksum_bytes(config_path.read_bytes())
        if got != config_checksum:
            raise CheckpointError(
                config_path, f"checksum mismatch (index {config_checksum}, file {got}): config.json changed after "
                             f"the checkpoint was written, which would change the model"
            )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(config_path, f"cannot be read as a transformers config: {e}") from None
    cls = model_class(config, config_path)
    with _no_init_weights():
        model = cls(config)
    gen_path = path / "generation_config.json"
    if gen_path.is_file() and model.can_generate():
        from transformers import GenerationConfig

        try:
            model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(gen_path, f"cannot be read: {e}") from None
    return model.eval()



def _dense_dtype(ckpt: Checkpoint) -> torch.dtype | None:
    """The floating dtype of the checkpoint's dense tensors (the export writes every weight in it)."""
    for t in ckpt.tensors.values():
        if t.is_floating_point():
            return t.dtype
    return None


def load_packed(path: str | os.PathLike, dense: bool = False, verify: bool = True) -> tuple[nn.Module, Checkpoint]:
    """(model, checkpoint) for the packed checkpoint in ``path``.

    ``dense=False``: every packed weight becomes a SparseLinear (kernel chosen here, on this machine).
    ``dense=True``: every packed weight is unpacked into the model's own module (nn.Linear, Conv1D), in the dtype
    of the checkpoint's other floating tensors, giving a plain transformers model (for export).
    """
    root = Path(path)
    ckpt = read_checkpoint(root, verify=verify)
    model = build_skeleton(root, ckpt.index.sparsa.config_checksum if verify else None)
    modules = dict(model.named_modules())
    state = dict(ckpt.tensors)
    dense_dtype = _dense_dtype(ckpt)
    for name, packed in ckpt.packed.items():
        file = ckpt.file_of(f"{name}.values")
        target = modules.get(name) if name else None
        if target is None or not is_linear_like(target):
            what = "has no such module" if target is None else f"has a {type(target).__name__} there, not a linear layer"
            raise CheckpointError(file, f"module '{name}': the model ({type(model).__name__}) {what}")
        conv1d = type(target).__name__ == "Conv1D"  # GPT-2's Conv1D stores its weight as (in, out)
        want = tuple(target.weight.shape[::-1]) if conv1d else tuple(target.weight.shape)
        if tuple(packed.shape) != want:
            raise CheckpointError(
                file, f"module '{name}' has shape {tuple(packed.shape)} but the model's is {want}",
                tensor=f"{name}.values"
            )
        has_bias = getattr(target, "bias", None) is not None
        if has_bias != (f"{name}.bias" in state):
            raise CheckpointError(
                file, f"module '{name}': the model {'has' if has_bias else 'has no'} bias but the checkpoint "
                      f"{'lacks it' if has_bias else 'holds one'}", tensor=f"{name}.bias"
            )
        if dense:
            w = packed.to_dense()
            w = w.T.contiguous() if conv1d else w
            dt = dense_dtype or w.dtype
            state[f"{name}.weight"] = w.to(dt)
            if has_bias:
                state[f"{name}.bias"] = state[f"{name}.bias"].to(dt)
        else:
            bias = state.pop(f"{name}.bias", None)
            model.set_submodule(name, SparseLinear(packed, bias, validate=False))  # from_tensors validated it
    _load_rest(model, state, ckpt)
    if dense and hasattr(model, "tie_weights"):
        model.tie_weights()
    if not dense:
        optimize_runtime(model)  # attention kernel and GELU epilogue, as sparsa.sparsify installs them
    return model.eval(), ckpt


def _load_rest(model: nn.Module, state: dict[str, torch.Tensor], ckpt: Checkpoint) -> None:
    """Put the dense tensors into the model; each must match one of its parameters or persistent buffers."""
    sparse = {n for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    expected = {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in sparse}
    index_file = ckpt.path / INDEX_NAME

    def file_of(key):
        target = ckpt.index.sparsa.aliases.get(key, key)
        return ckpt.path / ckpt.index.weight_map[target] if target in ckpt.index.weight_map else index_file

    for key in state:
        if key not in expected:
            raise CheckpointError(file_of(key), f"the model ({type(model).__name__}) has no such tensor", tensor=key)
        if tuple(state[key].shape) != tuple(expected[key].shape):
            raise CheckpointError(
                file_of(key), f"shape {tuple(state[key].shape)} but the model expects {tuple(expected[key].shape)}",
                tensor=key,
            )
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(index_file, f"missing from the checkpoint{more}; the model needs it", tensor=missing[0])
    model.load_state_dict(state, strict=False, assign=True)

