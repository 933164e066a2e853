"""Latency, memory and size of a model in each runtime, side by side.

Each runtime is timed in its own worker process (`python -m edgekit.bench`), and the order of the
runtimes alternates between rounds: in one process an idle runtime's threads compete for the cores
(ORT ResNet-18 measured 30.6 ms that way vs 7.9 ms alone on a 2-core machine).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

RUNTIMES = ("ort", "tvm", "openvino")  # openvino: optional peer (pip install openvino), reads the same ONNX


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

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BenchReport:
    model: str
    runs: list[BenchRun]

    def to_json(self) -> dict:
        return {"model": self.model, "runs": [r.to_json() for r in self.runs]}


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_worker(job: dict) -> dict:
    env = dict(os.environ)
    if job["runtime"] == "tvm":
        env["TVM_NUM_THREADS"] = str(job["threads"])
        env["TVM_USE_RUNTIME_LIB"] = "1"  # what a deployed app loads: libtvm_runtime (3 MB), not the 260 MB compiler
    proc = subprocess.run([sys.executable, "-m", "edgekit.bench", json.dumps(job)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise EdgekitError(f"the {job['runtime']} benchmark worker failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(
    model_path: Path,
    runtimes: tuple[str, ...] = RUNTIMES,
    threads: int = 0,
    warmup: int = 5,
    repeat: int = 50,
    rounds: int = 2,
    target: str = "x86_64",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    onnx_path: Path | None = None,
    quiet: bool = False,
    device: dict | None = None,
) -> BenchReport:
    """Bench an .onnx (compiling it for TVM into a temp artifact if asked) or an artifact directory.

    `device` ({"rpc": "host:port"} or {"tracker": ..., "key": ...}) times TVM on a board over RPC;
    without it, artifacts for another CPU run under their emulator and are labelled so."""
    from edgekit.graph import load_onnx, random_inputs, resolve_input_specs
    from edgekit.runtime import LIBRARY, read_meta

    model_path = Path(model_path)
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown or not runtimes:
        raise EdgekitError(f"unknown runtime(s) {sorted(unknown) or '(none)'}", f"choose from {', '.join(RUNTIMES)}")
    if repeat < 1 or warmup < 0 or rounds < 1:
        raise EdgekitError("--repeat and --rounds must be >= 1 and --warmup >= 0")
    threads = threads or default_threads()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if model_path.is_dir():
            artifact = model_path
            meta = read_meta(artifact)
            onnx_path = Path(onnx_path or meta["source"]["path"])
        else:
            artifact, meta = None, None
            onnx_path = model_path
        model = load_onnx(onnx_path)
        specs = resolve_input_specs(model, input_shapes or {})
        if "tvm" in runtimes and artifact is None:
            from edgekit.compiler.build import compile_onnx

            artifact = tmp / "artifact"
            result = compile_onnx(onnx_path, artifact, target, input_shapes, validate=True, quiet=quiet)
            meta = result.meta
        inputs = tmp / "inputs.npz"
        np.savez(inputs, **random_inputs(specs))
        sizes = {"ort": onnx_path.stat().st_size}
        targets = {"ort": "cpu", "openvino": "cpu f32"}
        sizes["openvino"] = sizes["ort"]
        remote = None  # a runner outside this process: the board over RPC, or an emulator
        if artifact is not None:
            sizes["tvm"] = (artifact / LIBRARY).stat().st_size
            targets["tvm"] = meta["target"]["name"]
            if device or not meta["target"].get("runs_on_host", True):
                from edgekit.runners import open_runner

                remote = open_runner(artifact, threads, **(device or {}))  # raises if it can't run anywhere
                targets["tvm"] += f" (rpc {device.get('rpc') or device.get('key')})" if device else " (emulated)"
        per_round = max(1, repeat // rounds)
        samples: dict[str, list[float]] = {r: [] for r in runtimes}
        rss: dict[str, float | None] = {r: 0.0 for r in runtimes}
        from edgekit.progress import stderr

        with stderr.status("benchmarking…") as status:
            for rnd in range(rounds):
                order = runtimes if rnd % 2 == 0 else tuple(reversed(runtimes))
                for rt in order:
                    if not quiet:
                        status.update(f"benchmarking {rt} (round {rnd + 1}/{rounds}, {threads} threads)…")
                    path = artifact if rt == "tvm" else onnx_path  # ort and openvino read the same ONNX
                    if rt == "tvm" and remote is not None:
                        times, peak = remote.time(dict(np.load(inputs)), warmup, per_round)
                        out = {"times_ms": times, "peak_rss_mb": peak}
                    else:
                        job = {"runtime": rt, "model": str(path), "inputs": str(inputs), "threads": threads, "warmup": warmup, "repeat": per_round}
                        out = _run_worker(job)
                    samples[rt].extend(out["times_ms"])
                    rss[rt] = None if out["peak_rss_mb"] is None else max(rss[rt] or 0.0, out["peak_rss_mb"])
    runs = []
    for rt in runtimes:
        t = np.asarray(samples[rt])
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        runs.append(BenchRun(model_path.name, rt, targets[rt], float(p50), float(p90), float(p99), float(t.mean()), rss[rt], sizes[rt], threads, len(t)))
    return BenchReport(str(model_path), runs)


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


# ---- worker side: one runtime per process ---------------------------------------------------------


def _time_calls(fn, warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _worker(job: dict) -> dict:
    feeds = dict(np.load(job["inputs"]))
    if job["runtime"] == "openvino":
        fn = _openvino_call(job, feeds)
    elif job["runtime"] == "ort":
        from edgekit.export import ort_session

        session = ort_session(job["model"], threads=job["threads"])
        names = [o.name for o in session.get_outputs()]
        fn = lambda: session.run(names, feeds)  # noqa: E731
    else:
        # `import tvm` pulls in torch (tvm_ffi's DLPack hooks) for ~250 MB; a deployed runtime has no torch
        sys.modules.setdefault("torch", None)
        from edgekit.runtime import load

        model = load(job["model"], threads=job["threads"])
        prepared = model.prepare(feeds)
        # the VM runs CPU kernels synchronously: when invoke returns, the outputs are computed
        fn = lambda: model.invoke(prepared)  # noqa: E731

    times = _time_calls(fn, job["warmup"], job["repeat"])
    return {"times_ms": times, "peak_rss_mb": _peak_rss_mb()}


def _openvino_call(job: dict, feeds: dict[str, np.ndarray]):
    try:
        import openvino as ov
    except ImportError:
        raise EdgekitError("the openvino runtime is not installed", "pip install openvino") from None
    # f32 explicitly: OpenVINO's default on AVX-512 CPUs is bf16, which would not be a like-for-like comparison
    config = {"INFERENCE_NUM_THREADS": job["threads"], "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(job["model"], "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds)


def _peak_rss_mb() -> float:
    """VmHWM of this process. Not getrusage's ru_maxrss: Linux carries that over exec from the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


if __name__ == "__main__":
    try:
        print(json.dumps(_worker(json.loads(sys.argv[1]))))
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
