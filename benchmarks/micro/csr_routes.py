"""Every torch route from a sparse weight to y = x W^T, timed in one process: which one is torch CSR's best, with
and without the op's output layout (y (N, out) row-major, as F.linear returns it). spmm.py's `csr` column is the
first route below, its `csr_op` column the faster of the next two.

    flock /tmp/sparsa-cpu.lock python benchmarks/micro/csr_routes.py                 # 4x1 at 99%, N = 128
    flock /tmp/sparsa-cpu.lock python benchmarks/micro/csr_routes.py --sparsity 0.9 --structure unstructured
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spmm import load_shapes, make_weight  # noqa: E402


def timed(fns: dict, rounds: int = 15, calls: int = 5) -> dict[str, float]:
    """Median us per call, interleaved rounds, each sample after one untimed call. Under no_grad rather than
    inference_mode: torch refuses a CSR weight in F.linear and mm under inference mode."""
    s: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for _ in range(rounds):
            for k, f in fns.items():
                f()
                t0 = time.perf_counter()
                for _ in range(calls):
                    f()
                s[k].append((time.perf_counter() - t0) / calls * 1e6)
    return {k: statistics.median(v) for k, v in s.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=["bert.ffn_up", "minilm.ffn_up"])
    ap.add_argument("--structure", default="4x1")
    ap.add_argument("--sparsity", type=float, default=0.99)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
    shapes = load_shapes()
    print(f"# N = {a.n}, {a.structure} at {a.sparsity:.0%}, {a.threads} threads; us per call (medians), and whether "
          "the result is y (N, out) row-major")
    for name in a.shapes:
        out, inp = shapes[name]
        w = make_weight(out, inp, a.structure, a.sparsity)
        wc, wcsc, wtc = w.to_sparse_csr(), w.to_sparse_csc(), w.T.contiguous().to_sparse_csr()
        x = torch.randn(a.n, inp)
        fns = {
            "sparse.mm(W_csr, x.T)  [y^T]": lambda: torch.sparse.mm(wc, x.T),
            "sparse.mm(W_csr, x.T).T.contiguous()": lambda: torch.sparse.mm(wc, x.T).T.contiguous(),
            "F.linear(x, W_csr)": lambda: torch.nn.functional.linear(x, wc),
            "mm(x, W_csr.t())": lambda: torch.mm(x, wc.t()),
            "mm(x, W_csc.t())": lambda: torch.mm(x, wcsc.t()),
            "mm(x, (W^T)_csr)": lambda: torch.mm(x, wtc),
            "F.linear(x, W) dense": lambda: torch.nn.functional.linear(x, w),
        }
        ref = x.double() @ w.double().T
        with torch.no_grad():
            layout = {}
            for k, f in fns.items():
                r = f()
                yk = r.T if r.shape == (out, a.n) else r
                if not torch.allclose(yk.double(), ref, rtol=1e-4, atol=1e-4):
                    raise SystemExit(f"{k} is wrong on {name}")
                layout[k] = r.shape == (a.n, out) and r.is_contiguous()
        t = timed(fns)
        print(f"{name} ({out}x{inp}):")
        for k, us in t.items():
            print(f"  {k:40s} {us:9.1f} us   {'y (N, out)' if layout[k] else 'y^T (out, N)'}")


if __name__ == "__main__":
    main()
