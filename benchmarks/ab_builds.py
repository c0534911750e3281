"""Two builds of sparsa's kernels against each other on the same machine state: one worker process per build
(each imports its own source tree and compiled core), calls interleaved by this process so that the two never
run at once, torch dense and torch CSR timed inside each worker as well. Medians over rounds of 5 calls; the
ratio "A/B" above 1 means build B is faster. Run it once with the same build on both sides to see the noise.

    git worktree add /tmp/base <commit>; cd /tmp/base; pip wheel --no-build-isolation --no-deps . -w /tmp/wheel
    unzip -o /tmp/wheel/sparsa-*.whl 'sparsa/_C*' -d /tmp/base/src          # the compiled core beside its sources
    flock /tmp/sparsa-cpu.lock python benchmarks/ab_builds.py --a /tmp/base/src   # B: the installed sparsa
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WHAT = ("dense", "csr", "sparse")


def worker(src: str | None, threads: int, conn) -> None:
    if src:  # this build's sources first, and not the editable install's import redirect
        sys.path.insert(0, src)
        sys.meta_path[:] = [f for f in sys.meta_path if "sparsa" not in type(f).__module__.lower()
                            and "redirect" not in type(f).__name__.lower()]
    import time
    import warnings

    import torch

    sys.path.insert(0, str(HERE))
    import _bench
    from spmm import make_weight

    import sparsa
    import sparsa.kernels as K
    from sparsa.formats import formats_for
    from sparsa.structure import parse_structure

    torch.set_num_threads(threads)
    conn.send(sparsa.__file__)
    cases: dict = {}
    while (msg := conn.recv()) is not None:
        key, what = msg
        if what == "probe":  # the host's paired slow phases (_bench.pair_slowdown), seen through this build
            conn.send(_bench.pair_slowdown())
            continue
        if key not in cases:
            (out, inp), structure, sparsity, n, isa, fmt, copies, dtype, rt = key
            vdt = getattr(torch, dtype)
            w = make_weight(out, inp, structure, sparsity)
            st = parse_structure(structure)
            fs = [f for f in formats_for(st) if fmt in (None, f.format_name)]
            if not fs:
                raise SystemExit(f"no format {fmt!r} holds {structure}; it has "
                                 f"{', '.join(f.format_name for f in formats_for(st))}")
            p = fs[0].pack(w, st, vdt)
            # the layout's own kernel, or with --rt its batched-only register-tile variant (getattr: builds before
            # 1f8f7d8 lack the flag)
            ks = [k for k in K.kernels_for(p) if k.isa == isa and getattr(k, "batched_only", False) == rt
                  and (k.block is not None or p.format_name != "bsr")]
            if not ks:
                raise SystemExit(f"no {'register-tile ' if rt else ''}{isa} kernel for {key} in {sparsa.__file__}")
            k = ks[0]
            q, x, y = K.prepare(p), torch.randn(n, inp), torch.empty(n, out)
            if not torch.allclose(q(x, k), x @ p.to_dense().float().T, rtol=1e-4, atol=1e-4):  # the stored values
                raise SystemExit(f"{k.name} is wrong on {key} in {sparsa.__file__}")
            # further weights of the same kind, called in turn: together larger than the L3 cache, so that every
            # call reads its weight from DRAM, as the layers of a model do
            qs = [q] + [K.prepare(fs[0].pack(make_weight(out, inp, structure, sparsity), st, vdt))
                        for _ in range(copies - 1)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                wc = w.to_sparse_csr()
            xn, yn, turn = x.numpy(), y.numpy(), [0]

            def sparse(qs=qs, k=k, xn=xn, yn=yn, turn=turn):
                turn[0] = (turn[0] + 1) % len(qs)
                qs[turn[0]]._handle.run(k.index, xn, yn, threads, 0)

            cases[key] = {"dense": lambda: torch.nn.functional.linear(x, w), "csr": lambda: torch.sparse.mm(wc, x.T),
                          "sparse": sparse}
        f = cases[key][what]
        t0 = time.perf_counter()
        for _ in range(5):
            f()
        conn.send((time.perf_counter() - t0) / 5 * 1e3)


def probe(conn) -> float:
    conn.send((None, "probe"))
    return conn.recv()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="source folder of build A (holding sparsa/ with its compiled _C)")
    ap.add_argument("--b", default=None, help="source folder of build B (default: the installed sparsa)")
    ap.add_argument("--shapes", nargs="+", default=["1536x384", "384x1536", "3072x768"])
    ap.add_argument("--structures", nargs="+", default=["4x1", "unstructured"])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.7, 0.9, 0.95, 0.999])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--isa", default="avx512", help="the kernels' ISA (avx512, avx2, scalar)")
    ap.add_argument("--format", default=None,
                    help="the weight layout (e.g. csr for unstructured; default: the structure's first, bitmask)")
    ap.add_argument("--copies", type=int, default=1,
                    help="weights of the same kind called in turn (e.g. 12: together beyond the L3 cache, so each "
                         "call reads its weight from DRAM; torch's baselines keep one weight)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the stored values' dtype")
    ap.add_argument("--rt", action="store_true",
                    help="time the layout's register-tile variant (the batched-only \"rt\" kernel) instead")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--attempts", type=int, default=4,
                    help="measurements of a case taken while the host's paired slow phase (see _bench.PAIR_SLOW) "
                         "was seen before or after are repeated, up to this many in all; the last is printed, marked")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import _bench  # the slow-phase threshold; the probe itself runs in a worker, with its build

    ctx = mp.get_context("spawn")
    conns = {}
    for name, src in (("A", args.a), ("B", args.b)):
        mine, theirs = ctx.Pipe()
        ctx.Process(target=worker, args=(src, args.threads, theirs), daemon=True).start()
        theirs.close()  # the worker's end lives in the worker only, so that its death ends recv() with EOFError
        conns[name] = mine
        try:
            print(f"# build {name}: {mine.recv()}")
        except EOFError:
            raise SystemExit(f"build {name} ({src or 'the installed sparsa'}) did not start: see the worker's "
                             "traceback above (a source folder needs sparsa/ with its compiled _C beside it)")
    print(f"# N = {args.n}, {args.threads} threads, {args.isa} {'register-tile ' if args.rt else ''}kernels, "
          f"{args.dtype} values, "
          f"{args.format or 'default'} layout, "
          f"{args.copies} weight(s) in turn, medians of {args.rounds} rounds")
    for shape in args.shapes:
        out, inp = (int(v) for v in shape.split("x"))
        for structure in args.structures:
            for sp in args.sparsities:
                key = ((out, inp), structure, sp, args.n, args.isa, args.format, args.copies, args.dtype, args.rt)
                for attempt in range(args.attempts):
                    slow = probe(conns["B"]) > _bench.PAIR_SLOW
                    times = {(b, w): [] for b in conns for w in WHAT}
                    for _ in range(args.rounds):
                        for b, c in conns.items():
                            for w in WHAT:
                                c.send((key, w))
                                times[(b, w)].append(c.recv())
                    # a slow phase before or after: two-thread calls ran up to 4x slower in it, the ratio is noise
                    slow = slow or probe(conns["B"]) > _bench.PAIR_SLOW
                    if not slow:
                        break
                m = {k: statistics.median(v) for k, v in times.items()}
                a, b = m[("A", "sparse")], m[("B", "sparse")]
                print(f"{shape:9s} {structure:12s} {sp:5}: A {a:.4f} ms, B {b:.4f} ms, A/B {a / b:.3f}; "
                      f"x dense A {m[('A', 'dense')] / a:.2f} B {m[('B', 'dense')] / b:.2f}; "
                      f"x torch CSR A {m[('A', 'csr')] / a:.2f} B {m[('B', 'csr')] / b:.2f}"
                      f"{'  (slow phase)' if slow else ''}", flush=True)
    for c in conns.values():
        c.send(None)


if __name__ == "__main__":
    main()
