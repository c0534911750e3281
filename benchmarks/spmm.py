"""Sparse x dense kernels against torch dense and torch.sparse CSR, measured in the same process.

For every case (weight shape, tokens N, structure, sparsity, threads, weight dtype) it packs one random weight,
checks every kernel against the plain-PyTorch reference, then times torch dense (F.linear), torch CSR and each
kernel interleaved, and prints one row per kernel plus one "auto" row (the automatic choice, which may be dense).
Torch CSR is timed two ways: `csr` is torch.sparse.mm(W, x^T), which leaves y^T (out, N); `csr_op` is the faster
of that plus the copy into y's (N, out) row-major layout and F.linear(x, W) with the CSR weight, i.e. the op that
torch dense and our kernels compute (x in and y out in PyTorch's layout, every transpose inside the call). Decode cases (N <= 8) rotate through enough copies of the weights that they stream
from DRAM, not from the 32 MB L3; `--weights-from dram` does the same for batched cases, as in a model whose
layers' weights do not stay in the caches from one call to the next. Each timed sample follows one untimed call of
the same engine, so that no engine's time depends on which other one ran before it.

    python benchmarks/spmm.py --quick --json          # the issue's quick set, < 3 minutes
    python benchmarks/spmm.py                         # the full sweep recorded in BENCHMARKS.md
    python benchmarks/spmm.py --shapes minilm.ffn_up --n 128 --structures 4x1 --sparsities 0.9
    python benchmarks/spmm.py --quick --weights-from dram  # batched weights read from DRAM on every call
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import machine, measure_quietly  # noqa: E402

import sparsa  # noqa: E402
from sparsa.formats import formats_for, pack  # noqa: E402
from sparsa.structure import parse_structure  # noqa: E402
from sparsa.kernels import kernels_for, prepare, spmm  # noqa: E402
from sparsa.kernels.autotune import MARGIN  # noqa: E402
from sparsa.masks import mask_from_scores  # noqa: E402

DRAM_WORKING_SET = 256 * 2**20  # bytes cycled through per decode measurement: 8x the 32 MB L3
DECODE_MAX_N = 8


def load_shapes() -> dict[str, tuple[int, int]]:
    shapes = {}
    for line in (Path(__file__).parent / "shapes.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, o, i = line.split()
            shapes[name] = (int(o), int(i))
    return shapes


def make_weight(out: int, inp: int, structure: str, sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * 0.05
    keep = mask_from_scores(torch.rand(out, inp, generator=g), structure, None if ":" in structure else sparsity)
    return w * keep


def packed_case(shape: str, structure: str, sparsity: float):
    """The weight of a micro benchmark's case ("OUTxIN") and its fp32 packing in the structure's first layout."""
    out, inp = (int(v) for v in shape.split("x"))
    st = parse_structure(structure)
    w = make_weight(out, inp, structure, sparsity)
    return w, formats_for(st)[0].pack(w, st, torch.float32)


def clone_packed(p):
    import dataclasses

    return dataclasses.replace(p, **{k: v.clone() for k, v in p.tensors().items()})


def run_case(shape, n, structure, sparsity, threads, wdtype, kernels_filter=None, rounds=15, skip_generic=False,
             weights_from="cache"):
    out, inp = shape
    torch.set_num_threads(threads)
    w = make_weight(out, inp, structure, sparsity)
    # every layout that holds the structure (unstructured: bitmask and csr), each with every kernel that runs it
    packs = [f.pack(w, parse_structure(structure), wdtype) for f in formats_for(parse_structure(structure))]
    packed = packs[0]
    wq = packed.to_dense().float()  # the weight as stored (bf16-rounded for bf16)
    x = torch.randn(n, inp)
    ref = x.double() @ wq.double().T
    decode = n <= DECODE_MAX_N
    stream = decode or weights_from == "dram"

    # copies so that the weights stream from DRAM
    dense_copies = max(1, math.ceil(DRAM_WORKING_SET / (out * inp * 4))) if stream else 1
    dense_ws = [wq] + [wq.clone() for _ in range(dense_copies - 1)]
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we know, it is the baseline
        warnings.simplefilter("ignore")
        csr_ws = [wq.to_sparse_csr() for _ in range(min(dense_copies * 4, 8) if stream else 1)]
    y = torch.empty(n, out)

    def rotating(objs, call):
        state = {"i": 0}

        def fn():
            state["i"] = (state["i"] + 1) % len(objs)
            return call(objs[state["i"]])

        return fn

    def linear_csr(wt):
        # torch refuses a CSR weight in F.linear under inference mode ("Cannot set version_counter for inference
        # tensor"), which the timing loop runs in
        with torch.inference_mode(False), torch.no_grad():
            return torch.nn.functional.linear(x, wt)

    fns = {
        "dense": rotating(dense_ws, lambda wt: torch.nn.functional.linear(x, wt)),
        # torch CSR as a kernel: y^T = W x^T, left (out, N), i.e. without the layout the op's contract asks for
        "csr": rotating(csr_ws, lambda wt: torch.sparse.mm(wt, x.T)),
        # torch CSR delivering the op, y (N, out) row-major like F.linear and our kernels; two routes, the faster
        # one counts
        "csr_op_t": rotating(csr_ws, lambda wt: torch.sparse.mm(wt, x.T).T.contiguous()),
        "csr_op_linear": rotating(csr_ws, linear_csr),
    }
    kernels, nbytes = [], {}
    for p in packs:
        copies = max(1, math.ceil(DRAM_WORKING_SET / p.nbytes)) if stream else 1
        preps = [prepare(p)] + [prepare(clone_packed(p)) for _ in range(copies - 1)]
        for k in kernels_for(p, n=n):
            if kernels_filter is not None and not any(f in k.name for f in kernels_filter):
                continue
            if skip_generic and k.block is None and p.format_name == "bsr":
                continue  # the any-shape fallback, ~10x slower than the tile for the same blocks
            got = spmm(p, x, None, k)
            err = float((got.double() - ref).abs().max() / ref.abs().max())
            if err > 1e-4:
                raise SystemExit(f"{k.name} is wrong on {shape} N={n} {structure} {sparsity}: rel err {err:.2e}")
            fns[k.name] = rotating(preps, lambda q, k=k: q(x, k, out=y))
            kernels.append(k)
            nbytes[k.name] = p.nbytes
    # taken in a quiet window, and repeated while other processes disturbed it (a shared 2-core machine)
    # a warm call before each sample: a single timed call right after another engine's (torch dense ran before
    # each kernel in the fixed rotation) measured up to 1.4 ms slower than the next ones on a 1.3 ms kernel
    times, external = measure_quietly(fns, rounds=rounds, warm_each=True)

    dense_ms, csr_ms = times["dense"], times["csr"]
    csr_op_ms = min(times["csr_op_t"], times["csr_op_linear"])
    flops = 2.0 * n * out * inp
    rows = []
    best_name = min(kernels, key=lambda k: times[k.name]).name if kernels else None
    for name in [k.name for k in kernels] + ["auto"]:
        if name == "auto":
            # the automatic choice (sparsa.kernels.autotune's rule): the fastest sparse kernel if it takes at most
            # MARGIN of the dense time, else dense
            use_sparse = best_name is not None and times[best_name] <= MARGIN * dense_ms
            ms, chosen = (times[best_name], best_name) if use_sparse else (dense_ms, "dense")
        else:
            ms, chosen = times[name], name
        sparse_bytes = nbytes.get(chosen, out * inp * 4)
        ideal = (out * inp * 4) / sparse_bytes if decode else 1.0 / max(1e-9, 1.0 - sparsity)
        speed = dense_ms / ms
        rows.append({
            "shape": [out, inp], "n": n, "structure": structure, "sparsity": sparsity, "threads": threads,
            "weight_dtype": str(wdtype).replace("torch.", ""), "kernel": name, "chosen": chosen,
            "sparse_ms": round(ms, 4), "dense_ms": round(dense_ms, 4), "csr_ms": round(csr_ms, 4),
            "speedup_vs_dense": round(speed, 3), "speedup_vs_torch_csr": round(csr_ms / ms, 3),
            "csr_op_ms": round(csr_op_ms, 4), "speedup_vs_torch_csr_op": round(csr_op_ms / ms, 3),
            "dense_equiv_gflops": round(flops / ms / 1e6, 1),
            "regime": "decode" if decode else "batched", "weights_from": "dram" if stream else "cache",
            "ideal": round(ideal, 2), "frac_of_ideal": round(speed / ideal, 3),
            "dense_bytes": out * inp * 4, "sparse_bytes": sparse_bytes,
            "external_load": round(external, 3),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the issue's quick set (< 3 minutes)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--shapes", nargs="*", help="names from shapes.txt")
    ap.add_argument("--n", nargs="*", type=int, help="token counts")
    ap.add_argument("--structures", nargs="*")
    ap.add_argument("--sparsities", nargs="*", type=float)
    ap.add_argument("--threads", nargs="*", type=int)
    ap.add_argument("--dtypes", nargs="*", default=["float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--kernels", nargs="*", help="substrings of kernel names to include")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--weights-from", choices=["cache", "dram"], default="cache",
                    help="batched cases: one weight called again and again (cache), or enough copies in turn that "
                         "each call reads its weight from DRAM (decode cases always do)")
    a = ap.parse_args()

    shapes = load_shapes()
    if a.quick:
        cases = [(shapes[s], 128) for s in ("minilm.ffn_up", "minilm.ffn_down", "bert.ffn_up")]
        cases.append((shapes["llama7b.attn"], 1))
        structures = a.structures or ["4x1", "unstructured", "2:4"]
        sparsities = a.sparsities or [0.5, 0.7, 0.8, 0.9]
        threads = a.threads or [2]
        rounds = min(a.rounds, 9)
    else:
        names = a.shapes or list(shapes)
        ns = a.n or [1, 8, 32, 128, 512]
        cases = [(shapes[s], n) for s in names for n in ns if not (n <= DECODE_MAX_N) or s.startswith("llama")]
        cases += [] if a.shapes else []
        structures = a.structures or ["4x1", "8x1", "unstructured", "2:4"]
        sparsities = a.sparsities or [0.5, 0.7, 0.8, 0.9, 0.95]
        threads = a.threads or [1, 2]
        rounds = a.rounds
    dtypes = [getattr(torch, d) for d in a.dtypes]

    if not a.json:
        m = machine()
        print(f"# {m['cpu']}, {m['cores']} cores, {', '.join(m['features'])}; torch {m['torch']}")
        print(f"{'shape':>11} {'n':>4} {'struct':>12} {'sp':>5} {'thr':>3} {'wdt':>8} {'kernel':>34} "
              f"{'ms':>8} {'dense':>8} {'csr':>8} {'xDense':>7} {'xCSR':>6} {'xCSRop':>6} {'GF/s':>6} {'ideal':>5} "
              f"{'frac':>5}")
    for shape, n in cases:
        for st in structures:
            sps = [0.5] if ":" in st else sparsities
            for sp in sps:
                for t in threads:
                    for dt in dtypes:
                        for r in run_case(shape, n, st, sp, t, dt, a.kernels, rounds, skip_generic=a.quick,
                                              weights_from=a.weights_from):
                            if a.json:
                                import json

                                print(json.dumps(r), flush=True)
                            else:
                                print(f"{r['shape'][0]:>5}x{r['shape'][1]:<5} {n:>4} {st:>12} {sp:>5.2f} {t:>3} "
                                      f"{r['weight_dtype'][:8]:>8} {r['kernel']:>34} {r['sparse_ms']:>8.3f} "
                                      f"{r['dense_ms']:>8.3f} {r['csr_ms']:>8.3f} {r['speedup_vs_dense']:>7.2f} "
                                      f"{r['speedup_vs_torch_csr']:>6.2f} {r['speedup_vs_torch_csr_op']:>6.2f} "
                                      f"{r['dense_equiv_gflops']:>6.0f} "
                                      f"{r['ideal']:>5.1f} {r['frac_of_ideal']:>5.2f}"
                                      + ("  (noisy: other processes used %d%% of the cores, or the host was in a "
                                         "two-thread slow phase: 100%%)" % (100 * r["external_load"])
                                         if r["external_load"] >= 0.10 else ""), flush=True)


if __name__ == "__main__":
    main()
