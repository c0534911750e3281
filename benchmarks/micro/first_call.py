"""What a kernel call costs right after other work, against the calls after it.

A benchmark that times one call per sample, with the engines in a fixed rotation, gives each engine the same
predecessor every round (spmm.py ran the AVX-512 kernel right after torch's CSR and the AVX2 one right after the
AVX-512 one). This times, for each of several kinds of preceding work, the first four calls of the bitmask kernel
(AVX-512 and AVX2) that follow it; medians over 20 rounds, milliseconds.

    flock /tmp/sparsa-cpu.lock python benchmarks/micro/first_call.py 3072x768 unstructured 0.7 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spmm import packed_case  # noqa: E402

import sparsa.kernels as K  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", help="OUTxIN, e.g. 3072x768")
    ap.add_argument("structure", help="e.g. unstructured, 4x1")
    ap.add_argument("sparsity", type=float)
    ap.add_argument("threads", type=int)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    w, p = packed_case(a.shape, a.structure, a.sparsity)
    out, inp = p.shape
    q, x, y = K.prepare(p), torch.randn(a.n, inp), torch.empty(a.n, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        wc = w.to_sparse_csr()
    # the kernels of the layout's own block (for bsr, not the any-block fallback nor the register-tile variant)
    kernels = {k.isa: k for k in K.kernels_for(p) if k.isa in ("avx2", "avx512") and not k.batched_only
               and (k.block is not None or p.format_name != "bsr")}
    big_a, big_b = np.ones(12_000_000, np.float32), np.zeros(12_000_000, np.float32)  # 48 MB each
    med = torch.randn(1_000_000)

    def spin() -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.002:
            pass

    before = {
        "torch dense": lambda: torch.nn.functional.linear(x, w),
        "torch CSR": lambda: torch.sparse.mm(wc, x.T),
        "numpy copy of 48 MB": lambda: np.copyto(big_b, big_a),
        "torch.exp, 4 MB": lambda: torch.exp(med),
        "python spin, 2 ms": spin,
        "sleep 2 ms": lambda: time.sleep(0.002),
        "nothing": lambda: None,
    }
    res: dict = {}
    with torch.inference_mode():
        for _ in range(a.rounds):
            for name, pre in before.items():
                for isa, k in kernels.items():
                    pre()
                    ts = []
                    for _ in range(4):
                        t0 = time.perf_counter()
                        q(x, k, out=y)
                        ts.append((time.perf_counter() - t0) * 1e3)
                    res.setdefault((name, isa), []).append(ts)
    print(f"# {a.shape} {a.structure} {a.sparsity}, N = {a.n}, {a.threads} threads: calls 1-4 after ..., ms")
    for (name, isa), v in res.items():
        cols = [statistics.median(c) for c in zip(*v)]
        print(f"{name:>22} {isa:>7}: " + " ".join(f"{c:.3f}" for c in cols))


if __name__ == "__main__":
    main()
