"""The embedded runtime: `edgekit package` bundles, libedgekit's C API (from C and through the C++ example),
CMake builds, aarch64 under qemu, the torch-free Python runtime, and every bad input a C caller can make."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from realworld import detector_with_nms
from test_arm import needs_aarch64, needs_armv7
from test_errors import assert_one_line_error

from edgekit.compiler.build import compile_onnx
from edgekit.datasets import load_digits_split
from edgekit.onnxkit.tools import ort_session
from edgekit.package import package_artifact

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]


def run_example(bundle, *args, arch="x86_64") -> subprocess.CompletedProcess:
    prefix = QEMU if arch == "aarch64" else []
    return subprocess.run(
        [*prefix, str(bundle / "bin" / "edgekit_example"), str(bundle), *map(str, args)], capture_output=True, text=True
    )


def summary(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digits_bundle(digits_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "digits"
    package_artifact(digits_artifact, out)
    return out


@pytest.fixture(scope="module")
def digits_test_npy(tmp_path_factory, digits_onnx):
    split = load_digits_split()
    path = tmp_path_factory.mktemp("digits_x") / "x_test.npy"
    np.save(path, split.x_test)
    session = ort_session(digits_onnx)
    ort_classes = np.array([session.run(None, {"input": x[None]})[0].argmax() for x in split.x_test])
    return path, ort_classes


def classes_printed(proc) -> np.ndarray:
    assert proc.returncode == 0, proc.stderr
    return np.array([int(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("sample ")])


def test_native_bundle_classifies_the_digits_test_set_as_onnxruntime(digits_bundle, digits_test_npy):
    path, ort_classes = digits_test_npy
    got = classes_printed(run_example(digits_bundle, path))
    assert len(got) == len(ort_classes) == 450
    assert (got == ort_classes).all()
    s = summary(run_example(digits_bundle, "--repeat", "5"))
    assert s["target"] == "x86_64" and s["top_class"] == int(
        np.load(digits_bundle / "sample" / "output_0.npy").argmax()
    )


def test_bundle_layout_and_manifest(digits_bundle):
    for part in (
        "edgekit.txt",
        "model.so",
        "meta.json",
        "lib/libedgekit.so",
        "lib/libtvm_runtime.so",
        "lib/libtvm_ffi.so",
        "include/edgekit.h",
        "include/edgekit.hpp",
        "example/CMakeLists.txt",
        "example/toolchain-aarch64.cmake",
        "bin/edgekit_example",
        "python/pyproject.toml",
        "sample/input_0.npy",
        "README.md",
    ):
        assert (digits_bundle / part).exists(), part
    manifest = (digits_bundle / "edgekit.txt").read_text().splitlines()
    assert manifest[0] == "edgekit-bundle 1" and manifest[1] == "target x86_64 x86_64"
    assert "input input float32 4 1 1 8 8" in manifest and "output output float32 2 1 10" in manifest


C_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "edgekit.h"
/* Every misuse a C caller can make returns a status and a message; prints "<case> <status> <message>". */
static void report(const char* what, edgekit_status s) {
  printf("%s %d %s\n", what, (int)s, s ? edgekit_last_error() : "");
}
int main(int argc, char** argv) {
  edgekit_model* m = NULL;
  report("load", edgekit_load(argv[1], &m));
  if (m == NULL) return 0;
  float small[3] = {0}, image[64] = {0}, logits[10];
  report("short_input", edgekit_set_input(m, 0, small, sizeof small));
  report("bad_index", edgekit_set_input(m, 5, image, sizeof image));
  report("null_data", edgekit_set_input(m, 0, NULL, sizeof image));
  report("output_before_run", edgekit_get_output(m, 0, logits, sizeof logits));
  report("set", edgekit_set_input(m, edgekit_input_index(m, "input"), image, sizeof image));
  report("run", edgekit_run(m));
  report("short_output", edgekit_get_output(m, 0, logits, 8));
  report("get", edgekit_get_output(m, 0, logits, sizeof logits));
  printf("shape ndim %d dim1 %lld dtype %s\n", edgekit_ndim(m, 1, 0), (long long)edgekit_shape(m, 1, 0)[1],
         edgekit_dtype(m, 1, 0));
  edgekit_free(m);
  return 0;
}
"""


