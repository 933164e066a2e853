"""Stage 5: artifact -> a self-contained bundle to embed in an application on the target.

    bundle/
      edgekit.txt          the manifest libedgekit reads (target, required CPU features, inputs, outputs)
      model.so meta.json   the artifact
      sample/              input_<i>.npy and onnxruntime's output_<i>.npy for them (when the artifact has them)
      lib/                 libedgekit.so (edgekit.h's C API) + the target's TVM runtime (libtvm_runtime, libtvm_ffi;
                           libtvm_runtime_extra when the model calls its sort / random functions)
      include/             edgekit.h (C), edgekit.hpp (header-only C++ wrapper)
      bin/edgekit_example  the example app, built for the target
      example/             its source, CMakeLists.txt and an aarch64 toolchain file: build it yourself on the board
      python/              edgekit-runtime: `pip install bundle/python` (numpy + TVM runtime; no torch, no onnx)
      README.md            the commands to build and run the example on the board

The TVM runtime libraries come from the PyPI wheels of the target's platform (as the qemu runner uses), or from
this environment for x86_64. armv7 has no TVM runtime on PyPI: packaging refuses, saying what to do.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.core.fileio import atomic_copy, atomic_dir, atomic_file, check_output_path
from edgekit.runtime import BUNDLE, LIBRARY, META, read_meta
from edgekit.runtime.lite import RUNTIME_EXTRA as EXTRA  # 1.3 MB, shipped only for models that call it
from edgekit.runtime.lite import needs_runtime_extra

CPP = Path(__file__).resolve().parent / "runtime" / "cpp"
LITE = Path(__file__).resolve().parent / "runtime" / "lite.py"
FORMATS = ("dir", "tar.gz")
RUNTIME = ("libtvm_runtime.so", "libtvm_ffi.so")


def runtime_libs(target: dict) -> Path:
    """The directory holding libtvm_runtime.so and libtvm_ffi.so for the target's architecture."""
    arch = target.get("caps", {}).get("arch")
    if target.get("tvm", {}).get("kind", "llvm") != "llvm":
        # libedgekit's C API runs on the CPU device only, and the CUDA runtime in TVM's wheels links CUDA 13's
        # libcudart.so.13, which JetPack 6 (Orin's CUDA 12.x) lacks: no bundle would run there as built
        raise EdgekitError(
            f"{target.get('name')} is a {target['tvm']['kind']} target: bundles hold CPU runtimes only",
            "copy the artifact directory to the board and load it there with edgekit.load(); it needs "
            "`pip install apache-tvm==0.27.*` (its CUDA runtime wants CUDA 13's libcudart.so.13) and the NVIDIA driver",
        )
    if arch == "x86_64":
        import tvm
        import tvm_ffi

        tvm_lib = Path(tvm.__file__).parent / "lib"
        return _side_by_side(
            [tvm_lib / "libtvm_runtime.so", tvm_lib / EXTRA, Path(tvm_ffi.__file__).parent / "lib" / "libtvm_ffi.so"]
        )
    if target.get("runtime_platform"):
        from edgekit.runners.qemu import ensure_guest_runtime

        return ensure_guest_runtime(target) / "lib"
    raise EdgekitError(
        f"no TVM runtime for {target.get('name', arch)} exists on PyPI, so edgekit cannot bundle one",
        "build TVM's runtime on the board (cmake -DUSE_LLVM=OFF; make runtime), then serve it with "
        "`python -m tvm.exec.rpc_server` and use --rpc; or package an aarch64 / x86_64 artifact",
    )


def _side_by_side(libs: list[Path]) -> Path:
    """The runtime libraries side by side in one cached directory (they live in two wheels)."""
    from edgekit.runners.qemu import cache_root

    root = cache_root() / "runtime" / "x86_64-local"
    root.mkdir(parents=True, exist_ok=True)
    for lib in libs:
        dest = root / lib.name
        if not dest.exists() or dest.stat().st_size != lib.stat().st_size:
            atomic_copy(lib, dest)  # another edgekit process may be linking against or loading it
    return root


