"""Perplexity of a causal language model on text: exp of the mean next-token loss over non-overlapping
windows of ``seq_len`` tokens (every token predicted once, from the tokens before it in its window), the way
SparseGPT and Wanda report WikiText2."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["perplexity"]


@torch.inference_mode()
def perplexity(model: nn.Module, tokenizer, text: str, seq_len: int = 128, batch_size: int = 8,
               max_windows: int | None = None) -> float:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]  # (L,)
    n = ids.numel() // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    windows = ids[: n * seq_len].reshape(n, seq_len)  # (n, T)
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        x = windows[i : i + batch_size]
        logits = model(input_ids=x).logits[:, :-1].float()  # (B, T-1, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                           reduction="sum")
        total += float(loss)
        count += x[:, 1:].numel()
    return math.exp(total / count)
