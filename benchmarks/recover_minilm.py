"""Recovery of all-MiniLM-L6-v2 from one-shot SparseGPT masks by sparse distillation (issue 6, evidence 1),
offline.

For each setting: prune the real model one-shot with SparseGPT (calibration text and sample count of
benchmarks/prune_quality.py), save the dense-with-zeros folder, then run ``sparsa.train.recover`` on it (fixed
masks, SquareHead + embedding cosine against the dense teacher) for ``--minutes`` of wall-clock time. Every
``--eval-minutes`` the job's held-out check runs, and this script's monitor measures what BENCHMARKS.md
reports: mean cosine to the dense model's embeddings and nearest-neighbour agreement on sparsa's 205 held-out
sentences (sparsa.eval.heldout_sentences, never in any training or calibration text).

Training text (``python benchmarks/offline_text.py`` writes it): by default benchmarks/data/wiki_sentences.txt +
news_sentences.txt; ``--text wiki news wordnet`` adds WordNet's usage examples and glosses.

    flock /tmp/sparsa-cpu.lock python benchmarks/recover_minilm.py 50% --minutes 15
    flock /tmp/sparsa-cpu.lock python benchmarks/recover_minilm.py 2:4 --minutes 15       # one run per lock
    flock /tmp/sparsa-cpu.lock python benchmarks/recover_minilm.py "80% 4x1 gmp" --minutes 60  # gradual route

Results are merged into benchmarks/results/recover_minilm.json (one entry per setting); ``--table`` prints the
Markdown table of everything recorded so far.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from pathlib import Path

import torch

import sparsa
from prune_quality import MIX, Bench, machine
from sparsa.eval import embedding_fidelity, encode
from sparsa.runtime import default_model_path, time_fn
from sparsa.runtime.models import save_pruned
from sparsa.train import LossWeights, RecoverSettings, recover

HERE = Path(__file__).parent
WORK = HERE / "data" / "recover"
RESULTS = HERE / "results" / "recover_minilm.json"
SETTINGS = {"50%": ("unstructured", 0.5), "2:4": ("2:4", None), "80% 4x1": ("4x1", 0.8),
            "90%": ("unstructured", 0.9), "80% 4x1 gmp": ("4x1", 0.8), "90% gmp": ("unstructured", 0.9)}
# gradual routes: one-shot at a lower sparsity, then GMP (cubic) to the setting's sparsity during the first
# GRADUAL[label][1] of the run, with distillation throughout; the saved checkpoint is one after the schedule
GRADUAL = {"80% 4x1 gmp": (0.5, 0.6), "90% gmp": (0.5, 0.6)}
TARGETS = {"50%": 0.97, "2:4": 0.95, "80% 4x1": 0.90, "80% 4x1 gmp": 0.90}


def result_key(label: str, tag: str | None) -> str:
    """A tagged run (another learning rate, batching, ...) is recorded beside the setting's, not over it."""
    return f"{label} [{tag}]" if tag else label


def recorded(results: dict) -> list[tuple[str, str]]:
    """(setting, result key) of the recorded runs, in the order of SETTINGS."""
    return [(label, k) for label in SETTINGS for k in results if k == label or k.startswith(label + " [")]


def slug(key: str) -> str:
    """Folder name of a result key: '80% 4x1 [lr 0.001]' -> '80-4x1-lr-0.001'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", key.replace("%", "")).strip("-")


TEXTS = {"wiki": "wiki_sentences.txt", "news": "news_sentences.txt", "reviews": "review_sentences.txt",
         "wordnet": "wordnet_sentences.txt"}  # benchmarks/data/, written by offline_text.py


def training_text(sources: tuple[str, ...] = ("wiki", "news")) -> Path:
    """One file of the chosen sources' lines (wiki + news: train_sentences.txt, the text of the first runs)."""
    name = "train_sentences.txt" if tuple(sources) == ("wiki", "news") else f"train_{'+'.join(sources)}.txt"
    path = WORK / name
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        lines = []
        for src in sources:
            f = HERE / "data" / TEXTS[src]
            if not f.is_file():
                raise SystemExit(f"{f} is missing: run python benchmarks/offline_text.py first")
            lines += f.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(ln for ln in lines if ln.strip()) + "\n", encoding="utf-8")
    return path


