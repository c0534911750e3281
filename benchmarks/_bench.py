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


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15, target_s: float = 2e-3,
                warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each fn. Every round times each fn once (in rotating order) over enough
    calls to last ~target_s, so all engines see the same machine state; the median over rounds is reported."""
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
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) * 1e3 / k)
    return {k: statistics.median(v) for k, v in samples.items()}


def emit(rows: list[dict], as_json: bool, columns: list[tuple[str, str]]) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    head = " ".join(f"{h:>{len(h) if w == '' else int(w.split('.')[0] or 0)}}" for h, w in columns)
    print(head)
