"""The `edgekit` command. Thin: each subcommand parses options and calls one library function."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli_support import (
    ForceOpt, JsonOpt, KeyOpt, MaxElementsOpt, RpcOpt, ShapeOpt, TrackerOpt, emit_json, err, handle_errors, out, parse_keep, print_bench,
    print_compress_result, print_validation,
)
from edgekit.checks import MAX_ELEMENTS
from edgekit.errors import EdgekitError

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
        return emit_json({"targets": [t.to_json() | {"runs_on_host": t.runs_on_host, "missing_on_host": t.missing_on_host} for t in specs]})
    table = Table(title="edgekit targets")
    for col in ("name", "aliases", "cpu", "runs here", "description"):
        table.add_column(col)
    for t in specs:
        cpu = " ".join([t.tvm.get("mtriple", ""), t.tvm.get("mcpu", ""), *t.tvm.get("mattr", [])]).strip()
        here = t.runnable_here if t.runnable_here != "no" or not t.missing_on_host else f"no (needs {', '.join(t.missing_on_host)})"
        table.add_row(t.name, ", ".join(t.aliases), cpu, here, t.description)
    out.print(table)


@app.command()
@handle_errors
def export(
    model: Annotated[str, typer.Argument(help="Zoo name (see `edgekit models`) or path/to/file.py:factory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx path.")],
    input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="e.g. 1,3,224,224 (default: the model's).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Leave the batch dimension symbolic.")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 18).")] = 18,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="A state_dict to load (torch.load weights_only).")] = None,
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
    out.print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.nodes} nodes, opset {result.opset}, input {result.input_shape})")
    print_validation(result.check, "onnxruntime vs torch")


@app.command()
@handle_errors
def compress(
    model: Annotated[Path, typer.Argument(help="Input .onnx (fp32).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx.")],
    bits: Annotated[Optional[int], typer.Option("--bits", help="8, 4, 2 (quantize) or 1 (binarize). Default 8, none with --prune/--nm.")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="int8 dynamic quantization (Gemm/MatMul-heavy models).")] = False,
    weight_only: Annotated[bool, typer.Option("--weight-only", help="Quantize weights only (implied below 8 bits).")] = False,
    calib: Annotated[Optional[str], typer.Option("--calib", help="Calibration data: data.npz, 'digits' or 'random'.")] = None,
    method: Annotated[str, typer.Option("--method", help="Calibration: minmax, percentile, entropy.")] = "minmax",
    block_size: Annotated[int, typer.Option("--block-size", help="Weight-only: one scale per block of N (0 = per channel).")] = 0,
    keep: Annotated[Optional[str], typer.Option("--keep", help="Layers kept at 8 bits (1-bit: float): first,last,NAME,GLOB or 'none'.")] = None,
    layer_bits: Annotated[Optional[list[str]], typer.Option("--layer-bits", help="GLOB=BITS per layer name (repeatable).")] = None,
    mode: Annotated[str, typer.Option("--mode", help="1-bit: weights (BWN) or xnor (binary activations too).")] = "weights",
    eval_set: Annotated[Optional[str], typer.Option("--eval", help="Report accuracy on a labelled set: digits.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="int8: pick the weight format exact on this target and this machine "
                                                  "(7-bit weights where onnxruntime lacks VNNI). Default: this machine.")] = None,
    prune: Annotated[Optional[float], typer.Option("--prune", help="Remove this fraction of weights (or of channels, with --structured).")] = None,
    structured: Annotated[bool, typer.Option("--structured", help="Channel pruning: smaller layers, lower latency.")] = False,
    nm: Annotated[Optional[str], typer.Option("--nm", help="N:M sparsity along input channels, e.g. 2:4.")] = None,
    prune_criterion: Annotated[str, typer.Option("--prune-criterion", help="Structured: l1, l2 or activation (data-aware, uses --calib).")] = "l2",
    prune_scope: Annotated[str, typer.Option("--prune-scope", help="layer (the ratio in every layer/group) or global (one threshold).")] = "layer",
    prune_skip: Annotated[Optional[list[str]], typer.Option("--prune-skip", help="Layer name or GLOB left dense (repeatable).")] = None,
    round_to: Annotated[int, typer.Option("--round-to", help="Structured: kept channel counts are multiples of this.")] = 8,
    sparse_format: Annotated[str, typer.Option("--sparse-format", help="Unstructured storage: mask, coo (sparse_initializer) or dense.")] = "mask",
    sweep: Annotated[bool, typer.Option("--sweep", help="Unstructured: one-shot sparsity sweep of output error / accuracy, with its knee.")] = False,
    rank: Annotated[Optional[int], typer.Option("--rank", help="Low-rank: split Gemm/MatMul/1×1 Conv into two layers of this rank (SVD).")] = None,
    rank_energy: Annotated[Optional[float], typer.Option("--rank-energy", help="Low-rank: per layer, the smallest rank keeping this fraction of Σσ².")] = None,
    depth: Annotated[Optional[int], typer.Option("--depth", help="Replace N residual blocks by linear maps fitted on --calib (ReplaceMe).")] = None,
    input_shape: ShapeOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Quantize (8/4/2-bit), binarize (1-bit) or prune an ONNX model; standard ONNX out, runs in onnxruntime.

    Example: edgekit compress model.onnx --bits 4 -o model.q4.onnx --eval digits
             edgekit compress resnet18.onnx --prune 0.5 --structured --bits 8 --calib random -o r18.p50.int8.onnx
    """
    from edgekit.compress import CompressOptions, compress_file
    from edgekit.graph import parse_input_shapes
    from edgekit.progress import stderr

    keep_t = None if keep is None else parse_keep(keep)
    per_layer = {}
    for item in layer_bits or []:
        pattern, _, b = item.rpartition("=")
        if not pattern or not b.isdigit():
            raise EdgekitError(f"bad --layer-bits '{item}'", "write GLOB=BITS, e.g. 'layer4*=8'")
        per_layer[pattern] = int(b)
    if bits is None and prune is None and nm is None and rank is None and rank_energy is None and depth is None:
        bits = 8
    opts = CompressOptions(bits=bits, dynamic=dynamic, method=method, calib=calib, block_size=block_size, keep=keep_t,
                           layer_bits=per_layer, weight_only=weight_only, binarize_mode=mode, target=target, prune=prune,
                           structured=structured, nm=nm, prune_criterion=prune_criterion, prune_scope=prune_scope,
                           prune_skip=tuple(prune_skip or ()), round_to=round_to, sparse_format=sparse_format, sweep=sweep,
                           rank=rank, rank_energy=rank_energy, depth=depth)
    with stderr.status("compressing…"):
        result = compress_file(model, output, opts, force, eval_set, parse_input_shapes(input_shape))
    if json_out:
        return emit_json(result)
    print_compress_result(output, result)


