"""Calibration data: text tokenised by the model's own tokenizer into a fixed, seeded list of batches.

Two ways to cut text into samples:

* ``"lines"`` (encoders): each non-empty line is one sample (a sentence or a short paragraph), truncated to
  ``seq_len`` tokens; batches are padded and carry an attention mask, and padding never enters the
  statistics;
* ``"windows"`` (decoders): the text is joined and tokenised once, and ``samples`` windows of exactly
  ``seq_len`` tokens start at seeded random offsets (as SparseGPT and Wanda sample C4).

``"auto"`` picks windows for causal language models and lines otherwise. The same seed gives the same
batches, token for token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

__all__ = ["CalibrationConfig", "Batches", "build_batches", "load_texts", "is_causal_lm", "CALIBRATION_MODES",
           "split_batches"]

CALIBRATION_MODES = ("auto", "lines", "windows")
Batches = list  # list[dict[str, torch.Tensor]] with input_ids (B, T) and, for padded batches, attention_mask


@dataclass(frozen=True)
class CalibrationConfig:
    samples: int = 128
    seq_len: int = 128
    seed: int = 0
    batch_size: int = 16
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in CALIBRATION_MODES:
            raise ValueError(f"unknown calibration mode '{self.mode}'; known modes: {', '.join(CALIBRATION_MODES)}")
        for k in ("samples", "seq_len", "batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"calibration {k} must be >= 1, got {getattr(self, k)}")


def is_causal_lm(model: nn.Module) -> bool:
    """True for decoder-only language models (GPT-2, OPT, Llama, ...), judged by class name and config."""
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    return name.endswith(("ForCausalLM", "LMHeadModel")) or bool(getattr(cfg, "is_decoder", False))


def load_texts(source: Union[str, os.PathLike, Sequence[str]]) -> list[str]:
    """Non-empty lines of a text file (a path), or the given strings."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"calibration file '{p}' does not exist")
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        lines = list(source)
    texts = [t.strip() for t in lines if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("calibration text is empty")
    return texts


def _lines(tokenizer, texts: list[str], cfg: CalibrationConfig, g: torch.Generator) -> Batches:
    if len(texts) > cfg.samples:
        idx = torch.randperm(len(texts), generator=g)[: cfg.samples].tolist()
        texts = [texts[i] for i in sorted(idx)]
    # batch sentences of similar length together so that little of each batch is padding
    lengths = [len(tokenizer(t, truncation=True, max_length=cfg.seq_len)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    out = []
    for i in range(0, len(order), cfg.batch_size):
        chunk = [texts[j] for j in order[i : i + cfg.batch_size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=cfg.seq_len, return_tensors="pt")
        out.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return out


def _windows(tokenizer, texts: list[str], cfg: CalibrationConfig, g: torch.Generator) -> Batches:
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False)["input_ids"][0]  # (L,)
    if ids.numel() <= cfg.seq_len:
        raise ValueError(f"calibration text has {ids.numel()} tokens; windows of {cfg.seq_len} need more")
    starts = torch.randint(0, ids.numel() - cfg.seq_len, (cfg.samples,), generator=g)
    windows = torch.stack([ids[s : s + cfg.seq_len] for s in starts.tolist()])  # (S, T)
    return [{"input_ids": windows[i : i + cfg.batch_size]} for i in range(0, cfg.samples, cfg.batch_size)]


def build_batches(model: nn.Module, tokenizer, source, cfg: CalibrationConfig = CalibrationConfig()) -> Batches:
    """Batches for the calibration engine from text (a file path or strings) or from ready token batches.

    ``source`` may also be a dict with ``input_ids`` (N, T) (and ``attention_mask``), or a list of such dicts,
    which are used as they are (split into batches of ``batch_size``).
    """
    if isinstance(source, dict):
        n = source["input_ids"].shape[0]
        return [{k: v[i : i + cfg.batch_size] for k, v in source.items()} for i in range(0, n, cfg.batch_size)]
    if isinstance(source, list) and source and isinstance(source[0], dict):
        return list(source)
    texts = load_texts(source)
    if tokenizer is None:
        raise ValueError("calibration text needs the model's tokenizer: pass tokenizer=... (or token batches)")
    g = torch.Generator().manual_seed(cfg.seed)
    mode = cfg.mode if cfg.mode != "auto" else ("windows" if is_causal_lm(model) else "lines")
    if mode == "windows":
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return _windows(tokenizer, texts, cfg, g)
    return _lines(tokenizer, texts, cfg, g)


def split_batches(batches: Batches, max_tokens: int) -> Batches:
    """The same samples in batches of at most ``max_tokens`` tokens (at least one sample each), in order.

    Every tensor of a batch whose first dimension is the batch's sample count is sliced along it (input_ids,
    attention_mask, token_type_ids, or whatever a caller's token batches carry); anything else is shared.
    Fewer tokens per forward means smaller activations (bounded-memory pruning), not different statistics:
    padding never enters them, and every sample is still seen once."""
    out: Batches = []
    for b in batches:
        n, t = b["input_ids"].shape[:2]
        size = max(1, max_tokens // max(1, t))
        if size >= n:
            out.append(b)
            continue
        for i in range(0, n, size):
            out.append({k: v[i : i + size] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
                        for k, v in b.items()})
    return out
