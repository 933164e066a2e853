"""The `edgekit` command. Thin: each subcommand parses options and calls one library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.checks import MAX_ELEMENTS
from edgekit.cli_compress import compress, finetune
from edgekit.cli_support import (
    ForceOpt,
    FreezeOpt,
    JsonOpt,
    KeyOpt,
    MaxElementsOpt,
    RpcOpt,
    ShapeOpt,
    TrackerOpt,
    emit_json,
    err,
    frozen_model,
    handle_errors,
    out,
    print_bench,
    print_package,
    print_validation,
)
from edgekit.errors import EdgekitError
from edgekit.targets import DEFAULT_TARGET

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="edgekit: torch -> ONNX -> (compressed) ONNX -> TVM artifact, validated against onnxruntime at every step.",
)


@app.command()
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


@app.command()
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


@app.command()
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
    from edgekit.export import export_model
    from edgekit.graph import parse_shape
    from edgekit.progress import stderr

    shape = parse_shape(input_shape) if input_shape else None
    with stderr.status(f"exporting {model}…"):
        result = export_model(model, output, shape, opset, dynamic_batch, weights, force)
    if json_out:
        return emit_json(result.to_json())
    out.print(
        f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.nodes} nodes, opset {result.opset}, input {result.input_shape})"
    )
    print_validation(result.check, "onnxruntime vs torch")


# the compress stage's two commands live in cli_compress.py (this file stays under the module size limit)
app.command()(compress)
app.command()(finetune)


@app.command()
@handle_errors
def tune(
    model: Annotated[Path, typer.Argument(help="Input .onnx file.")],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Tuning directory (writes DIR/<target>/<model>.json) or a .json file."),
    ] = Path("tuning"),
    target: Annotated[
        str, typer.Option("--target", "-t", help="Target name or .toml (must run on this machine).")
    ] = DEFAULT_TARGET,
    trials: Annotated[int, typer.Option("--trials", help="Knob settings timed per task, besides the default.")] = 16,
    threads: Annotated[int, typer.Option("--threads", help="Threads to tune for (0 = target's / all cores).")] = 0,
    budget: Annotated[
        Optional[float], typer.Option("--budget", help="Seconds for this model (resumable: run again to continue).")
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the end-to-end default-vs-tuned benchmark.")
    ] = False,
    input_shape: ShapeOpt = None,
    freeze: FreezeOpt = None,
    rpc: RpcOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tune edgekit's CPU schedule knobs (here, or on a board over RPC) per conv/dense task; compile with --tuning to use the database.

    Example: edgekit tune model.onnx --target x86_64 --trials 16 -o tuning/ && edgekit compile model.onnx --tuning tuning/ -o art/
    """
    from edgekit.compiler.tuning.search import tune_model
    from edgekit.graph import parse_input_shapes

    with frozen_model(model, freeze) as tuned_source:  # compile the same --freeze with --tuning to use the database
        report = tune_model(
            tuned_source,
            target,
            output,
            trials_per_task=trials,
            threads=threads,
            budget_s=budget,
            input_shapes=parse_input_shapes(input_shape),
            progress=not json_out,
            verify=not no_verify,
            device={"rpc": rpc, "tracker": tracker, "key": key} if (rpc or tracker) else None,
        )
    if json_out:
        emit_json(report)
        return
    out.print(
        f"wrote {report['database']}: {report['tuned']}/{report['tasks']} tasks tuned "
        f"({report['timed']} timed now, {report['resumed']} resumed, {report['seconds']:.0f}s)"
    )
    if report["budget_exhausted"]:
        out.print("[yellow]budget used up: run the same command again to continue[/]")
    e2e = report.get("end_to_end")
    if e2e:
        verdict = "kept" if e2e["accepted"] else "rejected (default schedules kept)"
        out.print(
            f"end to end ({e2e['threads']} threads): default {e2e['default_ms']:.3f} ms, tuned {e2e['tuned_ms']:.3f} ms, x{e2e['speedup']:.2f} - {verdict}"
        )


