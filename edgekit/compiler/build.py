"""Stage 3: ONNX -> Relax -> relax.build for a target -> artifact directory (written atomically).

The artifact: model.so (TVM executable for the target), meta.json (inputs/outputs, target, source sha256,
validation vs onnxruntime, build time), bundle.npz (sample inputs and onnxruntime's outputs for them).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.compiler.frontend import to_relax
from edgekit.errors import EdgekitError
from edgekit.export import ort_session, simplify
from edgekit.fileio import atomic_dir, check_output_path, sha256_of
from edgekit.graph import graph_outputs, load_onnx, random_inputs, resolve_input_specs
from edgekit.passes import passes_applied
from edgekit.progress import steps
from edgekit.runners import open_runner
from edgekit.runtime import BUNDLE, LIBRARY, META
from edgekit.targets import TargetSpec, load_target
from edgekit.validate import ValidationReport, compare_samples, load_inputs_npz, tolerances_for


@dataclass
class CompileResult:
    artifact: Path
    meta: dict
    validation: ValidationReport | None

    def to_json(self) -> dict:
        return {"artifact": str(self.artifact), **self.meta}


SCHEDULES = ("default", "none")


def build_module(
    mod, target: TargetSpec, schedules: str = "default", threads: int = 0, tuning: Path | dict | None = None, int8: bool = False
) -> tuple[object, dict[str, str], list[dict]]:
    """relax.build with edgekit's default CPU schedules ("default"), or TVM's bare pipeline ("none": naive
    single-threaded loops, kept as the honest baseline). Returns (executable, {PrimFunc: rule applied}, per-layer int8 lowering report).
    int8: the model has quantized activations (QDQ): lower them to integer conv/matmul kernels first."""
    import tvm
    from tvm import relax

    from edgekit.compiler.schedules import build_cpu

    if schedules not in SCHEDULES:
        raise EdgekitError(f"unknown --schedules '{schedules}'", f"choose from {', '.join(SCHEDULES)}")
    try:
        if schedules == "default" and target.tvm.get("kind") == "llvm" and int8:
            from edgekit.compiler.schedules.int8 import build_int8

            executable, rules, layers = build_int8(mod, target.tvm_target(), threads or target.threads)
            return executable, rules, layers
        if schedules == "default" and target.tvm.get("kind") == "llvm":
            extra = {"tuning": tuning} if tuning is not None else {}
            return (*build_cpu(mod, target.tvm_target(), threads_hint=threads or target.threads, **extra), [])
        return relax.build(mod, target=target.tvm_target()), {}, []
    except EdgekitError:
        raise
    except Exception as exc:  # TVM 0.27 raises plain RuntimeError/ValueError/InternalError subclasses (no TVMError)
        first = (str(exc).strip().splitlines() or ["?"])[-1][:300]
        raise EdgekitError(f"TVM could not build the model for {target.name}: {first}") from None


@contextmanager
def cpu_rewrites(winograd: bool, fuse_blocks: bool):
    """Switch the CPU build's Relax rewrites for this build: Winograd F(4x4, 3x3) for the stride-1 3x3 convs
    that qualify (edgekit.compiler.schedules.winograd; off: direct convs only, model.so 1.6x smaller for
    ResNet-18, Winograd keeps 36 weights per 9), and inverted-residual blocks as one fused kernel
    (edgekit.compiler.schedules.inverted_residual)."""
    from edgekit.compiler.schedules import inverted_residual, winograd as wino

    tokens = [(wino.ENABLED, wino.ENABLED.set(winograd)),
              (inverted_residual.ENABLED, inverted_residual.ENABLED.set(fuse_blocks))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def has_binary_activations(model) -> bool:
    """Where(GreaterOrEqual(x, 0), ...): how edgekit (and its exporter) writes sign activations."""
    produced_by = {out: node.op_type for node in model.graph.node for out in node.output}
    return any(n.op_type == "Where" and produced_by.get(n.input[0]) == "GreaterOrEqual" for n in model.graph.node)


def lower_binary(mod, target: TargetSpec) -> tuple[object, list[dict]]:
    """Fold the packed-bit unpack subgraphs to ±alpha constants, then swap binary layers for XNOR kernels."""
    from tvm import relax

    from edgekit.compiler.lower.binary import lower_binary_layers

    mod = relax.transform.FoldConstant()(mod)
    return lower_binary_layers(mod, target.tvm_target())


def summarize_rules(rules: dict[str, str]) -> dict[str, int]:
    """How many fused functions got each rule ("fallback-parallel (why)" counts as fallback-parallel)."""
    counts: dict[str, int] = {}
    for rule in rules.values():
        key = rule.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def compile_onnx(
    onnx_path: Path,
    out: Path,
    target: str = "x86_64",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    force: bool = False,
    validate: bool = True,
    inputs: Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    quiet: bool = False,
    schedules: str = "default",
    threads: int = 0,
    tuning: Path | dict | None = None,
    xnor: bool = True,
    winograd: bool = True,
    fuse_blocks: bool = True,
) -> CompileResult:
    onnx_path = Path(onnx_path)
    spec = load_target(target)
    check_output_path(out, force, (onnx_path, inputs, tuning if isinstance(tuning, Path) else None), kind="artifact")
    with steps(quiet) as step:
        step("loading ONNX")
        model = load_onnx(onnx_path)
        in_specs = resolve_input_specs(model, input_shapes or {})
        default_atol, default_rtol = tolerances_for(model)
        atol = default_atol if atol is None else atol
        rtol = default_rtol if rtol is None else rtol
        out_specs = graph_outputs(model)
        step("simplifying with fixed shapes (onnxsim)")
        simplified, did_simplify = simplify(model, {s.name: list(s.shape) for s in in_specs})
        step("importing into TVM Relax")
        mod = to_relax(simplified, in_specs)
        lowered: list[dict] = []
        if xnor and has_binary_activations(model) and spec.tvm.get("kind") == "llvm":
            step("lowering binary layers to XNOR-popcount kernels")
            mod, lowered = lower_binary(mod, spec)
        step(f"scheduling and building for {spec.name}")
        t0 = time.perf_counter()
        has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        with cpu_rewrites(winograd, fuse_blocks):
            executable, rules, int8_layers = build_module(mod, spec, schedules, threads, tuning, int8=has_qdq)
        build_s = time.perf_counter() - t0
        cc = spec.compiler()
        with atomic_dir(out) as tmp:
            step("linking model.so")
            _link(executable, tmp / LIBRARY, cc, spec)
            meta = {
                "edgekit_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": {"path": str(onnx_path.resolve()), "sha256": sha256_of(onnx_path), "size_bytes": onnx_path.stat().st_size},
                "target": spec.to_json() | {"runs_on_host": spec.runs_on_host},
                "inputs": [s.to_json() for s in in_specs],
                "outputs": [s.to_json() for s in out_specs],
                "passes": passes_applied(model),
                "build": {
                    "seconds": round(build_s, 3),
                    "onnxsim": did_simplify,
                    "schedules": "edgekit-default" if rules else "tvm-bare",
                    "rules": summarize_rules(rules),
                    "winograd": winograd,
                    "fused_blocks": fuse_blocks,
                    "rule_per_function": rules,
                    "binary_layers": lowered,
                    "int8_layers": int8_layers,
                },
                "library": {"file": LIBRARY, "size_bytes": (tmp / LIBRARY).stat().st_size},
                "validation": None,
            }
            (tmp / META).write_text(json.dumps(meta, indent=2))
            report = None
            if validate and spec.runnable_here != "no":
                step(f"validating against onnxruntime ({spec.runnable_here})")
                samples = load_inputs_npz(inputs, in_specs) if inputs else [random_inputs(in_specs)]
                session = ort_session(onnx_path)
                report = compare_samples(samples, session, open_runner(tmp), atol, rtol)
                meta["validation"] = report.to_json() | {"samples": len(samples), "executed": spec.runnable_here}
                _write_bundle(tmp / BUNDLE, samples[0], session)
            elif validate:
                meta["validation"] = {
                    "ok": None,
                    "skipped": f"{spec.name} artifacts can neither run nor be emulated here; validate on the board (edgekit validate over --rpc)",
                }
            (tmp / META).write_text(json.dumps(meta, indent=2))
    return CompileResult(out, meta, report)


def _link(executable, path: Path, cc: str, spec: TargetSpec) -> None:
    """Link model.so with the target's compiler, then check it really is an ELF for the target's CPU."""
    try:
        executable.export_library(str(path), cc=cc, options=list(spec.link_options))
    except Exception as exc:
        raise EdgekitError(f"linking model.so with {Path(cc).name} failed: {(str(exc).strip().splitlines() or ['?'])[-1][:200]}") from None
    header = path.read_bytes()[:20]
    machine = int.from_bytes(header[18:20], "little")
    if header[:4] != b"\x7fELF" or machine != spec.elf_machine:
        raise EdgekitError(f"{path.name} is not an ELF shared object for {spec.arch} (e_machine {machine})", "check the target's cc in its .toml")


def _write_bundle(path: Path, feeds: dict[str, np.ndarray], session) -> None:
    outputs = session.run(None, feeds)
    names = [o.name for o in session.get_outputs()]
    np.savez(path, **{f"input:{k}": v for k, v in feeds.items()}, **{f"output:{n}": o for n, o in zip(names, outputs)})
