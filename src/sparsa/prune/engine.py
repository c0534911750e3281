"""The calibration engine, written once for every method: it walks a model's transformer blocks in order,
keeping one block's activations, and hands each module's weight and input statistics to the method's math.

For each block:

1. the block's captured calls (one per calibration batch) are the inputs: the dense model's for block 0,
   the already-pruned previous block's outputs after that (``sequential=True``: each block is pruned for the
   inputs it will really see), or the dense model's throughout (``sequential=False``, to compare methods on
   identical inputs);
2. with ``true_sequential`` the block's target modules are split into stages by the input they read (q/k/v
   read one tensor, then the attention output, then the MLP's up/gate, then its down projection), found by
   one probe forward; each stage's statistics are gathered with the earlier stages already pruned, once for
   all the modules of the stage (they read the same tensor), and each forward stops where the stage's first
   module would start;
3. each module is pruned (method, then DSnoT if asked), and its achieved sparsity and relative
   reconstruction error ||WX - W'X||^2 / ||WX||^2 are recorded and logged (exact: from X^T X, from
   SparseGPT's factor of it, or, for methods that need no X^T X on a module where it would outweigh the
   weight, from the module's inputs in one more forward);
4. the block is run once more to produce the next block's inputs; an optional loader brings the block's
   weights in before and takes them out after (bounded memory, see prune/lazy.py).

Padding tokens (attention mask 0) never enter the statistics. Peak memory: the model (or, with a loader, one
block: the loader holds the non-block weights only while block 0's inputs are captured), the calibration
hidden states of one block boundary, one stage's X^T X (SparseGPT's factor is computed in its storage unless
DSnoT still needs it; Wanda and magnitude skip it where it is larger than the weight) and one module's
pruning working set; with a loader that parks (``ParkingLoader``), SparseGPT's stages are pruned with the
block's other weights out of memory, so that X^T X and the working set replace them instead of adding to
them. With a loader, the calibration batches are also split so that one forward's widest activation stays a
small fraction of a block (``bounded_call_tokens``); the statistics are the same sums.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable, Protocol

import torch
from torch import nn

from ..masks import zero_pruned_
from ..modules import weight_out_in
from ..structure import Structure
from .blocks import BlockCall, capture_first_block, find_blocks, forward_extras, run_block
from .dsnot import dsnot as dsnot_refine
from .experts import ExpertInputs, expert_slice
from .heap import release_freed_memory
from .methods import Method
from .sparsegpt import HessianConsumedError
from .stats import InputStats, diff_rows

__all__ = ["Plan", "Outcome", "BlockLoader", "walk_blocks", "prune_modules", "prune_without_data", "gather_stats",
           "prune_one", "bounded_call_tokens"]

log = logging.getLogger("sparsa.prune")


@dataclass
class Plan:
    """What to do with one module: resolved from the recipe (or keyword arguments) and the allocation."""

    name: str
    module: nn.Module
    method: Method
    structure: Structure
    sparsity: float
    scope: str
    dsnot: bool = False
    entry: int = 0  # index of the recipe entry that chose these settings
    param: str | None = None  # for one expert of a fused (num_experts, out, in) parameter: its name...
    index: int | None = None  # ...and the expert's index (see prune/experts.py)

    def weight(self) -> torch.Tensor:
        """The (out, in) view of the weight this plan prunes."""
        if self.param is None:
            return weight_out_in(self.module)
        return expert_slice(self.module, self.param, self.index)

    @property
    def fused_key(self) -> str | None:
        """'<module>.<param>' for expert slices (the unit their inputs are captured by), else None."""
        return None if self.param is None else self.name.rsplit(".", 1)[0]


@dataclass
class Outcome:
    name: str
    type: str
    shape: tuple[int, int]
    structure: str
    sparsity: float  # achieved
    method: str
    target: float
    recon_error: float | None
    dsnot: bool
    tokens: int


class BlockLoader(Protocol):
    def load_rest(self) -> None: ...  # bring the weights outside the blocks in (to compute block 0's inputs)
    def drop_rest(self) -> None: ...  # and drop them once those inputs are captured
    def enter(self, name: str, block: nn.Module) -> None: ...  # bring the block's weights in
    def exit(self, name: str, block: nn.Module) -> None: ...  # save the (pruned) block, then drop it
    def drop(self, name: str, block: nn.Module) -> None: ...  # drop it unsaved (measuring passes)


class ParkingLoader(BlockLoader, Protocol):
    """A loader that can also hold a block's weights out of memory while one stage of it is pruned (used when
    the loader has these methods)."""

    # take the block's weights other than ``keep``'s out of memory, keeping ``changed`` (already pruned) ones
    # somewhere they come back from
    def park(self, name: str, block: nn.Module, keep: list[nn.Module], changed: list[nn.Module]) -> None: ...
    def unpark(self, name: str, block: nn.Module) -> None: ...  # bring every parked weight back


def _tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of a module input that belong to real tokens."""
    if mask is None:
        return x
    if x.dim() >= 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask]  # (N_real, in)
    if x.dim() == 2 and x.shape[0] == mask.numel():
        return x[mask.reshape(-1)]
    return x