@app.command()
@handle_errors
def inspect(
    model: Annotated[Path, typer.Argument(help="An .onnx file.")],
    input_shape: ShapeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What is in a model and what edgekit will do with each op: inputs, outputs, ops with their status,
    parameters, MACs. Run it before compile.

    Example: edgekit inspect model.onnx --input-shape 1,3,224,224
    """
    from edgekit.graph import parse_input_shapes
    from edgekit.inspection import inspect_model

    report = inspect_model(model, parse_input_shapes(input_shape))
    if json_out:
        return emit_json(report.to_json())
    out.print(
        f"[bold]{model}[/]  opset {report.opset}  {escape(report.producer)}  params {report.params:,} "
        f"({report.weight_bytes / 1e6:.2f} MB)  MACs {'unknown (fix the input shapes)' if report.macs is None else f'{report.macs / 1e6:,.1f} M'}"
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


def _print_compile_summary(result, tuning: Path | None) -> None:
    """compile's console summary: the artifact, the rule counts, the pruned layers' kernels, validation."""
    build = result.meta["build"]
    out.print(f"wrote {result.artifact} (target {result.meta['target']['name']}, build {build['seconds']:.1f}s)")
    if build["rules"]:
        out.print("schedules: " + ", ".join(f"{rule} ×{n}" for rule, n in build["rules"].items()))
    sparse = build.get("sparse_layers") or []
    if sparse:
        kept = [l for l in sparse if l["kernel"] == "sparse"]
        saved = sum(l["dense_weight_bytes"] - l["weight_bytes"] for l in kept)
        out.print(f"pruned layers: {len(kept)} of {len(sparse)} block-sparse ({saved / 1e6:.2f} MB of weights dropped)")
        for l in [l for l in sparse if l["kernel"] == "dense"][:8]:  # the sparse ones are in meta.json
            out.print(f"  {l['op']} {'x'.join(map(str, l['shape']))}: dense ({l['why']})")
    if tuning is not None:
        tuned = sum(bool(r["knobs"]) for r in build["rule_details"].values())
        out.print(f"tuning: {tuned} function(s) use tuned knobs from {tuning}")
    for fn, r in build["rule_details"].items():
        if r["fallback_reason"]:
            out.print(f"[yellow]  {fn}: {r['rule']} ({r['fallback_reason']})[/]")
    if result.validation is not None:
        print_validation(result.validation, "TVM vs onnxruntime")
    elif result.meta["validation"]:
        out.print(result.meta["validation"].get("skipped", ""))
    if "kernel_check" in result.meta:
        kc = result.meta["kernel_check"]
        out.print(
            f"GPU kernels on OpenCL (PoCL) vs LLVM: {kc['kernels']} checked, worst {kc['max_rel_error']:.1e} of scale "
            f"({kc['worst']}) -> {'ok' if kc['ok'] else 'FAIL'}"
        )


@app.command("compile")
@handle_errors
def compile_cmd(
    model: Annotated[Path, typer.Argument(help="Input .onnx file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Artifact directory to write.")],
    target: Annotated[
        str,
        typer.Option(
            "--target", "-t", help="Target name or .toml (see `edgekit targets`; default: host, this machine's CPU)."
        ),
    ] = DEFAULT_TARGET,
    input_shape: ShapeOpt = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the check against onnxruntime.")] = False,
    schedules: Annotated[
        str, typer.Option("--schedules", help="default (edgekit's CPU or GPU rules) or none (TVM's bare loops).")
    ] = "default",
    threads: Annotated[
        int, typer.Option("--threads", help="Threads the schedules plan for (1 = no parallel loops; 0 = target's).")
    ] = 0,
    no_xnor: Annotated[
        bool, typer.Option("--no-xnor", help="Keep binary layers as float convs (for comparisons).")
    ] = False,
    tuning: Annotated[
        Optional[Path],
        typer.Option("--tuning", help="Tuning database from `edgekit tune` (a .json or a directory, e.g. tuning/)."),
    ] = None,
    no_winograd: Annotated[
        bool,
        typer.Option(
            "--no-winograd", help="Direct 3x3 convs only (Winograd F(4,3) is faster but stores 4x their weights)."
        ),
    ] = False,
    no_fuse_blocks: Annotated[
        bool,
        typer.Option(
            "--no-fuse-blocks",
            help="Run inverted-residual blocks (1x1 -> depthwise -> 1x1) as three ops, not one fused kernel.",
        ),
    ] = False,
    no_sparse: Annotated[
        bool,
        typer.Option(
            "--no-sparse",
            help="Dense kernels for pruned layers too (for comparisons; block-pruned 1x1 convs / MatMuls are sparse by default).",
        ),
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32, or fp16 on GPU targets (half activations and weights, fp32 accumulation; validated to 1e-2 of output scale).",
        ),
    ] = "fp32",
    inputs: Annotated[
        Optional[Path], typer.Option("--inputs", help=".npz of validation inputs (default: random).")
    ] = None,
    check_kernels: Annotated[
        bool,
        typer.Option(
            "--check-kernels",
            help="GPU targets: run every scheduled kernel as OpenCL on this CPU (PoCL) against the unscheduled one; recorded in meta.json.",
        ),
    ] = False,
    freeze: FreezeOpt = None,
    max_elements: MaxElementsOpt = MAX_ELEMENTS,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Compile ONNX with TVM into an artifact directory, validated against onnxruntime.

    Example: edgekit compile model.onnx --target x86_64 -o artifact/
    """
    from edgekit.compiler.build import compile_onnx
    from edgekit.compiler.options import BuildOptions
    from edgekit.compiler.tuning.db import load_database
    from edgekit.graph import parse_input_shapes
    from edgekit.targets import load_target

    database = load_database(tuning, load_target(target).tvm_target()) if tuning is not None else {}
    opts = BuildOptions(
        schedules=schedules,
        threads=threads,
        tuning=database,
        xnor=not no_xnor,
        winograd=not no_winograd,
        fuse_blocks=not no_fuse_blocks,
        sparse=not no_sparse,
        precision=precision,
    )
    if check_kernels and (freeze or not load_target(target).is_gpu):
        raise EdgekitError(
            "--check-kernels is for GPU targets, without --freeze",
            "compile for cuda / jetson-orin-gpu, or drop --check-kernels",
        )
    result = compile_onnx(
        model,
        output,
        target,
        opts,
        input_shapes=parse_input_shapes(input_shape),
        force=force,
        validate=not no_validate,
        inputs=inputs,
        quiet=json_out,
        max_elements=max_elements,
        freeze=freeze,
    )
    if check_kernels:
        from edgekit.compiler.gpu_check import record_kernel_check

        result.meta["kernel_check"] = record_kernel_check(output, model, target, opts, parse_input_shapes(input_shape))
    if json_out:
        emit_json(result.to_json())
    else:
        _print_compile_summary(result, tuning)
    if not result.meta.get("kernel_check", {}).get("ok", True):
        err.print("[bold red]error:[/] a GPU kernel's schedule computes other values than the unscheduled kernel")
        raise typer.Exit(1)
    if result.validation is not None and not result.validation.ok:
        err.print("[bold red]error:[/] the compiled model does not match onnxruntime within tolerance")
        rules = result.meta["build"]["rules"]
        if any(rule.startswith("winograd") for rule in rules):
            err.print("hint: Winograd convs add fp32 rounding error; compare with --no-winograd")
        if "mbconv kernel" in rules:
            err.print("hint: to rule out the fused inverted-residual kernels, compare with --no-fuse-blocks")
        raise typer.Exit(1)


@app.command()
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
    """Run the artifact (here, emulated, or on a board over RPC) and onnxruntime on the same inputs; exit 1 if they disagree.

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


@app.command()
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

    from edgekit.checks import load_arrays
    from edgekit.fileio import atomic_file, check_output_path
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


@app.command()
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

    Example: edgekit package art.rpi4/ -o bundle/ && qemu-aarch64 -L /usr/aarch64-linux-gnu bundle/bin/edgekit_example bundle
    """
    from edgekit.package import package_artifact
    from edgekit.progress import stderr

    with stderr.status(f"packaging {artifact}…"):
        result = package_artifact(artifact, output, fmt, force)
    if json_out:
        return emit_json(result)
    print_package(output, result)


@app.command()
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
    warmup: Annotated[int, typer.Option("--warmup")] = 5,
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
    from edgekit.graph import parse_input_shapes

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


@app.command()
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


@app.command()
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
    """Every compression variant built, validated and measured: size, accuracy (or error vs fp32), latency; Pareto plots.

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


from edgekit.cli_rpc import rpc_app  # noqa: E402 - after `app`, which it does not need

app.add_typer(rpc_app, name="rpc")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
