"""`sparsa export --dense`: write a packed checkpoint as a folder that plain transformers loads."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import mib, out, print_json, status, user_errors


def export_cmd(
    model: Path = typer.Argument(..., help="Packed checkpoint folder (from `sparsa pack`). Never modified."),
    out_dir: Path = typer.Argument(..., help="Folder to write the dense model to."),
    dense: bool = typer.Option(False, "--dense", help="Unpack every weight into a dense tensor (with its zeros)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists (never the source)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Export a packed checkpoint. With --dense: a Hugging Face folder (config.json, tokenizer, model.safetensors
    written by transformers itself) that `AutoModel.from_pretrained` loads with no sparsa installed, plus a
    sparsa.json recording each module's structure so that `sparsa pack` can pack it again.

    Example:  sparsa export --dense ./my-bert-70-packed ./my-bert-70-dense
    """
    from ..checkpoint.convert import export_dense

    with user_errors(), status(not json_out) as step:
        if not dense:
            raise ValueError("choose what to export: --dense (a plain transformers folder) is the one kind so far")
        r = export_dense(model, out_dir, overwrite=overwrite, status=step)
    if json_out:
        print_json(r.to_dict())
        return
    out.print(f"exported {r.source} -> {r.out}: {r.modules} packed weights written dense ({r.dtype}); weight files "
              f"{mib(r.source_disk_bytes)} packed -> {mib(r.out_disk_bytes)} dense", highlight=False)
