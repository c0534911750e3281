"""Text that ships with sparsa, so evaluation runs offline and gives the same numbers everywhere."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = ["heldout_sentences"]


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[str, ...]:
    text = resources.files("sparsa.data").joinpath(name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def heldout_sentences() -> list[str]:
    """205 everyday English sentences written for sparsa, never used for calibration or training."""
    return list(_read("heldout_sentences.txt"))
