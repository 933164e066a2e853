"""`edgekit validate | run | package | bench`: the artifact checked, run, bundled and measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.support import (
    ForceOpt,
    FreezeOpt,
    JsonOpt,
    KeyOpt,
    RpcOpt,
    ShapeOpt,
    TrackerOpt,
    emit_json,
    handle_errors,
    out,
    print_bench,
    print_package,
    print_validation,
)
from edgekit.core.errors import EdgekitError
from edgekit.targets import DEFAULT_TARGET


@handle_errors
def validate(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    model: Annotated[Optional[Path], typer.Argument(help="Reference .onnx (default: the artifact's source).")] = None,
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help=".npz of inputs (default: random).")] = None,
    atol: Annotated[Optional[float], typer.Option("--atol", help="Default 1e-4.")] = None,
    rtol: Annotated[
        Optional[float],
        typer.Option("--rtol", help="Relative to output scale; default 1e-5, 1e-2 for int8 activations."),
    ] = None,
    rpc: RpcOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the artifact (here, emulated, or on a board over RPC) and onnxruntime on one input set; exit 1 if unequal.

    Example: edgekit validate artifact/ model.onnx --inputs data.npz
    """
    from edgekit.validate import validate_artifact

    device = {"rpc": rpc, "tracker": tracker, "key": key} if (rpc or tracker) else None
    report = validate_artifact(artifact, model, inputs, atol, rtol, device=device)
    if json_out:
        emit_json(report.to_json())
    else:
        print_validation(report, "TVM vs onnxruntime")
    if not report.ok:
        raise typer.Exit(1)


@handle_errors
def run(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help=".npy (single input) or .npz (named inputs).")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".npy (first output) or .npz (all outputs).")],
    threads: Annotated[int, typer.Option("--threads")] = 0,
    runtime: Annotated[
        str, typer.Option("--runtime", help="python (edgekit.load) or cpp (the bundle's C API app).")
    ] = "python",
    rpc: RpcOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a compiled artifact on inputs from a file (here, emulated, or on a board over RPC).

    Example: edgekit run artifact/ --input x.npy -o y.npy
    """
    import numpy as np

    from edgekit.core.fileio import atomic_file, check_output_path
    from edgekit.onnxkit.checks import load_arrays
    from edgekit.runners import open_runner

    check_output_path(output, force, (input_file, artifact), kind="npy")
    compiled = open_runner(artifact, threads, rpc, tracker, key, runtime)
    if not input_file.exists():
        raise EdgekitError(
            f"{input_file}: no such file", "check the path; --input takes a .npy (one input) or .npz (named inputs)"
        )
    loaded = load_arrays(input_file)  # the one reader: never unpickles, numbers only
    feeds = {compiled.inputs[0].name: loaded[""]} if "" in loaded else loaded
    outputs = compiled.run(feeds)
    with atomic_file(output) as tmp:
        with open(tmp, "wb") as fh:
            if output.suffix == ".npz":
                np.savez(fh, **outputs)
            else:
                np.save(fh, next(iter(outputs.values())))
    summary = {
        "output": str(output),
        "outputs": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()],
    }
    if json_out:
        return emit_json(summary)
    for o in summary["outputs"]:
        out.print(f"{o['name']}: {o['dtype']}{o['shape']} -> {output}")


@handle_errors
def package(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory (edgekit compile).")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle directory, or a .tar.gz with --format tar.gz.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="dir or tar.gz.")] = "dir",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Bundle an artifact with the target's TVM runtime, a C API (edgekit.h), a C++ wrapper and an example app.

    Example: edgekit package art.rpi4/ -o bundle/
             qemu-aarch64 -L /usr/aarch64-linux-gnu bundle/bin/edgekit_example bundle
    """
    from edgekit.core.progress import stderr
    from edgekit.package import package_artifact

    with stderr.status(f"packaging {artifact}…"):
        result = package_artifact(artifact, output, fmt, force)
    if json_out:
        return emit_json(result)
    print_package(output, result)


@handle_errors
def bench(
    models: Annotated[
        list[Path], typer.Argument(help=".onnx files or artifact directories (e.g. fp32 and compressed variants).")
    ],
    runtimes: Annotated[
        str, typer.Option("--runtimes", help="Comma-separated: ort,tvm,openvino,cpp (cpp: the C API).")
    ] = "ort,tvm",
    target: Annotated[
        str, typer.Option("--target", "-t", help="Target when compiling an .onnx for tvm.")
    ] = DEFAULT_TARGET,
    threads: Annotated[int, typer.Option("--threads", help="Threads for every runtime (0 = all cores).")] = 0,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up calls per round (and at least 0.3 s of them).")] = 5,
    repeat: Annotated[int, typer.Option("--repeat")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", help="Alternate runtime order this many times.")] = 2,
    input_shape: ShapeOpt = None,
    onnx_model: Annotated[
        Optional[Path], typer.Option("--onnx", help="Reference ONNX when MODEL is an artifact.")
    ] = None,
    freeze: FreezeOpt = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG bar chart.")] = None,
    rpc: RpcOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency (p50/p90/p99/mean), peak RSS and size per runtime, each in its own process.

    Example: edgekit bench resnet18.onnx --runtimes ort,tvm --threads 2
    """
    from edgekit.bench import bench as run_bench
    from edgekit.bench import merge
    from edgekit.bench import plot as plot_bench
    from edgekit.onnxkit.graph import parse_input_shapes

    names = tuple(r.strip() for r in runtimes.split(",") if r.strip())
    device = {"rpc": rpc, "tracker": tracker, "key": key} if (rpc or tracker) else None
    shapes = parse_input_shapes(input_shape)
    report = merge(
        [
            run_bench(
                m,
                names,
                threads,
                warmup,
                repeat,
                rounds,
                target,
                shapes,
                onnx_model,
                quiet=json_out,
                device=device,
                freeze=freeze,
            )
            for m in models
        ]
    )
    if plot:
        plot_bench(report, plot)
    if json_out:
        return emit_json(report.to_json())
    print_bench(report)
