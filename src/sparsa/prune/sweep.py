"""Sensitivity sweep: prune with each method at each sparsity, measure quality against the dense model, and
find the essential-sparsity knee (Jaiswal et al., 2023): the largest sparsity whose quality stays within a
stated drop of the dense model, and the sparsity after which the curve's slope breaks (falls fastest
relative to before).

Quality is the held-out mean embedding cosine to the dense model for encoders (higher is better; the drop is
1 - cosine) and perplexity for causal LMs (lower is better; the drop is the relative increase).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

__all__ = ["SweepPoint", "SweepResult", "knee", "run_sweep", "plot_sweep"]


@dataclass
class SweepPoint:
    method: str
    sparsity: float
    quality: float
    seconds: float


@dataclass
class SweepResult:
    model: str
    metric: str  # "cosine_mean" or "perplexity"
    higher_is_better: bool
    dense_quality: float
    structure: str
    max_drop: float
    points: list[SweepPoint] = field(default_factory=list)
    knees: dict[str, dict] = field(default_factory=dict)  # method -> {"within_drop": s, "slope_break": s}

    def to_dict(self) -> dict:
        return asdict(self)


def _drop(q: float, dense: float, higher_is_better: bool) -> float:
    return (dense - q) if higher_is_better else (q - dense) / dense


def knee(sparsities: Sequence[float], quality: Sequence[float], dense: float, higher_is_better: bool,
         max_drop: float) -> dict:
    """{"within_drop": largest sparsity with drop <= max_drop (None if none), "slope_break": the sparsity
    after which the loss per unit of sparsity grows the most (None with fewer than 3 points)}."""
    pts = sorted(zip(sparsities, quality))
    s = [0.0] + [p[0] for p in pts]
    loss = [0.0] + [_drop(p[1], dense, higher_is_better) for p in pts]
    within = None
    for sp, lo in zip(s[1:], loss[1:]):
        if lo <= max_drop:
            within = sp
        else:
            break
    slope_break = None
    if len(s) >= 3:
        slopes = [(loss[i + 1] - loss[i]) / max(1e-12, s[i + 1] - s[i]) for i in range(len(s) - 1)]
        # the point between two segments where the slope grows by the largest factor
        best, best_ratio = None, 0.0
        for i in range(1, len(slopes)):
            ratio = slopes[i] / max(abs(slopes[i - 1]), 1e-6)
            if ratio > best_ratio:
                best, best_ratio = s[i], ratio
        slope_break = best
    return {"within_drop": within, "slope_break": slope_break}


@torch.no_grad()
def run_sweep(model, tokenizer, name: str, methods: Sequence[str], sparsities: Sequence[float], structure: str,
              calibration, max_drop: float, quality: Callable, higher_is_better: bool, metric: str,
              prune_kwargs: dict | None = None, on_point: Callable[[SweepPoint], None] | None = None) -> SweepResult:
    """Prune a copy of ``model`` per (method, sparsity); ``quality(model) -> float``."""
    import time

    from .api import prune

    res = SweepResult(name, metric, higher_is_better, float(quality(model)), structure, max_drop)
    for m in methods:
        for sp in sparsities:
            t0 = time.perf_counter()
            pruned, _ = prune(copy.deepcopy(model), m, sp, structure, calibration=calibration, tokenizer=tokenizer,
                              **(prune_kwargs or {}))
            q = float(quality(pruned))
            pt = SweepPoint(m, float(sp), q, time.perf_counter() - t0)
            res.points.append(pt)
            if on_point:
                on_point(pt)
            del pruned
        mine = [p for p in res.points if p.method == m]
        res.knees[m] = knee([p.sparsity for p in mine], [p.quality for p in mine], res.dense_quality,
                            higher_is_better, max_drop)
    return res


def plot_sweep(res: SweepResult, path) -> None:
    """Quality vs sparsity per method, with the dense level and each method's knee marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for m in dict.fromkeys(p.method for p in res.points):
        pts = sorted((p.sparsity, p.quality) for p in res.points if p.method == m)
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        k = res.knees.get(m, {}).get("within_drop")
        if k is not None:
            ax.axvline(k, color=line.get_color(), linestyle=":", linewidth=1)
    ax.axhline(res.dense_quality, color="gray", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel(f"sparsity ({res.structure})")
    ax.set_ylabel(res.metric)
    if not res.higher_is_better:
        ax.set_yscale("log")
    ax.set_title(f"{res.model}: one-shot pruning (dotted: knee within {res.max_drop:g} drop)", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
