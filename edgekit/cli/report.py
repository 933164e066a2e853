"""`edgekit demo` and `edgekit report`: the whole pipeline on the digits CNN, and the variant sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgekit.cli.support import (
    JsonOpt,
    emit_json,
    handle_errors,
    out,
)
from edgekit.core.errors import EdgekitError
from edgekit.targets import DEFAULT_TARGET


@handle_errors
def demo(
    model: Annotated[str, typer.Option("--model", help="Zoo model to run end to end.")] = "digits_cnn",
    workdir: Annotated[Path, typer.Option("--workdir", help="Where to write the ONNX, artifact and report.")] = Path(
        "out/demo"
    ),
    target: Annotated[str, typer.Option("--target", "-t")] = DEFAULT_TARGET,
    repeat: Annotated[int, typer.Option("--repeat")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """The whole pipeline on a bundled model: export -> compress (int8) -> compile -> validate -> accuracy -> bench."""
    from edgekit.demo import run_demo

    report = run_demo(model, workdir, target, repeat, quiet=json_out)
    if json_out:
        return emit_json(report)
    table = Table(title=f"edgekit demo: {model} on {target}")
    for col in ("stage", "result"):
        table.add_column(col)
    for stage, result in report["table"]:
        table.add_row(stage, result)
    out.print(table)
    if not report["ok"]:
        raise typer.Exit(1)


@handle_errors
def report(
    model: Annotated[Optional[str], typer.Argument(help="An .onnx file or a zoo name (or give --config).")] = None,
    target: Annotated[str, typer.Option("--target", "-t")] = DEFAULT_TARGET,
    variants: Annotated[
        Optional[str], typer.Option("--variants", help="Comma-separated, e.g. fp32,int8,int4,bwn,prune50s,prune90.")
    ] = None,
    eval_set: Annotated[
        Optional[str],
        typer.Option("--eval", help="digits, or data.npz with the inputs and 'labels' (else: error vs fp32)."),
    ] = None,
    calib: Annotated[
        Optional[str],
        typer.Option("--calib", help="Calibration data for int8 / structured / depth (default: digits or random)."),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Report directory (report.md, report.json, plots, cache/).")
    ] = Path("report"),
    finetune: Annotated[
        bool,
        typer.Option("--finetune", help="Also the training-based variants (ft-bwn, ft-int4, ft-prune90, ft-prune50s)."),
    ] = False,
    threads: Annotated[int, typer.Option("--threads")] = 2,
    repeat: Annotated[int, typer.Option("--repeat", help="Timed calls per runtime and variant.")] = 20,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="A TOML file with a \\[report] table instead of the options.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every compression variant built, validated and measured: size, accuracy (or error vs fp32), latency, Pareto.

    Example: edgekit report digits_cnn --target x86_64 --eval digits -o report/
    """
    from edgekit.report import DEFAULT_VARIANTS, ReportConfig, run_report

    if config is not None:
        cfg = ReportConfig.from_toml(config)
    elif model is None:
        raise EdgekitError("give a MODEL or --config sweep.toml", "e.g. edgekit report digits_cnn --eval digits")
    else:
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else DEFAULT_VARIANTS
        cfg = ReportConfig(model, target, chosen, eval_set, calib, output, finetune, threads, repeat)
    result = run_report(cfg, quiet=json_out)
    if json_out:
        return emit_json(result)
    from edgekit.report_plot import markdown

    out.print(markdown(result), markup=False, highlight=False)
    out.print(f"wrote {result['files']['markdown']}, {result['files']['json']} and the two plots")
