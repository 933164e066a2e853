"""`edgekit compile` and `edgekit tune`: the TVM stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.support import (
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
    print_validation,
)
from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.checks import MAX_ELEMENTS
from edgekit.targets import DEFAULT_TARGET


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
    """Tune the CPU schedule knobs per conv/dense task (here, or on a board over RPC); compile --tuning uses them.

    Example: edgekit tune model.onnx --target x86_64 --trials 16 -o tuning/
             edgekit compile model.onnx --tuning tuning/ -o art/
    """
    from edgekit.compiler.tuning.search import tune_model
    from edgekit.onnxkit.graph import parse_input_shapes

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
            f"end to end ({e2e['threads']} threads): default {e2e['default_ms']:.3f} ms, "
            f"tuned {e2e['tuned_ms']:.3f} ms, x{e2e['speedup']:.2f} - {verdict}"
        )


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
        fused = sum(l.get("fused") == "mbconv" for l in kept)
        out.print(
            f"pruned layers: {len(kept)} of {len(sparse)} block-sparse"
            + (f" ({fused} inside fused inverted-residual blocks)" if fused else "")
            + f", {saved / 1e6:.2f} MB of weights dropped"
        )
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
            help="Dense kernels for pruned layers too "
            "(for comparisons; block-pruned 1x1 convs / MatMuls are sparse by default).",
        ),
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32, or fp16 on GPU targets "
            "(half activations and weights, fp32 accumulation; validated to 1e-2 of output scale).",
        ),
    ] = "fp32",
    inputs: Annotated[
        Optional[Path], typer.Option("--inputs", help=".npz of validation inputs (default: random).")
    ] = None,
    check_kernels: Annotated[
        bool,
        typer.Option(
            "--check-kernels",
            help="GPU targets: run every scheduled kernel as OpenCL on this CPU (PoCL) against the unscheduled one; "
            "recorded in meta.json.",
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
    from edgekit.onnxkit.graph import parse_input_shapes
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
