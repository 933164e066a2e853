"""`edgekit models | targets | export | inspect`: what there is to build, and the torch -> ONNX stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli.support import (
    ForceOpt,
    JsonOpt,
    ShapeOpt,
    emit_json,
    handle_errors,
    out,
    print_validation,
)


@handle_errors
def models(json_out: JsonOpt = False) -> None:
    """List the model zoo."""
    from edgekit.zoo import zoo_info

    rows = zoo_info()
    if json_out:
        return emit_json({"models": rows})
    table = Table(title="edgekit model zoo")
    for col in ("name", "input shape", "weights", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "×".join(map(str, r["input_shape"])), r["weights"], r["description"])
    out.print(table)


@handle_errors
def targets(json_out: JsonOpt = False) -> None:
    """List compilation targets (files in targets/)."""
    from edgekit.targets import list_targets

    specs = list_targets()
    if json_out:
        return emit_json(
            {
                "targets": [
                    t.to_json()
                    | {
                        "runs_on_host": t.runs_on_host,
                        "missing_on_host": t.missing_on_host,
                        "why_not_runnable": t.why_not_runnable,
                    }
                    for t in specs
                ]
            }
        )
    table = Table(title="edgekit targets")
    for col in ("name", "aliases", "cpu", "runs here", "description"):
        table.add_column(col)
    for t in specs:
        host = t.host_tvm
        cpu = " ".join([t.gpu_arch, host.get("mtriple", ""), host.get("mcpu", ""), *host.get("mattr", [])]).strip()
        here = t.runnable_here
        if here == "no" and (t.missing_on_host or t.is_gpu):
            here = f"no ({'needs ' + ', '.join(t.missing_on_host) if t.missing_on_host else t.why_not_runnable})"
        table.add_row(t.name, ", ".join(t.aliases), cpu, here, t.description)
    out.print(table)


@handle_errors
def export(
    model: Annotated[str, typer.Argument(help="Zoo name (see `edgekit models`) or path/to/file.py:factory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx path.")],
    input_shape: Annotated[
        Optional[str], typer.Option("--input-shape", help="e.g. 1,3,224,224 (default: the model's).")
    ] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Leave the batch dimension symbolic.")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 18).")] = 18,
    weights: Annotated[
        Optional[Path], typer.Option("--weights", help="A state_dict to load (torch.load weights_only).")
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a torch model to checked, simplified ONNX and check it against torch.

    Example: edgekit export resnet18 -o resnet18.onnx
    """
    from edgekit.core.progress import stderr
    from edgekit.export import export_model
    from edgekit.onnxkit.graph import parse_shape

    shape = parse_shape(input_shape) if input_shape else None
    with stderr.status(f"exporting {model}…"):
        result = export_model(model, output, shape, opset, dynamic_batch, weights, force)
    if json_out:
        return emit_json(result.to_json())
    out.print(
        f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.nodes} nodes, opset {result.opset}, "
        f"input {result.input_shape})"
    )
    print_validation(result.check, "onnxruntime vs torch")


@handle_errors
def inspect(
    model: Annotated[Path, typer.Argument(help="An .onnx file.")],
    input_shape: ShapeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What is in a model and what edgekit does with each op (inputs, outputs, op status, params, MACs).

    Run it before compile.

    Example: edgekit inspect model.onnx --input-shape 1,3,224,224
    """
    from edgekit.inspection import inspect_model
    from edgekit.onnxkit.graph import parse_input_shapes

    report = inspect_model(model, parse_input_shapes(input_shape))
    if json_out:
        return emit_json(report.to_json())
    out.print(
        f"[bold]{model}[/]  opset {report.opset}  {escape(report.producer)}  params {report.params:,} "
        f"({report.weight_bytes / 1e6:.2f} MB)  "
        f"MACs {'unknown (fix the input shapes)' if report.macs is None else f'{report.macs / 1e6:,.1f} M'}"
    )
    table = Table(title="inputs / outputs")
    for col in ("", "name", "shape", "dtype"):
        table.add_column(col)
    for kind, specs in (("in", report.inputs), ("out", report.outputs)):
        for s in specs:
            table.add_row(kind, escape(s.name), str(list(s.shape)), s.dtype)
    out.print(table)
    ops = Table(title="ops")
    for col in ("op", "count", "status", "note"):
        ops.add_column(col)
    colour = {"tvm": "green", "edgekit": "cyan", "unsupported": "red"}
    for r in report.ops:
        name = f"{r.domain}::{r.op}" if r.domain else r.op
        note = r.note + (f" (first: node '{r.first_node}')" if r.first_node else "")
        ops.add_row(escape(name), str(r.count), f"[{colour[r.status]}]{r.status}[/]", escape(note))
    out.print(ops)
    for flag in report.fix_shapes:
        out.print(f"dynamic input: fix it with [bold]{escape(flag)}[/]")
    if report.unsupported:
        out.print(f"[red]not compilable as is:[/] {', '.join(r.op for r in report.unsupported)}")
