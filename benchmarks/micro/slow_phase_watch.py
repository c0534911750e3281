"""Watch for the development VM's paired slow phases: every ~0.1 s, the median time of a call on an empty 16x16
weight (a fork/join and two tiny transposes) on two threads, 4x1 at 99% on 1536x384 on two threads and on one,
and torch dense on the same shape, all at N = 128 (BENCHMARKS.md, "Figures of 2026-11-30 17:53-19:10 UTC",
item 2; benchmarks/_bench.py probes for them before and after each measurement).

    flock /tmp/sparsa-cpu.lock python benchmarks/micro/slow_phase_watch.py 60     # seconds to watch
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _bench import per_call_us  # noqa: E402
from spmm import make_weight  # noqa: E402

import sparsa.kernels as K  # noqa: E402
from sparsa.formats import formats_for  # noqa: E402
from sparsa.structure import parse_structure  # noqa: E402


def bound(w: torch.Tensor):
    st = parse_structure("4x1")
    q = K.prepare(formats_for(st)[0].pack(w, st, torch.float32))
    k = next(k for k in K.kernels_for(q.packed, n=128) if k.block is not None)
    x, y = torch.randn(128, w.shape[1]), torch.empty(128, w.shape[0])
    return lambda threads: q.run_into(x, y, k, 0, threads)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    torch.set_num_threads(2)
    tiny, mid = bound(torch.zeros(16, 16)), bound(make_weight(1536, 384, "4x1", 0.99))
    w, x = torch.randn(1536, 384), torch.randn(128, 384)
    lines, slow = 0, 0
    t_end = time.time() + seconds
    while time.time() < t_end:
        a, b, c = (per_call_us(f, reps=200, rounds=3) for f in (lambda: tiny(2), lambda: mid(2), lambda: mid(1)))
        d = per_call_us(lambda: torch.nn.functional.linear(x, w), reps=30, rounds=3)
        lines += 1
        slow += b > c  # two threads slower than one: a slow phase
        print(f"{time.strftime('%H:%M:%S')} empty 2 thr {a:6.2f} us | 1536x384 99% 2 thr {b:6.1f} 1 thr {c:6.1f} "
              f"| dense 2 thr {d:7.1f}", flush=True)
    print(f"# {slow} of {lines} samples with two threads slower than one")


if __name__ == "__main__":
    main()
