"""`sparsa bench`: latency of a model dense vs through sparsa's sparse kernels, same input, same process."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import mib, out, print_json, status, user_errors


def bench(
    model: Path = typer.Argument(..., help="Local Hugging Face model folder (pruned or dense)."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", "-s", help="Prune to this first (magnitude)."),
    structure: Optional[str] = typer.Option(None, "--structure", help="Structure to prune to first."),
    batch: int = typer.Option(1, min=1, help="Sequences per forward pass."),
    seq: int = typer.Option(128, min=1, help="Tokens per sequence."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per model (median reported)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time a model dense and converted to sparse kernels, and check they agree.

    A model that already holds zeros (from `sparsa prune`) is converted as it is. A dense model is pruned by
    magnitude first (default 50% unstructured, or --sparsity/--structure), which measures speed only.

    Example:  sparsa bench ./my-bert-70 --batch 16 --seq 128
    """
    from ..runtime.jobs import run_bench

    with user_errors(), status(not json_out) as step:
        step("loading, converting and timing")
        r = run_bench(str(model), sparsity, structure, batch=batch, seq=seq, repeats=repeats)
    if json_out:
        print_json(r)
        return
    t = Table(title=f"sparsa bench: {r.model} ({r.structure}, {r.sparsity:.1%} zeros"
                    f"{', pruned by magnitude for timing' if r.pruned_here else ''})")
    for c in ("engine", "median ms", "speedup", "weight bytes"):
        t.add_column(c, justify="right" if c != "engine" else "left")
    t.add_row("torch dense", f"{r.dense_ms:.2f}", "1.00x", mib(r.dense_bytes))
    t.add_row("sparsa sparse", f"{r.sparse_ms:.2f}", f"{r.speedup:.2f}x", mib(r.sparse_bytes))
    out.print(t)
    out.print(f"{r.batch}x{r.seq} tokens, {r.threads} threads; sparse vs dense-with-zeros max rel. error "
              f"{r.max_rel_err:.1e}")
