"""Stage 3: ONNX -> Relax -> relax.build for a target -> artifact directory (written atomically).

The artifact: model.so (TVM executable for the target), meta.json (inputs/outputs, target, source sha256,
validation vs onnxruntime, build time), bundle.npz (sample inputs and onnxruntime's outputs for them).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

import edgekit.core.interrupts as interrupts
from edgekit import __version__
from edgekit.compiler.frontend import to_relax
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.pipeline import Reports, relax_passes, rules_for, run_passes, target_kind, xnor_passes
from edgekit.compiler.schedules.base import RuleContext, RuleResult
from edgekit.core.errors import EdgekitError, last_line
from edgekit.core.fileio import atomic_dir, check_output_path, sha256_of
from edgekit.core.progress import native_stderr_captured, steps, warn
from edgekit.onnxkit.checks import MAX_ELEMENTS, check_shape_inputs, index_bounds
from edgekit.onnxkit.graph import graph_outputs, load_onnx, random_inputs, resolve_input_specs
from edgekit.onnxkit.tools import ort_session, simplify
from edgekit.passes import passes_applied
from edgekit.passes.legacy_opset import reference_model
from edgekit.runners import open_runner
from edgekit.runtime import BUNDLE, LIBRARY, META, cpu_count
from edgekit.targets import DEFAULT_TARGET, TargetSpec, load_target
from edgekit.validate import (
    ValidationReport,
    compare_samples,
    load_inputs_npz,
    tolerances_for,
)

META_SCHEMA_VERSION = 2  # 2: rule_details (tuned knobs, fallback reasons), target caps, warnings, options


@dataclass
class CompileResult:
    artifact: Path
    meta: dict
    validation: ValidationReport | None

    def to_json(self) -> dict:
        return {"artifact": str(self.artifact), **self.meta}


@dataclass
class Built:
    """What build_module gives back: the executable, {PrimFunc: RuleResult}, the reporting passes' logs
    (int8 / binary per-layer results, skipped rewrites), the memory plan and TVM's own warnings."""

    executable: object
    rules: dict[str, RuleResult]
    reports: Reports
    memory: dict
    tvm_log: list[str] = field(default_factory=list)  # TVM's C++ warnings during the build (not shown: meta.json)


def build_module(mod, target: TargetSpec, opts: BuildOptions, *, int8: bool = False, binary: bool = False) -> Built:
    """The one build entry point (compile, tune, tests): the pipeline of compiler/pipeline.py for the target's
    kind, then relax.build. int8: the model has quantized activations (QDQ); binary: sign activations (XNOR
    kernels where the target is a CPU). schedules="none" keeps TVM's bare pipeline (naive loops, the baseline)."""
    from tvm import relax

    from edgekit.compiler.memory_plan import recording_pipeline

    plan: dict = {}
    with native_stderr_captured() as tvm_log:
        mod, rules, reports = schedule_module(mod, target, opts, int8=int8, binary=binary)
        with _tvm_errors(target):
            executable = relax.build(mod, target=target.tvm_target(), relax_pipeline=recording_pipeline(plan))
    interrupts.check()
    return Built(executable, rules, reports, plan, tvm_log)


def prepare_module(
    mod,
    target: TargetSpec,
    opts: BuildOptions,
    *,
    int8: bool = False,
    binary: bool = False,
    reports: Reports | None = None,
) -> object:
    """The Relax half of the build: every pass compiler/pipeline.py lists for the target's kind, in order."""
    reports = reports if reports is not None else Reports()
    kind = target_kind(target.tvm.get("kind", "llvm"))
    tvm_target = target.tvm_target()
    with _tvm_errors(target):
        if opts.schedules != "default":  # TVM's bare pipeline; XNOR kernels are hand-scheduled TIR, kept
            return run_passes(mod, xnor_passes(kind, tvm_target, binary and opts.xnor, reports))
        passes = relax_passes(
            kind,
            opts,
            target.caps(),
            tvm_target,
            _threads(target, opts),
            int8=int8 and opts.int8,
            binary=binary and opts.xnor,
            reports=reports,
        )
        return run_passes(mod, passes)