class _Collector:
    """Adds each watched weight's input to its InputStats while blocks run inside ``with collector:``:
    forward hooks for modules, a torch function mode for slices of fused expert parameters."""

    def __init__(self, plans: list[Plan], with_hessian: bool = True, consume_hessian: bool = False):
        self.stats = {p.name: InputStats(p.weight().shape[1], with_hessian, consume_hessian=consume_hessian)
                      for p in plans}
        self.mask: torch.Tensor | None = None
        self.plans = [p for p in plans if p.param is None]
        self.slices = {(p.fused_key, p.index): p.name for p in plans if p.param is not None}
        self.handles: list = []
        self.mode = None
        if self.slices:
            watched = {id(p): (p.fused_key, getattr(p.module, p.param)) for p in plans if p.param is not None}
            self.mode = ExpertInputs({k: v for k, v in {w[0]: w for w in watched.values()}.items()}, self._slice)

    def _slice(self, key: str, index: int, x: torch.Tensor) -> None:
        name = self.slices.get((key, index))
        if name is not None:
            self.stats[name].add(x)  # routed tokens: no padding mask applies to them

    def _hook(self, name: str):
        def hook(_mod, inputs, _out):
            self.stats[name].add(_tokens(inputs[0], self.mask))

        return hook

    def __enter__(self) -> "_Collector":
        self.handles = [p.module.register_forward_hook(self._hook(p.name)) for p in self.plans]
        if self.mode is not None:
            self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.mode is not None:
            self.mode.__exit__(*exc)
        for h in self.handles:
            h.remove()


class _StageDone(Exception):
    pass


@torch.no_grad()
def gather_stats(block: nn.Module, calls: list[BlockCall], plans: list[Plan], shared: bool = False,
                 consume_hessian: bool = False, with_hessian: bool = True) -> dict[str, InputStats]:
    """Input statistics of ``plans``' weights over every captured call of ``block``.

    Each forward stops as soon as every watched module has run: what comes after cannot change their inputs
    (not for expert slices: an expert may never be routed to). ``shared``: the plans read one input tensor (a
    stage found by ``_stages``), so one InputStats serves them all (one X^T X instead of one per module) and
    each forward stops before the first of them computes anything (so a module called twice in one forward
    counts its first call only). ``consume_hessian``: SparseGPT may compute
    its factor in the storage of X^T X (nothing reads X^T X afterwards; DSnoT does).
    """
    if _stops_before(plans, shared):
        stats = InputStats(plans[0].weight().shape[1], with_hessian, consume_hessian=consume_hessian)
        _forward_to(block, calls, [p.module for p in plans], lambda x, mask: stats.add(_tokens(x, mask)))
        return {p.name: stats for p in plans}
    col = _Collector(plans, with_hessian, consume_hessian=consume_hessian)
    seen: set[int] = set()
    want = {id(p.module) for p in plans}

    def stop_when_done(mod, _inputs, _out):
        seen.add(id(mod))
        if seen >= want:
            raise _StageDone

    stops = []
    try:
        with col:
            if all(p.param is None for p in plans):  # registered after the collector's hooks: they run after
                stops = [p.module.register_forward_hook(stop_when_done) for p in plans]
            for c in calls:
                col.mask = c.token_mask
                seen.clear()
                try:
                    run_block(block, c)
                except _StageDone:
                    pass
    finally:
        for h in stops:
            h.remove()
    return col.stats


