"""Latency, memory and size of a model in each runtime, side by side.

Each runtime is timed in its own worker process (edgekit.measure), and the order of the runtimes alternates
between rounds.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from edgekit.core.errors import EdgekitError
from edgekit.measure import run_worker
from edgekit.passes.legacy_opset import UPGRADED_KEY
from edgekit.runtime.lite import cpu_count  # lite: no onnx import at CLI start
from edgekit.targets import DEFAULT_TARGET

RUNTIMES = ("ort", "tvm", "openvino", "cpp")  # openvino: optional peer (pip install openvino), reads the same ONNX;
# cpp: the embedded path (libedgekit's C API through the bundle's example app, runners/cpp.py)


@dataclass
class BenchRun:
    model: str
    runtime: str
    target: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    peak_rss_mb: float | None  # None where it cannot be observed (over RPC)
    size_bytes: int
    threads: int
    samples: int
    planned_mb: float | None = None  # TVM's static plan: activations + weights (meta.json build.memory)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BenchReport:
    model: str
    runs: list[BenchRun]

    def to_json(self) -> dict:
        from edgekit.targets import host_description

        return {"model": self.model, "host": host_description(), "runs": [r.to_json() for r in self.runs]}


def bench(
    model_path: Path,
    runtimes: tuple[str, ...] = RUNTIMES,
    threads: int = 0,
    warmup: int = 5,
    repeat: int = 50,
    rounds: int = 2,
    target: str = DEFAULT_TARGET,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    onnx_path: Path | None = None,
    quiet: bool = False,
    device: dict | None = None,
    freeze: dict | None = None,
) -> BenchReport:
    """Bench an .onnx (compiling it for TVM into a temp artifact if asked) or an artifact directory.

    `device` ({"rpc": "host:port"} or {"tracker": ..., "key": ...}) times TVM on a board over RPC;
    without it, artifacts for another CPU run under their emulator and are labelled so."""
    from edgekit.onnxkit.graph import load_onnx, random_inputs, resolve_input_specs
    from edgekit.runtime import LIBRARY, read_meta

    model_path = Path(model_path)
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown or not runtimes:
        raise EdgekitError(f"unknown runtime(s) {sorted(unknown) or '(none)'}", f"choose from {', '.join(RUNTIMES)}")
    if repeat < 1 or warmup < 0 or rounds < 1:
        raise EdgekitError(
            "--repeat and --rounds must be >= 1 and --warmup >= 0", "e.g. --repeat 50 --rounds 2 --warmup 5"
        )
    threads = threads or cpu_count()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmpdir:
        tmp = Path(tmpdir)
        artifact, meta, onnx_path = _resolve(model_path, onnx_path)
        model = load_onnx(onnx_path)
        if meta is not None and not input_shapes:  # a dynamic-batch source: the artifact says what it was built for
            input_shapes = {s.name: tuple(s.shape) for s in meta.inputs}
        specs = resolve_input_specs(model, input_shapes or {})
        if ("tvm" in runtimes or "cpp" in runtimes) and artifact is None:
            from edgekit.compiler.build import compile_onnx

            artifact = tmp / "artifact"
            compile_onnx(
                onnx_path, artifact, target, input_shapes=input_shapes, validate=True, quiet=quiet, freeze=freeze
            )
            meta = read_meta(artifact)
        inputs = tmp / "inputs.npz"
        np.savez(
            inputs, **(random_inputs(specs) | (meta.frozen if meta is not None else {}))
        )  # frozen inputs: their constants
        sizes = {"ort": onnx_path.stat().st_size}
        if model.metadata_props and UPGRADED_KEY in {p.key for p in model.metadata_props}:
            onnx_path = tmp / "upgraded.onnx"  # an opset 1-6 file: onnxruntime runs the checked conversion
            onnx.save(model, onnx_path)
        targets = {"ort": "cpu", "openvino": "cpu f32"}
        sizes["openvino"] = sizes["ort"]
        remote = {}  # runners outside this process: the board over RPC or an emulator (tvm), the C++ app (cpp)
        if artifact is not None:
            sizes["tvm"] = sizes["cpp"] = (artifact / LIBRARY).stat().st_size
            targets["tvm"], remote["tvm"] = _tvm_runner(artifact, meta, threads, device)
        if "cpp" in runtimes:
            remote["cpp"] = _cpp_runner(artifact, meta, threads)
            targets["cpp"] = f"{meta.target['name']} ({remote['cpp'].label})"
        per_round = max(1, repeat // rounds)
        samples: dict[str, list[float]] = {r: [] for r in runtimes}
        rss: dict[str, float | None] = {r: 0.0 for r in runtimes}
        from edgekit.core.progress import stderr

        with stderr.status("benchmarking…") as status:
            for rnd in range(rounds):
                order = runtimes if rnd % 2 == 0 else tuple(reversed(runtimes))
                for rt in order:
                    if not quiet:
                        status.update(f"benchmarking {rt} (round {rnd + 1}/{rounds}, {threads} threads)…")
                    path = artifact if rt == "tvm" else onnx_path  # ort and openvino read the same ONNX
                    if remote.get(rt) is not None:
                        times, peak = remote[rt].time(dict(np.load(inputs)), warmup, per_round)
                        out = {"times_ms": times, "peak_rss_mb": peak}
                    else:
                        job = {
                            "runtime": rt,
                            "model": str(path),
                            "inputs": str(inputs),
                            "threads": threads,
                            "warmup": warmup,
                            "repeat": per_round,
                        }
                        out = run_worker(job)
                    samples[rt].extend(out["times_ms"])
                    rss[rt] = None if out["peak_rss_mb"] is None else max(rss[rt] or 0.0, out["peak_rss_mb"])
    return BenchReport(
        str(model_path),
        [
            _summarize(model_path.name, rt, targets[rt], samples[rt], rss[rt], sizes[rt], threads, meta)
            for rt in runtimes
        ],
    )


def _summarize(
    name: str, runtime: str, target: str, times: list[float], rss: float | None, size: int, threads: int, meta
) -> BenchRun:
    """Percentiles of one runtime's samples, with TVM's static memory plan beside the TVM and C++ rows."""
    t = np.asarray(times)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    plan = meta.raw.get("build", {}).get("memory", {}) if meta is not None and runtime in ("tvm", "cpp") else {}
    planned = (plan["planned_activation_bytes"] + plan["weight_bytes"]) / 1e6 if "weight_bytes" in plan else None
    return BenchRun(
        name, runtime, target, float(p50), float(p90), float(p99), float(t.mean()), rss, size, threads, len(t), planned
    )


def _resolve(model_path: Path, onnx_path: Path | None):
    """(artifact dir or None, its meta or None, the ONNX that onnxruntime and OpenVINO run)."""
    from edgekit.runtime import read_meta

    if not model_path.is_dir():
        return None, None, model_path
    meta = read_meta(model_path)
    onnx_path = Path(onnx_path or meta.source_path or "")
    if not onnx_path.is_file():
        raise EdgekitError(f"the artifact's source ONNX {onnx_path} is gone", "pass the ONNX file with --onnx")
    return model_path, meta, onnx_path


def _tvm_runner(artifact: Path, meta, threads: int, device: dict | None):
    """(label, remote runner or None) for timing an artifact: natively in a worker process when this CPU can run
    it (refused first if it lacks a feature: a SIGILL in the worker would say nothing), else on the board over
    RPC or under the target's emulator."""
    from edgekit.runtime import refuse_if_not_runnable
    from edgekit.targets import TargetCaps, artifact_caps

    label = meta.target["name"]
    native = artifact_caps(meta.target).arch == TargetCaps.host().arch
    if native and not device:
        refuse_if_not_runnable(artifact, meta.target)
        return label, None
    from edgekit.runners import open_runner

    remote = open_runner(artifact, threads, **(device or {}))  # raises if it can't run anywhere
    return label + (f" (rpc {device.get('rpc') or device.get('key')})" if device else " (emulated)"), remote


