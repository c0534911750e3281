"""Sparse training methods on the small decoder LM under one equal budget (issue 6, evidence 2 and 3), offline.

Every run starts from the same dense model (benchmarks/data/tiny-lm, from benchmarks/train_tiny_lm.py: 4.2M
parameters, held-out perplexity 170 on wiki_valid), trains the same number of optimizer steps on the same
random 128-token windows of wiki_train.txt (same seed, same AdamW and learning-rate schedule as the dense
training) with the plain next-token loss, and ends at the same sparsity; only the sparse training method
differs. Held-out perplexity on wiki_valid.txt after ``finalize()`` (exact zeros, plain modules).

* ``80``: 80% unstructured, ERK layer sparsities, methods gmp (dense -> 80% cubic), rigl and set (from the
  one-shot magnitude mask, drop/regrow with the cosine-decayed fraction), granet (from dense: cubic pruning plus
  gradient regrowth), random (a static random ERK mask);
* ``90``: the same five methods at 90%;
* ``2:4`` and ``1:8``: fixed (one-shot magnitude N:M mask), srste (SR-STE), decay (decaying mask).

    flock /tmp/sparsa-cpu.lock python benchmarks/sparse_train_decoder.py 80 --steps 100
    flock /tmp/sparsa-cpu.lock python benchmarks/sparse_train_decoder.py 90 --steps 100
    flock /tmp/sparsa-cpu.lock python benchmarks/sparse_train_decoder.py 2:4 --steps 100
    flock /tmp/sparsa-cpu.lock python benchmarks/sparse_train_decoder.py 1:8 --steps 100

Results are merged into benchmarks/results/sparse_train_decoder.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from prune_quality import machine
from sparsa.eval import perplexity
from sparsa.train import SparseTraining

HERE = Path(__file__).parent
MODEL = HERE / "data" / "tiny-lm"
RESULTS = HERE / "results" / "sparse_train_decoder.json"
GROUPS = {
    "80": {m: dict(sparsity=0.8, allocation="erk") for m in ("gmp", "rigl", "set", "granet", "random")},
    "90": {m: dict(sparsity=0.9, allocation="erk") for m in ("gmp", "rigl", "set", "granet", "random")},
    "2:4": {m: dict(structure="2:4") for m in ("fixed", "srste", "decay")},
    "1:8": {m: dict(structure="1:8") for m in ("fixed", "srste", "decay")},
}
INITS = {"gmp": "dense", "granet": "dense", "rigl": "magnitude", "set": "magnitude", "random": "random",
         "fixed": "magnitude"}


def run(group: str, method: str, steps: int, lr: float, batch: int, seq: int, seed: int = 0) -> dict:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(MODEL, local_files_only=True)
    model = GPT2LMHeadModel.from_pretrained(MODEL, local_files_only=True)
    ids = torch.tensor(tok((HERE / "data" / "wiki_train.txt").read_text(encoding="utf-8"))["input_ids"])  # (L,)
    valid = (HERE / "data" / "wiki_valid.txt").read_text(encoding="utf-8")
    kw = dict(GROUPS[group][method], seed=seed)
    if method in INITS:  # fixed 2:4 needs its one-shot mask too; srste / decay start from the dense weights
        kw["init"] = INITS[method]
    if method in ("gmp", "set", "rigl", "granet", "decay"):
        kw.update(total_steps=steps, end_step=int(0.75 * steps), update_every=max(1, steps // 20))
    sparse = SparseTraining(model, method=method, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    sparse.attach(opt)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    losses = []
    for step in range(steps):
        lr_now = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group_ in opt.param_groups:
            group_["lr"] = lr_now
        starts = torch.randint(0, ids.numel() - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s : s + seq] for s in starts.tolist()])  # (B, T)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sparse.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    train_s = time.perf_counter() - t0
    sparse.finalize()
    model.eval()
    ppl = perplexity(model, tok, valid, seq_len=seq)
    zeros = all(bool(torch.all(t.weight()[~sparse.mask(t.name)] == 0)) for t in sparse.targets)
    r = {"group": group, "method": method, "settings": kw, "steps": steps, "lr": lr, "batch": batch,
         "valid_perplexity": ppl, "sparsity": sparse.sparsity(), "exact_zeros": zeros, "train_seconds": train_s,
         "final_train_loss": sum(losses[-20:]) / 20, "machine": machine()}
    print(f"| {group} | {method} | {ppl:.1f} | {sparse.sparsity():.3f} | {train_s / 60:.1f} min |", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("group", choices=list(GROUPS))
    ap.add_argument("--methods", nargs="*", help="a subset of the group's methods")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "dense" not in results:
        info = json.loads((MODEL / "training.json").read_text())
        results["dense"] = {"valid_perplexity": info["valid_perplexity"], "source": "benchmarks/data/tiny-lm"}
    for method in args.methods or list(GROUPS[args.group]):
        results[f"{args.group} {method}"] = run(args.group, method, args.steps, args.lr, args.batch, args.seq)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
