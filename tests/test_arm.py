"""ARM targets: cross-compilation, execution under qemu against onnxruntime, clear errors for missing tools."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_errors import assert_one_line_error

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

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


def inner_loops(objdump: str) -> list[list[str]]:
    """The innermost loops of a disassembly: instruction mnemonics between a backward branch's target and the
    branch, for branches whose range holds no other backward branch."""
    code = []
    for line in objdump.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].strip().endswith(":") and parts[2].strip():
            code.append((int(parts[0].strip()[:-1], 16), parts[2].split()[0], parts[-1]))
    loops = []
    for addr, mnemonic, text in code:
        branch_to = re.search(r"\b([0-9a-f]+) <", text)
        if (
            mnemonic.startswith(("b.", "cbnz", "cbz", "tbnz", "tbz"))
            and branch_to
            and int(branch_to.group(1), 16) < addr
        ):
            loops.append((int(branch_to.group(1), 16), addr))
    innermost = [(s, e) for s, e in loops if not any(s <= s2 and e2 < e for s2, e2 in loops if (s2, e2) != (s, e))]
    return [[m for a, m, _ in code if s <= a <= e] for s, e in innermost]


@needs_aarch64
def test_aarch64_resnet18_int8_bit_exact_under_qemu(tmp_path, cli):
    """ResNet-18 at int8 on rpi5 (sdot convs): the convs, the residual adds (QLinearAdd's rounding) and the Gemm
    give onnxruntime's very outputs on random inputs."""
    import numpy as np

    assert cli("export", "resnet18", "-o", tmp_path / "r18.onnx").exit_code == 0
    assert (
        cli(
            "compress",
            tmp_path / "r18.onnx",
            "--bits",
            8,
            "--calib",
            "random",
            "--target",
            "rpi5",
            "-o",
            tmp_path / "q.onnx",
        ).exit_code
        == 0
    )
    # seed 0's first input has near-ties in the residual adds: dequantize-add-quantize put logits one step off
    np.savez(tmp_path / "x.npz", input=np.random.default_rng(0).standard_normal((1, 1, 3, 224, 224)).astype(np.float32))
    res = cli(
        "compile",
        tmp_path / "q.onnx",
        "--target",
        "rpi5",
        "-o",
        tmp_path / "art",
        "--inputs",
        tmp_path / "x.npz",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    validation = json.loads(res.stdout)["validation"]
    assert validation["executed"] == "emulated" and validation["outputs"][0]["max_abs"] == 0, validation


@needs_aarch64
@pytest.mark.parametrize("target,rule,dot", [("rpi5", "conv2d-s8s8-sdot", True), ("rpi4", "conv2d-u8s8-vec", False)])
def test_aarch64_int8_dot_products_and_bit_exact_under_qemu(target, rule, dot, digits_onnx, tmp_path, cli):
    """+dotprod targets (rpi5, Jetson Orin) run the int8 convs on `sdot`, found in the inner loops of the code that
    was built; rpi4 (Cortex-A72) has none and multiply-accumulates with smlal. Both bit-exact vs onnxruntime's
    integer kernels under qemu."""
    assert (
        cli(
            "compress", digits_onnx, "--bits", 8, "--calib", "digits", "--target", target, "-o", tmp_path / "q.onnx"
        ).exit_code
        == 0
    )
    res = cli("compile", tmp_path / "q.onnx", "--target", target, "-o", tmp_path / "art", "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    convs = {name: r for name, r in meta["build"]["rule_per_function"].items() if "conv2d" in name}
    assert convs and set(convs.values()) == {rule}, convs
    assert meta["validation"]["executed"] == "emulated" and meta["validation"]["outputs"][0]["max_abs"] == 0
    objdump = subprocess.run(
        ["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "art" / "model.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loops = inner_loops(objdump)
    if dot:
        assert max(loop.count("sdot") for loop in loops) >= 4
    else:  # widening multiply-accumulate (LLVM's smlal / smlal2 on the sign-extended halves)
        assert "sdot" not in objdump and max(loop.count("smlal") + loop.count("smlal2") for loop in loops) >= 8