def _stops_before(plans: list[Plan], shared: bool) -> bool:
    """Whether gather_stats gathers these plans' statistics with forwards that stop before the first of their
    modules computes anything (so that their weights, and those of every module after them, are not read)."""
    return shared and len({p.weight().shape[1] for p in plans}) == 1 and all(p.param is None for p in plans)


def _forward_to(block: nn.Module, calls: list[BlockCall], modules: list[nn.Module],
                on_input: Callable[[torch.Tensor, torch.Tensor | None], None]) -> None:
    """Run ``block`` on every call up to the first of ``modules`` that it reaches, and hand that module's input
    and the call's token mask to ``on_input``; nothing after it is computed."""
    mask: list[torch.Tensor | None] = [None]

    def at_input(_mod, inputs):
        on_input(inputs[0], mask[0])
        raise _StageDone

    handles = [m.register_forward_pre_hook(at_input) for m in modules]
    try:
        for c in calls:
            mask[0] = c.token_mask
            try:
                run_block(block, c)
            except _StageDone:
                pass
    finally:
        for h in handles:
            h.remove()


def _measure_by_forward(stage: list[Plan], shared: bool) -> bool:
    """Whether the stage's reconstruction errors are measured by one more forward per module instead of from
    X^T X: where no method of the stage needs X^T X and it would be larger than the weight (in > out, an MLP
    down projection: 121 MiB of X^T X against a 44 MiB weight at TinyLlama's shapes). Only where the
    module's inputs cannot have changed since its statistics were gathered: its stage reads one tensor (or is
    the module alone), so nothing pruned since then runs before it."""
    return (shared or len(stage) == 1) and all(
        not p.method.needs_hessian and not p.dsnot and p.param is None
        and p.weight().shape[1] > p.weight().shape[0] for p in stage)


@torch.no_grad()
def _error_by_forward(block: nn.Module, calls: list[BlockCall], plan: Plan, dense: torch.Tensor,
                      pruned: torch.Tensor) -> float:
    """||W X^T - W' X^T||^2 / ||W X^T||^2 over the calibration tokens, from the module's inputs in one more
    forward of the block (stopped at the module; the earlier stages are pruned, as when its statistics were
    gathered). ``pruned``: W' or the keep-mask of W (see stats.diff_rows). Products of at most 1024 tokens by
    256 output rows at a time."""
    num = torch.zeros((), dtype=torch.float64)
    den = torch.zeros((), dtype=torch.float64)

    def add(x: torch.Tensor, mask: torch.Tensor | None) -> None:
        nonlocal num, den
        for xs in _tokens(x, mask).reshape(-1, dense.shape[1]).float().split(1024):
            for r in range(0, dense.shape[0], 256):
                rows = slice(r, r + 256)
                num += (xs @ diff_rows(dense, pruned, rows).T).square().sum(dtype=torch.float64)
                den += (xs @ dense[rows].float().T).square().sum(dtype=torch.float64)

    _forward_to(block, calls, [plan.module], add)
    return float(num / den) if den > 0 else 0.0


