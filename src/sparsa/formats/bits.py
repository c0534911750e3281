"""Bit-packing shared by the bitmask and N:M formats.

Layout: a boolean matrix (rows, cols) becomes uint64 words (rows, ceil(cols / 64)); bit j (LSB first) of
word w of row r is element (r, 64 * w + j). Bits past ``cols`` are zero. On a little-endian machine this is
byte-for-byte ``numpy.packbits(m, axis=1, bitorder="little")`` padded to a multiple of 8 bytes per row.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pack_bits", "unpack_bits", "words_per_row"]


def words_per_row(cols: int) -> int:
    return (cols + 63) // 64


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """(rows, cols) bool -> (rows, ceil(cols/64)) uint64."""
    rows, cols = mask.shape
    words = words_per_row(cols)
    m = np.zeros((rows, words * 64), dtype=bool)
    m[:, :cols] = mask.detach().cpu().numpy()
    packed = np.packbits(m, axis=1, bitorder="little")  # (rows, words * 8) uint8
    return torch.from_numpy(packed.view("<u8").astype(np.uint64, copy=False).reshape(rows, words).copy())


def unpack_bits(words: torch.Tensor, cols: int) -> torch.Tensor:
    """(rows, ceil(cols/64)) uint64 -> (rows, cols) bool."""
    w = words.detach().cpu().contiguous().numpy().astype("<u8", copy=False)
    rows = w.shape[0]
    bits = np.unpackbits(w.view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    return torch.from_numpy(bits[:, :cols].astype(bool))
