"""What a batched call costs before any multiply: the weight-independent part of a 4x1 kernel's time.

For each shape it times, interleaved in one process, the fastest 4x1 kernel on
  - the weight at `--sparsity` (default 99%),
  - an all-zero weight of the same shape (no blocks: x transposed, every tile transposed and stored to y),
  - all-zero weights with `in` = 16 (y's stores alone) and with `out` = 16 (x's transpose alone),
and torch.sparse CSR on the sparse weight. `csr / zero` is the most any kernel of this design (x transposed,
y written in PyTorch's (N, out) layout) can gain over torch CSR there, whatever its block loop does.

    python benchmarks/spmm_floor.py                      # 1536x384 and 3072x768, N = 128, 2 threads
    python benchmarks/spmm_floor.py --shapes bert.ffn_up --n 128 --threads 1 2
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import machine, measure_quietly  # noqa: E402
from spmm import load_shapes, make_weight  # noqa: E402

from sparsa.formats import formats_for  # noqa: E402
from sparsa.kernels import kernels_for, prepare  # noqa: E402
from sparsa.structure import parse_structure  # noqa: E402

STRUCTURE = parse_structure("4x1")


def bound(w: torch.Tensor, n: int, kernel_name: str):
    """A call of the named 4x1 kernel on w, bound to fixed x and y."""
    p = formats_for(STRUCTURE)[0].pack(w, STRUCTURE, torch.float32)
    ks = [k for k in kernels_for(p, n=n) if k.name == kernel_name]
    if not ks:
        raise SystemExit(f"no kernel named {kernel_name} runs 4x1 blocks here")
    q, x, y = prepare(p), torch.randn(n, w.shape[1]), torch.empty(n, w.shape[0])
    return lambda: q.run_into(x, y, ks[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=["minilm.ffn_up", "bert.ffn_up"],
                    help="names from shapes.json, or OUTxIN")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--threads", type=int, nargs="*", default=[2])
    ap.add_argument("--sparsity", type=float, default=0.99)
    ap.add_argument("--kernel", default=None, help="a 4x1 kernel name (default: each case's fastest)")
    a = ap.parse_args()
    shapes = load_shapes()
    print(f"# {machine()['cpu']}, N = {a.n}, 4x1 at {a.sparsity:.0%}; us per call, medians of interleaved rounds")
    print(f"{'shape':>10} {'thr':>3} {'kernel':>28} {'sparse':>8} {'zero':>8} {'y only':>8} {'x only':>8} "
          f"{'csr':>8} {'csr/sparse':>10} {'csr/zero':>9}")
    for name in a.shapes:
        out, inp = shapes[name] if name in shapes else (int(v) for v in name.split("x"))
        w = make_weight(out, inp, "4x1", a.sparsity)
        for th in a.threads:
            torch.set_num_threads(th)
            # the fastest kernel on the sparse weight, then the same kernel on the empty ones
            kname = a.kernel
            if kname is None:
                cands = {k.name: bound(w, a.n, k.name) for k in
                         kernels_for(formats_for(STRUCTURE)[0].pack(w, STRUCTURE, torch.float32), n=a.n)
                         if k.block is not None}
                t, _ = measure_quietly(cands, rounds=5, warm_each=True)
                kname = min(t, key=t.get)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
                wc, x = w.to_sparse_csr(), torch.randn(a.n, inp)
            fns = {
                "sparse": bound(w, a.n, kname),
                "zero": bound(torch.zeros(out, inp), a.n, kname),
                "y only": bound(torch.zeros(out, 16), a.n, kname),
                "x only": bound(torch.zeros(16, inp), a.n, kname),
                "csr": lambda: torch.sparse.mm(wc, x.T),
            }
            t, external = measure_quietly(fns, rounds=15, warm_each=True)
            us = {k: v * 1e3 for k, v in t.items()}
            print(f"{out:>5}x{inp:<4} {th:>3} {kname:>28} {us['sparse']:>8.1f} {us['zero']:>8.1f} "
                  f"{us['y only']:>8.1f} {us['x only']:>8.1f} {us['csr']:>8.1f} {us['csr'] / us['sparse']:>10.2f} "
                  f"{us['csr'] / us['zero']:>9.2f}" + ("  (noisy)" if external >= 0.10 else ""), flush=True)


if __name__ == "__main__":
    main()