@torch.no_grad()
def _stages(block: nn.Module, call: BlockCall, plans: list[Plan]) -> list[tuple[list[Plan], bool]]:
    """Group plans by the tensor their module reads, in the order the block first calls them; the slices of
    one fused expert parameter form one stage, placed where the first of them runs. Each stage comes with
    whether its plans read one tensor (False for expert slices and for modules the probe never saw)."""
    seen: list[tuple[object, list[Plan]]] = []
    versions: dict[int, int] = {}  # id of a read tensor -> its version counter when first read
    changed: set[int] = set()  # tensors modified in place between two reads: their readers share nothing
    by_module = {id(p.module): p for p in plans if p.param is None}
    fused: dict[str, list[Plan]] = {}
    for p in plans:
        if p.param is not None:
            fused.setdefault(p.fused_key, []).append(p)

    def hook(mod, inputs):
        p, x = by_module[id(mod)], inputs[0]
        for t, group in seen:
            if t is x:  # the same tensor object (kept alive below, so identity is reliable)
                if x._version != versions[id(x)]:
                    changed.add(id(x))
                if p not in group:
                    group.append(p)
                return
        if not any(p in g for _, g in seen):
            seen.append((x, [p]))
            versions[id(x)] = x._version

    def on_slice(key: str, _index: int, _x) -> None:
        if key in fused and not any(t == key for t, _ in seen):
            seen.append((key, fused[key]))

    handles = [p.module.register_forward_pre_hook(hook) for p in by_module.values()]
    mode = ExpertInputs({k: (k, getattr(v[0].module, v[0].param)) for k, v in fused.items()}, on_slice) \
        if fused else None
    try:
        if mode is not None:
            with mode:
                run_block(block, call)
        else:
            run_block(block, call)
    finally:
        for h in handles:
            h.remove()
    stages = [(g, not isinstance(t, str) and id(t) not in changed) for t, g in seen]
    missed = [p for p in plans if not any(p in g for g, _ in stages)]
    return stages + ([(missed, False)] if missed else [])


@torch.no_grad()
def prune_one(plan: Plan, stats: InputStats | None,
              measure: Callable[[torch.Tensor, torch.Tensor], float] | None = None) -> Outcome:
    """Prune one module in place from its statistics (None for data-free methods without calibration).

    The reconstruction error comes from the statistics' X^T X (or SparseGPT's factor of it) or, where they
    hold neither, from ``measure(dense, pruned)`` (``pruned`` may be the keep-mask, see stats.diff_rows)."""
    w = plan.weight()  # (out, in) view of the parameter
    # the weight itself (no copy for float32 weights): it is read, never written, until the error is measured;
    # methods and DSnoT do not modify their input (a method that returns it is cloned before the masking)
    dense = w.detach().float()
    if plan.method.mask is not None and not plan.dsnot:
        # a method without weight updates: measure from the mask, then zero the weight in place (no pruned
        # copy: the largest part of Wanda's working set in bounded-memory pruning)
        keep = plan.method.mask(dense, stats, plan.structure, plan.sparsity, plan.scope)
        err = _error(stats, measure, dense, keep)
        zero_pruned_(w, keep)
    else:
        new, keep = plan.method.run(dense, stats, plan.structure, plan.sparsity, plan.scope)
        if plan.dsnot:
            new, keep = dsnot_refine(dense, new, keep, stats.mean, stats.var, stats.norm, plan.structure,
                                     hessian=stats.hessian)
            if plan.method.refit is not None:  # DSnoT grew dense values back: re-solve the kept weights (OBS)
                new = plan.method.refit(dense, stats, plan.structure, keep)
        new = new.float()
        if new.data_ptr() == dense.data_ptr():  # a method may hand back its input: never zero the dense reference
            new = new.clone()
        zero_pruned_(new, keep)  # in place: pruning a wide module holds several (out, in) copies already
        err = _error(stats, measure, dense, new)
        w.copy_(new.to(w.dtype))
        del new
    del keep, dense
    if plan.param is None:  # a fused expert parameter holds many slices: its structure is in the report
        plan.module.sparsa_structure = str(plan.structure)
    zeros = w.numel() - int(torch.count_nonzero(w))
    out = Outcome(plan.name, type(plan.module).__name__, (int(w.shape[0]), int(w.shape[1])), str(plan.structure),
                  zeros / w.numel(), plan.method.name, plan.sparsity, err, plan.dsnot,
                  stats.n if stats is not None else 0)
    log.info("%s: %s %s, sparsity %.1f%% (target %.1f%%), rel. error %s", plan.name, plan.method.name,
             plan.structure, 100 * out.sparsity, 100 * plan.sparsity, "n/a" if err is None else f"{err:.4g}")
    return out


