"""The recovery job behind ``sparsa recover``: sparse fine-tuning of a pruned model by distillation from its
dense teacher on unlabeled text, in a time budget, with periodic held-out evaluation and the best checkpoint
saved atomically.

Order of work: every input is checked first (folders, teacher architecture, data, schedule, structure against
the shapes) so that bad input fails in seconds with one message, never after training started; then a few
timed steps fix how many optimizer steps fit the budget (schedules are placed on steps); then the loop.
Neither input folder is ever written to. The output is sparsa's packed checkpoint (``sparsa.save``: packed
sparse weights, checksums, the recipe in its index; ``sparsa.load`` reads it), written to a temporary folder
and renamed into place each time a better checkpoint is found. The pruned input may be a dense-with-zeros
folder (``sparsa prune``) or a packed checkpoint (a recovered model can be recovered further).

Held-out evaluation uses lines of the data file set aside before training (every k-th line): mean cosine of
sentence embeddings to the teacher (encoders) or perplexity of the held-out text (decoders).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..checkpoint.reader import recipe_of
from ..eval.embeddings import embedding_fidelity, encode
from ..eval.perplexity import perplexity
from ..prune.calibration import is_causal_lm
from ..runtime.models import ModelLoadError, load_pretrained
from ..structure import parse_structure
from .config import load_config
from .controller import SparseTraining, planned_sparsities
from .data import DecoderWindows, EncoderBatches, read_lines, split_lines
from .distiller import PRECISIONS, Distiller, LossWeights, check_teacher
from .methods import METHODS
from .schedules import ScheduleError
from .targets import find_targets

__all__ = ["RecoverSettings", "RecoverResult", "EvalPoint", "recover", "validation_metric"]


@dataclass
class RecoverSettings:
    minutes: float = 10.0  # wall-clock budget of the whole job, evaluations and saves included
    max_steps: int | None = None  # stop earlier than the budget
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay from lr down to lr * this
    batch_size: int | None = None  # default: 32 sentences (encoders), 16 windows (decoders)
    seq_len: int = 128  # max tokens per sentence (encoders), window length (decoders)
    eval_minutes: float = 3.0  # held-out evaluation interval
    valid_lines: int = 256
    seed: int = 0
    dropout: bool = False  # the student's dropout while distilling (off: it matches the teacher's eval outputs)
    group_by_length: bool = True  # encoders: batches of sentences of similar length (data.EncoderBatches)
    precision: str = "fp32"  # of the training passes (distiller.PRECISIONS); evaluation is always fp32
    weights: LossWeights = field(default_factory=LossWeights)
    # sparse training settings (train.config): method, sparsity, structure, ...; schedule as fractions of the run
    training: dict = field(default_factory=dict)
    schedule_start: float = 0.0
    schedule_end: float = 0.75

    def check(self) -> None:
        if not (self.minutes > 0):
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if not (0.0 <= self.schedule_start <= 1.0 and 0.0 <= self.schedule_end <= 1.0):
            raise ScheduleError(f"schedule start and end are fractions of the run in [0, 1], got "
                                f"{self.schedule_start} and {self.schedule_end}")
        if self.schedule_end <= self.schedule_start:
            raise ScheduleError(f"the schedule ends ({self.schedule_end:g} of the run) before it starts "
                                f"({self.schedule_start:g}); the end must come after the start")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")


@dataclass
class EvalPoint:
    step: int
    seconds: float
    loss: float | None
    metric: float  # cosine_mean (encoders) or perplexity (decoders) on the held-out lines
    extra: dict = field(default_factory=dict)  # what a monitor measured (e.g. sparsa's held-out sentences)


@dataclass
class RecoverResult:
    out: str
    kind: str
    metric: str
    before: float
    best: float
    best_step: int
    final: float
    steps: int
    total_steps: int
    seconds: float
    seconds_per_step: float
    sparsity: float
    curve: list[EvalPoint]
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def validation_metric(kind: str) -> tuple[str, bool]:
    """(name, higher is better) of the held-out measure for an encoder or a decoder."""
    return ("cosine_mean", True) if kind == "encoder" else ("perplexity", False)


class _Validator:
    def __init__(self, kind: str, teacher: nn.Module, tokenizer, lines: list[str], seq_len: int):
        self.kind, self.tok, self.lines, self.seq_len = kind, tokenizer, lines, seq_len
        if kind == "encoder":
            self.reference = encode(teacher, tokenizer, lines, max_length=seq_len)  # (S, H), computed once
        else:
            self.text = "\n".join(lines)
            n = len(tokenizer(self.text, add_special_tokens=False)["input_ids"])
            if n <= seq_len:
                raise ValueError(f"the held-out part of the data has {n} tokens; perplexity windows of {seq_len} "
                                 f"need more text (use a larger data file)")

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        was = model.training
        model.eval()
        try:
            if self.kind == "encoder":
                return embedding_fidelity(self.reference, encode(model, self.tok, self.lines,
                                                                 max_length=self.seq_len)).cosine_mean
            return perplexity(model, self.tok, self.text, seq_len=self.seq_len)
        finally:
            model.train(was)


def _load_student(path: Path) -> tuple[nn.Module, object | None]:
    """(model, tokenizer or None) of a pruned folder, dense-with-zeros or packed (unpacked into plain modules to
    train); each module's structure is recorded on it (``sparsa_structure``) either way."""
    from ..checkpoint.reader import is_packed

    if not is_packed(path):
        model, tok, _ = load_pretrained(path)
        return model, tok
    from ..checkpoint.model import load_packed
    from ..runtime.models import _load_tokenizer

    model, ckpt = load_packed(path, dense=True)
    for name, info in ckpt.index.sparsa.modules.items():
        model.get_submodule(name).sparsa_structure = str(info.structure)
    return model, _load_tokenizer(path)


