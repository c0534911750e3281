"""Markdown tables for BENCHMARKS.md from benchmarks/results/*.json (the pruning benchmarks' outputs), so that
every figure there is one a run produced.

    python benchmarks/prune_tables.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

R = Path(__file__).parent / "results"


def load(name: str):
    p = R / name
    return json.loads(p.read_text()) if p.is_file() else None


def main() -> None:
    rec = load("minilm_recon.json")
    if rec:
        print("| setting | SparseGPT < Wanda < magnitude | SparseGPT < Wanda | Wanda < magnitude |")
        print("|---|---|---|---|")
        for k in ("50%", "70%", "2:4"):
            d = rec[k]
            n = d["modules"]
            print(f"| {k} | {d['sparsegpt<wanda<magnitude']}/{n} | {d['sparsegpt<wanda']}/{n} | {d['wanda<magnitude']}/{n} |")
        print("\nMean relative error ||WX - W'X||^2 / ||WX||^2 per module role (6 layers each), magnitude / Wanda / SparseGPT:\n")
        print("| role | " + " | ".join(("50%", "70%", "2:4")) + " |")
        print("|---|---|---|---|")
        for role in rec["50%"]["mean_by_role"]:
            cells = []
            for k in ("50%", "70%", "2:4"):
                v = rec[k]["mean_by_role"][role]
                cells.append(f"{v['magnitude']:.4f} / {v['wanda']:.4f} / {v['sparsegpt']:.4f}")
            print(f"| {role} | " + " | ".join(cells) + " |")
    fid = load("minilm_fidelity.json")
    if fid:
        print("\n| setting | method | plain | +DSnoT | +OWL | +OWL+DSnoT |")
        print("|---|---|---|---|---|---|")
        for s in ("50%", "2:4", "70%", "80%"):
            for m in ("magnitude", "wanda", "sparsegpt"):
                cells = []
                for v in ("plain", "+DSnoT", "+OWL", "+OWL+DSnoT"):
                    r = fid.get(f"{s} {m} {v}")
                    cells.append("n/a" if r is None else f"{r['cosine_mean']:.3f} ({r['nn_agreement']:.0%})")
                print(f"| {s} | {m} | " + " | ".join(cells) + " |")
    for name in ("minilm_calibration.json", "minilm_levers.json"):
        d = load(name)
        if d:
            print(f"\n| {name.split('_')[1].split('.')[0]} run | mean cosine | NN agreement |")
            print("|---|---|---|")
            for k, v in d.items():
                if isinstance(v, dict) and "cosine_mean" in v:
                    print(f"| {k} | {v['cosine_mean']:.4f} | {v['nn_agreement']:.0%} |")
            if "owl_70_per_layer_sparsity" in d:
                print("\nOWL at 70%, per-layer sparsity: " + ", ".join(
                    f"layer {k}: {v:.3f}" for k, v in d["owl_70_per_layer_sparsity"].items()))
    wh = load("minilm_where.json")
    if wh:
        wh = {k: v for k, v in wh.items() if not k.startswith("_")}
        print("\n| SparseGPT | " + " | ".join(wh) + " |")
        print("|---|" + "---|" * len(wh))
        keys = [k for k in next(iter(wh.values())) if k != "per_module_error"]
        for k in keys:
            print(f"| {k} | " + " | ".join(f"{wh[s][k]:.4f}" for s in wh) + " |")
    dec = load("decoder_perplexity.json")
    if dec:
        t = dec["training"]
        print(f"\nDecoder: {t['params'] / 1e6:.2f}M parameters, {t['steps']} steps, {t['tokens_seen'] / 1e6:.1f}M tokens "
              f"seen in {t['minutes']:.1f} min; held-out perplexity dense {dec['dense']:.2f} "
              f"({t['valid_tokens']} tokens).\n")
        print("| setting | magnitude | Wanda | SparseGPT |")
        print("|---|---|---|---|")
        for s in ("50%", "2:4", "70%", "70% +OWL", "70% +DSnoT", "70% +OWL+DSnoT"):
            print(f"| {s} | " + " | ".join(f"{dec['runs'][f'{s} {m}']['perplexity']:.2f}"
                                            for m in ("magnitude", "wanda", "sparsegpt")) + " |")
    for mem in (load("prune_memory.json"), load("prune_memory_24.json")):
        if not mem:
            continue
        print(f"\nCheckpoint {mem['checkpoint_mib']:.0f} MiB ({mem['layers']} blocks of ~{mem['approx_block_mib']:.0f} MiB), "
              f"cap 128 MiB:\n")
        print("| mode | time (s) | peak RSS (MiB) | peak above import baseline (MiB) |")
        print("|---|---|---|---|")
        for r in mem["runs"]:
            print(f"| {r['mode']} | {r['seconds']:.0f} | {r['peak_mib']:.0f} | {r['peak_above_baseline_mib']:.0f} |")


if __name__ == "__main__":
    main()