@app.command()
@handle_errors
def finetune(
    model: Annotated[str, typer.Argument(help="Zoo name or path/to/file.py:factory (a digits model, N×1×8×8).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx (packed).")],
    bits: Annotated[int, typer.Option("--bits", help="1 (binary), 2 or 4 (quantization-aware).")] = 1,
    mode: Annotated[str, typer.Option("--mode", help="1-bit: weights (BWN) or xnor.")] = "weights",
    binarizer: Annotated[str, typer.Option("--binarizer", help="1-bit: ste_sign or biper.")] = "ste_sign",
    epochs: Annotated[int, typer.Option("--epochs")] = 20,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 2e-3; 5e-3 with --prune).")] = None,
    distill: Annotated[float, typer.Option("--distill", help="Weight of distillation from the fp32 model (0 = none).")] = 0.5,
    keep: Annotated[str, typer.Option("--keep", help="Layers kept in higher precision: first,last,GLOB or 'none'.")] = "first,last",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    prune: Annotated[Optional[float], typer.Option("--prune", help="Pruning-aware training to this sparsity (or channel ratio with --structured).")] = None,
    structured: Annotated[bool, typer.Option("--structured", help="With --prune: mask whole channels, finetune, remove them.")] = False,
    lottery: Annotated[bool, typer.Option("--lottery", help="With --prune: lottery ticket (iterative pruning, rewinding), from a random init.")] = False,
    rewind_epoch: Annotated[int, typer.Option("--rewind-epoch", help="Lottery: the epoch whose weights survivors rewind to.")] = 1,
    rounds: Annotated[int, typer.Option("--rounds", help="Lottery: pruning rounds.")] = 3,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Binarization-, quantization- or pruning-aware finetuning on the digits task, with distillation; writes ONNX.

    Example: edgekit finetune digits_cnn --bits 1 --mode weights --binarizer biper -o digits.bwn.onnx
             edgekit finetune digits_cnn --prune 0.9 -o digits.sparse90.onnx      (gradual, cubic schedule)
    """
    from edgekit.finetune import finetune_to_onnx
    from edgekit.progress import stderr

    if prune is not None:
        return _prune_finetune(model, output, prune, structured, lottery, epochs, lr or 5e-3, distill, rounds, rewind_epoch, seed, force, json_out)
    lr = lr or 2e-3
    if structured or lottery:
        raise EdgekitError("--structured and --lottery need --prune R", "e.g. finetune digits_cnn --prune 0.5 --structured -o out.onnx")

    keep_t = parse_keep(keep)
    with stderr.status(f"finetuning {model} to {bits} bit ({epochs} epochs)…"):
        result = finetune_to_onnx(model, output, bits, mode, binarizer, epochs, lr, distill, keep_t, seed, force)
    if json_out:
        return emit_json(result)
    a = result["accuracy"]
    out.print(f"wrote {output}: {result['mode']}; weights {result['weight_ratio']:.1f}× smaller, file {result['ratio']:.1f}×")
    out.print(f"digits accuracy: torch fp32 {a['torch_fp32']:.2%} | finetuned torch {a['torch_finetuned']:.2%} | ONNX in onnxruntime {a['onnxruntime']:.2%}")


def _prune_finetune(model, output, ratio, structured, lottery, epochs, lr, distill, rounds, rewind_epoch, seed, force, json_out) -> None:
    from edgekit.progress import stderr
    from edgekit.training.export import prune_finetune_to_onnx

    if structured and lottery:
        raise EdgekitError("--structured and --lottery are different methods", "choose one")
    method = "structured" if structured else "lottery" if lottery else "gradual"
    with stderr.status(f"pruning-aware finetuning of {model} ({method}, {ratio:g}, {epochs} epochs)…"):
        result = prune_finetune_to_onnx(model, output, ratio, method, epochs, lr, distill, rounds, rewind_epoch, seed, force)
    if json_out:
        return emit_json(result)
    a = result["accuracy"]
    out.print(f"wrote {output}: {result['mode']} after {method} training; file {result['ratio']:.2f}× smaller")
    out.print(f"digits accuracy: torch fp32 {a['torch_fp32']:.2%} | training-free {a['training_free_onnxruntime']:.2%} | "
              f"finetuned, ONNX in onnxruntime {a['onnxruntime']:.2%} (drop {a['drop_pt']:.2f} pt)")
    if "lottery" in result:
        t = result["lottery"]
        out.print(f"lottery ticket: dense from scratch {t['dense_accuracy']:.2%} | ticket (rewound to epoch {t['rewind_epoch']}) "
                  f"{t['ticket_accuracy']:.2%} | same mask, random re-init {t['random_reinit_accuracy']:.2%}")


@app.command()
@handle_errors
def tune(
    model: Annotated[Path, typer.Argument(help="Input .onnx file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Tuning directory (writes DIR/<target>/<model>.json) or a .json file.")] = Path("tuning"),
    target: Annotated[str, typer.Option("--target", "-t", help="Target name or .toml (must run on this machine).")] = "x86_64",
    trials: Annotated[int, typer.Option("--trials", help="Knob settings timed per task, besides the default.")] = 16,
    threads: Annotated[int, typer.Option("--threads", help="Threads to tune for (0 = target's / all cores).")] = 0,
    budget: Annotated[Optional[float], typer.Option("--budget", help="Seconds for this model (resumable: run again to continue).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the end-to-end default-vs-tuned benchmark.")] = False,
    input_shape: ShapeOpt = None,
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

    report = tune_model(model, target, output, trials_per_task=trials, threads=threads, budget_s=budget,
                        input_shapes=parse_input_shapes(input_shape), progress=not json_out, verify=not no_verify,
                        device={"rpc": rpc, "tracker": tracker, "key": key} if (rpc or tracker) else None)
    if json_out:
        emit_json(report)
        return
    out.print(f"wrote {report['database']}: {report['tuned']}/{report['tasks']} tasks tuned "
              f"({report['timed']} timed now, {report['resumed']} resumed, {report['seconds']:.0f}s)")
    if report["budget_exhausted"]:
        out.print("[yellow]budget used up: run the same command again to continue[/]")
    e2e = report.get("end_to_end")
    if e2e:
        verdict = "kept" if e2e["accepted"] else "rejected (default schedules kept)"
        out.print(f"end to end ({e2e['threads']} threads): default {e2e['default_ms']:.3f} ms, tuned {e2e['tuned_ms']:.3f} ms, x{e2e['speedup']:.2f} - {verdict}")


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
    out.print(f"[bold]{model}[/]  opset {report.opset}  {escape(report.producer)}  params {report.params:,} "
              f"({report.weight_bytes / 1e6:.2f} MB)  MACs {'unknown (fix the input shapes)' if report.macs is None else f'{report.macs / 1e6:,.1f} M'}")
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


@app.command("compile")
@handle_errors
def compile_cmd(
    model: Annotated[Path, typer.Argument(help="Input .onnx file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Artifact directory to write.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target name or .toml (see `edgekit targets`).")] = "x86_64",
    input_shape: ShapeOpt = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the check against onnxruntime.")] = False,
    schedules: Annotated[str, typer.Option("--schedules", help="default (edgekit CPU rules) or none (TVM's bare loops).")] = "default",
    threads: Annotated[int, typer.Option("--threads", help="Threads the schedules plan for (1 = no parallel loops; 0 = target's).")] = 0,
    no_xnor: Annotated[bool, typer.Option("--no-xnor", help="Keep binary layers as float convs (for comparisons).")] = False,
    tuning: Annotated[Optional[Path], typer.Option("--tuning", help="Tuning database from `edgekit tune` (a .json or a directory, e.g. tuning/).")] = None,
    no_winograd: Annotated[bool, typer.Option("--no-winograd", help="Direct 3x3 convs only (Winograd F(4,3) is faster but stores 4x their weights).")] = False,
    no_fuse_blocks: Annotated[bool, typer.Option("--no-fuse-blocks", help="Run inverted-residual blocks (1x1 -> depthwise -> 1x1) as three ops, not one fused kernel.")] = False,
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help=".npz of validation inputs (default: random).")] = None,
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
    opts = BuildOptions(schedules=schedules, threads=threads, tuning=database, xnor=not no_xnor, winograd=not no_winograd,
                        fuse_blocks=not no_fuse_blocks)
    result = compile_onnx(model, output, target, opts, input_shapes=parse_input_shapes(input_shape), force=force,
                          validate=not no_validate, inputs=inputs, quiet=json_out, max_elements=max_elements)
    if json_out:
        emit_json(result.to_json())
    else:
        build = result.meta["build"]
        out.print(f"wrote {result.artifact} (target {result.meta['target']['name']}, build {build['seconds']:.1f}s)")
        if build["rules"]:
            out.print("schedules: " + ", ".join(f"{rule} ×{n}" for rule, n in build["rules"].items()))
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
    rtol: Annotated[Optional[float], typer.Option("--rtol", help="Relative to output scale; default 1e-5, 1e-2 for int8 activations.")] = None,
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
    report = validate_artifact(
        artifact, model, inputs, atol, rtol, device=device
    )
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
    runtime: Annotated[str, typer.Option("--runtime", help="python (edgekit.load) or cpp (the bundle's C API app).")] = "python",
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

    from edgekit.fileio import atomic_file, check_output_path
    from edgekit.runners import open_runner

    check_output_path(output, force, (input_file, artifact), kind="npy")
    compiled = open_runner(artifact, threads, rpc, tracker, key, runtime)
    if not input_file.exists():
        raise EdgekitError(f"{input_file}: no such file", "check the path; --input takes a .npy (one input) or .npz (named inputs)")
    try:
        loaded = np.load(input_file)
    except Exception:
        raise EdgekitError(f"{input_file} is not a .npy/.npz file", "write it with numpy.save / numpy.savez") from None
    feeds = dict(loaded) if not isinstance(loaded, np.ndarray) else {compiled.inputs[0].name: loaded}
    outputs = compiled.run(feeds)
    with atomic_file(output) as tmp:
        with open(tmp, "wb") as fh:
            if output.suffix == ".npz":
                np.savez(fh, **outputs)
            else:
                np.save(fh, next(iter(outputs.values())))
    summary = {"output": str(output), "outputs": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()]}
    if json_out:
        return emit_json(summary)
    for o in summary["outputs"]:
        out.print(f"{o['name']}: {o['dtype']}{o['shape']} -> {output}")


@app.command()
@handle_errors
def package(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory (edgekit compile).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle directory, or a .tar.gz with --format tar.gz.")],
    fmt: Annotated[str, typer.Option("--format", help="dir or tar.gz.")] = "dir",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Bundle an artifact with the target's TVM runtime, a C API (edgekit.h), a C++ wrapper and an example app.

    Example: edgekit package art.rpi4/ -o bundle/ && qemu-aarch64 -L /usr/aarch64-linux-gnu bundle/bin/edgekit_example bundle
    """
    from rich.table import Table

    from edgekit.package import package_artifact
    from edgekit.progress import stderr

    with stderr.status(f"packaging {artifact}…"):
        result = package_artifact(artifact, output, fmt, force)
    if json_out:
        return emit_json(result)
    out.print(f"wrote {output} for {result['target']} ({result['arch']})")
    table = Table(title="bundle size")
    table.add_column("part")
    table.add_column("kB", justify="right")
    for part, size in result["sizes"]["parts"].items():
        table.add_row(part, f"{size / 1e3:.0f}")
    table.add_row("[bold]runtime (all but model.so and samples)[/]", f"[bold]{result['sizes']['runtime_bytes'] / 1e3:.0f}[/]")
    out.print(table)
    run_cmd = "bin/edgekit_example ." if result["arch"] == "x86_64" else "qemu-aarch64 -L /usr/aarch64-linux-gnu bin/edgekit_example .  (on the board: bin/edgekit_example .)"
    out.print(f"try it: cd {output} && {run_cmd}")


