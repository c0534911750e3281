"""`sparsa pack` (also `sparsa save`): write a model folder as a compact packed checkpoint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import err, mib, out, print_json, status, user_errors


def pack_cmd(
    model: Path = typer.Argument(..., help="Model folder: pruned (dense-with-zeros), any Hugging Face folder, or a "
                                           "packed checkpoint to re-pack. Never modified."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write the packed checkpoint to."),
    structure: Optional[str] = typer.Option(
        None, "--structure", help="Structure for modules without a recorded one ('unstructured', '2:4', '4x1', ...). "
                                  "Default: recorded in sparsa.json, else detected from the zeros."),
    dtype: Optional[str] = typer.Option(
        None, "--dtype", help="Store every floating tensor as 'float32' or 'bfloat16'. Default: as in the source."),
    max_shard_size: str = typer.Option("2GB", "--max-shard-size", help="Largest shard file ('500MB', '2GB', bytes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (never the source)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Pack a model's sparse weights into a compact checkpoint: safetensors shards holding each weight's packed
    tensors plus an index with format, structure, shape, dtype and a checksum per tensor. Modules whose weight
    holds zeros are packed when that saves bytes; everything else is stored as it is. Load it back with
    `sparsa.load(DIR)`; `sparsa export --dense` turns it into a folder plain transformers loads.
    `sparsa save` and `sparsa pack` are the same command.

    Example:  sparsa pack ./my-bert-70 --out ./my-bert-70-packed --dtype bfloat16
    """
    from ..checkpoint.convert import pack_folder

    with user_errors(), status(not json_out) as step:
        r = pack_folder(model, out_dir, structure=structure, dtype=dtype, max_shard_size=max_shard_size,
                        overwrite=overwrite, status=step)
    if json_out:
        print_json(r.to_dict())
        return
    packed = [m for m in r.modules if m.packed]
    kinds = Counter((m.structure, m.format) for m in packed)
    t = Table(title=f"sparsa pack: {r.source} -> {r.out} ({r.dtype})")
    for c in ("structure", "format", "modules", "dense", "packed"):
        t.add_column(c, justify="right" if c in ("modules", "dense", "packed") else "left")
    for (st, fmt), n in sorted(kinds.items()):
        ms = [m for m in packed if (m.structure, m.format) == (st, fmt)]
        t.add_row(st, fmt, str(n), mib(sum(m.dense_bytes for m in ms)), mib(sum(m.sparse_bytes for m in ms)))
    t.add_row("weight files on disk", "", "", mib(r.source_disk_bytes), mib(r.out_disk_bytes), style="bold")
    out.print(t)
    if not packed:
        err.print("[yellow]note:[/] no weight holds enough zeros to pack; the checkpoint stores the model dense",
                  highlight=False)
    kept = [m.name for m in r.modules if not m.packed]
    if kept:
        err.print(f"[yellow]note:[/] {len(kept)} module(s) with zeros kept dense (packing would not save bytes): "
                  f"{', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}", highlight=False)
