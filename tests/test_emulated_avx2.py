"""An AVX2-only x86 CPU, emulated on whatever x86 host runs the suite: `qemu-x86_64 -cpu EPYC-Rome` (Zen 2: AVX2 +
FMA, no AVX-512, no VNNI; qemu's TCG implements nothing past AVX2, so an AVX-512 instruction is SIGILL there).

It checks on an AVX-512 host what a user's AVX2 laptop does with edgekit's output: onnxruntime's int8 kernels
there (vpmaddubsw, which saturates u8 x s8 pair sums in int16), the x86_64 bundle's code, and the C runtime's CPU
check. Results only: emulated timings mean nothing."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.compress import calibration_samples
from edgekit.datasets import load_digits_split
from edgekit.onnxkit.graph import resolve_input_specs
from edgekit.passes.quantize import QuantizeConfig
from edgekit.passes.quantize import run as quantize

QEMU = shutil.which("qemu-x86_64")
AVX2_CPU = "EPYC-Rome"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        QEMU is None or platform.machine() != "x86_64",
        reason="needs qemu-x86_64 (apt-get install -y qemu-user) on an x86_64 host",
    ),
]

ORT_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
name = session.get_inputs()[0].name
np.save(sys.argv[3], np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]))
"""


def emulated(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([QEMU, "-cpu", AVX2_CPU, *cmd], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits_split().x_test[:120]


@pytest.fixture(scope="module")
def int8_digits(digits_onnx, tmp_path_factory) -> dict[str, Path]:
    """The digits CNN at int8 in both formats: 7-bit weights (what compress picks for the x86_64 target) and full
    range."""
    model = onnx.load(digits_onnx)
    calib = calibration_samples("digits", resolve_input_specs(model, {}), 64)
    out = tmp_path_factory.mktemp("avx2emu")
    paths = {}
    for fmt, reduce_range in (("u8s7", True), ("u8s8", False)):
        q, _ = quantize(model, QuantizeConfig(bits=8, calibration=calib, reduce_range=reduce_range))
        onnx.save(q, out / f"{fmt}.onnx")
        paths[fmt] = out / f"{fmt}.onnx"
    return paths


def emulated_ort(model: Path, images: np.ndarray, tmp: Path) -> np.ndarray:
    np.save(tmp / "x.npy", images)
    (tmp / "ort_run.py").write_text(ORT_SCRIPT)
    proc = emulated(sys.executable, str(tmp / "ort_run.py"), str(model), str(tmp / "x.npy"), str(tmp / "y.npy"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(tmp / "y.npy")


@pytest.fixture(scope="module")
def x86_64_artifacts(int8_digits, tmp_path_factory) -> dict[str, Path]:
    """Each format compiled for the x86_64 (AVX2) target, unvalidated: the tests compare them themselves."""
    from edgekit.compiler.build import compile_onnx

    out = tmp_path_factory.mktemp("avx2emu-art")
    for fmt, model in int8_digits.items():
        compile_onnx(model, out / fmt, "x86_64", validate=False, quiet=True)
    return {fmt: out / fmt for fmt in int8_digits}


def native_outputs(artifact: Path, images: np.ndarray) -> np.ndarray:
    """Run natively: TVM's int8 kernels accumulate in int32 exactly, so these are the exact results."""
    import edgekit

    model = edgekit.load(artifact)
    return np.concatenate([model(images[i : i + 1])[0] for i in range(len(images))])


def test_int8_format_compress_picks_is_exact_under_avx2_onnxruntime(int8_digits, x86_64_artifacts, images, tmp_path):
    exact = native_outputs(x86_64_artifacts["u8s7"], images)
    ort7 = emulated_ort(int8_digits["u8s7"], images, tmp_path)
    assert np.array_equal(ort7, exact), np.abs(ort7 - exact).max()
    # The control: full-range weights do saturate in the emulated onnxruntime, so the emulation really ran its
    # AVX2 kernels (not VNNI ones) and the equality above is not vacuous.
    full_exact = native_outputs(x86_64_artifacts["u8s8"], images)
    ort8 = emulated_ort(int8_digits["u8s8"], images, tmp_path)
    assert np.abs(ort8 - full_exact).max() > 0.1


def test_x86_64_bundle_runs_on_avx2_and_avx512_bundle_is_refused(int8_digits, x86_64_artifacts, images, tmp_path):
    from edgekit.compiler.build import compile_onnx
    from edgekit.package import package_artifact

    compile_onnx(int8_digits["u8s7"], tmp_path / "avx512", "x86_64-avx512", validate=False, quiet=True)
    bundles = {}
    for target, artifact in (("x86_64", x86_64_artifacts["u8s7"]), ("x86_64-avx512", tmp_path / "avx512")):
        package_artifact(artifact, tmp_path / f"bundle-{target}")
        bundles[target] = tmp_path / f"bundle-{target}"
    io = tmp_path / "io"
    io.mkdir()
    np.save(io / "input_0.npy", images[3:4])
    proc = emulated(
        str(bundles["x86_64"] / "bin" / "edgekit_example"),
        str(bundles["x86_64"]),
        "--inputs",
        str(io),
        "--outputs",
        str(io),
        "--repeat",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(io / "output_0.npy"), native_outputs(x86_64_artifacts["u8s7"], images[3:4]))
    # cpuid, not the host's /proc/cpuinfo (which qemu-user passes through): one line naming what is missing, no SIGILL
    proc = emulated(str(bundles["x86_64-avx512"] / "bin" / "edgekit_example"), str(bundles["x86_64-avx512"]))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert re.search(
        r"this CPU lacks avx512bw, .*avx512vnni.*which the bundle's target x86_64-avx512 needs", proc.stderr
    )


def test_python_side_sees_the_emulated_cpu_and_refuses(int8_digits, tmp_path):
    """TargetCaps.host() reads CPUID, so under the emulator it is the emulated CPU's (qemu-user passes the host's
    /proc/cpuinfo through): `edgekit run` of an AVX-512 artifact is one error line there, not SIGILL."""
    from edgekit.compiler.build import compile_onnx

    proc = emulated(
        sys.executable, "-c", "from edgekit.targets import TargetCaps; print(*sorted(TargetCaps.host().features))"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"avx2", "fma"} <= set(proc.stdout.split()) and "avx512f" not in proc.stdout.split()
    compile_onnx(int8_digits["u8s7"], tmp_path / "avx512", "x86_64-avx512", validate=False, quiet=True)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    edgekit_cli = Path(sys.executable).parent / "edgekit"
    proc = emulated(
        sys.executable,
        str(edgekit_cli),
        "run",
        str(tmp_path / "avx512"),
        "-i",
        str(tmp_path / "x.npy"),
        "-o",
        str(tmp_path / "y.npy"),
    )
    assert proc.returncode not in (0, 132, -4), (proc.returncode, proc.stderr[-2000:])
    assert re.search(r"cannot run on this machine: this CPU lacks avx512bw, .*avx512vnni", proc.stderr)
    assert not (tmp_path / "y.npy").exists()


def test_c_runtime_checks_every_feature_edgekit_checks():
    from edgekit.targets import CHECKED_FEATURES

    source = (Path(__file__).resolve().parent.parent / "edgekit" / "runtime" / "cpp" / "src" / "edgekit.cc").read_text()
    assert set(re.findall(r'EDGEKIT_CPU\("([\w.]+)"\)', source)) == set(CHECKED_FEATURES["x86_64"])