def manifest(meta) -> str:
    lines = [
        "edgekit-bundle 1",
        f"target {meta.target.get('name', '?')} {meta.target.get('caps', {}).get('arch', '?')}",
    ]
    features = meta.target.get("caps", {}).get("features", [])
    if features:
        lines.append("requires " + " ".join(features))
    for kind, specs in (("input", meta.inputs), ("output", meta.outputs)):
        for s in specs:
            if " " in s.name:
                raise EdgekitError(
                    f"{kind} name '{s.name}' has a space, which the bundle manifest cannot hold",
                    "rename the tensor in the ONNX model",
                )
            dims = " ".join(str(d) if isinstance(d, int) else "-1" for d in s.shape)  # a named dim: known after a run
            lines.append(f"{kind} {s.name} {s.dtype} {len(s.shape)} {dims}".rstrip())
    return "\n".join(lines) + "\n"


def _compiler(target: dict) -> str:
    cc = target.get("cc") or "g++"
    if shutil.which(cc) is None:
        raise EdgekitError(
            f"the {target.get('name')} C++ compiler '{cc}' is not installed",
            f"apt-get update && apt-get install -y {target.get('apt_package') or cc}",
        )
    return cc


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["?"]
        first = next((ln for ln in lines if "error" in ln), lines[-1])
        raise EdgekitError(f"building {what} failed: {first.strip()[:200]}", "check the compiler installation")


def build_native_parts(bundle: Path, target: dict) -> None:
    """libedgekit.so and the example for the target, linked against the bundled TVM runtime ($ORIGIN rpaths);
    libedgekit dlopens lib/libtvm_runtime_extra.so where a bundle has it."""
    import tvm_ffi

    cc = _compiler(target)
    include = Path(tvm_ffi.__file__).parent / "include"
    lib = bundle / "lib"
    _run(
        [
            cc,
            "-std=c++17",
            "-O2",
            "-shared",
            "-fPIC",
            str(CPP / "src" / "edgekit.cc"),
            f"-I{CPP / 'include'}",
            f"-I{include}",
            f"-L{lib}",
            "-ltvm_ffi",
            "-ltvm_runtime",
            "-ldl",
            "-Wl,-rpath,$ORIGIN",
            "-o",
            str(lib / "libedgekit.so"),
        ],
        "libedgekit.so",
    )
    (bundle / "bin").mkdir()
    _run(
        [
            cc,
            "-std=c++17",
            "-O2",
            str(CPP / "example" / "main.cc"),
            f"-I{CPP / 'include'}",
            f"-L{lib}",
            "-ledgekit",
            f"-Wl,-rpath-link,{lib}",
            "-Wl,-rpath,$ORIGIN/../lib",
            "-o",
            str(bundle / "bin" / "edgekit_example"),
        ],
        "the example",
    )
    strip = cc[: -len("g++")] + "strip" if cc.endswith("g++") else None
    if strip and shutil.which(strip):
        subprocess.run(
            [strip, "--strip-unneeded", str(lib / "libedgekit.so"), str(bundle / "bin" / "edgekit_example")],
            capture_output=True,
        )


def _samples(artifact: Path, bundle: Path, meta) -> None:
    path = artifact / BUNDLE
    if not path.exists():
        return
    (bundle / "sample").mkdir()
    with np.load(path) as data:
        for i, s in enumerate(meta.inputs):
            np.save(bundle / "sample" / f"input_{i}.npy", data[f"input:{s.name}"])
        for i, s in enumerate(meta.outputs):
            if f"output:{s.name}" in data:
                np.save(bundle / "sample" / f"output_{i}.npy", data[f"output:{s.name}"])


def _python_runtime(bundle: Path) -> None:
    from importlib import metadata

    py = bundle / "python"
    (py / "edgekit_runtime").mkdir(parents=True)
    shutil.copy2(LITE, py / "edgekit_runtime" / "__init__.py")
    pins = [
        '"numpy"',
        f'"apache-tvm=={metadata.version("apache-tvm")}"',
        f'"apache-tvm-ffi=={metadata.version("apache-tvm-ffi")}"',
    ]
    (py / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "edgekit-runtime"\nversion = "0.1.0"\n'
        f'description = "Run edgekit artifacts: numpy + the TVM runtime"\n'
        f'requires-python = ">=3.9"\ndependencies = [{", ".join(pins)}]\n\n'
        f'[tool.setuptools]\npackages = ["edgekit_runtime"]\n'
    )


