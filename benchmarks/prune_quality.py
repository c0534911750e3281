"""One-shot pruning quality on the real all-MiniLM-L6-v2 (issue 4, evidence 1 and 2), offline.

Sections (each writes benchmarks/results/minilm_<section>.json and prints a Markdown table):

* ``recon``: per-module reconstruction error ||WX - W'X||^2 / ||WX||^2 on real MiniLM activations at 50%,
  70% and 2:4 for magnitude, Wanda and SparseGPT, every module fed the dense model's inputs (so all methods
  are scored on identical X);
* ``fidelity``: held-out sentence-embedding fidelity (mean cosine to dense, nearest-neighbour agreement) for
  every method at 50%, 2:4, 70%, 80%, plain / +DSnoT / +OWL / +OWL+DSnoT;
* ``where``: where SparseGPT's remaining loss sits: one module role left dense at a time, and one layer
  pruned at a time;
* ``calibration``: SparseGPT at 50% and 2:4 with other calibration text, sample counts and engine orders;
* ``levers``: DSnoT on SparseGPT with the OBS weights re-solved, per-row comparison, more calibration, a
  recipe that keeps the last layer denser, and where OWL moves the sparsity.

Calibration text: benchmarks/data/calibration_mix.txt (news, movie-review and Wikipedia sentences from
gensim's test data; ``python benchmarks/offline_text.py``). The held-out sentences are never used for it.

    flock /tmp/sparsa-cpu.lock python benchmarks/prune_quality.py recon fidelity where calibration levers
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import platform
import re
import time
from pathlib import Path

import torch

import sparsa
from sparsa.eval import embedding_fidelity, encode, heldout_sentences
from sparsa.prune import CalibrationConfig
from sparsa.runtime import load_encoder

HERE = Path(__file__).parent
MIX = HERE / "data" / "calibration_mix.txt"
METHODS = ("magnitude", "wanda", "sparsegpt")
SETTINGS = {"50%": ("unstructured", 0.5), "2:4": ("2:4", None), "70%": ("unstructured", 0.7),
            "80%": ("unstructured", 0.8)}


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, sparsa {sparsa.__version__}"


class Bench:
    def __init__(self, samples: int = 256):
        self.model, self.tok, _ = load_encoder()
        self.sents = heldout_sentences()
        self.ref = encode(self.model, self.tok, self.sents)
        self.cfg = CalibrationConfig(samples=samples, seq_len=128, batch_size=32)

    def run(self, method, structure, sparsity, calibration=MIX, cfg=None, **kw):
        t = time.perf_counter()
        m, rep = sparsa.prune(copy.deepcopy(self.model), method, sparsity, structure, calibration=str(calibration),
                              tokenizer=self.tok, calibration_config=cfg or self.cfg, **kw)
        secs = time.perf_counter() - t
        f = embedding_fidelity(self.ref, encode(m, self.tok, self.sents))
        return {"cosine_mean": f.cosine_mean, "cosine_min": f.cosine_min, "nn_agreement": f.nn_agreement,
                "achieved_sparsity": rep.achieved_sparsity, "mean_recon_error": rep.mean_recon_error,
                "seconds": secs, "modules": [{"name": x.name, "target": x.target, "sparsity": x.sparsity,
                                              "recon_error": x.recon_error} for x in rep.modules]}


def role(name: str) -> str:
    return re.split(r"(?:^|\.)\d+\.", name)[-1]


def section_recon(b: Bench) -> dict:
    out = {}
    for label in ("50%", "70%", "2:4"):
        st, sp = SETTINGS[label]
        errs = {}
        for m in METHODS:
            r = b.run(m, st, sp, sequential=False, true_sequential=False)  # every module sees dense inputs
            errs[m] = {x["name"]: x["recon_error"] for x in r["modules"]}
        names = list(errs["sparsegpt"])
        order = sum(errs["sparsegpt"][n] < errs["wanda"][n] < errs["magnitude"][n] for n in names)
        sg_w = sum(errs["sparsegpt"][n] < errs["wanda"][n] for n in names)
        w_m = sum(errs["wanda"][n] < errs["magnitude"][n] for n in names)
        by_role = {}
        for m in METHODS:
            for n in names:
                by_role.setdefault(role(n), {}).setdefault(m, []).append(errs[m][n])
        out[label] = {"modules": len(names), "sparsegpt<wanda<magnitude": order, "sparsegpt<wanda": sg_w,
                      "wanda<magnitude": w_m, "per_module": errs,
                      "mean_by_role": {r: {m: sum(v) / len(v) for m, v in d.items()} for r, d in by_role.items()}}
        print(f"| {label} | {order}/{len(names)} | {sg_w}/{len(names)} | {w_m}/{len(names)} |", flush=True)
    return out


def section_fidelity(b: Bench) -> dict:
    out = {}
    variants = {"plain": {}, "+DSnoT": {"dsnot": True}, "+OWL": {"allocation": "owl"},
                "+OWL+DSnoT": {"allocation": "owl", "dsnot": True}}
    for label, (st, sp) in SETTINGS.items():
        for m in METHODS:
            for v, kw in variants.items():
                if st == "2:4" and "allocation" in kw:
                    continue  # N:M fixes every layer's sparsity: no allocation to spread
                r = b.run(m, st, sp, **kw)
                r.pop("modules")
                out[f"{label} {m} {v}"] = r
                print(f"| {label} | {m} | {v} | {r['cosine_mean']:.4f} | {r['nn_agreement']:.3f} | "
                      f"{r['mean_recon_error']:.4f} | {r['seconds']:.0f} |", flush=True)
    return out


def section_where(b: Bench) -> dict:
    out = {}
    names = [n for n, _ in sparsa.select_modules(b.model)]
    roles = list(dict.fromkeys(role(n) for n in names))
    layers = sorted({int(re.search(r"\.(\d+)\.", n).group(1)) for n in names})
    for label in ("2:4", "70%"):
        st, sp = SETTINGS[label]
        full = b.run("sparsegpt", st, sp)
        res = {"all pruned": full["cosine_mean"], "per_module_error": {x["name"]: x["recon_error"]
                                                                      for x in full["modules"]}}
        for r in roles:
            res[f"{r} left dense"] = b.run("sparsegpt", st, sp, ignore=list(sparsa.modules.DEFAULT_IGNORE) +
                                           [f"re:.*\\.{re.escape(r)}"])["cosine_mean"]
            print(f"| {label} | {r} left dense | {res[f'{r} left dense']:.4f} |", flush=True)
        for i in layers:
            res[f"only layer {i} pruned"] = b.run("sparsegpt", st, sp, targets=[f"re:encoder\\.layer\\.{i}\\..*"])[
                "cosine_mean"]
            print(f"| {label} | only layer {i} pruned | {res[f'only layer {i} pruned']:.4f} |", flush=True)
        out[label] = res
    return out


def docstring_text(path: Path, n: int = 256) -> Path:
    """The issue's probe calibration: paragraphs of standard-library docstrings."""
    import collections, email, http.client, json as js, logging, os, pathlib, string, textwrap, threading  # noqa

    paras = []
    for mod in (collections, email, http.client, js, logging, os, pathlib, string, textwrap, threading, inspect):
        for _, obj in inspect.getmembers(mod):
            d = inspect.getdoc(obj)
            if d:
                paras += [" ".join(p.split()) for p in d.split("\n\n") if len(p.split()) >= 6]
    paras = list(dict.fromkeys(paras))[: n * 4]
    path.write_text("\n".join(paras) + "\n")
    return path


