"""`edgekit tune`'s end-to-end check: the whole model, default vs tuned schedules, each timed in its own process,
alternating (here or on the board over RPC); tuned entries that do not make the model faster are disabled."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgekit.compiler.tuning.device import RemoteDevice


def _build_pair(onnx_path: Path, tmp: Path, spec_name: str, db_tasks: Mapping[str, dict], threads: int, input_shapes):
    """The model built twice under tmp/: default schedules and the tuned ones (not validated: timing only)."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.compiler.options import BuildOptions

    return {
        name: compile_onnx(
            onnx_path,
            tmp / name,
            spec_name,
            BuildOptions(threads=threads, tuning=dict(db_tasks) if name == "tuned" else {}),
            input_shapes=input_shapes,
            validate=False,
            quiet=True,
        ).artifact
        for name in ("default", "tuned")
    }


def _bench_pair(
    onnx_path: Path,
    spec_name: str,
    db_tasks: Mapping[str, dict],
    threads: int,
    input_shapes,
    rounds: int = 6,
    device: RemoteDevice | None = None,
) -> dict:
    if device is not None:
        return _bench_pair_remote(onnx_path, spec_name, db_tasks, threads, input_shapes, rounds, device)
    from edgekit.measure import run_worker
    from edgekit.onnxkit.graph import load_onnx, random_inputs, resolve_input_specs

    with tempfile.TemporaryDirectory(prefix="edgekit-tune-") as tmpdir:
        tmp = Path(tmpdir)
        arts = _build_pair(onnx_path, tmp, spec_name, db_tasks, threads, input_shapes)
        inputs = tmp / "inputs.npz"
        np.savez(inputs, **random_inputs(resolve_input_specs(load_onnx(onnx_path), input_shapes or {})))
        probe = run_worker(
            {
                "runtime": "tvm",
                "model": str(arts["default"]),
                "inputs": str(inputs),
                "threads": threads,
                "warmup": 2,
                "repeat": 5,
            }
        )
        per_call = max(float(np.median(probe["times_ms"])), 1e-3)
        repeat = int(min(200, max(5, 300.0 / per_call)))  # ~0.3 s of calls per round and variant
        times: dict[str, list[float]] = {"default": [], "tuned": []}
        for rnd in range(rounds):
            for name in ("default", "tuned") if rnd % 2 == 0 else ("tuned", "default"):
                out = run_worker(
                    {
                        "runtime": "tvm",
                        "model": str(arts[name]),
                        "inputs": str(inputs),
                        "threads": threads,
                        "warmup": 3,
                        "repeat": repeat,
                    }
                )
                times[name].extend(out["times_ms"])
    d, t = float(np.median(times["default"])), float(np.median(times["tuned"]))
    return {
        "default_ms": round(d, 4),
        "tuned_ms": round(t, 4),
        "speedup": round(d / t, 4),
        "samples": len(times["tuned"]),
        "threads": threads,
    }


def _bench_pair_remote(
    onnx_path: Path,
    spec_name: str,
    db_tasks: Mapping[str, dict],
    threads: int,
    input_shapes,
    rounds: int,
    device: RemoteDevice,
) -> dict:
    """The same comparison on the board: both whole-model artifacts uploaded, timed alternately over RPC."""
    from edgekit.onnxkit.graph import load_onnx, random_inputs, resolve_input_specs
    from edgekit.runners.rpc import RpcRunner

    with tempfile.TemporaryDirectory(prefix="edgekit-tune-") as tmpdir:
        tmp = Path(tmpdir)
        arts = _build_pair(onnx_path, tmp, spec_name, db_tasks, threads, input_shapes)
        runners = {name: RpcRunner(art, device.session) for name, art in arts.items()}
        feeds = random_inputs(resolve_input_specs(load_onnx(onnx_path), input_shapes or {}))
        times: dict[str, list[float]] = {"default": [], "tuned": []}
        for rnd in range(rounds):
            for name in ("default", "tuned") if rnd % 2 == 0 else ("tuned", "default"):
                times[name].extend(runners[name].time(feeds, 2, 10)[0])
    d, t = float(np.median(times["default"])), float(np.median(times["tuned"]))
    return {
        "default_ms": round(d, 4),
        "tuned_ms": round(t, 4),
        "speedup": round(d / t, 4),
        "samples": len(times["tuned"]),
        "threads": threads,
        "device": "rpc",
    }


def verify_end_to_end(
    onnx_path: Path,
    spec_name: str,
    db: dict,
    threads: int,
    input_shapes,
    min_gain: float,
    device: RemoteDevice | None = None,
) -> dict:
    """Whole model, default vs tuned. If the tuned build is not faster, keep only the big per-task wins and
    check again; if it still is not faster, disable every tuned entry (their knobs move to "rejected")."""
    tasks = db["tasks"]
    tuned = {k: v["knobs"] for k, v in tasks.items() if v.get("knobs")}
    result = _bench_pair(onnx_path, spec_name, tuned, threads, input_shapes, device=device)
    result["accepted"] = result["speedup"] >= 1.0
    if not result["accepted"]:
        strong = {k: v["knobs"] for k, v in tasks.items() if v.get("knobs") and v["gain"] >= 0.10}
        if strong and len(strong) < len(tuned):
            retry = _bench_pair(onnx_path, spec_name, strong, threads, input_shapes, device=device)
            if retry["speedup"] >= 1.0:
                for k, v in tasks.items():
                    if v.get("knobs") and k not in strong:
                        v["rejected"], v["knobs"] = v["knobs"], None
                return retry | {"accepted": True, "note": "kept only tasks with >= 10% gain", "first_try": result}
        for v in tasks.values():
            if v.get("knobs"):
                v["rejected"], v["knobs"] = v["knobs"], None
        result["note"] = "tuned model was not faster end to end: all tuned entries disabled (default schedules)"
    return result
