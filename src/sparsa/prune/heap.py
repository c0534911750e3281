"""Handing freed memory back to the operating system during bounded-memory pruning.

glibc keeps freed heap chunks (every tensor below its mmap threshold, which grows to 32 MiB) for reuse instead
of returning them, so the resident size of a pruning run ratchets up with every module's transient working set
(measured: ~150 MiB of freed-but-resident heap on top of ~150 MiB of live tensors inside one Llama block).
``malloc_trim`` returns those pages; it costs milliseconds, so bounded-memory mode calls it after every module
and block. It cannot return holes that live chunks pin, and at the peak of a TinyLlama-shaped run (the MLP
down projection's stage) glibc still held ~200 MiB of freed heap. A fixed mmap threshold of 16 MiB
(``map_large_allocations``) gives every weight, X^T X and working copy its own mapping, returned to the OS the
moment it is freed: ~50 MiB of freed heap at the peak. A 1 MiB threshold did better on memory but made the run
~40% slower (page faults on every activation); at 16 MiB only the few large tensors of each module pay them.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["release_freed_memory", "map_large_allocations"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim  # musl and other libcs lack it
    except (OSError, AttributeError):
        _LIBC = None


def release_freed_memory() -> None:
    """Return the allocator's free pages to the OS (glibc only; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def map_large_allocations(threshold: int = 16 << 20) -> bool:
    """From now on, in this process, serve every allocation of ``threshold`` bytes or more by its own mapping
    (glibc only; returns whether it was applied). Process-wide and permanent (glibc's adaptive threshold stays
    off), so only a process that exists to prune in bounded memory calls it: ``sparsa prune --max-memory``."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
