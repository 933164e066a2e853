"""edgekit-runtime: run an edgekit artifact or bundle with numpy and the TVM runtime only (no torch, no onnx,
no edgekit). `edgekit package` ships this file as the `edgekit_runtime` package; `edgekit.load()` builds on it.

    import edgekit_runtime as ek
    model = ek.load("bundle/")           # or an artifact directory
    logits, = model(x)                   # positional, in input order
    outs = model.run({"input": x})       # {output name: array}

Standalone on purpose: it must install on a board without the rest of edgekit, so the few facts it shares with
edgekit (the CPU flag names, meta.json's fields) are restated here rather than imported.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import NamedTuple

import numpy as np

META = "meta.json"
LIBRARY = "model.so"
# /proc/cpuinfo spellings -> the feature names meta.json records (edgekit.targets.TargetCaps)
CPUINFO_NAMES = {
    "sse4_2": "sse4.2",
    "bmi1": "bmi",
    "avx512_vnni": "avx512vnni",
    "avx512_vpopcntdq": "avx512vpopcntdq",
    "avx512_bitalg": "avx512bitalg",
    "avx512_vbmi2": "avx512vbmi2",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni",
    "asimd": "neon",
    "asimddp": "dotprod",
    "asimdhp": "fullfp16",
    "vfpv4": "vfp4",
}
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
FATBIN_SECTION = ".edgekit_cuda_fatbin"  # where edgekit compile links the nvcc-built kernels into model.so


class RuntimeFailure(Exception):
    """A model that cannot be loaded or run here: `message` says what, `hint` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message + (f" (hint: {hint})" if hint else ""))
        self.message, self.hint = message, hint


class Spec(NamedTuple):
    name: str
    shape: tuple
    dtype: str


# glibc's view of CPUID (<sys/platform/x86.h>, glibc >= 2.33): word index -> register -> {bit: feature name}. The
# "active" half of each leaf is what is usable, the OS's saved register state (XCR0) included.
_X86_LEAVES = {
    0: {2: {12: "fma", 20: "sse4.2", 23: "popcnt", 28: "avx", 29: "f16c"}},  # CPUID 1
    1: {
        1: {
            3: "bmi",
            5: "avx2",
            8: "bmi2",
            16: "avx512f",
            17: "avx512dq",
            28: "avx512cd",
            30: "avx512bw",
            31: "avx512vl",
        },  # CPUID 7: ebx
        2: {1: "avx512vbmi", 6: "avx512vbmi2", 11: "avx512vnni", 12: "avx512bitalg", 14: "avx512vpopcntdq"},  # ecx
        3: {23: "avx512fp16"},
    },  # edx
    6: {0: {4: "avxvnni", 5: "avx512bf16"}},  # CPUID 7, subleaf 1: eax
}


def _x86_cpuid_features() -> set[str] | None:
    """The x86 features this process can execute, from CPUID as glibc read it, or None without glibc's reader.
    Why not /proc/cpuinfo: under `qemu-x86_64 -cpu ...` that file is the host's, while CPUID is the emulated CPU's,
    and an artifact that trusts the host there dies by SIGILL. ctypes into glibc because no maintained Python
    package exposes CPUID without compiling or executing machine code of its own."""
    import ctypes

    try:
        leaf = ctypes.CDLL(None).__x86_get_cpuid_feature_leaf
    except (OSError, AttributeError):  # musl, glibc < 2.33, or not Linux
        return None
    leaf.restype = ctypes.POINTER(ctypes.c_uint32 * 8)  # struct cpuid_feature {cpuid_array[4]; active_array[4]}
    found = set()
    for index, registers in _X86_LEAVES.items():
        active = leaf(index).contents[4:]
        found.update(
            name for register, bits in registers.items() for bit, name in bits.items() if active[register] >> bit & 1
        )
    return found