README = """# edgekit bundle: {name} for {target}

The model library, the TVM runtime for {arch}, a C API (include/edgekit.h), a C++ wrapper (include/edgekit.hpp)
and an example app. Built for CPU features: {features}.

Run the prebuilt example on the board (copy this directory there first):

    bin/edgekit_example . sample/input_0.npy --repeat 20

Build the example yourself (on the board, or cross-compiled with the toolchain file):

    cmake -S example -B build && cmake --build build && build/edgekit_example . sample/input_0.npy
    cmake -S example -B build -DCMAKE_TOOLCHAIN_FILE=example/toolchain-aarch64.cmake && cmake --build build

From Python, without torch or onnx:

    pip install ./python && python -c "import edgekit_runtime as ek; m = ek.load('.'); print(m.inputs)"
"""


def package_artifact(
    artifact: Path, out: Path, fmt: str = "dir", force: bool = False, keep_existing: bool = False
) -> dict:
    """keep_existing (dir only): another process may publish `out` first (edgekit's content-keyed bundle cache)."""
    artifact, out = Path(artifact), Path(out)
    if fmt not in FORMATS:
        raise EdgekitError(f"unknown bundle format '{fmt}'", f"choose from {', '.join(FORMATS)}")
    meta = read_meta(artifact)
    if not (artifact / LIBRARY).exists():
        raise EdgekitError(f"{artifact} has no {LIBRARY}", "re-run edgekit compile")
    check_output_path(out, force, (artifact,), kind="bundle" if fmt == "dir" else "file")
    target = meta.target
    libs = runtime_libs(target)

    def fill(tmp: Path) -> dict:
        shutil.copy2(artifact / LIBRARY, tmp / LIBRARY)
        shutil.copy2(artifact / META, tmp / META)
        (tmp / "edgekit.txt").write_text(manifest(meta))
        (tmp / "lib").mkdir()
        for name in RUNTIME + ((EXTRA,) if needs_runtime_extra(artifact / LIBRARY) else ()):
            shutil.copy2(libs / name, tmp / "lib" / name)
        shutil.copytree(CPP / "include", tmp / "include")
        shutil.copytree(CPP / "example", tmp / "example")
        build_native_parts(tmp, target)
        _samples(artifact, tmp, meta)
        _python_runtime(tmp)
        features = ", ".join(target.get("caps", {}).get("features", [])) or "baseline"
        (tmp / "README.md").write_text(
            README.format(
                name=Path(meta.raw.get("source", {}).get("path", "model")).name,
                target=target.get("name"),
                arch=target.get("caps", {}).get("arch"),
                features=features,
            )
        )
        return size_breakdown(tmp)

    if fmt == "dir":
        with atomic_dir(out, keep_existing=keep_existing) as tmp:
            sizes = fill(tmp)
    else:
        name = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
        with tempfile.TemporaryDirectory(prefix="edgekit-package-") as work:
            (Path(work) / name).mkdir()
            sizes = fill(Path(work) / name)
            with atomic_file(out) as tar_tmp, tarfile.open(tar_tmp, "w:gz") as tar:
                tar.add(Path(work) / name, arcname=name)
    return {
        "bundle": str(out),
        "format": fmt,
        "target": target.get("name"),
        "arch": target.get("caps", {}).get("arch"),
        "sizes": sizes,
    }


def size_breakdown(bundle: Path) -> dict:
    """Bytes per part; `runtime` is everything a board needs besides the model (libraries and example)."""

    def size(path: Path) -> int:
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    parts = {
        "model.so": size(bundle / LIBRARY),
        "libtvm_runtime.so": size(bundle / "lib" / "libtvm_runtime.so"),
        "libtvm_ffi.so": size(bundle / "lib" / "libtvm_ffi.so"),
        EXTRA: size(bundle / "lib" / EXTRA),
        "libedgekit.so": size(bundle / "lib" / "libedgekit.so"),
        "bin/edgekit_example": size(bundle / "bin"),
        "include + example sources": size(bundle / "include") + size(bundle / "example"),
        "python runtime": size(bundle / "python"),
        "sample + meta + manifest": size(bundle / "sample") + size(bundle / META) + size(bundle / "edgekit.txt"),
    }
    if not parts[EXTRA]:
        del parts[EXTRA]
    runtime = sum(v for k, v in parts.items() if k not in ("model.so", "sample + meta + manifest"))
    return {"parts": parts, "runtime_bytes": runtime, "total_bytes": size(bundle)}