def schedule_module(
    mod, target: TargetSpec, opts: BuildOptions, *, int8: bool = False, binary: bool = False
) -> tuple[object, dict[str, RuleResult], Reports]:
    """Everything build_module does before code generation: prepare_module, then every PrimFunc's schedule rule."""
    reports = Reports()
    mod = prepare_module(mod, target, opts, int8=int8, binary=binary, reports=reports)
    if opts.schedules != "default":
        return mod, {}, reports
    mod, results = schedule_prepared(mod, target, opts, int8=int8)
    return mod, results, reports


def schedule_prepared(
    mod, target: TargetSpec, opts: BuildOptions, *, int8: bool = False
) -> tuple[object, dict[str, RuleResult]]:
    """Every PrimFunc of a prepare_module result scheduled by the rules of the target's kind (GPU: each one
    checked thread-bound; CPU: constant weight re-layouts folded)."""
    from edgekit.compiler.schedules.analysis import effective_threads, fold_weight_prepacks
    from edgekit.compiler.schedules.apply import schedule_functions

    kind, int8 = target_kind(target.tvm.get("kind", "llvm")), int8 and opts.int8
    threads = _threads(target, opts)
    if kind == "cpu" and not int8:  # small models run single-threaded (analysis.effective_threads)
        threads = effective_threads(mod, threads)
    with _tvm_errors(target):
        ctx = RuleContext(target.caps(), target.tvm_target(), threads, opts.prepack)
        rules, fallback = rules_for(kind, int8)
        mod, results = schedule_functions(mod, ctx, rules, fallback, opts.tuning)
        if kind == "gpu":
            check_thread_bound(mod, results, target)
        else:
            mod = fold_weight_prepacks(mod)
    return mod, results


def _threads(target: TargetSpec, opts: BuildOptions) -> int:
    """The threads a build's parallel loops are planned for: --threads, else the target file's, else all cores."""
    return opts.threads or target.threads or cpu_count()


def check_thread_bound(mod, results: dict[str, RuleResult], target: TargetSpec) -> None:
    """Every block of every GPU kernel must sit under a thread-bound loop: one outside would run on a single
    thread, or not on the GPU at all."""
    import tvm

    from edgekit.compiler.schedules.tir import unbound_blocks

    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        left = unbound_blocks(func)
        if left:
            why = results.get(gv.name_hint, RuleResult("none")).fallback_reason
            raise EdgekitError(
                f"no GPU schedule rule could spread '{gv.name_hint}' over threads for {target.name}"
                f" (block {left[0]} is not thread-bound{'; ' + why if why else ''})",
                "compile for a CPU target, or report the model: the op needs a GPU rule",
            )


