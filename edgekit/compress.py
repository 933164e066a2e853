"""Stage 2: ONNX in -> compression passes -> ONNX out (written atomically), with a report and,
on a labelled set, the accuracy of fp32 vs compressed in onnxruntime and in TVM."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError
from edgekit.core.fileio import atomic_file, check_output_path
from edgekit.onnxkit.graph import TensorSpec, load_onnx, name_unnamed_nodes, random_inputs, resolve_input_specs
from edgekit.passes import CompressionMethod, MethodContext, PassReport, opset
from edgekit.passes.options import CompressOptions
from edgekit.passes.quantize import check_not_quantized
from edgekit.targets import DEFAULT_TARGET

EVAL_SETS = ("digits",)


def calibration_samples(source: str | None, specs: list[TensorSpec], count: int) -> list[dict[str, np.ndarray]] | None:
    if source is None:
        return None
    if source == "random":
        return [random_inputs(specs, seed=i) for i in range(min(count, 32))]
    if source == "digits":
        from edgekit.datasets import load_digits_split

        shape = tuple(int(d) for d in specs[0].shape)
        if len(specs) != 1 or shape[1:] != (1, 8, 8):
            raise EdgekitError(
                f"--calib digits needs a model with one input of shape N×1×8×8, not {[list(s.shape) for s in specs]}",
                "pass --calib data.npz with arrays named like the inputs, or --calib random",
            )
        x = load_digits_split().x_train[: count - count % shape[0]]
        return [{specs[0].name: x[i : i + shape[0]]} for i in range(0, len(x), shape[0])]
    from edgekit.onnxkit.checks import check_calibration
    from edgekit.validate import load_inputs_npz

    samples = load_inputs_npz(Path(source), specs)[:count]
    check_calibration(samples, source)
    return samples


def check_prune_options(opts: CompressOptions) -> None:
    from edgekit.passes.prune import parse_nm
    from edgekit.passes.structured import check_ratio

    if opts.prune is not None:
        check_ratio(opts.prune)
    if opts.nm is not None:
        parse_nm(opts.nm)
        if opts.structured or opts.prune is not None:
            raise EdgekitError("--nm is a pattern of its own", "give --nm N:M without --prune/--structured")
    if opts.prune_block != 1:
        if opts.prune_block < 1 or opts.prune_block > 64:
            raise EdgekitError(
                f"bad --prune-block {opts.prune_block}",
                "give a block of 2-64 output channels (8 for TVM's sparse kernels)",
            )
        if opts.prune is None or opts.structured:
            raise EdgekitError("--prune-block needs unstructured --prune R", "e.g. --prune 0.9 --prune-block 8")
    if opts.structured and opts.prune is None:
        raise EdgekitError(
            "--structured needs --prune R (the fraction of channels removed)", "e.g. --prune 0.5 --structured"
        )
    if opts.bits == 1 and opts.prunes and not opts.structured:
        raise EdgekitError(
            "1-bit weights cannot keep unstructured zeros (sign(0) = +1)",
            "use --structured pruning with --bits 1, or prune without --bits",
        )


def methods() -> list[CompressionMethod]:
    """The compression methods in the order they run: depth, structured pruning, low-rank factorization,
    unstructured / N:M pruning, then binarization or quantization of what is left (each pass file's METHOD)."""
    from edgekit.passes import binarize, depth, lowrank, prune, quantize, structured

    return [depth.METHOD, structured.METHOD, lowrank.METHOD, prune.METHOD, binarize.METHOD, quantize.METHOD]


def _digits_accuracy_fn(specs: list[TensorSpec]) -> Callable[[onnx.ModelProto], float]:
    """Digits test accuracy of a model in onnxruntime."""
    from edgekit.datasets import digits_accuracy
    from edgekit.onnxkit.tools import ort_session

    def evaluate(model: onnx.ModelProto) -> float:
        session = ort_session(model)
        return digits_accuracy(lambda c: session.run(None, {specs[0].name: c})[0], int(specs[0].shape[0]))

    return evaluate


def apply_passes(
    model: onnx.ModelProto,
    opts: CompressOptions,
    specs: list[TensorSpec],
    registry: list[CompressionMethod] | None = None,
) -> tuple[onnx.ModelProto, list[PassReport]]:
    """Every method the options ask for, in registry order; all options are checked before the first runs."""
    check_prune_options(opts)
    chosen = [m for m in (methods() if registry is None else registry) if m.wanted(opts)]
    if not chosen:
        raise EdgekitError("nothing to do", "give --bits, --prune, --nm or --rank / --rank-energy")
    for method in chosen:
        method.check(opts)
    check_not_quantized(model)  # the input; what the passes below add to it is theirs to combine
    ctx = MethodContext(
        opts,
        specs,
        lambda n, fallback=None: calibration_samples(opts.calib or fallback, specs, n),
        _digits_accuracy_fn(specs) if opts.calib == "digits" else None,
    )
    model, reports = name_unnamed_nodes(model), []
    for method in chosen:
        model, report = method.run(model, method.configure(ctx))
        reports.append(report)
    return model, reports


def summary(reports: list[PassReport]) -> dict:
    """One result for the whole chain: the last pass's fields, sizes and weight bytes from first to last."""
    result = reports[-1].to_json()
    first = reports[0].to_json()
    for key in ("size_before", "weight_bytes_before"):
        result[key] = first[key]
    result["ratio"] = result["size_before"] / result["size_after"] if result["size_after"] else 0.0
    wa = result["weight_bytes_after"]
    result["weight_ratio"] = result["weight_bytes_before"] / wa if wa else None
    result["mode"] = " + ".join(r.extra.get("mode", r.name) for r in reports)
    result["pass"] = "+".join(r.name for r in reports)
    result["passes"] = [r.to_json() for r in reports]
    return result


def evaluate_digits(fp32_path: Path, compressed_path: Path, target: str = DEFAULT_TARGET) -> dict:
    """Digits test accuracy: fp32 in ORT, compressed in ORT and in TVM (compiled here), and torch fp32 if known."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.datasets import accuracy, digits_logits
    from edgekit.onnxkit.tools import ort_session
    from edgekit.runtime import load

    compressed_model = load_onnx(compressed_path)
    spec = resolve_input_specs(compressed_model, {})[0]
    batch = int(spec.shape[0])

    def ort_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
        session = ort_session(path)
        return digits_logits(lambda c: session.run(None, {spec.name: c})[0], batch)

    fp32, labels = ort_logits(fp32_path)
    result = {"samples": len(labels), "fp32_ort": accuracy(fp32, labels)}
    compressed, _ = ort_logits(compressed_path)
    result["compressed_ort"] = accuracy(compressed, labels)
    with tempfile.TemporaryDirectory() as tmp:
        art = compile_onnx(compressed_path, Path(tmp) / "art", target, quiet=True)
        model = load(Path(tmp) / "art")
        tvm_logits, _ = digits_logits(lambda c: model(c)[0], batch)
    result["compressed_tvm"] = accuracy(tvm_logits, labels)
    from edgekit.validate import compare_outputs, tolerances_for

    agree = compare_outputs({"logits": compressed}, {"logits": tvm_logits}, *tolerances_for(compressed_model))
    result["tvm_vs_ort_max_abs"] = agree.max_abs
    result["tvm_vs_ort_max_rel"] = agree.max_rel
    result["tvm_vs_ort_ok"] = agree.ok
    result["tvm_validation_ok"] = bool(art.validation is None or art.validation.ok)
    result["drop_pt"] = 100 * (result["fp32_ort"] - result["compressed_ort"])
    return result


def check_runs_in_onnxruntime(model: onnx.ModelProto, specs: list[TensorSpec]) -> None:
    """The promise of every pass: onnxruntime loads and runs the output. Checked once before it is written, so
    a pass that produced a model onnxruntime refuses is an error, never exit 0."""
    from edgekit.onnxkit.tools import ort_error_line, ort_session

    session = ort_session(model)
    try:
        session.run(None, random_inputs(specs))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors, reported as one line
        interrupts.check()
        raise EdgekitError(
            f"the compressed model does not run in onnxruntime: {ort_error_line(exc)}",
            "this is a bug in the pass for this graph; report it with the model (the output was not written)",
        ) from None


def compress_file(
    src: Path,
    out: Path,
    opts: CompressOptions,
    force: bool = False,
    eval_set: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict:
    src = Path(src)
    calib_file = Path(opts.calib) if opts.calib not in (None, "digits", "random") else None
    check_output_path(out, force, (src, calib_file), kind="onnx")
    if eval_set and eval_set not in EVAL_SETS:
        raise EdgekitError(f"unknown evaluation set '{eval_set}'", f"choose from {', '.join(EVAL_SETS)}")
    model = load_onnx(src)
    specs = resolve_input_specs(model, input_shapes or {})
    compressed, reports = apply_passes(model, opts, specs)
    opset.keep_used_imports(compressed)
    check_runs_in_onnxruntime(compressed, specs)
    with atomic_file(out) as tmp:
        onnx.save(compressed, str(tmp))
    result = summary(reports) | {
        "input": str(src),
        "output": str(out),
        "file_bytes_before": src.stat().st_size,
        "file_bytes_after": out.stat().st_size,
    }
    result["file_ratio"] = result["file_bytes_before"] / result["file_bytes_after"]
    if eval_set == "digits":
        result["accuracy"] = evaluate_digits(src, out)
    return result