def host_features() -> tuple[str, set[str]]:
    """This machine's architecture ("x86_64" | "aarch64" | "armv7") and the CPU features it can execute, in the
    names meta.json records: CPUID on x86 (see _x86_cpuid_features), the kernel's HWCAP names on ARM."""
    machine = platform.machine().lower()
    arch = "armv7" if machine.startswith("arm") and machine != "arm64" else ARCH.get(machine, machine)
    flags = _x86_cpuid_features() if arch == "x86_64" else None
    if flags is not None:
        return arch, flags
    flags = set()
    try:  # ARM's HWCAPs (qemu-user emulates those too), or x86 without glibc's CPUID reader
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(CPUINFO_NAMES.get(f, f) for f in value.split())
    except OSError:  # not Linux: claim nothing, so nothing is run that might need a feature
        pass
    if arch == "aarch64":
        flags.add("neon")  # Advanced SIMD is mandatory in ARMv8-A
    return arch, flags


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """edgekit.core.errors.message_line(exc, limit, first=True), restated: this file imports nothing of edgekit."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def refusal(path: Path, target: dict, missing: list[str]) -> tuple[str, str] | None:
    """(message, hint) if code built for `target` must not run here, given what this CPU lacks for it (`missing`,
    from missing_features or edgekit's own check), else None: never execute code this CPU cannot run (an AVX-512
    artifact on an AVX2 host dies of SIGILL), nor GPU code where there is no GPU."""
    if missing:
        arch = missing[0] in ("aarch64", "armv7", "x86_64")
        what = f"it is built for {missing[0]}" if arch else f"this CPU lacks {', '.join(missing)}"
        return (
            f"{path} targets {target.get('name', '?')} and cannot run on this machine: {what}",
            "run it on a machine that has them, under its emulator, or on the board over --rpc",
        )
    if target.get("gpu_arch") and not cuda_gpu_here():
        return (
            f"{path} targets {target.get('name', '?')} ({target['gpu_arch']}) and cannot run on this machine: "
            "no CUDA GPU",
            "run it on a machine with an NVIDIA GPU and its driver",
        )
    return None


def missing_features(target: dict) -> list[str]:
    """What this machine lacks to run code built for `target` (meta.json's "target"); [] = it can."""
    caps = target.get("caps") or {}
    arch, flags = host_features()
    if caps.get("arch") and caps["arch"] != arch:
        return [caps["arch"]]
    return sorted(set(caps.get("features", [])) - flags)


def cpu_count() -> int:
    """The cores this process may use: its affinity mask (a container's or taskset's share), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int) -> None:
    """The one place edgekit sets this process's TVM thread count (TVM_NUM_THREADS; 0: TVM's default). TVM
    reads it once per process, when its thread pool starts (the first parallel call): set it before that, as
    later values are ignored. A child process's count goes into its env dict instead."""
    if threads > 0:
        os.environ["TVM_NUM_THREADS"] = str(threads)


def cuda_gpu_here() -> bool:
    """A CUDA GPU this process can use (TVM's CUDA runtime sees device 0)."""
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - no CUDA runtime in this TVM, or a broken driver: no usable GPU
        return False


def elf_section(path: Path, name: str) -> bytes | None:
    """The bytes of one section of a 64-bit little-endian ELF file (x86_64, aarch64), None if it has none.
    Hand-read: this runtime installs on boards with numpy and TVM only (pyelftools would be one more wheel)."""
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as elf:
        if elf[:6] != b"\x7fELF\x02\x01":
            return None
        (shoff,) = struct.unpack_from("<Q", elf, 0x28)
        entsize, count, names_index = struct.unpack_from("<HHH", elf, 0x3A)

        def header(i: int) -> tuple[int, int, int]:
            (name_at,) = struct.unpack_from("<I", elf, shoff + i * entsize)
            offset, size = struct.unpack_from("<QQ", elf, shoff + i * entsize + 0x18)
            return name_at, offset, size

        _, names_offset, _ = header(names_index)
        wanted = name.encode() + b"\0"
        for i in range(count):
            name_at, offset, size = header(i)
            if elf[names_offset + name_at : names_offset + name_at + len(wanted)] == wanted:
                return bytes(elf[offset : offset + size])
    return None


