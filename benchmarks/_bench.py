"""Shared benchmark plumbing: interleaved timing (so slow drift of a shared machine hits every engine alike),
machine description, and JSON/table output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable

import torch


def machine() -> dict:
    from sparsa import _C

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    feats = [k for k, v in _C.cpu_features().items() if v]
    return {"cpu": cpu, "cores": os.cpu_count(), "features": feats, "torch": torch.__version__,
            "python": platform.python_version()}


def _busy_seconds() -> float:
    """CPU seconds all processes spent busy, from /proc/stat (Linux); 0 elsewhere."""
    try:
        with open("/proc/stat") as f:
            parts = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class LoadGuard:
    """Measures how much CPU other processes used while a measurement ran: on a shared machine a timing taken
    while another job computes is not a timing of ours. ``external`` is the fraction of all cores used by others."""

    def __enter__(self):
        self.t0, self.busy0, self.self0 = time.perf_counter(), _busy_seconds(), sum(os.times()[:2])
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        others = (_busy_seconds() - self.busy0) - (sum(os.times()[:2]) - self.self0)
        self.external = max(0.0, others) / max(1e-9, wall * (os.cpu_count() or 1))
        return False


def wait_quiet(threshold: float = 0.10, window_s: float = 1.0, max_wait_s: float = 300.0) -> float:
    """Wait (up to max_wait_s) for a window in which other processes use less than ``threshold`` of the cores;
    returns the seconds waited. Timing on a shared 2-core machine is only meaningful in such windows."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        with LoadGuard() as g:
            time.sleep(window_s)
        if g.external < threshold:
            break
    return time.perf_counter() - t0


# The two vCPUs of the development VM go through phases, seconds long and a few percent of the time, in which a
# call that runs on both threads is slow while each thread alone is not (their host shares something between
# them then): a sparsa call on two threads took 120 us instead of 28 (53 us on one thread), torch dense 1.3x its
# usual time, a fork/join 3.8 us instead of 1.5. ``copy_per_thread`` and the load guard do not see them; the
# automatic choice's probe (sparsa.kernels.autotune.pair_slowdown) does: 1.06x when calm, 1.9-2.1x in these
# phases (19,275 probes over 30 s at 18:12 on 2026-11-30, 155 of them slow, in one phase of 2 s). The threshold is
# autotune.PAIR_SLOW's, written here rather than imported because ab_builds' workers may run builds older than it.
PAIR_SLOW = 1.5


def pair_slowdown(calls: int = 300) -> float:
    """The probe on this process's torch thread count (1.0 below two threads or cores)."""
    from sparsa.kernels.autotune import pair_slowdown as probe

    return probe(torch.get_num_threads(), calls)


def in_slow_phase() -> bool:
    """Two probes in a row above PAIR_SLOW. A single probe is noisy for seconds after a process allocates and
    touches a few hundred MB (the decode cases' weight copies): 0.56-1.72x then, where a slow phase reads 1.9-2.1x
    probe after probe."""
    return pair_slowdown() > PAIR_SLOW and pair_slowdown() > PAIR_SLOW


def measure_quietly(fns: dict[str, Callable[[], object]], attempts: int = 6, **kw) -> tuple[dict[str, float], float]:
    """interleaved() taken in a quiet window, repeated while other processes disturbed it or the two-thread probe
    (pair_slowdown) saw a slow phase before or after it; returns the times and the external load of the attempt
    kept (counted as 1.0 for an attempt in a slow phase)."""
    best = None
    for _ in range(attempts):
        wait_quiet()
        before = in_slow_phase()
        with LoadGuard() as guard:
            times = interleaved(fns, **kw)
        slow = before or in_slow_phase()
        external = max(guard.external, 1.0 if slow else 0.0)
        if best is None or external < best[1]:
            best = (times, external)
        if external < 0.05:
            break
    return best


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15, target_s: float = 2e-3,
                warmup: int = 3, settle_s: float = 0.0, warm_each: bool = False) -> dict[str, float]:
    """Median milliseconds per call of each fn. Every round times each fn once (in rotating order) over enough
    calls to last ~target_s, so all engines see the same machine state; the median over rounds is reported.

    ``settle_s``: before each sample, pause this long and make one untimed call. Engines with their own thread
    pools (ONNX Runtime, OpenMP) keep spinning for a while after a call; without the pause that spin lands in the
    next engine's timing.

    ``warm_each``: make one untimed call right before each sample (without the pause), so that a sample of one
    call does not carry the cost of following another engine (its caches, its branch history)."""
    with torch.inference_mode():
        reps = {}
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            t0 = time.perf_counter()
            fn()
            one = max(time.perf_counter() - t0, 1e-6)
            reps[name] = max(1, min(1000, int(target_s / one)))
        samples: dict[str, list[float]] = {k: [] for k in fns}
        names = list(fns)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn, k = fns[name], reps[name]
                if settle_s:
                    time.sleep(settle_s)
                if settle_s or warm_each:
                    fn()
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) * 1e3 / k)
    return {k: statistics.median(v) for k, v in samples.items()}


def per_call_us(fn: Callable[[], object], reps: int = 300, rounds: int = 9) -> float:
    """Median over ``rounds`` of the mean microseconds per call over ``reps`` back-to-back calls of one fn (the
    micro-benchmarks' loop; engines to compare go through ``interleaved`` instead)."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(samples)


def emit(rows: list[dict], as_json: bool, columns: list[tuple[str, str]]) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    head = " ".join(f"{h:>{len(h) if w == '' else int(w.split('.')[0] or 0)}}" for h, w in columns)
    print(head)
