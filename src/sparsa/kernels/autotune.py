"""The automatic choice between torch dense and each sparse kernel that can run a weight, measured once and cached.

For a packed weight and a number of tokens N, every available kernel and ``torch.nn.functional.linear`` with the
dense weight are timed on the spot (a few milliseconds) and the fastest wins; a sparse kernel must beat dense by
``MARGIN`` to be chosen, so that noise never trades a sure dense result for a doubtful sparse one and a converted
model is never slower than its dense original. Choices are cached per (format, structure, shape, value dtype,
sparsity rounded to 5%, N bucket, threads, CPU): in memory, and in a JSON file so later processes skip the
measurement (``SPARSA_CACHE_DIR``, default ``~/.cache/sparsa``; ``SPARSA_AUTOTUNE_CACHE=0`` keeps it in memory).

A measurement on several threads taken while the host ran them slowly together (``pair_slowdown``) is used but
not trusted: it stays out of the file and is measured again on a later use, up to ``PROVISIONAL_TRIES`` times.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import _C
from ..formats import PackedWeight
from . import KernelSpec, Prepared, kernels_for

__all__ = ["Choice", "choose", "measure", "n_bucket", "cache_path", "clear_cache", "pair_slowdown", "MARGIN",
           "DENSE", "PAIR_SLOW"]

MARGIN = 0.95  # a sparse kernel is chosen only if it takes at most 95% of the dense time
DENSE = "dense"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Choice:
    kernel: str          # a kernel name, or "dense"
    times_ms: dict       # every candidate's median time, as measured
    n: int               # the token count measured (the bucket's representative)
    provisional: bool = False  # measured in a slow phase of the host's threads (pair_slowdown): measured again later


def n_bucket(n: int) -> int:
    """Token counts are tuned in buckets: exact up to 8 (the decode regime), then powers of two."""
    if n <= 8:
        return max(1, n)
    return 1 << (int(n) - 1).bit_length()


def _cpu_signature() -> str:
    feats = ",".join(sorted(k for k, v in _C.cpu_features().items() if v))
    return f"{platform.machine()}|{os.cpu_count()}|{feats}"


def _build_signature() -> str:
    """The compiled kernels this process runs (size and modification time of the extension): a rebuilt
    extension, e.g. a development build whose kernels changed, measures again instead of reusing choices made
    for other code."""
    try:
        st = os.stat(_C.__file__)
    except (OSError, AttributeError, TypeError):
        return "unknown"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _key(packed: PackedWeight, n: int, threads: int) -> str:
    out, inp = packed.shape
    sp = round(packed.sparsity * 20) / 20
    dt = str(packed.value_dtype).replace("torch.", "")
    return f"{packed.format_name}|{packed.structure}|{out}x{inp}|{dt}|{sp:.2f}|n{n}|t{threads}"


def cache_path() -> Path | None:
    if os.environ.get("SPARSA_AUTOTUNE_CACHE", "1") == "0":
        return None
    root = os.environ.get("SPARSA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparsa")
    return Path(root) / "autotune.json"


_lock = threading.Lock()
_memory: dict[str, dict] = {}
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    p = cache_path()
    if p is None or not p.is_file():
        return
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return  # a damaged cache is only a lost optimisation: measure again
    if data.get("version") == _FORMAT_VERSION and data.get("cpu") == _cpu_signature():
        from .. import __version__

        if data.get("sparsa") == __version__ and data.get("build") == _build_signature():
            _memory.update(data.get("choices", {}))


def _save() -> None:
    p = cache_path()
    if p is None:
        return
    from .. import __version__

    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": _FORMAT_VERSION, "sparsa": __version__, "cpu": _cpu_signature(),
                   "build": _build_signature(),
                   "choices": {k: v for k, v in _memory.items() if not v.get("provisional")}}
        fd, tmp = tempfile.mkstemp(prefix=".autotune.", dir=p.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, p)  # readers see the old file or the new one, never half of one
    except OSError:
        pass  # a read-only home directory must not break inference


def clear_cache() -> None:
    """Forget every cached choice (in memory and on disk)."""
    global _loaded
    with _lock:
        _memory.clear()
        _loaded = True
        p = cache_path()
        if p is not None and p.is_file():
            p.unlink()


_clock = time.perf_counter  # seconds; a test replaces it with a fake clock

# After this many rounds, a candidate whose best sample is DROP_RATIO times the best of all candidates' is not
# timed further: it cannot win, and the portable kernels took most of a measurement's time (3.2-25x slower than
# the AVX-512 ones at 99% on 1536x384, benchmarks/results/spmm_99_2026-11-30_1822.jsonl). Its median so far is
# reported.
DROP_AFTER, DROP_RATIO = 2, 3.0


def _time_all(fns: dict, reps: int, threads: int) -> dict[str, float]:
    """Median milliseconds of each candidate, run with ``threads`` threads, in ``reps`` rounds that time every
    candidate once (in rotating order): a burst of load from elsewhere, or a slow phase of a shared host, then
    falls on a few samples of every candidate rather than on all samples of one, which measured one after the
    other it could make lose (and the loss would be cached). Each timed call follows one untimed call of the
    same candidate, which takes the cost of following another one (up to 1.4 ms on a 1.3 ms kernel right after
    torch's matmul, BENCHMARKS.md). Candidates far behind after DROP_AFTER rounds stop there; "dense" never
    does."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            names = list(fns)
            samples: dict[str, list[float]] = {name: [] for name in names}
            for r in range(reps):
                if r == DROP_AFTER:
                    best = min(min(v) for v in samples.values())
                    names = [n for n in names if n == DENSE or min(samples[n]) <= DROP_RATIO * best]
                for name in names[r % len(names):] + names[: r % len(names)]:
                    fns[name]()
                    t0 = _clock()
                    fns[name]()
                    samples[name].append((_clock() - t0) * 1e3)
            return {name: statistics.median(v) for name, v in samples.items()}
    finally:
        torch.set_num_threads(prev)


# Shared hosts have phases, seconds long, in which two threads that run together are slow while either alone is
# not: on the development VM (2 vCPUs) a 2-thread sparse call then took ~4x its usual time and torch's dense matmul
# ~1.3x, a few percent of the time and at times for minutes (BENCHMARKS.md). A measurement taken then can hand a
# layer to dense for good. The probe: a tiny sparse call (an empty 16 x 16 weight, 128 tokens: a fork/join and
# two small transposes) on the measurement's threads against one thread, 1.06x when calm and 1.9-2.1x in a phase.
PAIR_SLOW = 1.5
PROVISIONAL_TRIES = 3      # measurements in a slow phase before one is accepted (a host may always be like that)
PROVISIONAL_RETRY_S = 5.0  # and the least time between two of them
_probe = None


def pair_slowdown(threads: int = 2, calls: int = 300) -> float:
    """Median time of a tiny sparse call on ``threads`` threads over its time on one (see PAIR_SLOW); 1.0 for
    fewer than two threads or cores."""
    if threads < 2 or (os.cpu_count() or 1) < 2:
        return 1.0
    global _probe
    if _probe is None:
        from ..formats import formats_for
        from ..structure import parse_structure

        st = parse_structure("4x1")
        q = Prepared(formats_for(st)[0].pack(torch.zeros(16, 16), st, torch.float32))
        _probe = (q, torch.randn(128, 16), torch.empty(128, 16))
    q, x, y = _probe
    spec = q.default_kernel

    def per_call(th: int) -> float:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls // 5):
                q.run_into(x, y, spec, 0, th)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    one = per_call(1)
    return per_call(threads) / max(one, 1e-12)


def measure(prepared: Prepared, dense_weight: torch.Tensor, n: int, threads: int,
            candidates: list[KernelSpec] | None = None, reps: int = 7) -> Choice:
    """Time dense and every candidate kernel for ``n`` tokens (``_time_all``: medians of ``reps`` interleaved
    rounds) and pick the winner; provisional if the probe saw a slow phase right before or right after."""
    packed = prepared.packed
    out, inp = packed.shape
    cands = candidates if candidates is not None else kernels_for(packed, n=n)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, inp, generator=g)
    y = torch.empty(n, out)
    fns = {DENSE: lambda: torch.nn.functional.linear(x, dense_weight)}
    for k in cands:
        fns[k.name] = lambda k=k: prepared(x, k, out=y, threads=threads)
    slow = pair_slowdown(threads) > PAIR_SLOW
    times = _time_all(fns, reps, threads)
    slow = slow or pair_slowdown(threads) > PAIR_SLOW
    best = min((k for k in times if k != DENSE), key=times.__getitem__, default=None)
    chosen = best if best is not None and times[best] <= MARGIN * times[DENSE] else DENSE
    return Choice(chosen, times, n, slow)


def choose(prepared: Prepared, dense_weight: torch.Tensor, n: int, threads: int | None = None) -> Choice:
    """The cached choice for this weight's kind and ``n`` tokens, measured on first use."""
    threads = threads or torch.get_num_threads()
    nb = n_bucket(n)
    key = _key(prepared.packed, nb, threads)
    with _lock:
        _load()
        hit = _memory.get(key)
    if hit is not None and not (hit.get("provisional") and _clock() - hit["at"] >= PROVISIONAL_RETRY_S):
        return Choice(hit["kernel"], hit["times_ms"], hit["n"], bool(hit.get("provisional")))
    tries = hit["tries"] + 1 if hit is not None else 1
    c = measure(prepared, dense_weight, nb, threads)
    entry = {"kernel": c.kernel, "times_ms": c.times_ms, "n": c.n}
    if c.provisional and tries < PROVISIONAL_TRIES:
        entry.update(provisional=True, at=_clock(), tries=tries)
    with _lock:
        _memory[key] = entry
        _save()
    return Choice(c.kernel, c.times_ms, c.n, bool(entry.get("provisional")))
