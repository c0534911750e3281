"""What every command shares: the consoles, JSON output, and turning sparsa's errors into one clean line."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Iterator

import typer
from rich.console import Console

# Results go to stdout, progress and errors to stderr, so that --json output on stdout stays clean. Piped
# output gets a wide console rather than rich's 80-column default, so tables stay readable in logs.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def print_json(obj) -> None:
    data = asdict(obj) if is_dataclass(obj) else obj
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input gets one clear line on stderr and exit status 2, not a traceback."""
    try:
        yield
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(code=2) from None


@contextmanager
def status(enabled: bool) -> Iterator:
    """A spinner naming the current step (on stderr); a no-op callback when disabled."""
    if not enabled:
        yield lambda _msg: None
        return
    with err.status("starting") as s:
        yield lambda msg: s.update(f"{msg} ...")


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"