def tvm_error_line(exc: BaseException) -> str:
    """The informative line of a TVM error: its messages end with a dump of the IR ("# Metadata omitted ...")
    after the "Check failed:" / "...Error:" line that says what went wrong."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if re.search(r"(Check failed|Error|error)\b.*:", ln) and not ln.startswith("#")]
    best = said[-1] if said else next((ln for ln in reversed(lines) if not ln.startswith("#")), type(exc).__name__)
    return best[:300]


@contextmanager
def _tvm_errors(target: TargetSpec):
    """TVM 0.27 raises plain RuntimeError/ValueError/InternalError subclasses (no TVMError): one user-facing line."""
    try:
        yield
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the user as one line
        interrupts.check()
        raise EdgekitError(
            f"TVM could not build the model for {target.name}: {tvm_error_line(exc)}",
            "try --schedules none to tell an edgekit rule from a TVM limitation, and report the model",
        ) from None


def has_qdq(model) -> bool:
    """QuantizeLinear nodes: an int8 (QDQ) model, which gets the int8 lowering and rules."""
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def has_binary_activations(model) -> bool:
    """Where(GreaterOrEqual(x, 0), ...): how edgekit (and its exporter) writes sign activations."""
    produced_by = {out: node.op_type for node in model.graph.node for out in node.output}
    return any(n.op_type == "Where" and produced_by.get(n.input[0]) == "GreaterOrEqual" for n in model.graph.node)


def int8_format_warning(model, spec: TargetSpec) -> str | None:
    """Full-range int8 weights saturate in onnxruntime's kernels on x86 without VNNI (here or on the target)."""
    from edgekit.passes.quantize import INT8_FORMAT_KEY, needs_reduce_range
    from edgekit.targets import TargetCaps

    fmt = {p.key: p.value for p in model.metadata_props}.get(INT8_FORMAT_KEY, "u8s8")
    where = [
        name
        for name, caps in (("this machine", TargetCaps.host()), (spec.name, spec.caps()))
        if needs_reduce_range(caps)
    ]
    if fmt == "u8s7" or not where:
        return None
    slow = (
        f"; TVM's convs for {spec.name} take slow widening code for them (several times fp32)"
        if needs_reduce_range(spec.caps())
        else ""
    )
    return (
        f"this int8 model has full-range 8-bit weights, which onnxruntime saturates on {' and '.join(where)} "
        f"(no VNNI): its results there are not exact integer math{slow}; "
        f"re-quantize with `edgekit compress --bits 8 --target {spec.name}`"
    )


def summarize_rules(rules: dict[str, RuleResult]) -> dict[str, int]:
    """How many fused functions got each rule."""
    counts: dict[str, int] = {}
    for result in rules.values():
        counts[result.rule] = counts.get(result.rule, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def compile_onnx(
    onnx_path: Path,
    out: Path,
    target: str = DEFAULT_TARGET,
    opts: BuildOptions | None = None,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    force: bool = False,
    validate: bool = True,
    inputs: Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    quiet: bool = False,
    max_elements: int = MAX_ELEMENTS,
    freeze: dict[str, np.ndarray] | list[str] | None = None,
) -> CompileResult:
    """ONNX file -> artifact directory for `target`, built with `opts`, validated against onnxruntime when this
    machine can run (or emulate) the target."""
    onnx_path, out, opts = Path(onnx_path), Path(out), opts or BuildOptions()
    spec = load_target(target)
    _check_target(spec, opts)
    check_output_path(out, force, (onnx_path, inputs), kind="artifact")
    with steps(quiet) as step:
        step("loading ONNX")
        model = load_onnx(onnx_path)
        if freeze:
            from edgekit.passes.freeze import freeze_inputs, parse_freeze

            step("binding --freeze inputs and folding what depends on them")
            freeze = parse_freeze(freeze, model) if isinstance(freeze, list) else freeze
            model = freeze_inputs(model, freeze)
        check_shape_inputs(model)
        in_specs = resolve_input_specs(model, input_shapes or {}, max_elements)
        given = load_inputs_npz(inputs, in_specs) if inputs else None  # a bad --inputs file fails before the build
        default_atol, default_rtol = tolerances_for(model, opts.precision)
        atol = default_atol if atol is None else atol
        rtol = default_rtol if rtol is None else rtol
        did_simplify, mod, out_specs = _import(model, in_specs, step)
        step(f"scheduling and building for {spec.name}")
        t0 = time.perf_counter()
        int8 = has_qdq(model)
        build_warnings = [w for w in [int8_format_warning(model, spec)] if int8 and w]
        built = build_module(mod, spec, opts, int8=int8, binary=has_binary_activations(model))
        executable, skipped = built.executable, built.reports.skipped
        build_warnings += [f"rewrite {s['pass']} skipped: {s['skipped']}" for s in skipped]
        for w in build_warnings:
            warn(w, quiet)
        build = _build_record(built, opts, round(time.perf_counter() - t0, 3), did_simplify) | {
            "tolerance": {"atol": atol, "rtol": rtol, "precision": opts.precision}
        }
        cc = spec.compiler()
        with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="edgekit-device-") as device_dir:
            device_objects = []
            if spec.is_gpu:
                step(f"compiling the CUDA kernels with nvcc ({spec.gpu_arch})")
                device_objects, build["cuda"] = _device_code(executable, spec, Path(device_dir))
            step("linking model.so")
            _link(executable, tmp / LIBRARY, cc, spec, device_objects)
            meta = _meta(onnx_path, spec, in_specs, out_specs, model, build, tmp, build_warnings)
            if freeze:
                meta["frozen"] = {k: {"dtype": str(v.dtype), "value": v.tolist()} for k, v in freeze.items()}
            (tmp / META).write_text(json.dumps(meta, indent=2))
            report = None
            if validate and spec.runnable_here != "no":
                step(f"validating against onnxruntime ({spec.runnable_here})")
                samples = given or [random_inputs(in_specs)]
                session = ort_session(reference_model(onnx_path), reference=True)
                report = compare_samples(samples, session, open_runner(tmp), atol, rtol, freeze)
                meta["validation"] = report.to_json() | {"samples": len(samples), "executed": spec.runnable_here}
                _write_bundle(tmp / BUNDLE, samples[0], session, freeze)
            elif validate:
                skipped_why = (
                    f"not validated here: {spec.why_not_runnable}; "
                    "validate on the target with `edgekit validate` or over --rpc"
                )
                warn(skipped_why, quiet)
                meta["warnings"].append(skipped_why)
                meta["validation"] = {"ok": None, "skipped": skipped_why}
            (tmp / META).write_text(json.dumps(meta, indent=2))
    return CompileResult(out, meta, report)


