"""Run a cross-compiled artifact under qemu user-mode emulation.

The guest side is edgekit's C++ runner (edgekit/runtime/cpp/edgekit_run.cc) cross-compiled for the
target and linked against that architecture's TVM runtime, which PyPI ships inside the apache-tvm /
apache-tvm-ffi wheels for the platform. Both are cached per platform and TVM version
(~/.cache/edgekit/runtime, or $EDGEKIT_CACHE). Results are the target's own arithmetic; timings are
emulated and only good for relative comparisons on the same host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from edgekit.core.errors import EdgekitError, last_line
from edgekit.core.fileio import atomic_dir
from edgekit.runners.base import ProgramRunner, checked_input
from edgekit.runtime import LIBRARY, ArtifactMeta

RUNNER_SOURCE = Path(__file__).resolve().parent.parent / "runtime" / "cpp" / "edgekit_run.cc"
# (wheel, file inside it) for the two libraries the guest needs
RUNTIME_LIBS = (
    ("apache-tvm", "tvm/lib/libtvm_runtime.so"),
    ("apache-tvm", "tvm/lib/libtvm_runtime_extra.so"),
    ("apache-tvm-ffi", "tvm_ffi/lib/libtvm_ffi.so"),
)
# libtvm_runtime_extra registers the packed functions TVM's TopK / argsort / NonMaxSuppression / random kernels call
# by name at run time (tvm.contrib.sort.*, tvm.contrib.random.*): linked in with --no-as-needed, since nothing in the
# runner references it and the linker would drop it, and the model would fail with "Cannot find function".
LINK_RUNTIME = ["-ltvm_ffi", "-ltvm_runtime", "-Wl,--no-as-needed", "-ltvm_runtime_extra", "-Wl,--as-needed"]
_DL_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit"))


def _require_tool(tool: str, apt_package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EdgekitError(f"'{tool}' is not installed", f"apt-get update && apt-get install -y {apt_package}")
    return path


def _download_runtime_libs(platform: str, dest: Path) -> None:
    pyver = f"{sys.version_info.major}{sys.version_info.minor}"
    pins = sorted({f"{name}=={metadata.version(name)}" for name, _ in RUNTIME_LIBS})
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            platform,
            "--python-version",
            pyver,
            "-d",
            tmp,
            *pins,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EdgekitError(
                f"could not download the {platform} TVM runtime ({', '.join(pins)}) from PyPI",
                "check network access to PyPI (needed once; the libraries are cached in " + str(cache_root()) + ")",
            )
        dest.mkdir(parents=True, exist_ok=True)
        for name, member in RUNTIME_LIBS:
            with zipfile.ZipFile(next(Path(tmp).glob(f"{name.replace('-', '_')}-*.whl"))) as zf:
                (dest / Path(member).name).write_bytes(zf.read(member))


def ensure_guest_runtime(target: dict) -> Path:
    """A cached directory holding `edgekit_run` and lib/ for the target's architecture; built once."""
    import tvm_ffi

    platform = target["runtime_platform"]
    key = f"{platform}-tvm{metadata.version('apache-tvm')}-ffi{metadata.version('apache-tvm-ffi')}"
    root = cache_root() / "runtime" / key
    complete = (root / "edgekit_run").exists() and all(
        (root / "lib" / Path(member).name).exists() for _, member in RUNTIME_LIBS
    )
    if complete and (RUNNER_SOURCE.stat().st_mtime <= (root / "edgekit_run").stat().st_mtime):
        return root
    cc = _require_tool(target["cc"], target.get("apt_package") or target["cc"])
    # none there yet: two processes may build it at once, and the first one stays; stale or incomplete: replaced
    with atomic_dir(root, keep_existing=not root.exists()) as tmp:
        _download_runtime_libs(platform, tmp / "lib")
        include = Path(tvm_ffi.__file__).parent / "include"
        cmd = [
            cc,
            "-std=c++17",
            "-O2",
            str(RUNNER_SOURCE),
            f"-I{include}",
            f"-L{tmp / 'lib'}",
            *LINK_RUNTIME,
            "-Wl,-rpath,$ORIGIN/lib",
            "-o",
            str(tmp / "edgekit_run"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EdgekitError(
                f"building the {platform} runner failed: {last_line(proc.stderr)}",
                "check the cross compiler (apt-get install -y g++-aarch64-linux-gnu)",
            )
    return root


def _dl_type(dtype: np.dtype) -> tuple[int, int]:
    return _DL_CODES[dtype.kind], dtype.itemsize * 8


class QemuRunner(ProgramRunner):
    label = "emulated"

    def __init__(self, artifact_dir: Path, meta: ArtifactMeta, threads: int = 0) -> None:
        self.path = artifact_dir
        self.meta = meta
        self.target = meta.target
        self.threads = threads
        self.inputs, self.outputs = meta.inputs, meta.outputs
        self.qemu = _require_tool(self.target["qemu"], "qemu-user")
        self.guest = ensure_guest_runtime(self.target)

    def _invoke(
        self, feeds: dict[str, np.ndarray], warmup: int, repeat: int
    ) -> tuple[dict[str, np.ndarray], list[float], float]:
        """Run in the emulator; returns (outputs, per-call ms, peak RSS MB of the emulated process)."""
        with tempfile.TemporaryDirectory(prefix="edgekit-qemu-") as io_dir:
            io = Path(io_dir)
            lines = []
            for i, spec in enumerate(self.inputs):
                arr = checked_input(spec, feeds[spec.name])
                arr.tofile(io / f"input_{i}.bin")
                code, bits = _dl_type(arr.dtype)
                lines.append(f"input_{i}.bin {code} {bits} {arr.ndim} {' '.join(map(str, arr.shape))}")
            (io / "inputs.txt").write_text("\n".join(lines) + "\n")
            env = dict(os.environ, TVM_NUM_THREADS=str(self.threads or self.target.get("threads") or 1))
            cmd = [
                self.qemu,
                "-L",
                self.target["qemu_sysroot"],
                str(self.guest / "edgekit_run"),
                str(self.path / LIBRARY),
                io_dir,
                str(warmup),
                str(repeat),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            stdout, stderr = proc.stdout, proc.stderr
            if proc.returncode != 0:
                raise EdgekitError(
                    f"the artifact failed under {Path(self.qemu).name}: {last_line(stderr)}",
                    "validate the same model on the x86_64 target to tell a model problem from an emulator one",
                )
            report = json.loads(stdout.strip().splitlines()[-1])
            outputs = {}
            for spec, line in zip(self.outputs, (io / "outputs.txt").read_text().splitlines()):
                file, _code, _bits, ndim, *dims = line.split()
                outputs[spec.name] = np.fromfile(io / file, dtype=spec.dtype).reshape([int(d) for d in dims])
            return outputs, report["times_ms"], report["peak_rss_mb"]
