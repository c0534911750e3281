"""Held-out perplexity of the benchmark decoder (benchmarks/train_tiny_lm.py) pruned one-shot by each method
at 50%, 2:4, 70%, 70% with OWL, 70% with DSnoT (issue 4, evidence 3). Calibration: 128 windows of 128 tokens
from the training articles; evaluation: the held-out articles (benchmarks/data/wiki_valid.txt).

    flock /tmp/sparsa-cpu.lock python benchmarks/prune_decoder.py
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import sparsa
from sparsa.eval import perplexity
from sparsa.prune import CalibrationConfig
from sparsa.runtime import load_pretrained

HERE = Path(__file__).parent
SETTINGS = {
    "50%": dict(structure="unstructured", sparsity=0.5),
    "2:4": dict(structure="2:4", sparsity=None),
    "70%": dict(structure="unstructured", sparsity=0.7),
    "70% +OWL": dict(structure="unstructured", sparsity=0.7, allocation="owl"),
    "70% +DSnoT": dict(structure="unstructured", sparsity=0.7, dsnot=True),
    "70% +OWL+DSnoT": dict(structure="unstructured", sparsity=0.7, allocation="owl", dsnot=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=HERE / "data" / "tiny-lm")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "decoder_perplexity.json")
    ap.add_argument("--samples", type=int, default=128)
    args = ap.parse_args()
    model, tok, _ = load_pretrained(args.model)
    valid = (HERE / "data" / "wiki_valid.txt").read_text(encoding="utf-8")
    cfg = CalibrationConfig(samples=args.samples, seq_len=128, batch_size=16)
    from sparsa.prune.calibration import build_batches

    # the training articles, tokenised once: 128 seeded windows of 128 tokens, the same for every run
    calib = build_batches(model, tok, str(HERE / "data" / "wiki_train.txt"), cfg)
    dense = perplexity(model, tok, valid)
    res = {"dense": dense, "runs": {}, "training": json.loads((args.model / "training.json").read_text())}
    print(f"| dense | | {dense:.2f} |", flush=True)
    for label, kw in SETTINGS.items():
        for m in ("magnitude", "wanda", "sparsegpt"):
            t = time.perf_counter()
            pm, rep = sparsa.prune(copy.deepcopy(model), m, calibration=calib, **kw)
            secs = time.perf_counter() - t
            ppl = perplexity(pm, tok, valid)
            res["runs"][f"{label} {m}"] = {"perplexity": ppl, "achieved_sparsity": rep.achieved_sparsity,
                                           "mean_recon_error": rep.mean_recon_error, "seconds": secs,
                                           "per_module_error": {x.name: x.recon_error for x in rep.modules}}
            print(f"| {label} | {m} | {ppl:.2f} | {rep.mean_recon_error:.4f} | {secs:.0f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
