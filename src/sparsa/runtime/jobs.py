"""Model-level jobs behind the CLI: the demo (prune, convert, compare with the dense model in one run) and
the model benchmark. They return plain dataclasses; printing is the CLI's business."""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..eval import embedding_fidelity, encode, heldout_sentences
from ..nn import ConvertedModule, sparsify
from ..prune import prune
from ..structure import parse_structure
from ..detect import detect_structure
from ..formats import pack
from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, select_modules, weight_out_in
from .models import load_encoder, load_pretrained
from .timing import time_fn

__all__ = [
    "DemoResult",
    "BenchResult",
    "ModuleGroup",
    "ModuleInfo",
    "ModelInfo",
    "run_demo",
    "run_bench",
    "model_info",
    "system_info",
    "latency_inputs",
    "group_modules",
    "max_rel_error",
]


@dataclass
class ModuleGroup:
    """Modules that play the same role in every layer: ``attention.self.query`` stands for
    ``encoder.layer.{0..5}.attention.self.query``."""

    role: str
    count: int
    shape: tuple[int, int]
    structure: str
    sparsity: float
    format: str
    kernel: str
    dense_bytes: int
    sparse_bytes: int


@dataclass
class DemoResult:
    model: str
    method: str
    structure: str
    sparsity: float            # requested
    achieved_sparsity: float   # zeros over the pruned weights
    cosine_mean: float
    cosine_min: float
    nn_agreement: float
    n_sentences: int
    dense_ms: float
    sparse_ms: float
    speedup: float
    dense_bytes: int           # the converted weights stored dense (float32)
    sparse_bytes: int          # the same weights packed
    max_rel_err: float         # sparse model vs the dense-with-zeros model it came from
    batch: int
    seq: int
    threads: int
    modules: list[ModuleGroup] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def group_modules(converted: list[ConvertedModule], shapes: dict[str, tuple[int, int]]) -> list[ModuleGroup]:
    """Aggregate per-module conversion records by role: the part of the name after the last layer index."""
    groups: "OrderedDict[str, list[ConvertedModule]]" = OrderedDict()
    for c in converted:
        groups.setdefault(re.split(r"(?:^|\.)\d+\.", c.name)[-1], []).append(c)
    out = []
    for role, cs in groups.items():
        dense = sum(c.dense_bytes for c in cs)
        numel = sum(shapes[c.name][0] * shapes[c.name][1] for c in cs)
        zeros = sum(c.sparsity * shapes[c.name][0] * shapes[c.name][1] for c in cs)
        out.append(
            ModuleGroup(
                role=role,
                count=len(cs),
                shape=shapes[cs[0].name],
                structure=", ".join(sorted({c.structure for c in cs})),
                sparsity=zeros / max(1, numel),
                format=", ".join(sorted({c.format for c in cs})),
                kernel=", ".join(sorted({c.kernel for c in cs})),
                dense_bytes=dense,
                sparse_bytes=sum(c.sparse_bytes for c in cs),
            )
        )
    return out


def resolve_kernels(model: nn.Module, converted: list[ConvertedModule], n: int) -> None:
    """Record in ``converted`` which path each auto module takes for calls of ``n`` tokens (tuning if needed)."""
    from ..nn import SparseLinear

    mods = dict(model.named_modules())
    for c in converted:
        m = mods.get(c.name)
        if isinstance(m, SparseLinear) and m.auto:
            c.kernel = m.kernel_name_for(n)


