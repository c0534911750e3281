"""`sparsa sweep`: quality vs sparsity per method, with the essential-sparsity knee, as a table and a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import err, out, print_json, status, user_errors


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--sparsities '{text}' must be comma-separated numbers, e.g. 0.3,0.5,0.7") from None


def sweep_cmd(
    model: Optional[Path] = typer.Argument(None, help="Local HF model folder. Default: the bundled all-MiniLM-L6-v2."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", "-c", help="Calibration text file."),
    methods: str = typer.Option("magnitude,wanda,sparsegpt", "--methods", help="Comma-separated methods."),
    sparsities: str = typer.Option("0.3,0.5,0.6,0.7,0.8", "--sparsities", help="Comma-separated sparsities."),
    structure: str = typer.Option("unstructured", "--structure", help="Structure ('unstructured', '4x1', ...)."),
    max_drop: float = typer.Option(0.05, "--max-drop", help="Quality drop that still counts as kept: 1 - cosine "
                                                            "(encoders) or relative perplexity rise (decoders)."),
    text: Optional[Path] = typer.Option(None, "--text", help="Evaluation text for decoders (perplexity)."),
    samples: int = typer.Option(128, min=1, help="Calibration samples."),
    seq_len: int = typer.Option(128, min=2, help="Tokens per calibration sample and per perplexity window."),
    plot: Optional[Path] = typer.Option(Path("sweep.png"), "--plot", help="Where to write the PNG plot."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Prune with each method at each sparsity, measure quality against the dense model, report the
    essential-sparsity knee (largest sparsity within --max-drop, and where the slope breaks).

    Example:  sparsa sweep --calibration text.txt --methods wanda,sparsegpt --sparsities 0.4,0.5,0.6,0.7 --plot knee.png
    """
    import torch

    from ..eval import embedding_fidelity, encode, heldout_sentences, perplexity
    from ..prune import CalibrationConfig
    from ..prune.calibration import is_causal_lm
    from ..prune.methods import get_method
    from ..prune.sweep import plot_sweep, run_sweep
    from ..runtime.models import DEFAULT_MODEL_NAME, load_encoder, load_pretrained
    from ..structure import check_sparsity, parse_structure

    with user_errors(), status(not json_out) as step:
        ms = [m.strip() for m in methods.split(",") if m.strip()]
        for m in ms:
            get_method(m)
        sps = [check_sparsity(s) for s in _floats(sparsities)]
        parse_structure(structure)
        step("loading the model")
        if model is None:
            net, tok, name = load_encoder(None)
        else:
            net, tok, name = load_pretrained(model)
        if is_causal_lm(net):
            if text is None:
                raise ValueError("a decoder's quality is its perplexity: pass --text FILE (held-out text)")
            body = text.read_text(encoding="utf-8")
            quality, higher, metric = (lambda m: perplexity(m, tok, body, seq_len=seq_len)), False, "perplexity"
        else:
            sents = heldout_sentences()
            ref = encode(net, tok, sents)
            quality = lambda m: embedding_fidelity(ref, encode(m, tok, sents)).cosine_mean  # noqa: E731
            higher, metric = True, "cosine_mean"
        report = lambda p: step(f"{p.method} at {p.sparsity:.0%}: {metric} {p.quality:.4f}")  # noqa: E731
        step("sweeping")
        res = run_sweep(net, tok, name if model is not None else DEFAULT_MODEL_NAME, ms, sps, structure,
                        str(calibration) if calibration else None, max_drop, quality, higher, metric,
                        prune_kwargs={"calibration_config": CalibrationConfig(samples=samples, seq_len=seq_len)}, on_point=report)
        if plot is not None:
            plot_sweep(res, plot)
    if json_out:
        print_json(res)
        return
    t = Table(title=f"sparsa sweep: {res.model}, {res.structure} ({metric}; dense {res.dense_quality:.4f})")
    t.add_column("method")
    for s in sps:
        t.add_column(f"{s:.0%}", justify="right")
    t.add_column(f"knee (drop <= {max_drop:g})", justify="right")
    t.add_column("slope breaks after", justify="right")
    for m in ms:
        q = {p.sparsity: p.quality for p in res.points if p.method == m}
        k = res.knees[m]
        t.add_row(m, *[f"{q[s]:.4f}" for s in sps],
                  "none" if k["within_drop"] is None else f"{k['within_drop']:.0%}",
                  "-" if k["slope_break"] is None else f"{k['slope_break']:.0%}")
    out.print(t)
    if plot is not None:
        err.print(f"plot written to {plot}", highlight=False)
