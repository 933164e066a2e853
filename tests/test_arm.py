"""ARM targets: cross-compilation, execution under qemu against onnxruntime, clear errors for missing tools."""
from __future__ import annotations

import json
import shutil

import pytest

from test_errors import assert_one_line_error

needs_aarch64 = pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
    reason="needs g++-aarch64-linux-gnu and qemu-user (installed by .ci/run)",
)
needs_armv7 = pytest.mark.skipif(not shutil.which("arm-linux-gnueabihf-g++"), reason="needs g++-arm-linux-gnueabihf")


def elf_header(path):
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF"
    return {"bits": 32 if data[4] == 1 else 64, "machine": int.from_bytes(data[18:20], "little")}


@needs_aarch64
def test_aarch64_digits_runs_under_qemu_and_matches_ort(digits_onnx, tmp_path, cli):
    res = cli("compile", digits_onnx, "--target", "arm", "-o", tmp_path / "art", "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["target"]["name"] == "aarch64-generic"
    assert meta["validation"]["executed"] == "emulated" and meta["validation"]["ok"]
    assert meta["validation"]["outputs"][0]["max_abs"] <= 1e-4
    assert elf_header(tmp_path / "art" / "model.so") == {"bits": 64, "machine": 183}
    # the independent check, and the same artifact through `edgekit run`
    res = cli("validate", tmp_path / "art", digits_onnx, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"]


@needs_aarch64
def test_aarch64_resnet18_runs_under_qemu(resnet18_rpi4):
    meta = json.loads((resnet18_rpi4 / "meta.json").read_text())
    assert meta["target"]["tvm"]["mcpu"] == "cortex-a72"
    assert meta["validation"]["ok"] and meta["validation"]["executed"] == "emulated"
    assert max(o["max_abs"] for o in meta["validation"]["outputs"]) <= 1e-4


@needs_aarch64
def test_bench_target_arm_is_labelled_emulated(digits_onnx, cli):
    res = cli("bench", digits_onnx, "--target", "arm", "--repeat", "4", "--warmup", "1", "--json")
    assert res.exit_code == 0, res.stderr
    ort, tvm = json.loads(res.stdout)["runs"]
    assert ort["target"] == "cpu" and tvm["target"] == "aarch64-generic (emulated)"
    assert tvm["samples"] == 4 and tvm["p50_ms"] > 0 and tvm["peak_rss_mb"] > 0


@needs_armv7
def test_armv7_cross_compiles_to_32bit_arm_elf(digits_onnx, tmp_path, cli):
    res = cli("compile", digits_onnx, "--target", "rpi3", "-o", tmp_path / "art", "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["validation"]["ok"] is None and "validate on the target" in meta["validation"]["skipped"]
    assert elf_header(tmp_path / "art" / "model.so") == {"bits": 32, "machine": 40}
    assert_one_line_error(cli("validate", tmp_path / "art", digits_onnx), "neither run nor emulate")


def test_missing_cross_compiler_names_apt_package(digits_onnx, tmp_path, cli):
    toml = tmp_path / "board.toml"
    toml.write_text(
        '[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
        '[toolchain]\ncc = "no-such-aarch64-g++"\napt_package = "g++-aarch64-linux-gnu"\n'
    )
    res = cli("compile", digits_onnx, "--target", toml, "-o", tmp_path / "art")
    assert_one_line_error(res, "no-such-aarch64-g++")
    assert "apt-get install -y g++-aarch64-linux-gnu" in res.stderr
    assert not (tmp_path / "art").exists()


@needs_aarch64
def test_missing_qemu_is_one_clear_line(digits_onnx, tmp_path, cli):
    toml = tmp_path / "board.toml"
    toml.write_text(
        '[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
        '[toolchain]\ncc = "aarch64-linux-gnu-g++"\n'
        '[runner]\ndefault = "qemu"\nqemu = "qemu-nonexistent"\nqemu_sysroot = "/usr/aarch64-linux-gnu"\n'
        'runtime_platform = "manylinux_2_28_aarch64"\n'
    )
    res = cli("compile", digits_onnx, "--target", toml, "-o", tmp_path / "art")
    assert_one_line_error(res, "qemu-nonexistent")
    assert "qemu-user" in res.stderr
