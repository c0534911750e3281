"""`sparsa recover`: sparse fine-tuning of a pruned model by distillation from its dense teacher."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import err, out, print_json, user_errors


def recover_cmd(
    pruned: Path = typer.Argument(..., help="Pruned model folder (from `sparsa prune`); never modified."),
    data: Path = typer.Option(..., "--data", "-d", help="Unlabeled text, one sentence or paragraph per line."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the best recovered checkpoint."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Dense model folder (default: the source "
                                                                   "named in PRUNED's sparsa.json)."),
    minutes: float = typer.Option(10.0, "--minutes", "-m", help="Wall-clock budget, evaluations included."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Stop after this many steps (if sooner)."),
    method: str = typer.Option("fixed", "--method", help="fixed (keep PRUNED's masks), gmp, set, rigl, granet, "
                                                         "random, srste or decay."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", "-s", help="Target sparsity: needed by methods "
                                                                            "that move masks (fixed keeps PRUNED's)."),
    structure: Optional[str] = typer.Option(None, "--structure", help="Structure for methods that move masks."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="Per-module sparsity for methods that "
                                             "move masks: uniform (default) or erk."),
    override: Optional[List[str]] = typer.Option(None, "--override", help="PATTERN=SPARSITY: modules (type or "
                                                 "re:name) at their own sparsity, the others adjusted to keep "
                                                 "--sparsity overall. Repeatable; the last match wins."),
    init: Optional[str] = typer.Option(None, "--init", help="Starting masks: current (PRUNED's zeros), dense, "
                                                            "random or magnitude (default: the method's)."),
    schedule_start: float = typer.Option(0.0, "--schedule-start", help="Schedule start, fraction of the run."),
    schedule_end: float = typer.Option(0.75, "--schedule-end", help="Schedule end, fraction of the run."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW, warmup then cosine decay)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sentences or windows per step."),
    seq_len: int = typer.Option(128, "--seq-len", min=8, help="Max tokens per sentence / window length."),
    eval_minutes: float = typer.Option(3.0, "--eval-minutes", help="Held-out evaluation interval."),
    loss: Optional[List[str]] = typer.Option(None, "--loss", help="Loss weights as name=weight (squarehead, "
                                                                  "cosine, mse, kl, lm). Repeatable."),
    group_by_length: bool = typer.Option(True, "--group-by-length/--random-batches", help="Encoders: batch "
                                         "sentences of similar length (less padding, more steps per minute)."),
    precision: str = typer.Option("fp32", "--precision", help="Training passes in fp32, or bf16 (autocast: "
                                  "faster on CPUs and GPUs with bf16 support; weights, optimizer state and "
                                  "evaluation stay fp32)."),
    seed: int = typer.Option(0, help="Seed for data order and random masks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (never an input)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Recover a pruned model's quality by sparse fine-tuning with distillation from the dense teacher:
    SquareHead (per-layer hidden states) plus embedding cosine (encoders) or KL on logits (decoders). Pruned
    weights stay exactly zero; the best checkpoint by held-out evaluation (lines of --data set aside) is saved.

    Example:  sparsa recover ./minilm-24 --teacher ./minilm --data text.txt --minutes 30 --out ./minilm-24-rec
    """
    from ..train.distiller import LossWeights
    from ..train.recovery import RecoverSettings, recover

    with user_errors():
        weights = _loss_weights(loss or [], LossWeights)
        training = {"method": method, "sparsity": sparsity, "init": init, "allocation": allocation,
                    "overrides": [_override(o) for o in override or []] or None}
        if structure is not None:
            training["structure"] = structure
        settings = RecoverSettings(minutes=minutes, max_steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len,
                                   eval_minutes=eval_minutes, seed=seed, weights=weights,
                                   group_by_length=group_by_length, precision=precision,
                                   training={k: v for k, v in training.items() if v is not None},
                                   schedule_start=schedule_start, schedule_end=schedule_end)
        with _Progress(enabled=not json_out) as progress:
            res = recover(pruned, data, out_dir, teacher=teacher, settings=settings, overwrite=overwrite,
                          on_event=progress.event)
    if json_out:
        print_json(res.to_dict())
        return
    arrow = "higher is better" if res.metric == "cosine_mean" else "lower is better"
    out.print(f"recovered {pruned} -> {res.out}: held-out {res.metric} {res.before:.4f} -> {res.best:.4f} "
              f"(best at step {res.best_step} of {res.steps}; {arrow}); {res.sparsity:.1%} zeros kept exactly; "
              f"{res.seconds / 60:.1f} min")


def _override(item: str) -> dict:
    """'PATTERN=SPARSITY' -> one entry of the training config's overrides."""
    pattern, _, value = item.rpartition("=")
    try:
        sparsity = float(value)
    except ValueError:
        sparsity = None
    if not pattern or sparsity is None:
        raise ValueError(f"--override takes PATTERN=SPARSITY (e.g. 're:.*layer\\.5\\..*=0.7'), got '{item}'")
    return {"targets": [pattern], "sparsity": sparsity}


def _loss_weights(items: list[str], cls):
    known = ("squarehead", "cosine", "mse", "kl", "lm", "temperature")
    vals = {}
    for it in items:
        name, sep, value = it.partition("=")
        if not sep or name not in known:
            raise ValueError(f"--loss '{it}' must be name=weight with name one of {', '.join(known)}")
        try:
            vals[name] = float(value)
        except ValueError:
            raise ValueError(f"--loss '{it}': weight '{value}' is not a number") from None
    return cls(**vals)


class _Progress:
    """A rich progress bar on stderr: steps, loss, and the held-out measure at each evaluation."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.task = None
        self.metric = ""

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("setting up", total=None, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def event(self, kind: str, info: dict) -> None:
        if self.bar is None:
            return
        if kind == "setup":
            self.bar.update(self.task, description=info["what"])
        elif kind == "timed":
            self.metric = info["metric"]
            self.bar.update(self.task, description="recovering", total=info["total_steps"],
                            info=f"{self.metric} before {info['before']:.4f}")
        elif kind == "step":
            if info["step"] % 10 == 0 or info["step"] == info["total"]:
                self.bar.update(self.task, completed=info["step"], info=f"loss {info['loss']:.4f}")
        elif kind == "eval":
            self.bar.console.print(f"step {info['step']}: held-out {self.metric} {info['metric']:.4f} "
                                   f"({info['seconds'] / 60:.1f} min)", highlight=False)
        elif kind == "saved":
            self.bar.console.print(f"  best so far: saved to {info['out']}", highlight=False)
        elif kind == "unsettled":
            self.bar.console.print(f"[yellow]warning:[/] the run ended at step {info['step']}, before its "
                                   f"schedule's end (step {info['end_step']}): the saved checkpoint has not reached "
                                   "the final masks", highlight=False)
