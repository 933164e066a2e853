"""GPU targets (cuda, cuda-smXY, jetson-orin-gpu): builds of the zoo and of the third-party corpus on a machine
without a GPU, what model.so carries (nvcc's fatbin for the arch, the CUDA source it came from), the refusals
where no GPU is present, and execution tests (marked gpu) where one is."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import third_party_cnn
from realworld import CORPUS, build, segnet_unpool
from test_errors import assert_one_line_error

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.cuda import fatbin_images
from edgekit.onnxkit.graph import fixed_shapes
from edgekit.runtime.lite import FATBIN_SECTION, elf_section
from edgekit.targets import cuda_device_here

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

NO_GPU = not cuda_device_here()
needs_gpu = pytest.mark.skipif(NO_GPU, reason="no CUDA GPU on this machine: the CUDA kernels cannot execute here")
# CUDA builds compile the kernels with nvcc (the CUDA toolkit; no pip package carries it for every machine)
needs_nvcc = pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="no nvcc on PATH: CUDA artifacts cannot be built here"
)


def serialized_cuda_source(library: Path) -> bytes:
    """The CUDA C TVM serialized into model.so (a length-prefixed string ahead of its first line)."""
    data = library.read_bytes()
    start = data.index(b"#ifdef __CUDACC_RTC__") - 1  # the source begins with a newline
    (size,) = struct.unpack_from("<Q", data, start - 8)
    return data[start : start + size]


def check_gpu_artifact(art: Path, arch: str, elf_machine: int) -> dict:
    """What every GPU artifact must be: an ELF for its host CPU carrying nvcc's fatbin for `arch`, compiled from
    exactly the CUDA source the library holds, every kernel scheduled by a GPU rule, and no silent validation."""
    meta = json.loads((art / "meta.json").read_text())
    library = art / "model.so"
    assert int.from_bytes(library.read_bytes()[18:20], "little") == elf_machine
    cuda = meta["build"]["cuda"]
    fatbin = elf_section(library, FATBIN_SECTION)
    assert fatbin is not None and hashlib.sha256(fatbin).hexdigest() == cuda["fatbin_sha256"]
    assert f"sass {arch}" in fatbin_images(fatbin) and f"ptx {arch}" in fatbin_images(fatbin)
    assert hashlib.sha256(serialized_cuda_source(library)).hexdigest() == cuda["source_sha256"]
    assert meta["build"]["rules"] and all(rule.startswith("gpu-") for rule in meta["build"]["rules"]), meta["build"][
        "rules"
    ]
    if NO_GPU:
        assert meta["validation"]["ok"] is None and "not validated here" in meta["validation"]["skipped"]
    return meta


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    from edgekit.export import export_model

    root = tmp_path_factory.mktemp("gpu_zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = root / f"{name}.onnx"
            export_model(name, cache[name])
        return cache[name]

    return get


@needs_nvcc
@pytest.mark.parametrize("name", ["digits_cnn", "binary_digits", "resnet18", "mobilenetv2", "vit_tiny"])
def test_the_zoo_builds_for_cuda(name, zoo_onnx, tmp_path):
    result = compile_onnx(zoo_onnx(name), tmp_path / "art", "cuda", quiet=True)
    meta = check_gpu_artifact(tmp_path / "art", "sm_80", 62)
    assert meta["target"]["gpu_arch"] == "sm_80" and (result.validation is None) == NO_GPU


@needs_nvcc
@pytest.mark.parametrize("name", CORPUS)
def test_the_corpus_builds_for_cuda(name, tmp_path):
    model = build(name)
    onnx.save(model, tmp_path / "m.onnx")
    compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "cuda", input_shapes=fixed_shapes(model), quiet=True)
    meta = check_gpu_artifact(tmp_path / "art", "sm_80", 62)
    if name in ("crnn", "gru_kws"):
        assert meta["build"]["rules"].get("gpu-recurrent") == 1


@needs_nvcc
def test_jetson_orin_gpu_is_an_aarch64_library_with_sm87_kernels(zoo_onnx, tmp_path):
    compile_onnx(zoo_onnx("resnet18"), tmp_path / "art", "jetson-orin-gpu", quiet=True)
    meta = check_gpu_artifact(tmp_path / "art", "sm_87", 183)
    assert "aarch64" in meta["validation"]["skipped"]


@needs_nvcc
def test_fp16_builds_half_kernels_with_their_tolerance(zoo_onnx, tmp_path, cli):
    res = cli(
        "compile",
        zoo_onnx("digits_cnn"),
        "--target",
        "cuda-sm86",
        "--precision",
        "fp16",
        "-o",
        tmp_path / "art",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    meta = check_gpu_artifact(tmp_path / "art", "sm_86", 62)
    assert meta["build"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-2, "precision": "fp16"}
    assert b"half" in serialized_cuda_source(tmp_path / "art" / "model.so")
    fp32 = compile_onnx(zoo_onnx("digits_cnn"), tmp_path / "fp32", "cuda-sm86", quiet=True).meta
    assert fp32["build"]["tolerance"]["rtol"] == 1e-5
    assert b"half" not in serialized_cuda_source(tmp_path / "fp32" / "model.so")


def test_targets_say_there_is_no_gpu(cli):
    rows = {t["name"]: t for t in json.loads(cli("targets", "--json").stdout)["targets"]}
    for name in ("cuda", "cuda-sm86", "cuda-sm89", "cuda-sm90", "jetson-orin-gpu"):
        assert rows[name]["gpu_arch"].startswith("sm_")
        if NO_GPU:
            assert rows[name]["runnable_here"] == "no" and rows[name]["why_not_runnable"]
    assert rows["jetson-orin-gpu"]["caps"]["arch"] == "aarch64"


@pytest.fixture(scope="module")
def cuda_artifact(zoo_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cuda_art") / "art"
    compile_onnx(zoo_onnx("digits_cnn"), out, "cuda", quiet=True)
    return out


@needs_nvcc
@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the artifact runs")
def test_without_a_gpu_every_command_refuses_a_cuda_artifact(cuda_artifact, cli, tmp_path):
    import edgekit
    from edgekit.core.errors import EdgekitError

    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    assert_one_line_error(cli("run", cuda_artifact, "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npy"), "no CUDA GPU")
    assert_one_line_error(cli("bench", cuda_artifact), "no CUDA GPU")
    assert_one_line_error(cli("validate", cuda_artifact), "no CUDA GPU")
    with pytest.raises(EdgekitError, match="no CUDA GPU"):
        edgekit.load(cuda_artifact)


def test_bad_gpu_input_is_one_line(cli, tmp_path, digits_onnx):
    bad_arch = tmp_path / "gpu-bad.toml"
    bad_arch.write_text('description = "x"\n[tvm]\nkind = "cuda"\narch = "sm80"\n[tvm.host]\nkind = "llvm"\n')
    assert_one_line_error(
        cli("compile", digits_onnx, "--target", bad_arch, "-o", tmp_path / "a"), "not a CUDA architecture"
    )
    no_nvcc = tmp_path / "gpu-nonvcc.toml"
    no_nvcc.write_text(
        'description = "x"\n[tvm]\nkind = "cuda"\narch = "sm_80"\n[tvm.host]\nkind = "llvm"\n'
        '[toolchain]\nnvcc = "nvcc-not-installed"\n'
    )
    assert_one_line_error(cli("compile", digits_onnx, "--target", no_nvcc, "-o", tmp_path / "b"), "need nvcc")
    assert_one_line_error(cli("compile", digits_onnx, "--precision", "fp16", "-o", tmp_path / "c"), "for GPU targets")
    assert_one_line_error(
        cli("compile", digits_onnx, "--target", "cuda", "--precision", "bf8", "-o", tmp_path / "d"), "precision"
    )
    assert not any((tmp_path / d).exists() for d in "abcd")


@needs_nvcc
def test_an_op_no_gpu_rule_can_spread_over_threads_is_named(cli, tmp_path):
    """ScatterElements (max-unpooling in SegNet-style decoders) has no GPU rule: refused by name, exit 2."""
    onnx.save(segnet_unpool(), tmp_path / "m.onnx")
    assert_one_line_error(
        cli("compile", tmp_path / "m.onnx", "--target", "cuda", "-o", tmp_path / "a"),
        "scatter_elements",
        "over threads",
    )


# --- where a GPU exists ---------------------------------------------------------------------------------


@needs_nvcc
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_artifacts_validate_on_the_gpu(zoo_onnx, tmp_path, precision):
    from edgekit.compiler.options import BuildOptions

    result = compile_onnx(
        zoo_onnx("mobilenetv2"), tmp_path / "art", "cuda", BuildOptions(precision=precision), quiet=True
    )
    assert result.validation is not None and result.validation.ok, result.validation


@needs_nvcc
@pytest.mark.gpu
@needs_gpu
def test_a_third_party_cnn_runs_through_load_on_the_gpu(tmp_path):
    import edgekit

    model = third_party_cnn()
    onnx.save(model, tmp_path / "m.onnx")
    compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "cuda", input_shapes=fixed_shapes(model), quiet=True)
    compiled = edgekit.load(tmp_path / "art")
    x = np.random.default_rng(0).standard_normal(compiled.inputs[0].shape).astype(np.float32)
    assert all(np.isfinite(out).all() for out in compiled(x))


@needs_nvcc
def test_package_refuses_a_gpu_artifact_saying_what_to_install(cuda_artifact, cli, tmp_path):
    assert_one_line_error(cli("package", cuda_artifact, "-o", tmp_path / "bundle"), "CPU runtimes only")
    assert not (tmp_path / "bundle").exists()


@needs_nvcc
def test_the_gpu_benchmark_prepares_its_artifacts_without_a_gpu(tmp_path):
    """bench/gpu.py's first half, small: what a GPU machine without TVM's compiler is given to run."""
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "gpu.py"),
            "prepare",
            str(tmp_path / "b"),
            "--models",
            "digits_cnn",
            "--target",
            "cuda",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [(e["model"], e["precision"]) for e in manifest["entries"]] == [
        ("digits_cnn", p) for p in ("fp32", "fp16", "int8")
    ]
    for e in manifest["entries"]:
        check_gpu_artifact(tmp_path / "b" / e["artifact"], "sm_80", 62)
        ref = np.load(tmp_path / "b" / e["artifact"] / "reference.npz")
        assert any(k.startswith("output:") for k in ref.files)


def test_a_kernel_with_no_thread_binding_is_unbound():
    """A hand-written CPU kernel (only a root block) must not pass the GPU build's check."""
    from edgekit.compiler.schedules.tir import unbound_blocks
    from edgekit.kernels.recurrent import RecurrentSpec, sequence_func
    from edgekit.kernels.recurrent_gpu import gpu_sequence_func

    spec = RecurrentSpec("GRU", 3, 1, 8, (False,))
    assert unbound_blocks(sequence_func(spec)) == ["root"]
    assert unbound_blocks(gpu_sequence_func(spec)) == []


@needs_nvcc
def test_compile_check_kernels_records_the_opencl_check(zoo_onnx, cli, tmp_path):
    res = cli(
        "compile", zoo_onnx("digits_cnn"), "--target", "cuda", "--check-kernels", "-o", tmp_path / "art", "--json"
    )
    assert res.exit_code == 0, res.stderr
    check = json.loads((tmp_path / "art" / "meta.json").read_text())["kernel_check"]
    assert check["ok"] and check["kernels"] == len(json.loads(res.stdout)["build"]["rule_per_function"])
    assert check["max_rel_error"] <= 1e-4
    assert_one_line_error(
        cli("compile", zoo_onnx("digits_cnn"), "--check-kernels", "-o", tmp_path / "cpu"), "GPU targets"
    )
