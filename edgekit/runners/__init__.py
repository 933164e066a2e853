"""Runners: where an artifact executes. One interface (inputs, outputs, run(feeds) -> {name: array}):

- local: this machine, through the Python runtime (edgekit.runtime.CompiledModel);
- qemu:  user-mode emulation of another CPU (aarch64), through the C++ runner and that arch's TVM runtime;
  timings from it are labelled "emulated" and say nothing about the real board;
- rpc:   a TVM RPC server on the board (edgekit.runners.rpc);
- cpp:   the embedded path, libedgekit's C API through a bundle's example app (edgekit.runners.cpp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.runtime import read_meta


@runtime_checkable
class Runner(Protocol):
    """What every runner offers (edgekit.runtime.CompiledModel, QemuRunner, RpcRunner): the artifact's input and
    output specs, and run(feeds) -> {output name: array}."""

    inputs: list
    outputs: list

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def open_runner(
    artifact_dir: Path | str,
    threads: int = 0,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    runtime: str = "python",
) -> Runner:
    """The runner for this artifact: the board if --rpc/--tracker is given, else local if the CPU matches,
    else the target's emulator. runtime "cpp": through the bundle's C API (natively or emulated) instead."""
    meta = read_meta(artifact_dir)
    target = meta.target
    if runtime not in ("python", "cpp"):
        raise EdgekitError(f"unknown runtime '{runtime}'", "choose python or cpp")
    if runtime == "cpp":
        if rpc or tracker:
            raise EdgekitError(
                "--runtime cpp runs here (natively or emulated), not over RPC",
                "copy the bundle (edgekit package) to the board",
            )
        from edgekit.runners.cpp import CppRunner

        return CppRunner(Path(artifact_dir), meta, threads)
    if rpc or tracker:
        from edgekit.runners.rpc import RpcRunner, connect

        return RpcRunner(Path(artifact_dir), connect(rpc, tracker, key))
    if target.get("runner") == "qemu":
        from edgekit.runners.qemu import QemuRunner

        return QemuRunner(Path(artifact_dir), meta, threads)
    from edgekit.targets import TargetCaps, artifact_caps

    if artifact_caps(target).arch == TargetCaps.host().arch:
        from edgekit.runtime import load

        return load(artifact_dir, threads)  # refuses, with the missing features, if this CPU lacks any
    raise EdgekitError(
        f"{artifact_dir} targets {target['name']}, which this machine can neither run nor emulate",
        "run it on the board: start `edgekit rpc server` there and pass --rpc HOST:PORT",
    )
