"""Finding a model's transformer blocks by traversal, and capturing what the first block is called with.

Blocks are the largest ``nn.ModuleList`` (by parameters) whose children are all of one class: BERT's
``encoder.layer``, GPT-2's ``transformer.h``, Llama's ``model.layers``, OPT's ``model.decoder.layers``, ...
found without naming any of them. A model without such a list is one block: the model itself.

The first block's inputs are captured with a forward pre-hook (``with_kwargs=True``) that records the
positional and keyword arguments the model passes (hidden states, attention masks, rotary cos/sin, cache
flags) and stops the forward there, so nothing is reconstructed by hand and nothing after it runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["find_blocks", "BlockCall", "capture_first_block", "run_block", "forward_extras"]


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) in execution order for the repeated blocks of ``model``; [("", model)] if none."""
    best, best_n = None, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) >= 2 and len({type(c) for c in m}) == 1:
            n = _numel(m)
            if n > best_n:
                best, best_n = (name, m), n
    if best is None:
        return [("", model)]
    prefix = best[0]
    return [(f"{prefix}.{i}", c) for i, c in enumerate(best[1])]


@dataclass
class BlockCall:
    """One batch's call of a block: its arguments, with the hidden states at ``args[0]`` or ``kwargs[key]``."""

    args: tuple
    kwargs: dict
    key: str | None  # keyword holding the hidden states, when they were not passed positionally
    token_mask: torch.Tensor | None  # (B, T) bool: real tokens of the batch (None: all are real)

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.key is None else self.kwargs[self.key]

    def with_hidden(self, h: torch.Tensor) -> "BlockCall":
        if self.key is None:
            return BlockCall((h, *self.args[1:]), self.kwargs, None, self.token_mask)
        return BlockCall(self.args, {**self.kwargs, self.key: h}, self.key, self.token_mask)


class _Stop(Exception):
    pass


def forward_extras(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments that keep a calibration forward lean: no key/value cache."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


@torch.no_grad()
def capture_first_block(model: nn.Module, block: nn.Module, batches: list[dict]) -> list[BlockCall]:
    """Run ``model`` on each batch up to ``block`` and record the block's call (one BlockCall per batch)."""
    calls: list[BlockCall] = []
    first = next(iter(inspect.signature(block.forward).parameters), None)

    def hook(_mod, args, kwargs):
        key = None if args else (first if first in kwargs else next(iter(kwargs)))
        calls.append(BlockCall(tuple(args), dict(kwargs), key, None))
        raise _Stop

    extras = forward_extras(model)
    if block is model:  # no repeated blocks: the model's own call is the block call
        for b in batches:
            calls.append(BlockCall((), {**b, **extras}, "input_ids", _mask_of(b)))
        return calls
    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for b in batches:
            try:
                model(**b, **extras)
            except _Stop:
                pass
            else:
                raise RuntimeError("the model's forward never reached its first block")
            calls[-1].token_mask = _mask_of(b)
    finally:
        handle.remove()
    return calls


def _mask_of(batch: dict) -> torch.Tensor | None:
    m = batch.get("attention_mask")
    return None if m is None or bool(m.all()) else m.bool()


@torch.no_grad()
def run_block(block: nn.Module, call: BlockCall) -> torch.Tensor:
    """The block's output hidden states for one captured call."""
    out = block(*call.args, **call.kwargs)
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]