def _check_target(spec: TargetSpec, opts: BuildOptions) -> None:
    """What can fail before any work: a bad [tvm] table (unknown mcpu, arch), a GPU target's missing nvcc,
    a GPU-only option for a CPU."""
    spec.tvm_target()
    if spec.is_gpu:
        from edgekit.compiler.cuda import require_nvcc

        require_nvcc(spec.nvcc)
    elif opts.precision != "fp32":
        raise EdgekitError(
            f"--precision {opts.precision} is for GPU targets; {spec.name} is a CPU",
            "use --precision fp32 here, or compress with --bits 8 for a smaller, faster CPU model",
        )


def _build_record(built: Built, opts: BuildOptions, seconds: float, did_simplify: bool) -> dict:
    """meta.json's "build": options, the rule of every PrimFunc, the reporting passes' logs, the memory plan."""
    rules = built.rules
    return {
        "seconds": seconds,
        "onnxsim": did_simplify,
        "options": opts.to_json(),
        "schedules": "edgekit-default" if rules else "tvm-bare",
        "rules": summarize_rules(rules),
        "winograd": opts.winograd,
        "fused_blocks": opts.fuse_blocks,
        "rule_per_function": {name: r.rule for name, r in rules.items()},
        "rule_details": {name: r.to_json() for name, r in rules.items() if r.knobs or r.fallback_reason},
        "binary_layers": built.reports.binary_layers,
        "int8_layers": built.reports.int8_layers,
        "sparse_layers": built.reports.sparse_layers,
        "rewrites_skipped": built.reports.skipped,
        "memory": built.memory,
        "tvm_log": built.tvm_log[:50],
    }


def _meta(
    onnx_path: Path, spec: TargetSpec, in_specs, out_specs, model, build: dict, tmp: Path, build_warnings: list[str]
) -> dict:
    return {
        "schema_version": META_SCHEMA_VERSION,
        "edgekit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {
            "path": str(onnx_path.resolve()),
            "sha256": sha256_of(onnx_path),
            "size_bytes": onnx_path.stat().st_size,
        },
        "target": spec.to_json() | {"runs_on_host": spec.runs_on_host},
        "inputs": [s.to_json() for s in in_specs],
        "outputs": [s.to_json() for s in out_specs],
        "passes": passes_applied(model),
        "index_inputs": index_bounds(model),
        "build": build,
        "library": {"file": LIBRARY, "size_bytes": (tmp / LIBRARY).stat().st_size},
        "validation": None,
        "warnings": build_warnings,
    }