def section_calibration(b: Bench) -> dict:
    data = HERE / "data"
    doc = docstring_text(data / "stdlib_docstrings.txt")
    news, wiki = data / "news_sentences.txt", data / "wiki_sentences.txt"
    from offline_text import sentences

    wiki.write_text("\n".join(s for t in (data / "wiki_train.txt").read_text().split("\n") for s in sentences(t)))
    runs = {
        "stdlib docstrings, 256": dict(calibration=doc),
        "news sentences, 256": dict(calibration=news),
        "wikipedia sentences, 256": dict(calibration=wiki),
        "mix, 128": dict(cfg=CalibrationConfig(samples=128, batch_size=32)),
        "mix, 256": {},
        "mix, 512": dict(cfg=CalibrationConfig(samples=512, batch_size=32)),
        "mix, 1024": dict(cfg=CalibrationConfig(samples=1024, batch_size=32)),
        "mix, 256, dense inputs (not sequential)": dict(sequential=False, true_sequential=False),
        "mix, 256, block-sequential, no stages": dict(true_sequential=False),
        "mix, 256, row scope": dict(scope="row"),
    }
    out = {}
    for label in ("50%", "2:4"):
        st, sp = SETTINGS[label]
        for name, kw in runs.items():
            r = b.run("sparsegpt", st, sp, **kw)
            out[f"{label} {name}"] = {k: r[k] for k in ("cosine_mean", "nn_agreement", "mean_recon_error", "seconds")}
            print(f"| {label} | {name} | {r['cosine_mean']:.4f} | {r['nn_agreement']:.3f} | {r['seconds']:.0f} |",
                  flush=True)
    return out


