"""Sparse training inside the Hugging Face ``Trainer``: a ``TrainerCallback`` that drives a SparseTraining.

    from sparsa.train import SparsaCallback
    cb = SparsaCallback(method="gmp", sparsity=0.8, structure="4x1")     # total_steps: the Trainer's max_steps
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()                       # masks follow the schedule; pruned weights stay exactly zero
    trainer.save_model("out")             # after training the weights are plain, with exact zeros

* ``on_train_begin``: builds the SparseTraining on the Trainer's model and attaches its optimizer;
* ``on_optimizer_step``: ``step()`` right after each ``optimizer.step()``;
* ``on_save``: writes the masks and schedule state (``sparsa_masks.pt``) into the checkpoint folder;
* resuming (``trainer.train(resume_from_checkpoint=...)``): reads them back, so masks continue exactly;
* ``on_train_end``: ``finalize()`` (exact zeros in plain parameters, structures recorded for sparsify).

SR-STE and the decaying mask train dense weights under a parametrization, which renames the weights in the
model's state dict; to save and resume their checkpoints, pass ``model=`` so the parametrization exists before
the Trainer saves or loads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import TrainerCallback

from .config import load_config
from .controller import SparseTraining
from .methods import METHODS

__all__ = ["SparsaCallback", "MASKS_FILE"]

MASKS_FILE = "sparsa_masks.pt"


def _checkpoint_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


class SparsaCallback(TrainerCallback):
    def __init__(self, config=None, model: torch.nn.Module | None = None, finalize: bool = True, **settings):
        self.finalize_at_end = finalize
        self.training: SparseTraining | None = None
        # checked now, so a typo fails before the Trainer starts; a scheduled method may leave total_steps to
        # the Trainer's max_steps
        self.config = load_config(config, **settings)
        if model is not None:
            self.training = SparseTraining(model, self.config)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        saved = None
        if state.global_step > 0:  # resumed: the masks of that checkpoint, not masks recomputed from weights
            path = _checkpoint_dir(args, state) / MASKS_FILE
            if not path.is_file():
                raise FileNotFoundError(f"resuming at step {state.global_step} but '{path}' is missing: the "
                                        f"checkpoint was not written with SparsaCallback")
            saved = torch.load(path, weights_only=True)  # plain tensors, numbers and strings
        if self.training is None:
            cfg = self.config
            if cfg.total_steps is None and METHODS[cfg.method].scheduled:
                cfg = load_config(cfg, total_steps=state.max_steps)
            self.training = SparseTraining(model, cfg, state=saved)
        elif saved is not None:
            self.training.load_state_dict(saved)
        if optimizer is not None:
            self.training.attach(optimizer)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.training.step()

    def on_save(self, args, state, control, **kwargs):
        folder = _checkpoint_dir(args, state)
        if folder.is_dir() and state.is_world_process_zero:
            tmp = folder / f".{MASKS_FILE}.tmp"
            torch.save(self.training.state_dict(), tmp)
            os.replace(tmp, folder / MASKS_FILE)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.training is not None and not self.training.finalized:
            logs["sparsity"] = round(self.training.sparsity(), 4)

    def on_train_end(self, args, state, control, **kwargs):
        if self.finalize_at_end and self.training is not None:
            self.training.finalize()
