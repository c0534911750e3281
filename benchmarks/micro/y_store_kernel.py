"""How fast the AVX-512 register-tile kernel writes y, by `out`: an all-zero 4x1 weight with 16 inputs, so that a
call is its x transpose (tiny), the transposes of empty tiles and the stores into y (N x out floats). With `out` a
multiple of 1024 the token rows of a tile fall in one L1 set (BENCHMARKS.md, "Figures of 2026-11-30 17:53-19:10
UTC", item 3; benchmarks/micro/y_store_order.cpp has the same stores without the kernel).

    flock /tmp/sparsa-cpu.lock python benchmarks/micro/y_store_kernel.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _bench import per_call_us  # noqa: E402

import sparsa.kernels as K  # noqa: E402
from sparsa.formats import formats_for  # noqa: E402
from sparsa.structure import parse_structure  # noqa: E402

KERNEL = "f32_bsr4x1rt_spmm__avx512"


def main() -> None:
    torch.set_num_threads(2)
    st = parse_structure("4x1")
    print("# us per call and GB/s of y written; an all-zero 4x1 weight of out x 16, " + KERNEL)
    for out in (1536, 2048, 2560, 3072, 4096):
        p = formats_for(st)[0].pack(torch.zeros(out, 16), st, torch.float32)
        q = K.prepare(p)
        ks = [k for k in K.kernels_for(p, n=128) if k.name == KERNEL]
        if not ks:
            raise SystemExit(f"{KERNEL} does not run on this CPU")
        for n in (32, 64, 128, 256):
            x, y = torch.randn(n, 16), torch.empty(n, out)
            t = {th: per_call_us(lambda th=th: q.run_into(x, y, ks[0], 0, th)) for th in (1, 2)}
            mb = n * out * 4 / 1e6
            print(f"out {out:5d} n {n:4d}: y {mb:.2f} MB, 1 thread {t[1]:7.2f} us ({mb * 1e3 / t[1]:5.1f} GB/s), "
                  f"2 threads {t[2]:7.2f} us ({mb * 1e3 / t[2]:5.1f} GB/s)", flush=True)


if __name__ == "__main__":
    main()
