"""`sparsa info`: what a model's weights hold (structure, sparsity, bytes), or what this machine can run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import mib, out, print_json, user_errors


def info(
    model: Optional[Path] = typer.Argument(
        None, help="Model folder: dense, dense-with-zeros (sparsa prune) or packed (sparsa pack). Omit for this machine."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show per linear module the structure, sparsity and bytes dense vs packed (totals in the last line), for a
    dense-with-zeros folder (packed bytes computed) or a packed checkpoint (bytes as stored, every tensor verified);
    without a model, show the CPU features, threads and kernels sparsa can use here. The JSON has per-module rows
    and the totals `dense_bytes`, `sparse_bytes`, `sparsity`, `disk_bytes` (weight files) and `packed`.

    Example:  sparsa info ./my-bert-70 --json
    """
    from ..runtime.jobs import model_info, system_info

    with user_errors():
        if model is None:
            s = system_info()
            if json_out:
                print_json(s)
                return
            out.print(f"sparsa {s['sparsa']}, torch {s['torch']}, {s['machine']}, {s['threads']} threads")
            out.print("CPU features: " + ", ".join(s["cpu_features"]))
            avail = [k["name"] for k in s["kernels"] if k["available"]]
            out.print(f"kernels available here ({len(avail)} of {len(s['kernels'])}): " + ", ".join(avail))
            return
        r = model_info(str(model))
    if json_out:
        print_json(r)
        return
    kind = "packed checkpoint" if r.packed else "dense folder"
    t = Table(title=f"sparsa info: {r.model} ({kind}, weight files {mib(r.disk_bytes)} on disk)")
    for c in ("module", "type", "shape", "structure", "sparsity", "format", "dense", "packed"):
        t.add_column(c, justify="right" if c in ("shape", "sparsity", "dense", "packed") else "left")
    for m in r.modules:
        t.add_row(m.name, m.type, f"{m.shape[0]}x{m.shape[1]}", m.structure, f"{m.sparsity:.1%}", m.format,
                  mib(m.dense_bytes), mib(m.sparse_bytes))
    t.add_row("total", "", "", "", f"{r.sparsity:.1%}", "", mib(r.dense_bytes), mib(r.sparse_bytes), style="bold")
    out.print(t)