def one_shot(b: Bench, label: str, key: str) -> tuple[Path, dict]:
    """Prune with SparseGPT and save the dense-with-zeros folder; its held-out fidelity."""
    st, sp = SETTINGS[label]
    sp = GRADUAL[label][0] if label in GRADUAL else sp
    t = time.perf_counter()
    model, rep = sparsa.prune(copy.deepcopy(b.model), "sparsegpt", sp, st, calibration=str(MIX), tokenizer=b.tok,
                              calibration_config=b.cfg)
    secs = time.perf_counter() - t
    f = embedding_fidelity(b.ref, encode(model, b.tok, b.sents))
    folder = WORK / f"{slug(key)}-sparsegpt"
    record = {"method": "sparsegpt", "structure": st, "sparsity": rep.achieved_sparsity,
              "modules": {m.name: m.structure for m in rep.modules}}
    save_pruned(model, b.tok, folder, record, source=None, overwrite=True)
    return folder, {"cosine_mean": f.cosine_mean, "nn_agreement": f.nn_agreement, "cosine_min": f.cosine_min,
                    "achieved_sparsity": rep.achieved_sparsity, "prune_seconds": secs}


def measure_speed(b: Bench, loaded) -> dict:
    """Median forward time of the same 64 held-out sentences through the dense model and the packed one."""
    batch = b.tok(b.sents[:64], padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        dense_t = time_fn(lambda: b.model(**batch), repeats=15, warmup=3)
        sparse_t = time_fn(lambda: loaded(**batch), repeats=15, warmup=3)
    return {"batch": "64 held-out sentences", "dense_ms": dense_t.median_ms, "sparse_ms": sparse_t.median_ms,
            "speedup": dense_t.median_ms / sparse_t.median_ms,
            "formats": sorted({type(m.packed).__name__ for m in loaded.modules() if hasattr(m, "packed")})}


def run(label: str, o: argparse.Namespace) -> dict:
    """One setting with the command line's options ``o`` (learning rate, batches, loss weights, ...)."""
    b = Bench()
    dense_dir = default_model_path()
    key = result_key(label, o.tag)
    folder, before = one_shot(b, label, key)
    print(f"{label}: one-shot SparseGPT cosine {before['cosine_mean']:.4f}, NN {before['nn_agreement']:.3f}",
          flush=True)

    def monitor(model) -> dict:
        f = embedding_fidelity(b.ref, encode(model, b.tok, b.sents))
        w = [m.weight for _, m in sparsa.select_modules(model)]
        zeros = sum(int((x == 0).sum()) for x in w) / sum(x.numel() for x in w)
        return {"heldout_cosine": f.cosine_mean, "heldout_nn": f.nn_agreement, "heldout_cosine_min": f.cosine_min,
                "sparsity": zeros}

    def on_event(kind: str, info: dict) -> None:
        if kind in ("timed", "replanned"):
            print(f"  {info['seconds_per_step']:.3f} s/step -> {info['total_steps']} steps", flush=True)
        elif kind == "eval":
            e = info["extra"]
            print(f"  {info['seconds'] / 60:5.1f} min step {info['step']:5d}: held-out cosine "
                  f"{e['heldout_cosine']:.4f} NN {e['heldout_nn']:.3f} (job's valid cosine {info['metric']:.4f}), "
                  f"sparsity {e['sparsity']:.3f}", flush=True)

    out = WORK / f"{slug(key)}-recovered"
    gradual = {}
    if label in GRADUAL:
        st, sp = SETTINGS[label]
        gradual = {"training": {"method": "gmp", "sparsity": sp, "structure": st, "init": "current",
                                "allocation": o.allocation,
                                "overrides": [{"targets": [pat], "sparsity": float(v)}
                                              for pat, _, v in (x.rpartition("=") for x in o.override)]},
                   "schedule_end": o.schedule_end or GRADUAL[label][1]}
    weights = LossWeights(squarehead=o.squarehead_weight, cosine=o.cosine_weight)
    settings = RecoverSettings(minutes=o.minutes, eval_minutes=o.eval_minutes, lr=o.lr, batch_size=o.batch_size,
                               seq_len=o.seq_len, group_by_length=not o.random_batches, weights=weights,
                               precision=o.precision, **gradual)
    res = recover(folder, training_text(tuple(o.text)), out, teacher=dense_dir, settings=settings, overwrite=True,
                  monitor=monitor, on_event=on_event)
    best = next(p for p in res.curve if p.step == res.best_step)  # the point the job saved
    loaded = sparsa.load(out)  # the packed checkpoint the job wrote, through the sparse kernels
    f = embedding_fidelity(b.ref, encode(loaded, b.tok, b.sents))
    speed = None if o.no_speed else measure_speed(b, loaded)
    print(f"  sparse kernels: {speed}", flush=True)
    return {
        "setting": label, "structure": SETTINGS[label][0], "machine": machine(), "minutes": o.minutes, "lr": o.lr,
        "batch_size": o.batch_size, "seq_len": o.seq_len, "precision": o.precision, "text": o.text,
        "group_by_length": not o.random_batches,
        "loss_weights": {"squarehead": weights.squarehead, "cosine": weights.cosine}, "gradual": gradual or None,
        "steps": res.steps, "seconds_per_step": res.seconds_per_step,
        "seconds": res.seconds, "sparsity": res.sparsity, "before": before,
        "after": {"cosine_mean": f.cosine_mean, "nn_agreement": f.nn_agreement, "cosine_min": f.cosine_min,
                  "step": best.step, "source": "sparsa.load of the saved best checkpoint"},
        "target": TARGETS.get(label), "speed": speed,
        "curve": [{"minutes": p.seconds / 60, "step": p.step, "loss": p.loss, **p.extra} for p in res.curve],
    }


def table(results: dict) -> str:
    rows = ["| setting | one-shot cosine | NN | recovered cosine | NN | target | steps | minutes | dense ms | "
            "sparse kernels ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, key in recorded(results):
        r = results[key]
        b, a, sp = r["before"], r["after"], r.get("speed")
        tgt = f">= {r['target']:.2f}" if r["target"] else "-"
        ms = f"{sp['dense_ms']:.1f} | {sp['sparse_ms']:.1f} ({', '.join(sp['formats'])})" if sp else "- | -"
        start = f" (at {GRADUAL[label][0]:.0%})" if label in GRADUAL else ""
        rows.append(f"| {key} | {b['cosine_mean']:.4f}{start} | {b['nn_agreement']:.3f} | {a['cosine_mean']:.4f} | "
                    f"{a['nn_agreement']:.3f} | {tgt} | {r['steps']} | {r['seconds'] / 60:.1f} | {ms} |")
    return "\n".join(rows)


def curve_table(results: dict) -> str:
    """Held-out cosine (NN agreement) at each evaluation, per setting."""
    rows = ["| setting | curve: minutes -> held-out cosine (NN agreement) |", "|---|---|"]
    for _label, key in recorded(results):
        r = results[key]
        pts = ", ".join(f"{p['minutes']:.1f}: {p['heldout_cosine']:.4f} ({p['heldout_nn']:.3f})" for p in r["curve"])
        rows.append(f"| {key} | {pts} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="*",
                    help="settings to run, one after another: " + ", ".join(SETTINGS).replace("%", "%%"))
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--eval-minutes", type=float, default=1.5)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--random-batches", action="store_true", help="sentences in random batches instead of "
                                                                  "batches of similar length (the default)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--tag", default=None, help="record the run as '<setting> [TAG]' beside the setting's own")
    ap.add_argument("--no-speed", action="store_true", help="skip timing the recovered checkpoint (for runs "
                                                            "that share the CPU)")
    ap.add_argument("--schedule-end", type=float, default=None,
                    help="gradual routes: fraction of the run by which GMP reaches the sparsity (default: the "
                         "setting's, " + ", ".join(f"{k} {v[1]}" for k, v in GRADUAL.items()).replace("%", "%%") + ")")
    ap.add_argument("--allocation", choices=("uniform", "erk"), default="uniform",
                    help="gradual routes: the GMP target per layer, the same for all or Erdos-Renyi-Kernel")
    ap.add_argument("--override", action="append", default=[], metavar="PATTERN=SPARSITY",
                    help="gradual routes: modules trained to their own sparsity, the rest adjusted to keep the "
                         "setting's overall sparsity (as sparsa recover --override)")
    ap.add_argument("--text", nargs="+", choices=tuple(TEXTS), default=["wiki", "news"],
                    help="training text sources (benchmarks/data, offline_text.py)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="of the training passes")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per training sentence at most")
    ap.add_argument("--squarehead-weight", type=float, default=1.0, help="weight of the per-block SquareHead loss")
    ap.add_argument("--cosine-weight", type=float, default=1.0, help="weight of (1 - embedding cosine)")
    ap.add_argument("--table", action="store_true", help="print the table of the recorded results")
    ap.add_argument("--speed", action="store_true", help="time the saved recovered checkpoints of recorded "
                                                         "settings that have no timing yet")
    args = ap.parse_args()
    bad = [s for s in args.settings if s not in SETTINGS]
    if bad:
        ap.error(f"unknown setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS)}")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    for label in args.settings:
        r = run(label, args)
        # read again just before writing: another run may have recorded its own setting meanwhile
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        results[result_key(label, args.tag)] = r
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.speed:
        b = Bench()
        for key, r in results.items():
            if not r.get("speed"):
                r["speed"] = measure_speed(b, sparsa.load(WORK / f"{slug(key)}-recovered"))
                print(f"{key}: {r['speed']}", flush=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if args.table or args.settings:
        print(table(results))
        print()
        print(curve_table(results))


if __name__ == "__main__":
    main()
