"""The `edgekit` command. Thin: each subcommand parses options and calls one library function. One module per
stage (models: export, compress, compile, deploy: validate / run / package / bench, report, rpc); this file
lists the commands in the order `edgekit --help` shows them."""

from __future__ import annotations

import typer

from edgekit.cli.compile import compile_cmd, tune
from edgekit.cli.compress import compress, finetune
from edgekit.cli.deploy import bench, package, run, validate
from edgekit.cli.models import export, inspect, models, targets
from edgekit.cli.report import demo, report
from edgekit.cli.rpc import rpc_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="edgekit: torch -> ONNX -> (compressed) ONNX -> TVM artifact, validated against onnxruntime at every step.",
)

for command in (models, targets, export, compress, finetune, tune, inspect):
    app.command()(command)
app.command("compile")(compile_cmd)
for command in (validate, run, package, bench, demo, report):
    app.command()(command)
app.add_typer(rpc_app, name="rpc")


def main() -> None:
    app()
