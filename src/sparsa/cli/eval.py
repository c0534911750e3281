"""`sparsa eval`: quality of a pruned model folder against the dense model it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import out, print_json, status, user_errors


def eval_cmd(
    model: Path = typer.Argument(..., help="Pruned model folder (from `sparsa prune`), or a packed "
                                           "checkpoint (from `sparsa pack` or `sparsa recover`)."),
    text: Optional[Path] = typer.Option(None, "--text", help="Evaluation text for decoders (perplexity)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Dense model folder (default: the one "
                                                                  "the folder's recipe names)."),
    seq_len: int = typer.Option(128, min=2, help="Tokens per perplexity window."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Encoders: mean cosine of held-out sentence embeddings to the dense model (and nearest-neighbour agreement).
    Decoders: perplexity on --text, pruned and dense.

    Example:  sparsa eval ./minilm-sparsegpt-50 --json
    """
    from ..eval.evaluate import evaluate_dir

    with user_errors(), status(not json_out) as step:
        step("evaluating")
        r = evaluate_dir(model, text=text, source=source, seq_len=seq_len)
    if json_out:
        print_json(r)
        return
    if r.kind == "encoder":
        out.print(f"{r.model} ({r.sparsity:.1%} zeros) vs {r.source}: mean cosine {r.cosine_mean:.4f} "
                  f"(min {r.cosine_min:.4f}), nearest-neighbour agreement {r.nn_agreement:.1%}, "
                  f"{r.n_sentences} held-out sentences")
    else:
        dense = f", dense {r.dense_perplexity:.2f}" if r.dense_perplexity is not None else ""
        out.print(f"{r.model} ({r.sparsity:.1%} zeros): perplexity {r.perplexity:.2f}{dense} over {r.tokens} tokens")
