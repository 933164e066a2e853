"""The embedded path as a runner: the artifact packaged into a bundle (cached), run by the bundle's C++ example
over libedgekit's C API — natively, or under qemu for an ARM target. `run --runtime cpp` and `bench --runtimes
cpp` use it, so the C API is timed and checked against the Python runtime and onnxruntime in the same table."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core.errors import EdgekitError, last_line
from edgekit.core.fileio import sha256_of
from edgekit.runners.base import ProgramRunner, checked_input
from edgekit.runtime import LIBRARY, META, ArtifactMeta


def cached_bundle(artifact: Path) -> Path:
    """A bundle of `artifact` in edgekit's cache, keyed by its library and meta.json (packaged once)."""
    from edgekit.package import package_artifact
    from edgekit.runners.qemu import cache_root

    key = sha256_of(artifact / LIBRARY)[:16] + sha256_of(artifact / META)[:8]
    bundle = cache_root() / "bundles" / key
    if not (bundle / "bin" / "edgekit_example").exists():
        package_artifact(artifact, bundle, force=True, keep_existing=True)
    return bundle


class CppRunner(ProgramRunner):
    def __init__(self, artifact_dir: Path, meta: ArtifactMeta, threads: int = 0) -> None:
        from edgekit.runtime import refuse_if_not_runnable

        self.meta, self.threads = meta, threads
        self.inputs, self.outputs = meta.inputs, meta.outputs
        self.prefix: list[str] = []
        if meta.target.get("runner") == "qemu":
            from edgekit.runners.qemu import _require_tool

            self.prefix = [_require_tool(meta.target["qemu"], "qemu-user"), "-L", meta.target["qemu_sysroot"]]
            self.label = "cpp, emulated"
        else:
            refuse_if_not_runnable(Path(artifact_dir), meta.target)
            self.label = "cpp"
        self.bundle = cached_bundle(Path(artifact_dir))

    def _invoke(
        self, feeds: dict[str, np.ndarray], warmup: int, repeat: int
    ) -> tuple[dict[str, np.ndarray], list[float], float]:
        with tempfile.TemporaryDirectory(prefix="edgekit-cpp-") as io_dir:
            for i, spec in enumerate(self.inputs):
                arr = checked_input(spec, feeds[spec.name])
                np.save(Path(io_dir) / f"input_{i}.npy", arr)
            cmd = [
                *self.prefix,
                str(self.bundle / "bin" / "edgekit_example"),
                str(self.bundle),
                "--inputs",
                io_dir,
                "--outputs",
                io_dir,
                "--warmup",
                str(warmup),
                "--repeat",
                str(repeat),
                "--threads",
                str(self.threads),
            ]
            env = dict(
                os.environ, TVM_NUM_THREADS=str(self.threads or self.meta.target.get("threads") or os.cpu_count())
            )
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise EdgekitError(
                    f"the C++ runtime failed: {last_line(proc.stderr)}",
                    "run bundle/bin/edgekit_example by hand to see the whole message",
                )
            report = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs = {s.name: np.load(Path(io_dir) / f"output_{i}.npy") for i, s in enumerate(self.outputs)}
            return outputs, report["times_ms"], report["peak_rss_mb"]