def section_levers(b: Bench) -> dict:
    """What else moves SparseGPT's fidelity: DSnoT with the OBS weights re-solved for its mask, per-row
    comparison, more calibration, and a recipe that keeps the most sensitive (last) layer denser at the same
    overall sparsity (every layer holds the same number of weights)."""
    out = {}

    def last_denser(total: float, last: float) -> dict:
        rest = (6 * total - last) / 5
        return {"prune": [{"method": "sparsegpt", "sparsity": rest},
                          {"targets": ["re:encoder\\.layer\\.5\\..*"], "method": "sparsegpt", "sparsity": last}],
                "calibration": {"samples": b.cfg.samples, "seq_len": 128, "batch_size": 32}}

    def run(label, **kw):
        r = b.run(**kw)
        out[label] = {k: r[k] for k in ("cosine_mean", "nn_agreement", "achieved_sparsity", "mean_recon_error",
                                        "seconds")}
        print(f"| {label} | {r['cosine_mean']:.4f} | {r['nn_agreement']:.3f} | {r['achieved_sparsity']:.3f} | "
              f"{r['seconds']:.0f} |", flush=True)

    big = CalibrationConfig(samples=1024, seq_len=128, batch_size=32)
    for label, (st, sp) in SETTINGS.items():
        run(f"{label} sparsegpt +DSnoT (OBS re-solved)", method="sparsegpt", structure=st, sparsity=sp, dsnot=True)
        if st == "unstructured":
            run(f"{label} sparsegpt row scope", method="sparsegpt", structure=st, sparsity=sp, scope="row")
            run(f"{label} sparsegpt, last layer at {sp - 0.2:.0%}, others {(6 * sp - sp + 0.2) / 5:.0%}",
                method=last_denser(sp, sp - 0.2), structure=None, sparsity=None)
            run(f"{label} sparsegpt row scope, 1024 samples, last layer at {sp - 0.2:.0%}",
                method={**last_denser(sp, sp - 0.2), "prune": [{**e, "scope": "row"} for e in
                                                               last_denser(sp, sp - 0.2)["prune"]],
                        "calibration": {"samples": 1024, "seq_len": 128, "batch_size": 32}},
                structure=None, sparsity=None)
        else:
            run(f"{label} sparsegpt, 1024 samples", method="sparsegpt", structure=st, sparsity=sp, cfg=big)
    # OWL's per-layer sparsities on MiniLM, to see where it moves the budget
    m, rep = sparsa.prune(copy.deepcopy(b.model), "sparsegpt", 0.7, calibration=str(MIX), tokenizer=b.tok,
                          calibration_config=b.cfg, allocation="owl")
    per_layer = {}
    for x in rep.modules:
        per_layer[int(re.search(r"\.(\d+)\.", x.name).group(1))] = x.target
    out["owl_70_per_layer_sparsity"] = per_layer
    print("OWL at 70%, per-layer sparsity:", {k: round(v, 3) for k, v in per_layer.items()}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="+", choices=["recon", "fidelity", "where", "calibration", "levers"])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    if not MIX.is_file():
        raise SystemExit(f"{MIX} is missing: run python benchmarks/offline_text.py first")
    torch.manual_seed(0)
    b = Bench()
    args.out.mkdir(parents=True, exist_ok=True)
    for s in args.sections:
        print(f"\n## {s}  ({machine()})", flush=True)
        t = time.perf_counter()
        res = globals()[f"section_{s}"](b)
        res["_meta"] = {"machine": machine(), "minutes": (time.perf_counter() - t) / 60,
                        "calibration": str(MIX.relative_to(HERE.parent)), "samples": b.cfg.samples}
        (args.out / f"minilm_{s}.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