_FATBINS: dict[str, bytes] = {}  # sha256 of a model's CUDA source -> the fatbin edgekit compiled from it


def provide_cuda_fatbin(library: Path, cuda_meta: dict) -> None:
    """Let TVM's CUDA runtime load the kernels compiled at build time: it asks `tvm_callback_cuda_compile` for
    the binary of the CUDA source model.so holds; the answer is the fatbin in FATBIN_SECTION (sources this
    artifact did not build go on to the callback that was registered before, TVM's own if any)."""
    import hashlib

    import tvm_ffi

    fatbin = elf_section(library, FATBIN_SECTION)
    if fatbin is None or hashlib.sha256(fatbin).hexdigest() != cuda_meta.get("fatbin_sha256"):
        raise OSError(f"{library.name} does not carry the CUDA kernels meta.json names (section {FATBIN_SECTION})")
    if not _FATBINS:
        previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

        def compiled_kernels(code: str, *rest):
            found = _FATBINS.get(hashlib.sha256(code.encode()).hexdigest())
            if found is not None:
                return found
            if previous is None:
                raise RuntimeError("no CUDA compiler callback for a source edgekit did not build")
            return previous(code, *rest)

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", compiled_kernels, override=True)
    _FATBINS[cuda_meta["source_sha256"]] = fatbin


_MAPPED: dict[str, tuple[int, int, int]] = {}  # library path -> (device, inode, mtime) of the file first loaded there


def _load_library(tvm, library: Path):
    """tvm.runtime.load_module, but never a stale copy: the dynamic loader hands back the library it already
    mapped for a path, so an artifact recompiled in place (`compile --force`, a notebook's second run) would
    silently run the old code. A changed file at a path loaded before is loaded through a private copy."""
    path = str(library.resolve())
    st = os.stat(path)
    identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if _MAPPED.setdefault(path, identity) == identity:
        return tvm.runtime.load_module(path)
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgekit-lib-") as tmp:  # removing a mapped library is safe on POSIX
        copy = shutil.copy2(path, Path(tmp) / library.name)
        return tvm.runtime.load_module(str(copy))


RUNTIME_EXTRA = "libtvm_runtime_extra.so"


def needs_runtime_extra(library: Path) -> bool:
    """Whether the model calls packed functions that only libtvm_runtime_extra registers (TopK / argsort /
    NonMaxSuppression call tvm.contrib.sort.*, random ops tvm.contrib.random.*): the library holds each name it
    calls as a string."""
    import mmap

    with open(library, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b"tvm.contrib.") >= 0


def _load_runtime_extra(tvm, artifact: Path) -> None:
    """`import tvm` loads libtvm_runtime_extra, except in runtime-only mode (TVM_USE_RUNTIME_LIB=1, as a deployed
    app or edgekit's benchmark workers run): then a model that needs it would fail with "Cannot find function".
    dlopen of a library already loaded is a no-op, so this needs no check of what tvm loaded."""
    import ctypes

    for lib_dir in (Path(tvm.__file__).parent / "lib", artifact / "lib"):
        if (lib_dir / RUNTIME_EXTRA).exists():
            ctypes.CDLL(str(lib_dir / RUNTIME_EXTRA), mode=ctypes.RTLD_GLOBAL)
            return
    raise OSError(f"the model calls tvm.contrib functions, and no {RUNTIME_EXTRA} is installed beside the TVM runtime")


