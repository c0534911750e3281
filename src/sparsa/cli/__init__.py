"""The `sparsa` command. Each command lives in its own module and only parses, calls a job and prints."""

from __future__ import annotations

import typer

from .bench import bench
from .demo import demo
from .eval import eval_cmd
from .export import export_cmd
from .info import info
from .pack import pack_cmd
from .prune import prune_cmd
from .recover import recover_cmd
from .sweep import sweep_cmd

app = typer.Typer(
    name="sparsa",
    help="Make transformer models sparse and make the sparsity pay: prune, pack, run sparse kernels, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo)
app.command("prune")(prune_cmd)
app.command("bench")(bench)
app.command("info")(info)
app.command("eval")(eval_cmd)
app.command("sweep")(sweep_cmd)
app.command("pack")(pack_cmd)
app.command("save")(pack_cmd)
app.command("export")(export_cmd)
app.command("recover")(recover_cmd)


def main() -> None:
    app()
