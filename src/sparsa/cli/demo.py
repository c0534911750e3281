"""`sparsa demo`: the main job on the bundled all-MiniLM-L6-v2 (or any local encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import mib, out, print_json, status, user_errors


def demo(
    sparsity: Optional[float] = typer.Option(
        None, "--sparsity", "-s", help="Fraction of weights to prune, in [0, 1). Default 0.5 (N:M: implied)."
    ),
    structure: str = typer.Option(
        "unstructured", "--structure", help="'unstructured', N:M ('2:4', '4:8') or RxC blocks ('4x1', '8x1', '1x4')."
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="Local Hugging Face encoder folder. Default: the bundled all-MiniLM-L6-v2."
    ),
    batch: int = typer.Option(1, min=1, help="Sequences per timed forward pass."),
    seq: int = typer.Option(128, min=1, max=512, help="Tokens per sequence in the timed forward pass."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per model (the median is reported)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Prune an encoder, pack it into sparse kernels and compare it with the dense model in one run.

    Prints per module type the structure and sparsity, the mean cosine similarity of sentence embeddings to the
    dense model on held-out sentences, latency dense vs sparse (same run) and weight bytes dense vs packed.

    Example:  sparsa demo --sparsity 0.8 --structure 4x1
    """
    from ..runtime.jobs import run_demo

    with user_errors(), status(not json_out) as step:
        r = run_demo(str(model) if model else None, sparsity, structure, batch=batch, seq=seq, repeats=repeats,
                     status=step)
    if json_out:
        print_json(r)
        return

    t = Table(title=f"sparsa demo: {r.model}, magnitude pruning to {r.sparsity:.0%} {r.structure}")
    for col, just in [("module type", "left"), ("count", "right"), ("shape", "right"), ("structure", "left"),
                      ("sparsity", "right"), ("format", "left"), ("kernel", "left"), ("dense", "right"),
                      ("packed", "right")]:
        t.add_column(col, justify=just)
    for g in r.modules:
        t.add_row(g.role, str(g.count), f"{g.shape[0]}x{g.shape[1]}", g.structure, f"{g.sparsity:.1%}", g.format,
                  g.kernel, mib(g.dense_bytes), mib(g.sparse_bytes))
    out.print(t)

    s = Table(show_header=True, title="dense vs sparse, same run")
    s.add_column("measure")
    s.add_column("dense", justify="right")
    s.add_column("sparse", justify="right")
    s.add_column("ratio", justify="right")
    s.add_row(f"latency, {r.batch}x{r.seq} tokens, {r.threads} threads (median ms)", f"{r.dense_ms:.2f}",
              f"{r.sparse_ms:.2f}", f"{r.speedup:.2f}x faster" if r.speedup >= 1 else f"{1 / r.speedup:.2f}x slower")
    s.add_row("weight bytes of the pruned Linear layers", mib(r.dense_bytes), mib(r.sparse_bytes),
              f"{r.dense_bytes / max(1, r.sparse_bytes):.2f}x smaller")
    s.add_row(f"embedding cosine to dense, {r.n_sentences} held-out sentences (mean / min)", "1.000",
              f"{r.cosine_mean:.3f} / {r.cosine_min:.3f}", "")
    s.add_row("nearest-neighbour agreement with dense", "100%", f"{r.nn_agreement:.0%}", "")
    s.add_row("sparse kernels vs the dense-with-zeros model (max rel. error)", "", f"{r.max_rel_err:.1e}", "")
    out.print(s)
    if r.cosine_mean < 0.95:
        out.print(
            f"[yellow]note:[/] magnitude pruning alone loses quality on this small model at {r.sparsity:.0%} "
            f"(cosine {r.cosine_mean:.3f}); data-aware one-shot methods and recovery training are the remedy.",
            highlight=False,
        )
    if r.speedup < 1:
        out.print(
            f"[yellow]note:[/] the sparse model is slower here ({r.speedup:.2f}x): at {r.sparsity:.0%} "
            f"{r.structure} the kernels do not beat dense matmul; higher sparsity or block structures pay more.",
            highlight=False,
        )