def _error(stats: InputStats | None, measure: Callable[[torch.Tensor, torch.Tensor], float] | None,
           dense: torch.Tensor, pruned: torch.Tensor) -> float | None:
    err = stats.relative_error(dense, pruned) if stats is not None else None
    if err is None and measure is not None:
        err = measure(dense, pruned)
    return err


# bounded memory: one block call's widest activation (tokens x the block's widest weight dimension) holds at
# most this fraction of the block's weight elements, so that the few MLP intermediates alive in one forward
# (gate, up, activation, product) stay a fraction of a block instead of growing with the calibration batch.
# 1/16 -> 1/32 measured 345 -> 319 MiB peak (Wanda, TinyLlama shapes, 196 MiB blocks) for ~5-10% more time.
CALL_ACTIVATION_SHARE = 32


def bounded_call_tokens(model: nn.Module) -> int:
    """Tokens per block call when pruning in bounded memory (calibration batches are split to this, see
    calibration.split_batches): 246-285 at TinyLlama-1.1B's shapes (2 windows of 128), 576 for a 7B Llama.
    Read from parameter shapes only, so it works on a meta-device skeleton."""
    block = find_blocks(model)[0][1]
    params = list(block.parameters())
    widest = max((max(p.shape[-2:]) for p in params if p.dim() >= 2), default=1)
    return max(1, sum(p.numel() for p in params) // (CALL_ACTIVATION_SHARE * widest))


def _draining(items: list):
    """Yield the list's items while removing them from it (so that each can be freed once used)."""
    items.reverse()
    while items:
        yield items.pop()


def _in_block(name: str, block_name: str) -> bool:
    return block_name == "" or name.startswith(block_name + ".")


@torch.no_grad()
def walk_blocks(
    model: nn.Module,
    batches: list[dict],
    visit: Callable[[int, str, nn.Module, list[BlockCall]], None],
    sequential: bool = True,
    loader: BlockLoader | None = None,
    progress: str | None = None,
) -> None:
    """Call ``visit(index, name, block, calls)`` for every block in order, with the block's inputs.

    The next block's inputs are the block's outputs after ``visit`` (``sequential``) or before it.
    """
    blocks = find_blocks(model)
    was_training = model.training
    model.eval()
    try:
        if loader is not None:
            loader.load_rest()
        calls = capture_first_block(model, blocks[0][1], batches)
        if loader is not None:
            loader.drop_rest()
        bar = None
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=Console(stderr=True), transient=True)
            bar.start()
            task = bar.add_task(progress, total=len(blocks))
        try:
            for i, (name, block) in enumerate(blocks):
                if loader is not None:
                    loader.enter(name, block)
                if bar is not None:
                    bar.update(task, description=f"{progress}: block {name or 'model'}")
                last = i == len(blocks) - 1
                if not sequential and not last:
                    outs = [run_block(block, c) for c in calls]
                visit(i, name, block, calls)
                if sequential and not last:
                    # each call's inputs are dropped as soon as its outputs exist: one boundary's hidden
                    # states are held at a time, not two
                    calls = [c.with_hidden(run_block(block, c)) for c in _draining(calls)]
                elif not last:
                    calls = [c.with_hidden(o) for c, o in zip(calls, outs)]
                if loader is not None:
                    loader.exit(name, block)
                if bar is not None:
                    bar.advance(task)
        finally:
            if bar is not None:
                bar.stop()
    finally:
        model.train(was_training)


