"""Sparse training inside the Hugging Face Trainer: gradual magnitude pruning (cubic schedule) to 80% in 4x1
blocks with ``SparsaCallback``. Checkpoints the Trainer writes carry the masks (``sparsa_masks.pt``), so
``trainer.train(resume_from_checkpoint=...)`` continues with the very same masks.

    python examples/hf_trainer_sparse.py               # ~1 minute on 2 CPU cores, offline
"""

import argparse
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import sparsa
from sparsa.train import SparsaCallback

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--quick", action="store_true", help="a few steps, for the test suite")
args = ap.parse_args()
steps = 10 if args.quick else args.steps


class RandomText(torch.utils.data.Dataset):  # stands in for your tokenised dataset
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        ids = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids}


torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=64, n_embd=128, n_layer=2, n_head=4))
callback = SparsaCallback(method="gmp", sparsity=0.8, structure="4x1", update_every=max(1, steps // 20))
out = tempfile.mkdtemp(prefix="sparsa-hf-example-")
trainer = Trainer(model=model, callbacks=[callback], train_dataset=RandomText(),
                  args=TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=8,
                                         learning_rate=1e-3, logging_steps=max(1, steps // 5), save_steps=steps,
                                         report_to=[], use_cpu=True, disable_tqdm=True))
trainer.train()  # total_steps of the schedule: the Trainer's max_steps

sp = callback.training
zeros = all(torch.all(t.weight()[~sp.mask(t.name)] == 0) for t in sp.targets)
print(f"sparsity {sp.sparsity():.3f}; pruned weights exactly zero: {zeros}")
sparsa.save(model, f"{out}/packed")  # finalized: structures recorded, so the 4x1 weights are stored packed
print(f"packed checkpoint: {out}/packed")
