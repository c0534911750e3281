"""End to end: one pruned encoder through every engine, on the same inputs, in one process.

Engines: torch eager (dense), ONNX Runtime with its BERT fusions (dense), sparsa (sparse kernels, automatic choice,
with its attention kernel and GELU epilogue), sparsa's kernels alone inside torch's attention and GELU (to show
what each part gives),
and DeepSparse 1.8.0 on the same pruned weights when its own virtual environment exists (DEEPSPARSE_PYTHON, default
/work/venvs/deepsparse/bin/python; skipped with a message otherwise). Outputs are checked against torch before
anything is timed. Latencies are medians of interleaved rounds taken in quiet windows (benchmarks/_bench.py).

    python benchmarks/e2e.py                                 # all-MiniLM-L6-v2, 80% 4x1, 1x128 and 16x128
    python benchmarks/e2e.py --sparsity 0.9 --structure unstructured --shapes 1x128 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import machine, measure_quietly  # noqa: E402

from sparsa import prune, sparsify  # noqa: E402
from sparsa.runtime import load_encoder  # noqa: E402
from sparsa.runtime.jobs import latency_inputs, max_rel_error  # noqa: E402

DEEPSPARSE_PYTHON = os.environ.get("DEEPSPARSE_PYTHON", "/work/venvs/deepsparse/bin/python")


class _Encoder(torch.nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> last_hidden_state, for the ONNX exporter."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def export_onnx(model, inputs: dict, path: Path, opset: int = 14) -> None:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(inputs[n] for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encoder(model).eval(), args, str(path), input_names=names,
                          output_names=["last_hidden_state"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})


def ort_session(dense_onnx: Path, num_heads: int, hidden: int, threads: int, workdir: Path):
    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    fused = workdir / "fused.onnx"
    opt = optimizer.optimize_model(str(dense_onnx), model_type="bert", num_heads=num_heads, hidden_size=hidden)
    opt.save_model_to_file(str(fused))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(fused), so, providers=["CPUExecutionProvider"]), opt.get_fused_operator_statistics()


def run_deepsparse(onnx_path: Path, inputs: dict, threads: int, repeats: int, workdir: Path):
    if not Path(DEEPSPARSE_PYTHON).exists():
        return None, f"DeepSparse skipped: no interpreter at {DEEPSPARSE_PYTHON} (pip install deepsparse==1.8.0 in its own venv)"
    npz = workdir / f"inputs_{inputs['input_ids'].shape[0]}.npz"
    np.savez(npz, **{k: v.numpy() for k, v in inputs.items()})
    runner = Path(__file__).with_name("_deepsparse_runner.py")
    p = subprocess.run([DEEPSPARSE_PYTHON, str(runner), str(onnx_path), str(npz), str(threads), str(repeats)],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return None, f"DeepSparse failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="local HF encoder folder (default: all-MiniLM-L6-v2)")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--structure", default="4x1")
    ap.add_argument("--shapes", nargs="*", default=["1x128", "16x128"], help="BATCHxSEQ")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    dense, tok, name = load_encoder(a.model)
    pruned, _ = prune(dense, sparsity=a.sparsity, structure=a.structure, inplace=False)
    sparse, _ = sparsify(pruned)  # sparse kernels + sparsa's attention kernel + GELU fused into the FFN-up kernel
    kernels_only, _ = sparsify(pruned, runtime=False)  # the same kernels inside torch's attention and GELU
    cfg = dense.config
    work = Path(tempfile.mkdtemp(prefix="sparsa-e2e-"))
    rows = []
    if not a.json:
        m = machine()
        print(f"# {name}, {a.sparsity:.0%} {a.structure} (magnitude, speed only); {m['cpu']}, {a.threads} threads, "
              f"torch {m['torch']}")
    for shape in a.shapes:
        b, s = (int(v) for v in shape.lower().split("x"))
        inputs = latency_inputs(tok, b, s)
        inputs.setdefault("token_type_ids", torch.zeros_like(inputs["input_ids"]))
        feeds = {k: v.numpy() for k, v in inputs.items()}
        with torch.inference_mode():
            ref_dense = dense(**inputs).last_hidden_state
            ref_pruned = pruned(**inputs).last_hidden_state
            out_sparse = sparse(**inputs).last_hidden_state  # also tunes the kernel choice for this size
            out_kernels = kernels_only(**inputs).last_hidden_state
        checks = {"sparsa vs pruned torch": max_rel_error(ref_pruned, out_sparse),
                  "sparsa kernels-only vs pruned torch": max_rel_error(ref_pruned, out_kernels)}

        dense_onnx, pruned_onnx = work / "dense.onnx", work / "pruned.onnx"
        if not dense_onnx.exists():
            export_onnx(dense, inputs, dense_onnx)
            export_onnx(pruned, inputs, pruned_onnx)
        sess, fused = ort_session(dense_onnx, cfg.num_attention_heads, cfg.hidden_size, a.threads, work)
        checks["ORT vs dense torch"] = max_rel_error(ref_dense, torch.from_numpy(sess.run(None, feeds)[0]))

        fns = {
            "torch eager (dense)": lambda: dense(**inputs),
            "ONNX Runtime, BERT-fused (dense)": lambda: sess.run(None, feeds),
            "sparsa, kernels only (torch attention, GELU)": lambda: kernels_only(**inputs),
            "sparsa (sparse kernels)": lambda: sparse(**inputs),
        }
        times, external = measure_quietly(fns, rounds=a.rounds, target_s=0.3, settle_s=0.2)
        ds, ds_note = run_deepsparse(pruned_onnx, inputs, a.threads, 30, work)
        if ds is not None:
            times["DeepSparse 1.8.0 (same pruned weights)"] = ds["median_ms"]
            checks["DeepSparse vs pruned torch"] = max_rel_error(ref_pruned, torch.from_numpy(np.load(ds["out"])))
        base = times["torch eager (dense)"]
        for engine, ms in times.items():
            rows.append({"model": name, "shape": shape, "structure": a.structure, "sparsity": a.sparsity,
                         "threads": a.threads, "engine": engine, "ms": round(ms, 3),
                         "speedup_vs_torch": round(base / ms, 3),
                         "sparsa_speedup_vs_this": round(ms / times["sparsa (sparse kernels)"], 3),
                         "external_load": round(external, 3)})
        if a.json:
            continue
        print(f"\n{shape}: outputs agree (max rel. error): "
              + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))
        if ds_note:
            print(ds_note)
        print(f"{'engine':<42} {'median ms':>10} {'vs torch':>9} {'sparsa is':>10}")
        for r in rows[-len(times):]:
            print(f"{r['engine']:<42} {r['ms']:>10.2f} {r['speedup_vs_torch']:>8.2f}x {r['sparsa_speedup_vs_this']:>9.2f}x")
    if a.json:
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
