"""Peak memory and time of pruning a model whose weights exceed a memory cap, block by block from its
safetensors checkpoint, against loading the whole model and pruning it in memory (issue 4, evidence 4).

The model is a randomly initialised Llama (hidden 1024, 12 layers, ~0.6 GB of fp32 weights) saved with
save_pretrained; each mode runs in a fresh subprocess that reports its peak resident memory (VmHWM) and its
memory right after importing torch, transformers and the model's code (the baseline every mode pays). SparseGPT, 50%, 32 random
token windows of 128.

    flock /tmp/sparsa-cpu.lock python benchmarks/prune_memory.py
    flock /tmp/sparsa-cpu.lock python benchmarks/prune_memory.py --layers 24 --out benchmarks/results/prune_memory_24.json
    flock /tmp/sparsa-cpu.lock python benchmarks/prune_memory.py --layers 4 --hidden 2048 --intermediate 5632 \
        --vocab 32000 --out benchmarks/results/prune_memory_tinyllama.json   # TinyLlama-1.1B's shapes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def rss_mib(field: str) -> float:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith(field + ":"):
            return int(ln.split()[1]) / 1024
    return float("nan")


def heap_mib() -> dict:
    """glibc's own accounting (mallinfo2): bytes in use in the heap, free bytes it holds, bytes in separate
    mappings (large tensors); empty where unavailable."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_in_use": m.uordblks / 2**20, "heap_free": m.fordblks / 2**20, "mapped": m.hblkhd / 2**20}


class PeakTracer:
    """Samples the resident size every few milliseconds and remembers which step of pruning (the last log
    line of sparsa.prune: the module just pruned) was running when it peaked. A record of when, not a claim
    of what: the peak comes from whatever is live at that moment."""

    def __init__(self, every_s: float = 0.005):
        import logging
        import threading

        self.every_s, self.last, self.peak, self.at, self.heap = every_s, "start", 0.0, "start", {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        tracer = self

        class Handler(logging.Handler):
            def emit(self, record):
                tracer.last = record.getMessage()[:90]

        logger = logging.getLogger("sparsa.prune")
        logger.setLevel(logging.INFO)
        logger.addHandler(Handler())

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            now = rss_mib("VmRSS")
            if now > self.peak:
                self.peak, self.at, self.heap = now, f"after: {self.last}", heap_mib()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def child(mode: str, src: str, out: str, method: str, trace: bool = False, batch_size: int = 8) -> None:
    import contextlib

    import torch

    import sparsa
    from sparsa.prune.lazy import prune_checkpoint
    from sparsa.runtime import load_pretrained, save_pruned

    import transformers

    # the model's code (transformers' modeling module: ~150 MiB resident for Llama) is paid by every mode
    getattr(transformers, transformers.AutoConfig.from_pretrained(src).architectures[0])
    base = rss_mib("VmRSS")
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 8000, (32, 128), generator=g)}
    recipe = {"prune": [{"method": method, "sparsity": 0.5}], "calibration": {"batch_size": batch_size}}
    tracer = PeakTracer() if trace else None
    t = time.perf_counter()
    with tracer or contextlib.nullcontext():
        if mode == "whole":
            m, tok, _ = load_pretrained(src)
            m, rep = sparsa.prune(m, recipe, calibration=batch)
            save_pruned(m, tok, out, {"source": src}, source=src)
        else:  # what `sparsa prune --max-memory` does
            from sparsa.prune.heap import map_large_allocations

            map_large_allocations()
            rep = prune_checkpoint(src, out, recipe, batch, {"source": src})
    secs = time.perf_counter() - t
    r = {"mode": mode, "seconds": secs, "baseline_mib": base, "peak_mib": rss_mib("VmHWM"),
         "achieved_sparsity": rep.achieved_sparsity}
    if tracer is not None:  # sampled, so a few MiB below VmHWM at most
        r["sampled_peak_mib"], r["peak_during"], r["allocator_at_peak_mib"] = tracer.peak, tracer.at, tracer.heap
    print(json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "SRC", "OUT", "METHOD"))
    ap.add_argument("--trace", action="store_true", help="also report during which step of pruning the resident "
                                                         "size peaked (sampled every 5 ms)")
    ap.add_argument("--method", default="sparsegpt", choices=["sparsegpt", "wanda", "magnitude"])
    ap.add_argument("--modes", nargs="+", default=["whole", "blockwise"], choices=["whole", "blockwise"])
    ap.add_argument("--batch-size", type=int, default=8, help="calibration windows per forward")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "prune_memory.json")
    args = ap.parse_args()
    if args.child:
        child(*args.child, trace=args.trace, batch_size=args.batch_size)
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sparsa.prune.lazy import checkpoint_bytes

    tmp = Path(tempfile.mkdtemp(prefix="sparsa-mem-"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=16,
                      max_position_embeddings=256)
    model = LlamaForCausalLM(cfg)
    block = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    model.save_pretrained(tmp / "src")
    del model
    size = checkpoint_bytes(tmp / "src")
    res = {"checkpoint_mib": size / 2**20, "layers": args.layers, "hidden": args.hidden,
           "intermediate": args.intermediate, "vocab": args.vocab, "block_mib": block / 2**20, "runs": []}
    res["method"] = args.method
    for mode in args.modes:
        p = subprocess.run([sys.executable, __file__, "--child", mode, str(tmp / "src"), str(tmp / mode), args.method,
                            "--batch-size", str(args.batch_size), *(["--trace"] if args.trace else [])],
                           capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["peak_above_baseline_mib"] = r["peak_mib"] - r["baseline_mib"]
        res["runs"].append(r)
        print(r, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
