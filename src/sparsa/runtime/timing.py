"""Latency measurement: medians over repeats after warm-up, in the same process for every engine compared."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Timing", "time_fn"]


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


def time_fn(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, min_seconds: float = 0.0) -> Timing:
    """Run ``fn`` ``warmup`` times, then at least ``repeats`` times (and for at least ``min_seconds``)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return Timing(statistics.median(times), q(0.1), q(0.9), len(times))