@app.command()
@handle_errors
def bench(
    models: Annotated[list[Path], typer.Argument(help=".onnx files or artifact directories (e.g. fp32 and compressed variants).")],
    runtimes: Annotated[str, typer.Option("--runtimes", help="Comma-separated: ort,tvm,openvino,cpp (cpp: the C API).")] = "ort,tvm",
    target: Annotated[str, typer.Option("--target", "-t", help="Target when compiling an .onnx for tvm.")] = "x86_64",
    threads: Annotated[int, typer.Option("--threads", help="Threads for every runtime (0 = all cores).")] = 0,
    warmup: Annotated[int, typer.Option("--warmup")] = 5,
    repeat: Annotated[int, typer.Option("--repeat")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", help="Alternate runtime order this many times.")] = 2,
    input_shape: ShapeOpt = None,
    onnx_model: Annotated[Optional[Path], typer.Option("--onnx", help="Reference ONNX when MODEL is an artifact.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG bar chart.")] = None,
    rpc: RpcOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency (p50/p90/p99/mean), peak RSS and size per runtime, each in its own process.

    Example: edgekit bench resnet18.onnx --runtimes ort,tvm --threads 2
    """
    from edgekit.bench import bench as run_bench, merge, plot as plot_bench
    from edgekit.graph import parse_input_shapes

    names = tuple(r.strip() for r in runtimes.split(",") if r.strip())
    device = {"rpc": rpc, "tracker": tracker, "key": key} if (rpc or tracker) else None
    shapes = parse_input_shapes(input_shape)
    report = merge(
        [run_bench(m, names, threads, warmup, repeat, rounds, target, shapes, onnx_model, quiet=json_out, device=device) for m in models]
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
    workdir: Annotated[Path, typer.Option("--workdir", help="Where to write the ONNX, artifact and report.")] = Path("out/demo"),
    target: Annotated[str, typer.Option("--target", "-t")] = "x86_64",
    repeat: Annotated[int, typer.Option("--repeat")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """The whole pipeline on a bundled model: export -> compress (int8) -> compile -> validate -> accuracy -> bench."""
    from edgekit.pipeline import run_demo

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


from edgekit.cli_rpc import rpc_app  # noqa: E402 - after `app`, which it does not need

app.add_typer(rpc_app, name="rpc")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
