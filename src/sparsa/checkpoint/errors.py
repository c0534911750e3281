"""The one error type of the checkpoint reader and writer."""

from __future__ import annotations

import os

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written as asked: truncated, corrupted, inconsistent, of another
    format version, or not matching the model it is loaded into.

    The message names the file and, where there is one, the tensor or module: ``"<file>: tensor '<name>': <what>"``.
    ``file`` and ``tensor`` are also kept as attributes for programs.
    """

    def __init__(self, file: str | os.PathLike | None, message: str, tensor: str | None = None):
        self.file = None if file is None else str(file)
        self.tensor = tensor
        parts = [p for p in (self.file, f"tensor '{tensor}'" if tensor is not None else None, message) if p]
        super().__init__(": ".join(parts))
