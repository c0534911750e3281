"""`sparsa prune`: prune a local Hugging Face model and save it as a dense-with-zeros model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ._common import err, out, print_json, status, user_errors


def parse_bytes(text: str) -> int:
    """'2GB', '512MiB', '1.5G', '100000' -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?i?b?)\s*", text.lower())
    if not m:
        raise ValueError(f"--max-memory '{text}' is not a size; use e.g. 512MB, 2GB, 1.5GiB")
    unit = m.group(2).rstrip("b").rstrip("i")
    return int(float(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[unit])


def prune_cmd(
    model: Path = typer.Argument(..., help="Local Hugging Face model folder (never modified)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write the pruned model to."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", "-s", help="Fraction to prune, [0, 1). Default 0.5."),
    structure: Optional[str] = typer.Option(None, "--structure",
                                            help="'unstructured' (default), N:M ('2:4') or blocks ('4x1')."),
    method: Optional[str] = typer.Option(None, "--method", help="magnitude (default), wanda or sparsegpt."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe with per-module settings (replaces "
                                                                "--method/--sparsity/--structure/--allocation)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", "-c",
                                               help="Calibration text file (one sentence or paragraph per line)."),
    samples: int = typer.Option(128, min=1, help="Calibration samples (sentences, or windows for decoders)."),
    seq_len: int = typer.Option(128, min=1, help="Tokens per calibration sample (at most)."),
    seed: int = typer.Option(0, help="Seed for sampling calibration text (same seed, same masks)."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="uniform (default), owl or erk."),
    dsnot: bool = typer.Option(False, "--dsnot", help="Refine each mask with DSnoT (needs --calibration)."),
    targets: Optional[List[str]] = typer.Option(
        None, "--targets", "-t", help="Modules to prune: class names ('Linear') or 're:<regex>' on names. Repeatable."
    ),
    ignore: Optional[List[str]] = typer.Option(
        None, "--ignore", "-i", help="Modules to leave dense (same forms). Default: heads and poolers. Repeatable."
    ),
    scope: Optional[str] = typer.Option(None, "--scope", help="Compare scores per 'tensor' or per output 'row' "
                                                              "(default: the method's own)."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory cap for the weights (e.g. 2GB): a "
                                             "larger checkpoint is pruned block by block from disk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (never the source)."),
    json_out: bool = typer.Option(False, "--json", help="Print the per-module report as one JSON object."),
) -> None:
    """Prune a model's linear layers and save the dense-with-zeros result (with sparsa.json recording how).

    Data-aware methods (wanda, sparsegpt), --dsnot and --allocation owl need --calibration text.

    Example:  sparsa prune ./my-bert --method sparsegpt --sparsity 0.5 --structure 2:4 --calibration text.txt --out ./my-bert-24
    """
    from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS
    from ..prune import CalibrationConfig, load_recipe, prune
    from ..prune.api import _recipe_from_kwargs
    from ..prune.lazy import checkpoint_bytes, prune_checkpoint
    from ..runtime.models import load_pretrained, save_pruned

    with user_errors(), status(not json_out) as step:
        cfg = CalibrationConfig(samples=samples, seq_len=seq_len, seed=seed)
        if recipe is not None:
            given = [f for f, v in (("--method", method), ("--sparsity", sparsity), ("--structure", structure),
                                    ("--allocation", allocation), ("--targets", targets), ("--ignore", ignore),
                                    ("--scope", scope)) if v]
            if given or dsnot:
                raise ValueError(f"--recipe replaces {', '.join(given + (['--dsnot'] if dsnot else []))}; "
                                 f"put those settings in the recipe")
            rec = load_recipe(recipe)
        else:
            rec = _recipe_from_kwargs(method or "magnitude", sparsity, structure or "unstructured",
                                      targets or DEFAULT_TARGETS, DEFAULT_IGNORE if ignore is None else ignore, scope,
                                      allocation or "uniform", dsnot, 0.08, 5.0, cfg)
        if not model.is_dir():
            raise FileNotFoundError(f"model folder '{model}' does not exist; pass a local Hugging Face model folder")
        src = str(model.resolve())
        cap = parse_bytes(max_memory) if max_memory else None
        # "method" is the method's registry name (what the checkpoint index records per module); "summary" is for people
        meta = {"format_version": 1, "method": rec.prune[0].method if len(rec.prune) == 1 else "recipe",
                "summary": rec.summary(), "source": src, "recipe": rec.model_dump(),
                "calibration": None if calibration is None else {"file": str(calibration), **rec.calibration.model_dump()}}
        if cap is not None and checkpoint_bytes(model) > cap:
            step(f"pruning block by block from disk ({rec.summary()}; weights exceed {max_memory})")
            from ..prune.heap import map_large_allocations
            from ..runtime.models import _load_tokenizer

            map_large_allocations()  # this process only prunes: large tensors in their own mappings

            tok = _load_tokenizer(model)
            report = prune_checkpoint(model, out_dir, rec, calibration, meta, tokenizer=tok, overwrite=overwrite,
                                      progress=not json_out)
            path = out_dir.resolve()
        else:
            step("loading the model")
            m, tok, name = load_pretrained(model)
            step(f"pruning ({rec.summary()})")
            m, report = prune(m, rec, calibration=calibration, tokenizer=tok, progress=not json_out)
            step(f"saving to {out_dir}")
            meta["structure"] = report.structure
            meta["sparsity"] = report.sparsity
            meta["modules"] = report.structures()
            path = save_pruned(m, tok, out_dir, meta, source=model, overwrite=overwrite)
    if json_out:
        print_json({"out": str(path), **report.to_dict(), "achieved_sparsity": report.achieved_sparsity,
                    "mean_recon_error": report.mean_recon_error})
        return
    if report.modules and report.modules[0].recon_error is not None:
        t = Table(title="per module: achieved sparsity and reconstruction error ||WX - W'X||^2 / ||WX||^2")
        for c in ("module", "method", "structure", "target", "sparsity", "rel. error"):
            t.add_column(c, justify="left" if c in ("module", "method", "structure") else "right")
        for r in report.modules:
            t.add_row(r.name, r.method + ("+dsnot" if r.dsnot else ""), r.structure, f"{(r.target or 0):.1%}",
                      f"{r.sparsity:.1%}", f"{r.recon_error:.4f}")
        out.print(t)
    out.print(f"pruned {len(report.modules)} modules of {model} to {report.achieved_sparsity:.1%} zeros "
              f"({rec.summary()}); saved to {path}")
    if not report.modules:
        err.print("[yellow]note:[/] no module matched the targets; nothing was pruned", highlight=False)
