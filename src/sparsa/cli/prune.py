"""`sparsa prune`: prune a local Hugging Face model and save it as a dense-with-zeros model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import err, out, print_json, status, user_errors


def prune_cmd(
    model: Path = typer.Argument(..., help="Local Hugging Face model folder (never modified)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write the pruned model to."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", "-s", help="Fraction to prune, [0, 1). Default 0.5."),
    structure: str = typer.Option("unstructured", "--structure", help="'unstructured', N:M ('2:4') or blocks ('4x1')."),
    method: str = typer.Option("magnitude", "--method", help="Pruning method."),
    targets: Optional[List[str]] = typer.Option(
        None, "--targets", "-t", help="Modules to prune: class names ('Linear') or 're:<regex>' on names. Repeatable."
    ),
    ignore: Optional[List[str]] = typer.Option(
        None, "--ignore", "-i", help="Modules to leave dense (same forms). Default: heads and poolers. Repeatable."
    ),
    scope: str = typer.Option("tensor", "--scope", help="Compare scores per 'tensor' or per output 'row'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (never the source)."),
    json_out: bool = typer.Option(False, "--json", help="Print the per-module report as one JSON object."),
) -> None:
    """Prune a model's linear layers and save the dense-with-zeros result (with sparsa.json recording how).

    Example:  sparsa prune ./my-bert --sparsity 0.7 --structure 4x1 --ignore 're:.*attention.*' --out ./my-bert-70
    """
    from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS
    from ..prune import prune
    from ..runtime.models import load_pretrained, save_pruned
    from ..structure import parse_structure

    with user_errors(), status(not json_out) as step:
        st = parse_structure(structure)
        sp = st.resolve_sparsity(sparsity if sparsity is not None or st.implied_sparsity is not None else 0.5)
        step("loading the model")
        m, tok, name = load_pretrained(model)
        step(f"pruning ({method}, {st}, {sp:.0%})")
        m, report = prune(m, method=method, sparsity=sp, structure=st, targets=targets or DEFAULT_TARGETS,
                          ignore=DEFAULT_IGNORE if ignore is None else ignore, scope=scope)
        step(f"saving to {out_dir}")
        meta = {
            "format_version": 1,
            "method": method,
            "structure": str(st),
            "sparsity": sp,
            "scope": scope,
            "source": name,
            "modules": report.structures(),
        }
        path = save_pruned(m, tok, out_dir, meta, source=model, overwrite=overwrite)
    if json_out:
        print_json({"out": str(path), **report.to_dict(), "achieved_sparsity": report.achieved_sparsity})
        return
    out.print(f"pruned {len(report.modules)} modules of {name} to {report.achieved_sparsity:.1%} zeros "
              f"({method}, {st}); saved to {path}")
    if not report.modules:
        err.print("[yellow]note:[/] no module matched the targets; nothing was pruned", highlight=False)