def _cpp_runner(artifact: Path, meta, threads: int):
    from edgekit.runners.cpp import CppRunner

    return CppRunner(artifact, meta, threads)


def merge(reports: list[BenchReport]) -> BenchReport:
    """Several models (fp32, int8, 1-bit, pruned variants...) in one table and one JSON `runs` list."""
    return BenchReport(", ".join(r.model for r in reports), [run for r in reports for run in r.runs])


def plot(report: BenchReport, path: Path) -> None:
    """Grouped bars: p50 latency per model, one bar per runtime, whisker to p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in report.runs))
    runtimes = list(dict.fromkeys(r.runtime for r in report.runs))
    width = 0.8 / len(runtimes)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(models) + 2), 3.2))
    for i, rt in enumerate(runtimes):
        runs = {r.model: r for r in report.runs if r.runtime == rt}
        xs = [m + (i - (len(runtimes) - 1) / 2) * width for m in range(len(models))]
        p50 = [runs[m].p50_ms if m in runs else 0 for m in models]
        p90 = [runs[m].p90_ms - runs[m].p50_ms if m in runs else 0 for m in models]
        label = f"{rt} ({next(iter(runs.values())).target})" if runs else rt
        ax.bar(xs, p50, width, yerr=[[0] * len(models), p90], capsize=3, label=label)
    ax.set_xticks(range(len(models)), models, rotation=15, fontsize=8)
    ax.set_ylabel("latency p50 (ms), whisker p90")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
