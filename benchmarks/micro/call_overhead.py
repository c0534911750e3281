"""What the Python entry points add to a kernel call: `Prepared.__call__`, `Prepared.run_into` (what SparseLinear
uses) and the bare C++ handle (`run` on numpy views made once, `run_at` on addresses; "run on new views" is the
old `run_into`, numpy views made per call), on the same weight and the same x and y. Interleaved rounds of 40 calls each,
medians in microseconds.

    flock /tmp/sparsa-cpu.lock python benchmarks/micro/call_overhead.py                      # 1536x384 4x1 95%, 2 threads
    flock /tmp/sparsa-cpu.lock python benchmarks/micro/call_overhead.py --shape 64x64 --n 16 --threads 1   # ~no kernel
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spmm import packed_case  # noqa: E402

import sparsa.kernels as K  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1536x384", help="OUTxIN")
    ap.add_argument("--structure", default="4x1")
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    _, p = packed_case(a.shape, a.structure, a.sparsity)
    out, inp = p.shape
    q = K.prepare(p)
    k = K.kernels_for(p)[0]  # the widest ISA's kernel for this layout
    x, y = torch.randn(a.n, inp), torch.empty(a.n, out)
    xn, yn, h, th = x.numpy(), y.numpy(), q._handle, a.threads
    xp, yp = x.data_ptr(), y.data_ptr()
    fns = {
        "Prepared.__call__": lambda: q(x, k, out=y, threads=th),
        "Prepared.run_into": lambda: q.run_into(x, y, k, threads=th),
        "handle.run": lambda: h.run(k.index, xn, yn, th, 0),
        # what run_into did before it passed addresses: numpy views made on each call
        "run on new views": lambda: h.run(k.index, x.numpy(), y.numpy(), th, 0),
        "handle.run_at": lambda: h.run_at(k.index, xp, a.n, inp, inp, yp, a.n, out, out, th, 0),
    }
    res: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(a.rounds):
            for name, f in fns.items():
                for _ in range(5):
                    f()
                t0 = time.perf_counter()
                for _ in range(40):
                    f()
                res[name].append((time.perf_counter() - t0) / 40 * 1e6)
    print(f"# {a.shape} {a.structure} {a.sparsity}, N = {a.n}, {a.threads} threads, {k.name}: us per call")
    for name, v in res.items():
        print(f"{name:>18}: {statistics.median(v):7.2f}")


if __name__ == "__main__":
    main()