def fixed_output_specs(simplified: onnx.ModelProto) -> list:
    """The outputs with the shapes the fixed inputs give them (the source's may say ['unk__315', 1, 1, 96])."""
    try:
        return graph_outputs(onnx.shape_inference.infer_shapes(simplified))
    except Exception:  # noqa: BLE001 - inference is best effort: the graph's own output types remain
        interrupts.check()
        return graph_outputs(simplified)


def _import(model, in_specs, step) -> tuple[bool, object, list]:
    """ONNX -> (onnxsim with fixed shapes) -> Relax.

    Returns (onnxsim ran, module, output specs with concrete shapes)."""
    step("simplifying with fixed shapes (onnxsim)")
    simplified, did_simplify = simplify(model, {s.name: list(s.shape) for s in in_specs})
    step("importing into TVM Relax")
    with native_stderr_captured():  # the importer's C++ warnings ("BlockBuilder destroyed ..." after an error)
        mod = to_relax(simplified, in_specs)
    return did_simplify, mod, fixed_output_specs(simplified)


def imported_module(
    onnx_path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> tuple[object, bool, bool]:
    """An ONNX file as Relax (as compile imports it, with `input_shapes` for its dynamic inputs), and whether it
    has QDQ (int8) and binary activations."""
    model = load_onnx(Path(onnx_path))
    _, mod, _ = _import(model, resolve_input_specs(model, input_shapes or {}), lambda _msg: None)
    return mod, has_qdq(model), has_binary_activations(model)


def scheduled_module(onnx_path: Path, target: str, threads: int = 2) -> tuple[object, dict[str, str]]:
    """The scheduled IRModule compile would hand to relax.build, and its rule per PrimFunc (for structural
    comparisons of compiler changes: bench/structure_fingerprint.py). Default build options."""
    mod, int8, binary = imported_module(onnx_path)
    mod, rules, _ = schedule_module(mod, load_target(target), BuildOptions(threads=threads), int8=int8, binary=binary)
    return mod, {name: r.rule for name, r in rules.items()}


def _device_code(executable, spec: TargetSpec, workdir: Path) -> tuple[list[str], dict]:
    """A GPU build's kernels compiled by nvcc into an object for the link, and what meta.json says of them."""
    from edgekit.compiler.cuda import compile_fatbin, cuda_source, fatbin_object

    fatbin, code = compile_fatbin(cuda_source(executable), spec.gpu_arch, spec.nvcc, workdir)
    return [str(fatbin_object(fatbin, workdir))], code.to_json()


def _link(executable, path: Path, cc: str, spec: TargetSpec, objects: list[str] = ()) -> None:
    """Link model.so (plus `objects`: a GPU build's kernels) with the target's compiler, then check it really
    is an ELF for the target's CPU."""
    try:
        executable.export_library(str(path), cc=cc, options=[*spec.link_options, *objects])
    except Exception as exc:
        interrupts.check()
        raise EdgekitError(
            f"linking model.so with {Path(cc).name} failed: {last_line(str(exc))}",
            "check the cc of the target file and the free disk space",
        ) from None
    header = path.read_bytes()[:20]
    machine = int.from_bytes(header[18:20], "little")
    if header[:4] != b"\x7fELF" or machine != spec.elf_machine:
        raise EdgekitError(
            f"{path.name} is not an ELF shared object for {spec.arch} (e_machine {machine})",
            "check the target's cc in its .toml",
        )


def _write_bundle(path: Path, feeds: dict[str, np.ndarray], session, frozen: dict | None = None) -> None:
    outputs = session.run(None, feeds | (frozen or {}))
    names = [o.name for o in session.get_outputs()]
    np.savez(path, **{f"input:{k}": v for k, v in feeds.items()}, **{f"output:{n}": o for n, o in zip(names, outputs)})
