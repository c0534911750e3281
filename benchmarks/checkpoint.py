"""The sparse checkpoint: bytes on disk per structure and sparsity, load time against the dense safetensors model,
and what the per-tensor checksum costs. Run it under the shared CPU lock:

    flock /tmp/sparsa-cpu.lock python benchmarks/checkpoint.py               # all three parts, all-MiniLM-L6-v2
    flock /tmp/sparsa-cpu.lock python benchmarks/checkpoint.py --part load --decoder   # + a 168M-parameter decoder
    python benchmarks/checkpoint.py --json                                    # one JSON object per row

Sizes: every model is pruned by magnitude (quality is not the point here), then saved twice: dense with zeros by
transformers' save_pretrained ("dense checkpoint") and packed by sparsa.save. "on disk, packed part" is the
packed folder's weight files minus the bytes of its dense tensors (embeddings, norms, biases, pooler): the packed
tensors plus every header, index and shard byte. "layout" is the format's bytes by the formulas of docs/FORMAT.md,
counted here from the dense weights, independently of sparsa's packing code.

Load: each engine loads the same pruned model from a warm page cache, interleaved round by round, median of the
rounds; "+ first forward" adds one 1x128-token forward pass (transformers maps the dense file lazily, so its first
forward pays for reading the weights that the packed loader reads and verifies up front).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import machine  # noqa: E402

import sparsa  # noqa: E402
from sparsa.checkpoint import read_checkpoint  # noqa: E402
from sparsa.formats import FORMATS  # noqa: E402
from sparsa.runtime import default_model_path  # noqa: E402

INDEX = "sparsa-model.safetensors.index.json"
SIZE_CASES = [(s, sp) for s in ("unstructured", "4x1", "8x1", "1x4") for sp in (0.5, 0.7, 0.9)] + [
    ("2:4", 0.5), ("1:4", 0.75), ("1:8", 0.875)]
LOAD_CASES = [("unstructured", 0.5), ("4x1", 0.5), ("2:4", 0.5), ("4x1", 0.9)]


def quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def base_model(decoder: bool):
    from transformers import AutoModel, LlamaConfig, LlamaForCausalLM

    if not decoder:
        return AutoModel.from_pretrained(default_model_path(), local_files_only=True).eval(), "all-MiniLM-L6-v2"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=512)
    m = LlamaForCausalLM(cfg).eval()
    return m, f"Llama-shaped decoder, {sum(p.numel() for p in m.parameters()) / 1e6:.0f}M parameters (random)"


def pruned_copy(model, structure, sparsity, dtype):
    import copy

    m = copy.deepcopy(model).to(dtype)
    st = sparsa.parse_structure(structure)
    sparsa.prune(m, sparsity=None if st.implied_sparsity is not None else sparsity, structure=st)
    return m


def layout_bytes(w: torch.Tensor, structure: str, es: int) -> int:
    """docs/FORMAT.md's byte formula for one weight, from the dense weight alone."""
    out, inp = w.shape
    st = sparsa.parse_structure(structure)
    nz = w != 0
    words = (inp + 63) // 64
    if isinstance(st, sparsa.NM):
        return out * inp * st.n // st.m * es + out * words * 8
    if isinstance(st, sparsa.Block):
        r, c = st.rows, st.cols
        nnzb = int(nz.reshape(out // r, r, inp // c, c).any(dim=3).any(dim=1).sum())
        return nnzb * r * c * es + (out // r + 1) * 8 + nnzb * 2
    return out * words * 8 + int(nz.sum()) * es + (out + 1) * 8


def ideal_ratio(structure: str, sparsity: float, es: int) -> float:
    """The format's bytes per dense byte without its per-row pointers: values plus the mask or block indices."""
    st = sparsa.parse_structure(structure)
    if isinstance(st, sparsa.Block):
        return (1 - sparsity) * (1 + 2 / (st.rows * st.cols * es))
    return (1 - sparsity) + 1 / (8 * es)  # values + 1 mask bit per weight (bitmask and N:M alike)


def files_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors" or f.name.endswith(".index.json"))


def size_row(model, structure, sparsity, dtype, root: Path) -> dict:
    m = pruned_copy(model, structure, sparsity, dtype)
    es = torch.empty((), dtype=dtype).element_size()
    names = [n for n, mod in m.named_modules() if getattr(mod, "sparsa_structure", None)]
    weights = [m.get_submodule(n).weight.detach() for n in names]
    layout = sum(layout_bytes(w, structure, es) for w in weights)
    dense_w = sum(w.numel() * es for w in weights)
    achieved = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    d, p = root / "dense", root / "packed"
    m.save_pretrained(d)
    sparsa.save(m, p)
    ck = read_checkpoint(p)
    rest = sum(t.numel() * t.element_size() for t in ck.tensors.values())
    packed_part = files_bytes(p) - rest
    row = {
        "part": "size", "structure": structure, "sparsity": round(achieved, 4), "dtype": str(dtype)[6:],
        "format": next(iter(ck.packed.values())).format_name,
        "dense_ckpt_bytes": files_bytes(d), "packed_ckpt_bytes": files_bytes(p),
        "ckpt_ratio": files_bytes(p) / files_bytes(d),
        "weights_dense_bytes": dense_w, "weights_on_disk_bytes": packed_part, "layout_bytes": layout,
        "on_disk_vs_layout": packed_part / layout, "weights_ratio": packed_part / dense_w,
        "ideal_ratio": ideal_ratio(structure, achieved, es),
    }
    shutil.rmtree(d)
    shutil.rmtree(p)
    return row


def checksum_rows(folder: Path) -> list[dict]:
    """GB/s of candidate checksums over the bytes of a real packed checkpoint, in memory."""
    import xxhash

    blobs = [f.read_bytes() for f in sorted(folder.glob("*.safetensors"))]
    total = sum(len(b) for b in blobs)
    algos = {
        "xxh3_64 (chosen)": lambda b: xxhash.xxh3_64_hexdigest(b),
        "xxh3_128": lambda b: xxhash.xxh3_128_hexdigest(b),
        "crc32 (zlib)": lambda b: zlib.crc32(b),
        "sha256": lambda b: hashlib.sha256(b).hexdigest(),
        "blake2b": lambda b: hashlib.blake2b(b).hexdigest(),
    }
    rows = []
    for name, fn in algos.items():
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            for b in blobs:
                fn(b)
            ts.append(time.perf_counter() - t0)
        rows.append({"part": "checksum", "algorithm": name, "bytes": total, "ms": statistics.median(ts) * 1e3,
                     "GB_per_s": total / statistics.median(ts) / 1e9})
    return rows


class _Timed:
    """Accumulate the seconds spent in a function (wrapped on its class) during one load."""

    def __init__(self, owners_and_names):
        self.targets = owners_and_names
        self.seconds = 0.0

    def __enter__(self):
        self.saved = []
        for owner, name in self.targets:
            fn = getattr(owner, name)
            self.saved.append((owner, name, fn))

            def timed(*a, _fn=fn, **k):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(owner, name, timed)
        return self

    def __exit__(self, *exc):
        for owner, name, fn in self.saved:
            setattr(owner, name, fn)


def load_rows(model, name, structure, sparsity, dtype, root: Path, rounds: int, decoder: bool) -> list[dict]:
    from transformers import AutoModel, AutoModelForCausalLM

    m = pruned_copy(model, structure, sparsity, dtype)
    d, p = root / "dense", root / "packed"
    m.save_pretrained(d)
    sparsa.save(m, p)
    del m
    auto = AutoModelForCausalLM if decoder else AutoModel
    x = torch.randint(0, 1000, (1, 128), generator=torch.Generator().manual_seed(0))

    def forward(model):
        with torch.inference_mode():
            model(input_ids=x)

    engines = {
        "dense: transformers from_pretrained": lambda: auto.from_pretrained(d, local_files_only=True),
        "packed: sparsa.load": lambda: sparsa.load(p),
        "packed: sparsa.load(verify=False)": lambda: sparsa.load(p, verify=False),
    }
    # correctness first: the packed model computes what the dense-with-zeros model computes
    with torch.inference_mode():
        ref = engines["dense: transformers from_pretrained"]()(input_ids=x)[0].float()
        got = engines["packed: sparsa.load"]()(input_ids=x)[0].float()
    err = float((got - ref).abs().max() / ref.abs().max())
    assert err < (1e-4 if dtype == torch.float32 else 5e-2), err

    samples = {k: [] for k in engines}
    samples.update({k + " + first forward": [] for k in engines})
    for r in range(rounds):
        names = list(engines)
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            mod = engines[k]()
            t1 = time.perf_counter()
            forward(mod)
            t2 = time.perf_counter()
            samples[k].append(t1 - t0)
            samples[k + " + first forward"].append(t2 - t0)
            del mod
    # where the packed load's time goes (one extra load, instrumented)
    from sparsa.checkpoint import reader

    with _Timed([(cls, "validate") for cls in FORMATS.values()]) as val, \
            _Timed([(reader, "checksum")]) as chk:
        t0 = time.perf_counter()
        sparsa.load(p)
        total = time.perf_counter() - t0
    base = statistics.median(samples["dense: transformers from_pretrained"])
    base_f = statistics.median(samples["dense: transformers from_pretrained + first forward"])
    rows = []
    for k, v in samples.items():
        ref_t = base_f if k.endswith("first forward") else base
        rows.append({"part": "load", "model": name, "structure": structure, "sparsity": sparsity,
                     "dtype": str(dtype)[6:], "engine": k, "ms": statistics.median(v) * 1e3,
                     "vs_dense": statistics.median(v) / ref_t, "dense_file_bytes": files_bytes(d),
                     "packed_file_bytes": files_bytes(p), "max_rel_err": err})
    rows.append({"part": "load-breakdown", "model": name, "structure": structure, "sparsity": sparsity,
                 "dtype": str(dtype)[6:], "load_ms": total * 1e3, "validate_ms": val.seconds * 1e3,
                 "checksum_ms": chk.seconds * 1e3})
    shutil.rmtree(d)
    shutil.rmtree(p)
    return rows


def fresh_process_rows(model, name, root: Path, runs: int = 5) -> list[dict]:
    """Seconds from `python -c` to a loaded model in a new process (imports included), dense vs packed."""
    m = pruned_copy(model, "4x1", 0.5, torch.float32)
    d, p = root / "dense", root / "packed"
    m.save_pretrained(d)
    sparsa.save(m, p)
    code = {
        "dense: transformers from_pretrained": f"from transformers import AutoModel; AutoModel.from_pretrained({str(d)!r})",
        "packed: sparsa.load": f"import sparsa; sparsa.load({str(p)!r})",
    }
    samples = {k: [] for k in code}
    for r in range(runs):
        for k in (list(code) if r % 2 == 0 else list(code)[::-1]):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code[k]], check=True, capture_output=True)
            samples[k].append(time.perf_counter() - t0)
    base = statistics.median(samples["dense: transformers from_pretrained"])
    rows = [{"part": "fresh-process", "model": name, "structure": "4x1", "sparsity": 0.5, "engine": k,
             "s": statistics.median(v), "vs_dense": statistics.median(v) / base} for k, v in samples.items()]
    shutil.rmtree(d)
    shutil.rmtree(p)
    return rows


def show(rows: list[dict], as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r), flush=True)
        return
    r = rows[0]
    part = r["part"]
    if part == "size":
        print(f"{r['structure']:>12} {r['sparsity']:6.1%} {r['dtype']:>8} {r['format']:>7} | ckpt "
              f"{r['dense_ckpt_bytes'] / 2**20:7.2f} -> {r['packed_ckpt_bytes'] / 2**20:6.2f} MiB ({r['ckpt_ratio']:.3f}x) | "
              f"weights {r['weights_dense_bytes'] / 2**20:6.2f} -> {r['weights_on_disk_bytes'] / 2**20:6.2f} MiB "
              f"({r['weights_ratio']:.4f}x, ideal {r['ideal_ratio']:.4f}x) | on disk / layout {r['on_disk_vs_layout']:.4f}",
              flush=True)
    elif part == "checksum":
        for r in rows:
            print(f"checksum {r['algorithm']:>18}: {r['GB_per_s']:6.2f} GB/s ({r['ms']:.1f} ms for "
                  f"{r['bytes'] / 2**20:.1f} MiB)", flush=True)
    elif part == "load":
        for r in rows:
            if r["part"] == "load":
                print(f"load {r['structure']:>12} {r['sparsity']:.0%} {r['dtype']:>8} {r['engine']:>52}: "
                      f"{r['ms']:8.1f} ms  ({r['vs_dense']:.2f}x dense)", flush=True)
            else:
                print(f"     where the packed load goes: {r['load_ms']:.1f} ms total, {r['validate_ms']:.1f} ms in "
                      f"PackedWeight.validate, {r['checksum_ms']:.1f} ms in checksums", flush=True)
    elif part == "fresh-process":
        for r in rows:
            print(f"new process to loaded model {r['engine']:>38}: {r['s']:.2f} s ({r['vs_dense']:.2f}x dense)",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "size", "load", "checksum"], default="all")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--decoder", action="store_true", help="also time a 168M-parameter Llama-shaped decoder")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    quiet()
    torch.set_num_threads(torch.get_num_threads())
    mach = machine()
    if not a.json:
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, threads "
              f"{torch.get_num_threads()}")
    else:
        print(json.dumps({"part": "machine", **mach}))
    model, name = base_model(False)
    root = Path(tempfile.mkdtemp(prefix="sparsa-bench-ckpt-"))
    try:
        if a.part in ("all", "checksum"):
            m = pruned_copy(model, "unstructured", 0.5, torch.float32)
            sparsa.save(m, root / "ck")
            show(checksum_rows(root / "ck"), a.json)
            shutil.rmtree(root / "ck")
        if a.part in ("all", "size"):
            for dtype in (torch.float32, torch.bfloat16):
                for structure, sp in SIZE_CASES:
                    show([size_row(model, structure, sp, dtype, root)], a.json)
        if a.part in ("all", "load"):
            for dtype in (torch.float32, torch.bfloat16):
                for structure, sp in LOAD_CASES:
                    show(load_rows(model, name, structure, sp, dtype, root, a.rounds, False), a.json)
            show(fresh_process_rows(model, name, root), a.json)
            if a.decoder:
                dec, dname = base_model(True)
                for structure, sp in (("unstructured", 0.5), ("2:4", 0.5)):
                    show(load_rows(dec, dname, structure, sp, torch.float32, root, max(5, a.rounds // 3), True),
                         a.json)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
