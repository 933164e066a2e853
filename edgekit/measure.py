"""The timing worker shared by `edgekit bench` and `edgekit tune`: one runtime per process.

`run_worker(job)` starts `python -m edgekit.measure JOB` and returns its timings. In one process an idle
runtime's threads compete for the cores (ORT ResNet-18 measured 30.6 ms that way vs 7.9 ms alone on a 2-core
machine), so every runtime is timed in a process of its own. A leaf module: it imports no other stage.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.core.errors import EdgekitError, last_line


def run_worker(job: dict) -> dict:
    env = dict(os.environ)
    if job["runtime"] == "tvm":
        env["TVM_NUM_THREADS"] = str(job["threads"])
        env["TVM_USE_RUNTIME_LIB"] = "1"  # what a deployed app loads: libtvm_runtime (3 MB), not the 260 MB compiler
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.measure", json.dumps(job)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        tail = last_line(proc.stderr, 300, "(no output)")
        raise EdgekitError(
            f"the {job['runtime']} benchmark worker failed: {tail}",
            "run the same model with `edgekit run` to see the error",
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Warm-up runs for at least this long, whatever `warmup` says: on the 2-vCPU cloud hosts this project measures on,
# a fresh process runs at about half speed for its first 20-90 ms of work (MobileNetV2, 2 threads: 3.0 ms a call
# for 28 calls, then 1.55 ms; the second vCPU seems to come up late), and a few warm-up calls left that phase in
# the samples: short rounds read up to 1.7x slow.
WARMUP_SECONDS = 0.3


def _time_calls(fn, warmup: int, repeat: int) -> list[float]:
    start, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        calls += 1
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
        from edgekit.onnxkit.tools import ort_session

        session = ort_session(job["model"], threads=job["threads"])
        names = [o.name for o in session.get_outputs()]
        fn = lambda: session.run(names, feeds)  # noqa: E731
    else:
        # `import tvm` pulls in torch (tvm_ffi's DLPack hooks) for ~250 MB; a deployed runtime has no torch
        sys.modules.setdefault("torch", None)
        from edgekit.runtime import load

        model = load(job["model"], threads=job["threads"])
        prepared = model.prepare(feeds)
        # the VM runs CPU kernels synchronously: when invoke returns, the outputs are computed; GPU kernels
        # are queued, so a GPU call is timed up to the device's synchronize
        fn = (
            (lambda: (model.invoke(prepared), model.synchronize()))
            if model.on_gpu
            else (lambda: model.invoke(prepared))
        )  # noqa: E731

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