@torch.no_grad()
def prune_modules(
    model: nn.Module,
    plans: list[Plan],
    batches: list[dict],
    sequential: bool = True,
    true_sequential: bool = True,
    loader: BlockLoader | None = None,
    progress: bool = False,
) -> list[Outcome]:
    """Prune every planned module block by block on the calibration batches; outcomes in plan order."""
    outcomes: dict[str, Outcome] = {}
    blocks = find_blocks(model)
    inside = {p.name for p in plans if any(_in_block(p.name, n) for n, _ in blocks)}

    def visit(_i: int, bname: str, block: nn.Module, calls: list[BlockCall]) -> None:
        mine = [p for p in plans if p.name in inside and _in_block(p.name, bname)]
        if not mine:
            return
        stages = _stages(block, calls[0], mine) if true_sequential else [(mine, False)]
        done: list[nn.Module] = []  # modules of this block pruned so far
        for i, (stage, shared) in enumerate(stages):
            park = park_ahead = None
            if loader is not None and hasattr(loader, "park"):
                park = partial(_parked, loader, bname, block, [p.module for p in stage], list(done))
                ahead = {id(p.module) for st, _ in stages[i:] for p in st}  # this stage's modules and later ones
                park_ahead = partial(_parked, loader, bname, block,
                                     [m for m in block.modules() if id(m) not in ahead], list(done))
            outcomes.update(_prune_stage(block, calls, stage, shared, bounded=loader is not None, park=park,
                                         park_ahead=park_ahead))
            done.extend(p.module for p in stage)

    walk_blocks(model, batches, visit, sequential=sequential, loader=loader,
                progress="pruning" if progress else None)

    rest = [p for p in plans if p.name not in inside]
    if rest:  # modules outside the blocks (e.g. a head someone chose to prune): one full-model pass
        if loader is not None:
            _refuse_outside(rest)
        col = _Collector(rest)
        extras = forward_extras(model)
        with col:
            for b in batches:
                m = b.get("attention_mask")
                col.mask = None if m is None or bool(m.all()) else m.bool()
                model(**b, **extras)
        for p in rest:
            outcomes[p.name] = prune_one(p, col.stats[p.name])
    return [outcomes[p.name] for p in plans]


@contextmanager
def _parked(loader: ParkingLoader, name: str, block: nn.Module, keep: list[nn.Module], changed: list[nn.Module]):
    loader.park(name, block, keep, changed)
    try:
        yield
    finally:
        loader.unpark(name, block)


def _prune_stage(block: nn.Module, calls: list[BlockCall], stage: list[Plan], shared: bool, bounded: bool,
                 park: Callable[[], AbstractContextManager] | None = None,
                 park_ahead: Callable[[], AbstractContextManager] | None = None) -> dict[str, Outcome]:
    """Gather the statistics of one stage and prune its modules; only this stage's statistics are alive.

    Bounded mode, for stages whose method needs X^T X (SparseGPT: the largest allocation of pruning, which then
    takes the place of weights instead of adding to them): ``park_ahead`` is a context in which the weights of
    this stage's modules and of those after them are out of memory, entered while the statistics are gathered
    by forwards that stop before the stage; ``park`` one in which every other weight of the block is, entered
    while the stage's modules are pruned where that runs no forward of the block."""
    outcomes = {}
    consume = not any(p.dsnot for p in stage)  # DSnoT reads X^T X after SparseGPT's factor is made
    by_forward = _measure_by_forward(stage, shared)
    parking = not by_forward and any(p.method.needs_hessian for p in stage) and all(p.param is None for p in stage)
    if park is None or not parking:
        park = nullcontext
    ahead = park_ahead if park_ahead is not None and parking and _stops_before(stage, shared) else nullcontext
    with ahead():  # parks nest: park() below takes the rest out before the stage's own weights come back
        stats = gather_stats(block, calls, stage, shared=shared, consume_hessian=consume,
                             with_hessian=not by_forward)
        if bounded:  # the forwards' intermediates are freed: give them back
            release_freed_memory()
        pending = list(stage)
        while pending:
            failed = False
            with park():
                while pending:
                    p = pending[0]
                    measure = partial(_error_by_forward, block, calls, p) if by_forward else None
                    try:
                        outcomes[p.name] = prune_one(p, stats[p.name], measure)
                    except HessianConsumedError:
                        failed = True
                    if failed:
                        break
                    pending.pop(0)
                    if not shared:
                        del stats[p.name]  # its X^T X and factor serve no other module
                    if bounded:  # the module's working set is freed: give it back
                        release_freed_memory()
                if not pending:  # the stage's X^T X (or factor) goes before the parked weights come back
                    stats = None
                    if bounded:
                        release_freed_memory()
            if failed:  # outside the except clause (its traceback would keep the destroyed X^T X alive), unparked
                # the float32 factorisation failed in place of X^T X: gather it again and factorise a float64 copy
                # (with true_sequential=False the stage's modules pruned so far then feed the new statistics)
                log.info("%s: SparseGPT factorisation failed in float32; redone in float64 on new statistics",
                         pending[0].name)
                stats = None
                stats = gather_stats(block, calls, pending, shared=shared)
                for st in {id(v): v for v in stats.values()}.values():
                    st.factor_dtype = torch.float64
    return outcomes


