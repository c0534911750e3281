"""Helpers for the checkpoint tests: small pruned transformers models, and an independent reader of the raw
safetensors bytes (written from the safetensors spec, not from sparsa's code) to check the stored layout."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

import sparsa

INDEX = "sparsa-model.safetensors.index.json"


def small_bert(hidden: int = 64, inter: int = 128, layers: int = 2):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=inter, max_position_embeddings=64)
    return BertModel(cfg).eval()


def pruned(model, structure: str, sparsity: float | None, dtype: torch.dtype | None = None):
    """``model`` pruned by magnitude (in place, every Linear but the pooler), optionally cast to ``dtype``."""
    if dtype is not None:
        model.to(dtype)
    st = sparsa.parse_structure(structure)
    sparsa.prune(model, sparsity=sparsity if st.implied_sparsity is None else None, structure=st)
    return model


def raw_tensors(path: Path) -> tuple[int, dict, bytes]:
    """(header length, header, data bytes) of a safetensors file, parsed by hand from the spec."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return n, header, raw[8 + n :]


def raw_bytes(folder: Path, key: str) -> tuple[str, list[int], bytes]:
    """(dtype code, shape, bytes) of one stored tensor, found through the index and the file header."""
    index = json.loads((folder / INDEX).read_text())
    _, header, data = raw_tensors(folder / index["weight_map"][key])
    e = header[key]
    a, b = e["data_offsets"]
    return e["dtype"], e["shape"], data[a:b]


def inputs(vocab: int = 100, batch: int = 2, seq: int = 9) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1))


def bits_le(mask_rows: np.ndarray) -> bytes:
    """Rows of booleans -> the bitmask bytes: numpy.packbits little bit order, padded to 8 bytes per row."""
    rows, cols = mask_rows.shape
    padded = np.zeros((rows, (cols + 63) // 64 * 64), dtype=bool)
    padded[:, :cols] = mask_rows
    return np.packbits(padded, axis=1, bitorder="little").tobytes()


def mixed_model(seed: int = 0):
    """A small BERT whose modules hold different structures: queries 4x1, keys 2:4, FFN-in unstructured, rest
    dense, so that one checkpoint holds every format."""
    torch.manual_seed(seed)
    model = small_bert()
    sparsa.prune(model, sparsity=0.5, structure="4x1", targets=["re:.*query"])
    sparsa.prune(model, sparsity=None, structure="2:4", targets=["re:.*key"])
    sparsa.prune(model, sparsity=0.7, structure="unstructured", targets=["re:.*intermediate.dense"])
    return model


def run_cli(*args: str, ok: bool = True):
    """`sparsa ARGS` in a subprocess, as a user runs it."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "sparsa.cli", *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert p.returncode == 0, f"sparsa {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def one_json(p) -> dict:
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one JSON line, got:\n{p.stdout}"
    return json.loads(lines[0])
