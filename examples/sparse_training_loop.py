"""Sparse training in a plain PyTorch loop: RigL at 80% sparsity in 4x1 blocks (the layout the CPU kernels run
fastest), with the dense teacher distilled into the sparse student by SquareHead + KL on the logits.

The one rule: call ``sparse.step()`` right after every ``optimizer.step()``. Pruned weights then stay exactly
zero (their gradients and optimizer state are masked), masks move on RigL's schedule, and ``state_dict()``
saves the masks with your checkpoint.

    python examples/sparse_training_loop.py            # ~1 minute on 2 CPU cores, offline
"""

import argparse
import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sparsa.train import SparseTraining, kl_logits, squarehead

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--quick", action="store_true", help="a few steps, for the test suite")
args = ap.parse_args()
steps = 12 if args.quick else args.steps

torch.manual_seed(0)
cfg = GPT2Config(vocab_size=256, n_positions=64, n_embd=128, n_layer=2, n_head=4)
teacher = GPT2LMHeadModel(cfg).eval()  # stands in for your dense model
student = copy.deepcopy(teacher)

sparse = SparseTraining(student, method="rigl", sparsity=0.8, structure="4x1", allocation="erk",
                        total_steps=steps, update_every=max(2, steps // 10))
optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.01)
sparse.attach(optimizer)  # its state at pruned positions is zeroed now and at every mask change

data = torch.randint(0, 256, (steps, 8, 32))  # (steps, B, T): bytes of any text would do
for step, ids in enumerate(data, 1):
    with torch.no_grad():
        t = teacher(input_ids=ids, output_hidden_states=True)
    s = student(input_ids=ids, output_hidden_states=True)
    loss = squarehead(s.hidden_states[1:], t.hidden_states[1:]) + kl_logits(s.logits, t.logits)
    loss.backward()
    optimizer.step()
    info = sparse.step()  # after optimizer.step(): schedules advance, masks update on update steps
    optimizer.zero_grad()
    if info or step % 50 == 0:
        print(f"step {step}: loss {loss.item():.4f} sparsity {sparse.sparsity():.3f} {info}")

torch.save(sparse.state_dict(), "/tmp/sparsa_example_masks.pt")  # resume: SparseTraining(model, ..., state=...)
report = sparse.finalize()  # plain modules, exact zeros, each module's structure recorded for sparsa.save
zeros = all(torch.all(t.weight()[~sparse.mask(t.name)] == 0) for t in sparse.targets)
print(f"final sparsity {sparse.sparsity():.3f} over {len(report)} modules; pruned weights exactly zero: {zeros}")
# sparsa.save(student, "out-dir") now writes a packed checkpoint; sparsa.load("out-dir") runs it sparse
