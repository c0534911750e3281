"""Sparse training and recovery: masks that stay exactly true through training, the schedules and methods of
the research (fixed one-shot masks, GMP, SET, RigL, GraNet, random ERK, SR-STE, decaying N:M masks),
distillation from the dense teacher (SquareHead, KL on logits, embedding cosine/MSE), a plain-loop helper
(:class:`SparseTraining`), a Hugging Face Trainer callback (:class:`SparsaCallback`, imported on use) and the
recovery job behind ``sparsa recover``.
"""

from .config import ConfigError, SparseTrainingConfig, load_config
from .controller import ModuleSparsity, SparseTraining
from .distill import embedding_cosine, embedding_mse, kl_logits, squarehead
from .distiller import Distiller, LossWeights, TeacherMismatchError, check_teacher
from .methods import METHODS
from .schedules import ScheduleError, cosine_fraction, cubic_sparsity, mask_decay

__all__ = [
    "SparseTraining", "SparseTrainingConfig", "load_config", "ConfigError", "ModuleSparsity", "METHODS",
    "Distiller", "LossWeights", "check_teacher", "TeacherMismatchError",
    "squarehead", "kl_logits", "embedding_cosine", "embedding_mse",
    "cubic_sparsity", "cosine_fraction", "mask_decay", "ScheduleError",
    "SparsaCallback", "recover", "RecoverSettings",
]


def __getattr__(name: str):
    # transformers' Trainer machinery (and the recovery job) load on first use, not with `import sparsa.train`
    if name == "SparsaCallback":
        from .callback import SparsaCallback

        return SparsaCallback
    if name in ("recover", "RecoverSettings"):
        from . import recovery as job

        return getattr(job, name)
    raise AttributeError(f"module 'sparsa.train' has no attribute '{name}'")