def _refuse_outside(rest: list[Plan]) -> None:
    raise ValueError(f"modules outside the transformer blocks cannot be pruned in bounded-memory mode: "
                     f"{', '.join(p.name for p in rest)}")


@torch.no_grad()
def prune_without_data(model: nn.Module, plans: list[Plan], loader: BlockLoader) -> list[Outcome]:
    """Data-free methods (magnitude) in bounded-memory mode: each block is read, pruned, written and dropped;
    no forward pass runs."""
    outcomes: dict[str, Outcome] = {}
    blocks = find_blocks(model)
    rest = [p for p in plans if not any(_in_block(p.name, n) for n, _ in blocks)]
    if rest:
        _refuse_outside(rest)
    for bname, block in blocks:
        loader.enter(bname, block)
        for p in plans:
            if _in_block(p.name, bname):
                outcomes[p.name] = prune_one(p, None)
        loader.exit(bname, block)
    return [outcomes[p.name] for p in plans]


@torch.no_grad()
def block_wanda_metrics(
    model: nn.Module,
    plans: list[Plan],
    batches: list[dict],
    reduce: Callable[[list[torch.Tensor]], float],
    loader: BlockLoader | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """For each block holding planned modules: ``reduce`` of the Wanda metrics |W| ||X|| of those modules,
    measured on the dense model (block name -> value). OWL's outlier ratios are computed this way."""
    from .methods import wanda_scores

    values: dict[str, float] = {}

    def visit(_i: int, bname: str, block: nn.Module, calls: list[BlockCall]) -> None:
        mine = [p for p in plans if _in_block(p.name, bname)]
        if not mine:
            return
        col = _Collector(mine, with_hessian=False)  # norms only: no X^T X needed here
        with col:
            for c in calls:
                col.mask = c.token_mask
                run_block(block, c)
        values[bname] = reduce([wanda_scores(p.weight().float(), col.stats[p.name].norm) for p in mine])

    walk_blocks(model, batches, visit, sequential=True, loader=_ReadOnly(loader) if loader is not None else None,
                progress="measuring outliers" if progress else None)
    return values


class _ReadOnly:
    """A loader for a measuring pass: blocks come in as usual but leave without being written."""

    def __init__(self, loader: BlockLoader):
        self.loader = loader

    def load_rest(self) -> None:
        self.loader.load_rest()

    def drop_rest(self) -> None:
        self.loader.drop_rest()

    def enter(self, name: str, block: nn.Module) -> None:
        self.loader.enter(name, block)

    def exit(self, name: str, block: nn.Module) -> None:
        self.loader.drop(name, block)