def compile_c_check(bundle, tmp_path, cc="gcc"):
    src = tmp_path / "check.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "check"
    subprocess.run(
        [
            cc,
            "-std=c99",
            "-Wall",
            "-Werror",
            str(src),
            f"-I{bundle / 'include'}",
            f"-L{bundle / 'lib'}",
            "-ledgekit",
            f"-Wl,-rpath-link,{bundle / 'lib'}",
            f"-Wl,-rpath,{bundle / 'lib'}",
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    return exe


def c_results(exe, bundle, prefix=()) -> dict[str, str]:
    out = subprocess.run([*prefix, str(exe), str(bundle)], capture_output=True, text=True, check=True).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs a C compiler")
def test_c_api_errors_are_status_codes_with_messages(digits_bundle, tmp_path):
    exe = compile_c_check(digits_bundle, tmp_path)  # the header compiles as C99
    r = c_results(exe, digits_bundle)
    assert r["load"].startswith("0")
    assert r["short_input"].startswith("4 ") and "takes 256 bytes, got 12" in r["short_input"]
    assert r["bad_index"].startswith("1 ") and "index 5 out of range" in r["bad_index"]
    assert r["null_data"].startswith("1 ")
    assert r["output_before_run"].startswith("1 ") and "edgekit_run first" in r["output_before_run"]
    assert r["set"].strip() == "0" and r["run"].strip() == "0" and r["get"].strip() == "0"
    assert r["short_output"].startswith("4 ") and "has 40 bytes, the buffer 8" in r["short_output"]
    assert r["shape"] == "ndim 2 dim1 10 dtype float32"


RELOAD_PROGRAM = r"""
#include <stdio.h>
#include "edgekit.h"
/* Hot swap, as an app taking an over-the-air update would: load and run the bundle at argv[1]; replace that
   directory by the bundle at argv[2] (renames); load the same path again while the old model still serves,
   run it, then free the old one. Prints "<logit 0>" after each run. */
static edgekit_model* load_and_run(const char* dir) {
  edgekit_model* m = NULL;
  float image[64], logits[10];
  for (int i = 0; i < 64; i++) image[i] = (float)(i % 7);
  if (edgekit_load(dir, &m) || edgekit_set_input(m, 0, image, sizeof image) || edgekit_run(m) ||
      edgekit_get_output(m, 0, logits, sizeof logits)) {
    fprintf(stderr, "%s\n", edgekit_last_error());
    return NULL;
  }
  printf("%.6f\n", logits[0]);
  return m;
}
int main(int argc, char** argv) {
  char old[4096];
  snprintf(old, sizeof old, "%s.old", argv[1]);
  edgekit_model* serving = load_and_run(argv[1]);
  if (serving == NULL || rename(argv[1], old) || rename(argv[2], argv[1])) return 1;
  edgekit_model* updated = load_and_run(argv[1]);
  if (updated == NULL) return 1;
  edgekit_free(serving);
  edgekit_free(updated);
  return 0;
}
"""


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs a C compiler")
def test_a_bundle_replaced_in_place_is_reloaded_with_its_new_model(digits_onnx, tmp_path):
    """The dynamic loader returns the model.so it has mapped for a path: while the old model was still loaded,
    loading the updated bundle at the same path ran the old weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(digits_onnx)
    last = [init for init in model.graph.initializer if numpy_helper.to_array(init).shape == (10,)][
        -1
    ]  # the classifier's bias
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) + 1.0, last.name))
    onnx.save(model, tmp_path / "shifted.onnx")
    bundles = {}
    for name, source in (("original", digits_onnx), ("shifted", tmp_path / "shifted.onnx")):
        compile_onnx(source, tmp_path / f"{name}.art", "x86_64", validate=False, quiet=True)
        package_artifact(tmp_path / f"{name}.art", tmp_path / name)
        bundles[name] = tmp_path / name
    src = tmp_path / "reload.c"
    src.write_text(RELOAD_PROGRAM)
    lib = bundles["original"] / "lib"
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-Wall",
            "-Werror",
            str(src),
            f"-I{lib.parent / 'include'}",
            f"-L{lib}",
            "-ledgekit",
            f"-Wl,-rpath,{tmp_path / 'runtime'}",
            "-o",
            str(tmp_path / "reload"),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copytree(lib, tmp_path / "runtime")  # the program's libraries stay put while the bundles move
    proc = subprocess.run(
        [str(tmp_path / "reload"), str(bundles["original"]), str(bundles["shifted"])], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    before, after = (float(v) for v in proc.stdout.split())
    assert after == pytest.approx(before + 1.0, abs=1e-4), (before, after)


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs a C compiler")
def test_broken_bundles_are_refused_by_the_library(digits_bundle, tmp_path):
    exe = compile_c_check(digits_bundle, tmp_path)
    cases = {
        "no_manifest": lambda b: (b / "edgekit.txt").unlink(),
        "no_library": lambda b: (b / "model.so").unlink(),
        "fake_feature": lambda b: (b / "edgekit.txt").write_text(
            (b / "edgekit.txt").read_text() + "requires avx512fake\n"
        ),
        "other_arch": lambda b: (b / "edgekit.txt").write_text(
            (b / "edgekit.txt").read_text().replace("x86_64 x86_64", "aarch64-rpi4 aarch64")
        ),
    }
    expect = {
        "no_manifest": ("2", "no edgekit.txt"),
        "no_library": ("2", "cannot load"),
        "fake_feature": ("3", "this CPU lacks avx512fake"),
        "other_arch": ("3", "built for aarch64"),
    }
    for name, breaks in cases.items():
        broken = tmp_path / name
        shutil.copytree(digits_bundle, broken, symlinks=True)
        breaks(broken)
        status, message = c_results(exe, broken)["load"].split(" ", 1)
        assert status == expect[name][0] and expect[name][1] in message, (name, message)
        proc = run_example(broken)  # the C++ example: exit 1 and one line, never a signal
        assert proc.returncode == 1 and expect[name][1] in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake (installed by .ci/run)")
def test_cmake_builds_the_example(digits_bundle, tmp_path):
    subprocess.run(
        ["cmake", "-S", str(digits_bundle / "example"), "-B", str(tmp_path / "build")], check=True, capture_output=True
    )
    subprocess.run(["cmake", "--build", str(tmp_path / "build")], check=True, capture_output=True)
    proc = subprocess.run(
        [str(tmp_path / "build" / "edgekit_example"), str(digits_bundle)], capture_output=True, text=True
    )
    assert summary(proc)["top_class"] == int(np.load(digits_bundle / "sample" / "output_0.npy").argmax())


@needs_aarch64
def test_aarch64_bundle_digits_and_resnet18_under_qemu(
    digits_onnx, digits_test_npy, digits_bundle, resnet18_rpi4, tmp_path
):
    compile_onnx(digits_onnx, tmp_path / "art", "rpi4", quiet=True)
    result = package_artifact(tmp_path / "art", tmp_path / "digits")
    assert result["sizes"]["runtime_bytes"] <= 6_000_000, result["sizes"]  # everything but the model and samples
    path, ort_classes = digits_test_npy
    got = classes_printed(run_example(tmp_path / "digits", path, arch="aarch64"))
    assert (got == ort_classes).all()
    # ResNet-18: the C++ example's outputs against onnxruntime's for the same input
    package_artifact(resnet18_rpi4, tmp_path / "r18")
    io = tmp_path / "io"
    io.mkdir()
    shutil.copy(tmp_path / "r18" / "sample" / "input_0.npy", io / "input_0.npy")
    summary(run_example(tmp_path / "r18", "--inputs", io, "--outputs", io, "--repeat", "1", arch="aarch64"))
    got, want = np.load(io / "output_0.npy"), np.load(tmp_path / "r18" / "sample" / "output_0.npy")
    assert np.abs(got - want).max() <= 1e-4 + 1e-5 * np.abs(want).max()
    # the x86_64 library refuses the aarch64 bundle: exit 1 and one line, not a crash
    proc = subprocess.run(
        [str(digits_bundle / "bin" / "edgekit_example"), str(tmp_path / "digits")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "the bundle is built for aarch64" in proc.stderr


@needs_aarch64
@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake")
def test_cmake_cross_compiles_the_example_for_aarch64(digits_onnx, tmp_path):
    compile_onnx(digits_onnx, tmp_path / "art", "rpi4", quiet=True)
    bundle = tmp_path / "b"
    package_artifact(tmp_path / "art", bundle)
    subprocess.run(
        [
            "cmake",
            "-S",
            str(bundle / "example"),
            "-B",
            str(tmp_path / "build"),
            f"-DCMAKE_TOOLCHAIN_FILE={bundle / 'example' / 'toolchain-aarch64.cmake'}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["cmake", "--build", str(tmp_path / "build")], check=True, capture_output=True)
    proc = subprocess.run(
        [*QEMU, str(tmp_path / "build" / "edgekit_example"), str(bundle)], capture_output=True, text=True
    )
    assert summary(proc)["target"] == "aarch64-rpi4"


@pytest.mark.parametrize("target", ["x86_64", pytest.param("rpi4", marks=needs_aarch64)])
def test_detector_bundle_ships_the_sort_runtime_and_reports_data_dependent_shapes(target, digits_bundle, tmp_path):
    """TopK / NonMaxSuppression need libtvm_runtime_extra (tvm.contrib.sort), which a bundle then carries and
    links; NonMaxSuppression's output length is known only after a run: -1 in the manifest, the run's in the API."""
    onnx.save(detector_with_nms(), tmp_path / "det.onnx")
    compile_onnx(tmp_path / "det.onnx", tmp_path / "art", target, quiet=True)
    bundle = tmp_path / "bundle"
    sizes = package_artifact(tmp_path / "art", bundle)["sizes"]["parts"]
    assert (bundle / "lib" / "libtvm_runtime_extra.so").exists() and "libtvm_runtime_extra.so" in sizes
    assert not (digits_bundle / "lib" / "libtvm_runtime_extra.so").exists()  # only models that call it pay its 1.3 MB
    assert "output selected int64 2 -1 3" in (bundle / "edgekit.txt").read_text().splitlines()
    assert (
        "libtvm_runtime_extra"
        not in subprocess.run(
            ["readelf", "-d", str(bundle / "lib" / "libedgekit.so")], capture_output=True, text=True
        ).stdout
    )  # loaded, not linked: one libedgekit runs any bundle
    io = tmp_path / "io"
    io.mkdir()
    shutil.copy(bundle / "sample" / "input_0.npy", io / "input_0.npy")
    summary(
        run_example(
            bundle, "--inputs", io, "--outputs", io, "--repeat", "1", arch="x86_64" if target == "x86_64" else "aarch64"
        )
    )
    for i in range(3):  # onnxruntime's outputs, the detections' count included
        got, want = np.load(io / f"output_{i}.npy"), np.load(bundle / "sample" / f"output_{i}.npy")
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), i
    assert np.load(io / "output_2.npy").shape[0] > 0


def test_run_and_bench_with_the_cpp_runtime(cli, digits_artifact, digits_bundle, tmp_path):
    x = tmp_path / "x.npy"
    shutil.copy(digits_bundle / "sample" / "input_0.npy", x)
    for runtime in ("python", "cpp"):
        res = cli("run", digits_artifact, "--input", x, "-o", tmp_path / f"{runtime}.npy", "--runtime", runtime)
        assert res.exit_code == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "cpp.npy"), np.load(tmp_path / "python.npy"), rtol=0, atol=0)
    res = cli("bench", digits_artifact, "--runtimes", "tvm,cpp", "--repeat", "4", "--rounds", "1", "--json")
    assert res.exit_code == 0, res.stderr
    runs = {r["runtime"]: r for r in json.loads(res.stdout)["runs"]}
    assert runs["cpp"]["samples"] == 4 and runs["cpp"]["p50_ms"] > 0 and runs["cpp"]["peak_rss_mb"] > 0


def test_package_cli_and_its_errors(cli, digits_artifact, tmp_path):
    res = cli("package", digits_artifact, "-o", tmp_path / "b.tar.gz", "--format", "tar.gz", "--json")
    assert res.exit_code == 0, res.stderr
    import tarfile

    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert "b/edgekit.txt" in tar.getnames() and "b/bin/edgekit_example" in tar.getnames()
    assert_one_line_error(cli("package", tmp_path, "-o", tmp_path / "c"), "not an edgekit artifact")
    assert_one_line_error(cli("package", digits_artifact, "-o", tmp_path / "b.tar.gz", "--format", "tar.gz"), "exists")
    assert_one_line_error(
        cli("package", digits_artifact, "-o", tmp_path / "d", "--format", "zip"), "unknown bundle format"
    )


@needs_armv7
def test_armv7_has_no_runtime_to_bundle(cli, digits_onnx, tmp_path):
    assert cli("compile", digits_onnx, "--target", "rpi3", "-o", tmp_path / "art").exit_code == 0
    assert_one_line_error(cli("package", tmp_path / "art", "-o", tmp_path / "b"), "no TVM runtime for armv7-rpi3")


def test_torch_free_python_runtime_in_a_fresh_venv(digits_bundle, tmp_path):
    """pip install bundle/python into a venv without torch or onnx, then run the bundle's sample input."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(digits_bundle / "python")], capture_output=True, text=True
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    script = (
        "import importlib.util, sys, numpy as np, edgekit_runtime as ek\n"
        "assert not any(importlib.util.find_spec(m) for m in ('torch', 'onnx', 'onnxruntime', 'edgekit')), "
        "'not torch-free'\n"
        f"m = ek.load({str(digits_bundle)!r})\n"
        f"x = np.load({str(digits_bundle / 'sample' / 'input_0.npy')!r})\n"
        f"want = np.load({str(digits_bundle / 'sample' / 'output_0.npy')!r})\n"
        "got, = m(x)\n"
        "assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()\n"
        "try:\n    m(x[:, :, :4])\nexcept ek.RuntimeFailure as e:\n    print('refused:', e.message)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: input 'input' has shape [1, 1, 4, 8]" in proc.stdout


def test_memory_plan_is_recorded_and_beats_the_naive_sum(digits_artifact):
    memory = json.loads((digits_artifact / "meta.json").read_text())["build"]["memory"]
    assert memory["buffers"] >= 1 and memory["tensors"] >= memory["buffers"]
    assert 0 < memory["planned_activation_bytes"] < memory["naive_activation_bytes"]
    # the digits CNN's float weights are 95 kB (prepacked layouts may pad them)
    assert 90_000 <= memory["weight_bytes"] <= 200_000