class Model:
    """A compiled model, loaded once; calls check every input's dtype and shape against meta.json."""

    def __init__(self, path: Path | str, threads: int = 0) -> None:
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.exists():
            self._fail(
                f"{self.path} is not an edgekit artifact or bundle (no {META})",
                "create one with `edgekit compile` / `edgekit package`",
            )
        try:
            self.meta_json = json.loads(meta_path.read_text())
            self.inputs = [Spec(i["name"], tuple(i["shape"]), i["dtype"]) for i in self.meta_json["inputs"]]
            self.outputs = [Spec(o["name"], tuple(o["shape"]), o["dtype"]) for o in self.meta_json["outputs"]]
            target = dict(self.meta_json["target"])
        except (ValueError, KeyError, TypeError):
            self._fail(f"{meta_path} is corrupt or not an edgekit meta.json", "re-run edgekit compile")
        self.check_runnable(target)
        set_threads(threads)
        import tvm
        from tvm.runtime.vm import VirtualMachine  # runtime-only: works without libtvm_compiler

        cuda_meta = (self.meta_json.get("build") or {}).get("cuda")
        try:
            if needs_runtime_extra(self.path / LIBRARY):
                _load_runtime_extra(tvm, self.path)
            if cuda_meta:
                provide_cuda_fatbin(self.path / LIBRARY, cuda_meta)
            lib = _load_library(tvm, self.path / LIBRARY)
        except Exception as exc:  # noqa: BLE001 - TVM's loader errors, reported as one line
            self._interrupted()
            self._fail(f"cannot load {self.path / LIBRARY}: {_first_line(exc)}", "re-run edgekit compile")
        self._tvm = tvm
        self._device = tvm.cuda(0) if cuda_meta else tvm.cpu()  # inputs go where the kernels run
        self._vm = VirtualMachine(lib, self._device)
        self._main = self._vm["main"]  # look the function up once: a lookup costs ~10 µs

    # --- hooks edgekit.runtime overrides (its own error type and interrupt handling) ---------------------
    def _fail(self, message: str, hint: str = ""):
        raise RuntimeFailure(message, hint)

    def _interrupted(self) -> None:
        pass

    def check_runnable(self, target: dict) -> None:
        why = refusal(self.path, target, missing_features(target))
        if why:
            self._fail(*why)

    # --- calls ---------------------------------------------------------------------------------------------
    def _check(self, spec, value) -> np.ndarray:
        if np.asarray(value).dtype.kind not in "biuf":
            self._fail(
                f"input '{spec.name}' has dtype {np.asarray(value).dtype}, the artifact takes {spec.dtype}",
                "convert the array to the dtype the artifact was compiled for",
            )
        arr = np.asarray(value, dtype=spec.dtype, order="C")  # not ascontiguousarray: it makes 0-d 1-d
        if tuple(arr.shape) != tuple(spec.shape):
            self._fail(
                f"input '{spec.name}' has shape {list(arr.shape)}, the artifact was compiled for {list(spec.shape)}",
                "recompile with --input-shape for this shape, or reshape the input",
            )
        return arr

    def check_feeds(self, feeds: dict) -> None:
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            self._fail(f"missing input(s) {missing}", f"the artifact takes: {', '.join(s.name for s in self.inputs)}")

    def prepare(self, feeds: dict) -> list:
        """Convert inputs to TVM tensors once (benchmarks time the model, not the copy)."""
        self.check_feeds(feeds)
        return [self._tvm.runtime.tensor(self._check(s, feeds[s.name]), device=self._device) for s in self.inputs]

    @property
    def on_gpu(self) -> bool:
        return self._device.dlpack_device_type() != self._tvm.cpu().dlpack_device_type()

    def synchronize(self) -> None:
        """Wait for the kernels of the last invoke: a GPU call returns before its kernels finish."""
        self._device.sync()

    def invoke(self, prepared: list):
        return self._main(*prepared)

    @staticmethod
    def _to_numpy(result) -> list[np.ndarray]:
        if hasattr(result, "numpy"):
            return [result.numpy()]
        return [r.numpy() for r in result]

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        arrays = self._to_numpy(self.invoke(self.prepare(feeds)))
        return {spec.name: arr for spec, arr in zip(self.outputs, arrays)}

    def __call__(self, *args, **kwargs) -> list[np.ndarray]:
        feeds = dict(zip((s.name for s in self.inputs), args)) | kwargs
        return list(self.run(feeds).values())


def load(path: Path | str, threads: int = 0) -> Model:
    return Model(path, threads)