def latency_inputs(tokenizer, batch: int, seq: int, vocab_size: int = 1000) -> dict[str, torch.Tensor]:
    """A (batch, seq) input of real tokens: held-out text, truncated and padded to exactly ``seq``
    (random token ids from a fixed seed when the model has no tokenizer)."""
    if tokenizer is None:
        g = torch.Generator().manual_seed(0)
        return {"input_ids": torch.randint(0, vocab_size, (batch, seq), generator=g)}
    text = " ".join(heldout_sentences())
    words = text.split()
    per = max(1, len(words) // max(1, batch))
    texts = [" ".join(words[i * per : (i + 1) * per]) for i in range(batch)]
    if tokenizer.pad_token is None:  # decoder tokenizers (GPT-2) often have none
        tokenizer.pad_token = tokenizer.eos_token
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt"))


def max_rel_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max |candidate - reference| / max |reference|."""
    return float((candidate - reference).abs().max() / reference.abs().max().clamp(min=1e-30))


def run_demo(
    model_path: str | None = None,
    sparsity: float | None = 0.5,
    structure: str = "unstructured",
    method: str = "magnitude",
    batch: int = 1,
    seq: int = 128,
    repeats: int = 20,
    status: Callable[[str], None] | None = None,
) -> DemoResult:
    """Prune an encoder, convert it to sparse kernels and measure it against the dense model, in one run.

    ``sparsity`` None means 0.5, or what an N:M structure implies. ``status`` is told each step as it starts.
    """
    step = status or (lambda _msg: None)
    st = parse_structure(structure)
    sp = st.resolve_sparsity(sparsity if sparsity is not None or st.implied_sparsity is not None else 0.5)
    step("loading the model")
    dense, tokenizer, name = load_encoder(model_path)
    sentences = heldout_sentences()
    step(f"embedding {len(sentences)} held-out sentences with the dense model")
    ref = encode(dense, tokenizer, sentences)

    step(f"pruning ({method}, {st}, {sp:.0%})")
    pruned, _report = prune(dense, method=method, sparsity=sp, structure=st, inplace=False)
    shapes = {n: tuple(m.weight.shape) for n, m in pruned.named_modules() if isinstance(m, nn.Linear)}
    step("packing weights and converting to sparse kernels")
    sparse, converted = sparsify(pruned, inplace=False)

    step("embedding the held-out sentences with the sparse model")
    emb_pruned = encode(pruned, tokenizer, sentences)
    emb_sparse = encode(sparse, tokenizer, sentences)
    fid = embedding_fidelity(ref, emb_sparse)

    inputs = latency_inputs(tokenizer, batch, seq)
    with torch.inference_mode():
        out_pruned = pruned(**inputs).last_hidden_state
        out_sparse = sparse(**inputs).last_hidden_state
    err = max(max_rel_error(out_pruned, out_sparse), max_rel_error(emb_pruned, emb_sparse))

    step(f"timing dense vs sparse at {batch}x{seq} tokens ({repeats} runs each)")
    resolve_kernels(sparse, converted, batch * seq)  # tune before timing, not inside it
    t_dense = time_fn(lambda: dense(**inputs), repeats=repeats)
    t_sparse = time_fn(lambda: sparse(**inputs), repeats=repeats)

    groups = group_modules(converted, shapes)
    return DemoResult(
        model=name,
        method=method,
        structure=str(st),
        sparsity=sp,
        achieved_sparsity=_report.achieved_sparsity,
        cosine_mean=fid.cosine_mean,
        cosine_min=fid.cosine_min,
        nn_agreement=fid.nn_agreement,
        n_sentences=fid.n_sentences,
        dense_ms=t_dense.median_ms,
        sparse_ms=t_sparse.median_ms,
        speedup=t_dense.median_ms / t_sparse.median_ms,
        dense_bytes=sum(g.dense_bytes for g in groups),
        sparse_bytes=sum(g.sparse_bytes for g in groups),
        max_rel_err=err,
        batch=batch,
        seq=seq,
        threads=torch.get_num_threads(),
        modules=groups,
    )


def _first_output(out) -> torch.Tensor:
    """The main tensor of a model's output (last_hidden_state for encoders, logits for LM heads)."""
    return out[0] if not isinstance(out, torch.Tensor) else out


@dataclass
class BenchResult:
    model: str
    structure: str
    sparsity: float          # achieved, over the converted weights
    pruned_here: bool        # True if the model had no zeros and bench pruned it (magnitude, speed only)
    dense_ms: float
    sparse_ms: float
    speedup: float
    dense_bytes: int
    sparse_bytes: int
    max_rel_err: float
    batch: int
    seq: int
    threads: int
    modules: list[ModuleGroup] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_bench(
    model_path: str,
    sparsity: float | None = None,
    structure: str | None = None,
    batch: int = 1,
    seq: int = 128,
    repeats: int = 20,
) -> BenchResult:
    """Latency of a model dense vs converted to sparse kernels, on the same input in one process.

    A model that already holds zeros (e.g. from ``sparsa prune``) is converted as it is; a dense model is first
    pruned by magnitude to ``sparsity``/``structure`` (default 50% unstructured), which measures speed only.
    """
    model, tokenizer, name = load_pretrained(model_path)
    linears = select_modules(model, DEFAULT_TARGETS, DEFAULT_IGNORE)
    has_zeros = any(bool((weight_out_in(m) == 0).any()) for _, m in linears)
    dense = model
    pruned_here = False
    if not has_zeros or structure is not None or sparsity is not None:
        st = parse_structure(structure or "unstructured")
        sp = st.resolve_sparsity(sparsity if sparsity is not None or st.implied_sparsity is not None else 0.5)
        model, _ = prune(model, "magnitude", sp, st, inplace=False)
        pruned_here = True
    shapes = {n: tuple(weight_out_in(m).shape) for n, m in select_modules(model, DEFAULT_TARGETS, DEFAULT_IGNORE)}
    sparse, converted = sparsify(model, inplace=False)
    inputs = latency_inputs(tokenizer, batch, seq, getattr(getattr(model, "config", None), "vocab_size", 1000))
    with torch.inference_mode():
        err = max_rel_error(_first_output(model(**inputs)), _first_output(sparse(**inputs)))
    resolve_kernels(sparse, converted, batch * seq)
    t_dense = time_fn(lambda: dense(**inputs), repeats=repeats)
    t_sparse = time_fn(lambda: sparse(**inputs), repeats=repeats)
    groups = group_modules(converted, shapes)
    numel = sum(shapes[c.name][0] * shapes[c.name][1] for c in converted)
    zeros = sum(c.sparsity * shapes[c.name][0] * shapes[c.name][1] for c in converted)
    return BenchResult(
        model=name,
        structure=", ".join(sorted({c.structure for c in converted})) or "none",
        sparsity=zeros / max(1, numel),
        pruned_here=pruned_here,
        dense_ms=t_dense.median_ms,
        sparse_ms=t_sparse.median_ms,
        speedup=t_dense.median_ms / t_sparse.median_ms,
        dense_bytes=sum(g.dense_bytes for g in groups),
        sparse_bytes=sum(g.sparse_bytes for g in groups),
        max_rel_err=err,
        batch=batch,
        seq=seq,
        threads=torch.get_num_threads(),
        modules=groups,
    )


@dataclass
class ModuleInfo:
    name: str
    type: str
    shape: tuple[int, int]
    sparsity: float
    structure: str
    format: str
    dense_bytes: int
    sparse_bytes: int


@dataclass
class ModelInfo:
    model: str
    modules: list[ModuleInfo]
    dense_bytes: int   # all linear-like weights stored dense
    sparse_bytes: int  # the same with every weight that has zeros packed in its format
    sparsity: float    # zeros over all linear-like weights
    packed: bool = False   # the folder is a packed sparsa checkpoint (else a dense / dense-with-zeros folder)
    disk_bytes: int = 0    # the folder's weight files (*.safetensors, *.bin, index files) on disk

    def to_dict(self) -> dict:
        return asdict(self)


def _totals(name: str, rows: list[ModuleInfo], packed: bool, disk_bytes: int) -> ModelInfo:
    total = sum(r.shape[0] * r.shape[1] for r in rows)
    zeros = sum(r.sparsity * r.shape[0] * r.shape[1] for r in rows)
    return ModelInfo(name, rows, sum(r.dense_bytes for r in rows), sum(r.sparse_bytes for r in rows),
                     zeros / max(1, total), packed, disk_bytes)


@torch.no_grad()
def packed_model_info(model_path: str) -> ModelInfo:
    """model_info for a packed checkpoint: read (and verified) as sparsa.load reads it; bytes are those stored."""
    from ..checkpoint.convert import folder_disk_bytes
    from ..checkpoint.model import load_packed
    from ..modules import is_linear_like
    from ..nn import SparseLinear

    model, _ = load_packed(model_path)
    rows = []
    for mname, m in model.named_modules():
        if isinstance(m, SparseLinear):
            p = m.packed
            rows.append(ModuleInfo(mname, "SparseLinear", tuple(p.shape), p.sparsity, str(p.structure), p.format_name,
                                   p.dense_nbytes(), p.nbytes))
        elif mname and is_linear_like(m):
            w = weight_out_in(m)
            b = w.numel() * w.element_size()
            rows.append(ModuleInfo(mname, type(m).__name__, tuple(w.shape), float((w == 0).sum()) / max(1, w.numel()),
                                   "dense", "dense", b, b))
    return _totals(str(model_path), rows, True, folder_disk_bytes(model_path))


@torch.no_grad()
def model_info(model_path: str) -> ModelInfo:
    """Per linear-like module: shape, sparsity, structure (recorded or detected), bytes dense and packed.
    Works on dense / dense-with-zeros folders and on packed sparsa checkpoints."""
    from ..checkpoint import is_packed
    from ..checkpoint.convert import folder_disk_bytes

    if is_packed(model_path):
        return packed_model_info(model_path)
    model, _, name = load_pretrained(model_path)
    rows = []
    for mname, m in select_modules(model, DEFAULT_TARGETS, ignore=()):
        w = weight_out_in(m)
        zeros = int((w == 0).sum())
        dense_bytes = w.numel() * w.element_size()
        if zeros:
            st = parse_structure(getattr(m, "sparsa_structure", None) or detect_structure(w))
            p = pack(w, st, dtype=w.dtype if w.dtype == torch.bfloat16 else torch.float32)
            rows.append(ModuleInfo(mname, type(m).__name__, tuple(w.shape), zeros / w.numel(), str(st), p.format_name,
                                   dense_bytes, min(dense_bytes, p.nbytes)))
        else:
            rows.append(ModuleInfo(mname, type(m).__name__, tuple(w.shape), 0.0, "dense", "dense", dense_bytes,
                                   dense_bytes))
    return _totals(name, rows, False, folder_disk_bytes(model_path))


def system_info() -> dict:
    """The machine as sparsa sees it: CPU features, threads, and which kernels can run here."""
    import platform

    from .. import _C, __version__
    from ..kernels import KERNELS

    return {
        "sparsa": __version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_features": {k: v for k, v in _C.cpu_features().items() if v},
        "kernels": [{"name": k.name, "available": k.available} for k in KERNELS],
    }