_REPLAN_AT = 20  # optimizer steps after which the run is sized again on measured step times


def _resized(cfg, step: int, total: int, schedule: Callable[[int], object]):
    """The training config of a run re-sized to ``total`` steps at ``step``: a schedule still to come is placed
    on the new length (``schedule(total)``); one that has ended keeps its steps, its masks being final, and
    only the run (and the learning-rate decay, which reads the length) gets longer or shorter."""
    if METHODS[cfg.method].scheduled and step >= cfg.resolved_end:
        return load_config(cfg, total_steps=max(total, cfg.resolved_end))
    return schedule(total)


def _lr_lambda(warmup: int, sizes: dict, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to ``min_ratio`` at step ``sizes["total"]`` (read at every call)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, sizes["total"] - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return f


def recover(
    pruned: str | Path,
    data: str | Path,
    out: str | Path,
    teacher: str | Path | None = None,
    settings: RecoverSettings | None = None,
    overwrite: bool = False,
    monitor: Callable[[nn.Module], dict] | None = None,
    on_event: Callable[[str, dict], None] | None = None,
) -> RecoverResult:
    """Recover the pruned model folder ``pruned`` by distillation from ``teacher`` (default: the dense folder
    its sparsa.json names) on the text file ``data``; the best checkpoint goes to ``out``.

    ``monitor(model) -> dict`` is called at every evaluation (its numbers go into the curve, never into any
    decision); ``on_event(kind, info)`` reports progress: "setup", "timed", "step", "eval", "saved", "done".
    """
    s = settings or RecoverSettings()
    s.check()
    emit = on_event or (lambda _k, _i: None)
    t_job = time.perf_counter()
    pruned, out = Path(pruned), Path(out)
    if not pruned.is_dir():
        raise FileNotFoundError(f"pruned model folder '{pruned}' does not exist")
    meta = recipe_of(pruned)  # a damaged one: CheckpointError naming the file
    if teacher is None:
        teacher = meta.get("source")
        if not teacher:
            raise ValueError(f"'{pruned}' has no sparsa.json naming the dense model it came from; pass --teacher")
    teacher = Path(teacher)
    if not teacher.is_dir():
        raise FileNotFoundError(f"teacher folder '{teacher}' does not exist; pass the dense model's folder")
    for src, what in ((pruned, "pruned model"), (teacher, "teacher")):
        if out.resolve() == src.resolve():
            raise ModelLoadError(f"refusing to write over the {what} '{src}'; choose another --out")
    if out.exists() and not overwrite:
        raise ModelLoadError(f"'{out}' already exists; choose another --out or pass --overwrite")

    # what needs no model first (the data, the training settings on a provisional run length: unknown names,
    # N:M contradictions, a schedule that ends before it starts), so that bad input fails in a second
    lines = read_lines(data)
    train_lines, valid_lines = split_lines(lines, max_valid=s.valid_lines)
    training = dict(s.training)
    cfg = load_config(training, total_steps=1000, start_step=int(s.schedule_start * 1000),
                      end_step=max(1, int(s.schedule_end * 1000)))

    emit("setup", {"what": "loading models"})
    student, tok = _load_student(pruned)
    dense, t_tok, _ = load_pretrained(teacher)
    check_teacher(student, dense)
    tok = tok or t_tok
    if tok is None:
        raise ModelLoadError(f"neither '{pruned}' nor '{teacher}' has tokenizer files; recovery needs them")
    kind = "decoder" if is_causal_lm(student) else "encoder"
    # structures the model's shapes do not allow; overrides that select nothing or that the rest cannot absorb
    planned_sparsities(student, cfg, find_targets(student, parse_structure(cfg.structure), cfg.targets, cfg.ignore))
    if tok.pad_token is None and kind == "decoder" and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    bs = s.batch_size or (32 if kind == "encoder" else 16)
    batches = (EncoderBatches(tok, train_lines, bs, s.seq_len, s.seed, s.group_by_length) if kind == "encoder"
               else DecoderWindows(tok, train_lines, bs, s.seq_len, s.seed))
    distiller = Distiller(student, dense, kind, s.weights, s.precision)
    validate = _Validator(kind, dense, tok, valid_lines, s.seq_len)
    metric_name, higher = validation_metric(kind)
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)

    # time a few steps (forward and backward, no update) and one evaluation to size the run
    emit("setup", {"what": "timing"})
    student.train(s.dropout)
    loss, _ = distiller.loss(next(batches))
    loss.backward()
    t = time.perf_counter()
    n_timed = 4
    for _ in range(n_timed):
        loss, _ = distiller.loss(next(batches))
        loss.backward()
    sec_step = (time.perf_counter() - t) / n_timed * 1.05  # + optimizer and mask bookkeeping
    student.zero_grad(set_to_none=True)
    t = time.perf_counter()
    before = validate(student)
    extra0 = monitor(student) if monitor else {}
    sec_eval = time.perf_counter() - t + 2.0  # + saving the checkpoint
    deadline = t_job + s.minutes * 60

    def plan(sec_per_step: float, done: int) -> int:
        """Optimizer steps that fit what is left of the budget (evaluations and saves included)."""
        left = deadline - time.perf_counter() - sec_eval  # the last evaluation always runs
        interval = max(1.0, s.eval_minutes * 60)  # training time between evaluations
        fit = done + int(max(0.0, left) * interval / (interval + sec_eval) / sec_per_step)
        return max(done + 1, min(s.max_steps or fit, fit))

    def schedule(total: int):
        return load_config(training, total_steps=total, start_step=int(s.schedule_start * total),
                           end_step=max(int(s.schedule_start * total) + 1, int(s.schedule_end * total)))

    total = plan(sec_step, 0)
    cfg = schedule(total)
    emit("timed", {"seconds_per_step": sec_step, "total_steps": total, "before": before, "metric": metric_name})

    sparse = SparseTraining(student, cfg)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=s.lr,
                            weight_decay=s.weight_decay)
    sparse.attach(opt)
    sizes = {"total": total}  # the LR schedule reads the run length at each step: a re-plan moves its end
    lr_shape = _lr_lambda(min(s.warmup_steps, total // 10 + 1), sizes, s.min_lr_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_shape)
    curve = [EvalPoint(0, time.perf_counter() - t_job, None, before, extra0)]
    best, best_step = -math.inf if higher else math.inf, -1

    def evaluate_and_keep(step: int, last_loss: float | None, last: bool = False) -> float:
        nonlocal best, best_step
        model = sparse.sparse_copy() if sparse.soft else student  # soft masks: evaluate (and save) W * M
        value = validate(model)
        extra = monitor(model) if monitor else {}
        point = EvalPoint(step, time.perf_counter() - t_job, last_loss, value, extra)
        curve.append(point)
        emit("eval", asdict(point))
        # a scheduled method's masks reach their final sparsity (and stop moving) at the schedule's end: an
        # earlier, denser point would score better and must not become the saved model
        settled = not METHODS[cfg.method].scheduled or step >= cfg.resolved_end
        if last and best_step < 0 and not settled:
            warnings.warn(f"the run ended at step {step}, before its schedule's end (step {cfg.resolved_end}): the "
                          "saved checkpoint has not reached the final masks; give it more time", stacklevel=3)
            emit("unsettled", {"step": step, "end_step": cfg.resolved_end})
        if (settled and better(value, best)) or (last and best_step < 0):
            best, best_step = value, step
            _save(model, sparse, tok, out, pruned, meta, teacher, s, cfg, curve, step, value, metric_name)
            emit("saved", {"step": step, metric_name: value, "out": str(out)})
        return value

    step, last_eval, run_loss = 0, time.perf_counter(), None
    t_loop, eval_seconds = time.perf_counter(), 0.0
    scheduled, replan_at = METHODS[cfg.method].scheduled, set()
    student.train(s.dropout)
    while step < total and time.perf_counter() + sec_eval < deadline:
        if s.max_steps is None and (step == _REPLAN_AT or (step in replan_at and (
                not scheduled or step >= cfg.resolved_end))):
            # a few timed steps are a noisy estimate (batch lengths vary, a neighbour may hold a core): size the
            # run again on measured steps -- once, early, before any schedule has moved a mask (update
            # intervals are longer); then after every evaluation where only the learning rate follows the
            # length: always without a schedule, and once a schedule has ended. (A GMP run of all-MiniLM-L6-v2
            # sized only at step 20 stopped at 56.9 of its 60 minutes: later steps ran faster than the first.)
            measured = (time.perf_counter() - t_loop - eval_seconds) / step
            new_total = plan(measured, step)
            if abs(new_total - total) > 0.02 * total:
                total = sizes["total"] = new_total
                cfg = sparse.cfg = _resized(cfg, step, total, schedule)
                emit("replanned", {"seconds_per_step": measured, "total_steps": total,
                                   "end_step": cfg.resolved_end})
            sec_step = measured
        loss, parts = distiller.loss(next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sparse.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        run_loss = float(loss.detach()) if run_loss is None else 0.95 * run_loss + 0.05 * float(loss.detach())
        emit("step", {"step": step, "total": total, "loss": float(loss.detach()), **parts})
        if time.perf_counter() - last_eval >= s.eval_minutes * 60 and step < total:
            t_eval = time.perf_counter()
            evaluate_and_keep(step, run_loss)
            last_eval = time.perf_counter()
            eval_seconds += last_eval - t_eval
            replan_at.add(step)
    final = evaluate_and_keep(step, run_loss, last=True)
    sparse.finalize()
    result = RecoverResult(str(out.resolve()), kind, metric_name, before, best, best_step, final, step, total,
                           time.perf_counter() - t_job, sec_step, sparse.sparsity(), curve, cfg.model_dump())
    emit("done", result.to_dict())
    return result


def _save(model: nn.Module, sparse: SparseTraining, tok, out: Path, pruned: Path, meta: dict, teacher: Path,
          s: RecoverSettings, cfg, curve: list[EvalPoint], step: int, value: float, metric: str) -> None:
    """Write ``model`` (masks applied) to ``out`` as a packed checkpoint, atomically (temporary folder, then
    rename), with the recipe saying how it was made."""
    from ..checkpoint import save

    structures = {r.name: r.structure for r in sparse.report()}
    for name, st in structures.items():  # what sparsa.save packs, and in which structure
        model.get_submodule(name).sparsa_structure = st
    record = {
        "format_version": 1,
        "method": "recover",
        "summary": f"recovered by distillation ({cfg.method} masks) from {meta.get('summary', 'a pruned model')}",
        "source": str(teacher.resolve()),
        "structure": ", ".join(sorted(set(structures.values()))),
        "sparsity": sparse.sparsity(),
        "modules": structures,
        "recovery": {"step": step, metric: value, "training": cfg.model_dump(),
                     "settings": {k: v for k, v in asdict(s).items() if k != "training"},
                     "curve": [asdict(p) for p in curve]},
        "pruned": meta or None,
    }
    save(model, out, tok, recipe=record, source=pruned, overwrite=True)
