"""Model-level runtime: loading and saving, timing, and the jobs behind the CLI."""

from .models import (
    DEFAULT_MODEL_NAME,
    SPARSA_METADATA,
    ModelLoadError,
    default_model_path,
    load_encoder,
    load_pretrained,
    save_pruned,
)
from .timing import Timing, time_fn

__all__ = [
    "load_encoder",
    "load_pretrained",
    "save_pruned",
    "default_model_path",
    "ModelLoadError",
    "DEFAULT_MODEL_NAME",
    "SPARSA_METADATA",
    "time_fn",
    "Timing",
]
