"""Targets: one TOML file per target in targets/, the only place target facts live.

A file gives the TVM target (kind, mtriple, mcpu, mattr), the C++ compiler that links the
shared object (and the apt package that provides it), and the default runner and thread count.
Users add a target by adding a file; `--target path/to/file.toml` works too.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgekit.core.errors import EdgekitError, last_line
from edgekit.core.paths import TARGETS_DIR

_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# The instruction-set features edgekit's rules, kernels and the "can this CPU run it?" check care about, by
# LLVM's names (edgekit.runtime.lite.host_features reads the host's: CPUID on x86, HWCAP names on ARM).
CHECKED_FEATURES = {
    "x86_64": (
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi",
        "bmi2",
        "popcnt",
        "avx512f",
        "avx512bw",
        "avx512dq",
        "avx512vl",
        "avx512cd",
        "avx512vnni",
        "avx512vpopcntdq",
        "avx512bitalg",
        "avx512vbmi",
        "avx512vbmi2",
        "avx512bf16",
        "avx512fp16",
        "avxvnni",
    ),
    "aarch64": ("neon", "dotprod", "i8mm", "fullfp16", "sve", "sve2"),
    "armv7": ("neon", "vfp4", "dotprod"),
}


def _arch_of(triple: str) -> str:
    head = triple.split("-")[0]
    if head in ("aarch64", "arm64"):
        return "aarch64"
    if head.startswith(("arm", "thumb")):
        return "armv7"
    return "x86_64" if head in ("x86_64", "amd64") else head


@dataclass(frozen=True)
class TargetCaps:
    """What a CPU can execute: the one answer for rules, kernel generators and "can this machine run this
    artifact?". Built from a TVM target (LLVM's view of its mcpu/mattr) or from the host (CPUID / HWCAPs)."""

    arch: str  # "x86_64" | "aarch64" | "armv7"
    features: frozenset[str]

    @property
    def simd_bits(self) -> int:
        if self.arch == "x86_64":
            return 512 if "avx512f" in self.features else 256 if "avx2" in self.features else 128
        return 128 if "neon" in self.features else 0

    @property
    def fp32_lanes(self) -> int:
        return max(1, self.simd_bits // 32)

    @property
    def vector_registers(self) -> int:
        """Architectural vector registers (zmm0-31, ymm0-15, AArch64 v0-31, ARMv7 q0-15)."""
        if self.arch == "x86_64":
            return 32 if "avx512f" in self.features else 16
        return 32 if self.arch == "aarch64" else 16

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.features

    @property
    def isa_class(self) -> str:
        """The tag benchmark result files carry: "x86_64-avx512", "x86_64-avx2", or the bare architecture."""
        if self.arch == "x86_64" and (self.has_avx512 or "avx2" in self.features):
            return "x86_64-avx512" if self.has_avx512 else "x86_64-avx2"
        return self.arch

    @property
    def has_vnni(self) -> bool:
        """AVX-512 VNNI: vpdpbusd on zmm (the int8 dot-product rule)."""
        return "avx512vnni" in self.features

    @property
    def has_vpopcntdq(self) -> bool:
        return "avx512vpopcntdq" in self.features

    @property
    def has_neon(self) -> bool:
        return "neon" in self.features

    @property
    def has_dotprod(self) -> bool:
        return "dotprod" in self.features

    def missing(self, required: "TargetCaps") -> list[str]:
        """Features `required` uses that this CPU lacks (the architecture first, if it differs)."""
        if required.arch != self.arch:
            return [required.arch]
        return sorted(required.features - self.features)

    def to_json(self) -> dict:
        return {"arch": self.arch, "features": sorted(self.features), "simd_bits": self.simd_bits}

    @classmethod
    def from_json(cls, data: dict) -> "TargetCaps":
        return cls(str(data["arch"]), frozenset(data["features"]))

    @classmethod
    def from_tvm(cls, target) -> "TargetCaps":
        """LLVM's features of a TVM llvm target (its mcpu plus mattr), restricted to CHECKED_FEATURES."""
        key = str(target)
        if key not in _CAPS_CACHE:
            _CAPS_CACHE[key] = _caps_from_llvm(target)
        return _CAPS_CACHE[key]

    @classmethod
    def host(cls) -> "TargetCaps":
        """The CPU this process runs on: CPUID on x86 (an emulator's CPU under qemu-x86_64), HWCAPs on ARM."""
        global _HOST_CAPS
        if _HOST_CAPS is None:
            _HOST_CAPS = _host_caps()
        return _HOST_CAPS


def host_description() -> dict:
    """Which CPU a measurement came from: model name, cores, and the ISA features edgekit checks."""
    name = ""
    try:
        name = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith(("model name", "Model", "Hardware"))
            ),
            "",
        )
    except OSError:
        pass
    from edgekit.runtime.lite import cpu_count

    caps = TargetCaps.host()
    cores = cpu_count()
    return {
        "cpu": name or platform.processor() or platform.machine(),
        "cores": cores,
        "arch": caps.arch,
        "features": sorted(caps.features),
        "simd_bits": caps.simd_bits,
    }


def artifact_caps(target_json: dict) -> TargetCaps:
    """The capabilities an artifact's code needs, from its meta.json "target" entry (recorded at compile time;
    artifacts older than that record are re-derived from their TVM target)."""
    if "caps" in target_json:
        return TargetCaps.from_json(target_json["caps"])
    try:  # needs TVM's compiler library (LLVM), which a runtime-only install lacks
        import tvm

        config = dict(target_json["tvm"])
        if config.get("mcpu") == "native":
            config["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        return TargetCaps.from_tvm(tvm.target.Target(config))
    except (ImportError, AttributeError, KeyError, TypeError):
        raise EdgekitError(
            "the artifact's meta.json does not say which CPU features it needs",
            "re-run edgekit compile (artifacts from older edgekit versions lack the record)",
        ) from None


def missing_here(target_json: dict) -> list[str]:
    """What this machine lacks to run an artifact natively ([] = it can)."""
    return TargetCaps.host().missing(artifact_caps(target_json))


_CAPS_CACHE: dict[str, TargetCaps] = {}
_HOST_CAPS: TargetCaps | None = None


def _caps_from_llvm(target) -> TargetCaps:
    import tvm

    if str(target.kind.name) != "llvm":
        return TargetCaps(str(target.kind.name), frozenset())
    triple = str(target.attrs.get("mtriple", "") or "") or f"{platform.machine()}-linux-gnu"
    arch = _arch_of(triple)
    has = tvm.target.codegen.target_has_features
    return TargetCaps(arch, frozenset(f for f in CHECKED_FEATURES.get(arch, ()) if has(f, target)))


def _host_caps() -> TargetCaps:
    from edgekit.runtime.lite import host_features  # the one reader, shared with the standalone edgekit-runtime

    arch, names = host_features()
    return TargetCaps(arch, frozenset(f for f in CHECKED_FEATURES.get(arch, ()) if f in names))


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    tvm: dict
    cc: str
    apt_package: str
    runner: str = "local"
    threads: int = 0
    aliases: tuple[str, ...] = field(default_factory=tuple)
    link_options: tuple[str, ...] = field(default_factory=tuple)
    qemu: str | None = None  # user-mode emulator for runner "qemu"
    qemu_sysroot: str | None = None  # the target's libc (-L for qemu)
    runtime_platform: str | None = None  # pip --platform tag of wheels carrying this arch's TVM runtime
    nvcc: str = "nvcc"  # GPU targets: the CUDA compiler that turns TVM's CUDA C into the fatbin model.so carries

    @property
    def is_gpu(self) -> bool:
        return self.tvm.get("kind") in GPU_TVM_KINDS

    @property
    def host_tvm(self) -> dict:
        """The TVM target of the CPU side: the target itself, or a GPU target's [tvm.host] table."""
        return dict(self.tvm.get("host", {"kind": "llvm"})) if self.is_gpu else self.tvm

    @property
    def gpu_arch(self) -> str:
        """sm_XY of a CUDA target ("" for CPU targets)."""
        return str(self.tvm.get("arch", "")) if self.is_gpu else ""

    @classmethod
    def for_tvm(cls, config: dict, name: str = "custom") -> "TargetSpec":
        """A target from a bare TVM target dict (tests, benchmarks): the host's g++, run locally."""
        return cls(name=name, description=f"TVM target {config}", tvm=dict(config), cc="g++", apt_package="g++")

    @property
    def arch(self) -> str:
        """The CPU architecture of the target's host code (for a GPU target, the CPU beside the GPU)."""
        return self.host_tvm.get("mtriple", f"{platform.machine()}-linux-gnu").split("-")[0]

    @property
    def runs_on_host(self) -> bool:
        """This machine's CPU can run the target's host code (a GPU target also needs a GPU: runnable_here)."""
        return self.host_tvm.get("kind") == "llvm" and self.arch == _HOST_ARCH.get(platform.machine().lower(), "")

    @property
    def elf_machine(self) -> int:
        """e_machine of the shared objects this target must produce (checked after linking)."""
        return {"x86_64": 62, "aarch64": 183}.get(self.arch, 40 if self.arch.startswith("arm") else 0)

    def caps(self) -> TargetCaps:
        """What the target's CPU code needs (a GPU target: its host CPU's)."""
        target = self.tvm_target()
        return TargetCaps.from_tvm(target.host if self.is_gpu else target)

    @property
    def missing_on_host(self) -> list[str]:
        """Features this target's code uses that the host CPU lacks ([] when it can run natively)."""
        return TargetCaps.host().missing(self.caps()) if self.runs_on_host else []

    @property
    def runnable_here(self) -> str:
        """How this host can execute the target's artifacts: 'native', 'emulated' or 'no'.
        qemu-user emulates its default CPU ("max"), which has every feature edgekit's ARM targets use."""
        if self.is_gpu:
            return "native" if self.runs_on_host and not self.missing_on_host and cuda_device_here() else "no"
        if self.runs_on_host:
            return "no" if self.missing_on_host else "native"
        return "emulated" if self.runner == "qemu" else "no"

    @property
    def why_not_runnable(self) -> str:
        if self.runs_on_host and self.missing_on_host:
            return f"this CPU lacks {', '.join(self.missing_on_host)}"
        if self.is_gpu and self.runnable_here == "no":
            return "no GPU" if self.runs_on_host else f"{self.name} runs on an {self.arch} host with an NVIDIA GPU"
        return "" if self.runnable_here != "no" else f"{self.name} artifacts can neither run nor be emulated here"

    def tvm_target(self):
        import tvm

        config = dict(self.tvm)
        if self.is_gpu:
            config["host"] = dict(self.host_tvm)
        cpu_config = config["host"] if self.is_gpu else config
        if cpu_config.get("mcpu") == "native":
            cpu_config["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        if self.is_gpu and not re.fullmatch(r"sm_\d{2,3}[a-z]?", self.gpu_arch):
            raise EdgekitError(
                f"target {self.name}: arch '{self.gpu_arch}' is not a CUDA architecture",
                "use sm_XY, e.g. sm_80 (A100), sm_86 (RTX 30xx), sm_87 (Jetson Orin), sm_89, sm_90",
            )
        try:
            with _native_stderr_silenced():  # LLVM prints its own complaint about an unknown mcpu on fd 2
                target = tvm.target.Target(config)
        except Exception as exc:  # noqa: BLE001 - TVM's ValueError/TypeError on a malformed target dict, reported
            raise EdgekitError(
                f"target {self.name}: TVM rejects its [tvm] table: {last_line(str(exc))}",
                "see targets/x86_64.toml for the format",
            ) from None
        mcpu, cpu_target = cpu_config.get("mcpu"), target.host if self.is_gpu else target
        if mcpu and cpu_target.kind.name == "llvm":
            with _native_stderr_silenced():
                known = set(tvm.target.codegen.llvm_get_cpu_archlist(cpu_target))
        if mcpu and cpu_target.kind.name == "llvm" and mcpu not in known:
            # LLVM would print an error, fall back to a generic CPU and build slow code with exit 0
            raise EdgekitError(
                f"target {self.name}: LLVM does not know the CPU '{mcpu}' "
                f"for {cpu_config.get('mtriple', 'this triple')}",
                "use a name from `llc -mcpu=help`, e.g. x86-64-v3, znver4, cortex-a72",
            )
        return target

    def compiler(self) -> str:
        """The C++ compiler that links model.so; a clear error naming the apt package if it is absent."""
        path = shutil.which(self.cc)
        if path is None:
            raise EdgekitError(
                f"target {self.name} needs the compiler '{self.cc}', which is not installed",
                f"apt-get install -y {self.apt_package}",
            )
        return path

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "tvm": self.tvm,
            "cc": self.cc,
            "runner": self.runner,
            "threads": self.threads,
            "aliases": list(self.aliases),
            "runnable_here": self.runnable_here,
            "caps": self.caps().to_json(),
            "qemu": self.qemu,
            "qemu_sysroot": self.qemu_sysroot,
            "runtime_platform": self.runtime_platform,
        } | ({"gpu_arch": self.gpu_arch, "nvcc": self.nvcc} if self.is_gpu else {})


GPU_TVM_KINDS = ("cuda",)
# every command's default target: this machine's own CPU, so that compress's int8 weight format (chosen for this
# machine), compile, bench, demo and report agree (an x86_64 (AVX2) default on a VNNI host made int8 16x slower)
DEFAULT_TARGET = "host"


def cuda_device_here() -> bool:
    """A CUDA GPU this process can use (the one test, shared with the standalone edgekit-runtime)."""
    from edgekit.runtime.lite import cuda_gpu_here

    return cuda_gpu_here()


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _parse(path: Path) -> TargetSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgekitError(
            f"target file {path} is not valid TOML: {exc}", "see targets/x86_64.toml for the format"
        ) from None
    try:
        toolchain, runner = raw.get("toolchain", {}), raw.get("runner", {})
        return TargetSpec(
            name=path.stem,
            description=raw.get("description", ""),
            tvm=dict(raw["tvm"]),
            cc=toolchain.get("cc", "g++"),
            apt_package=toolchain.get("apt_package", toolchain.get("cc", "g++")),
            runner=runner.get("default", "local"),
            threads=int(runner.get("threads", 0)),
            aliases=tuple(raw.get("aliases", ())),
            link_options=tuple(toolchain.get("link_options", ())),
            qemu=runner.get("qemu"),
            qemu_sysroot=runner.get("qemu_sysroot"),
            runtime_platform=runner.get("runtime_platform"),
            nvcc=toolchain.get("nvcc", "nvcc"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgekitError(
            f"target file {path} is missing or has a bad field: {exc}", "see targets/x86_64.toml for the format"
        ) from None


def list_targets() -> list[TargetSpec]:
    return [_parse(p) for p in sorted(TARGETS_DIR.glob("*.toml"))]


def load_target(name: str) -> TargetSpec:
    """A target by file name, alias, or path to a .toml file."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.exists():
            raise EdgekitError(
                f"target file {path}: no such file",
                "check the path, or pass a target name (edgekit targets lists them)",
            )
        return _parse(path)
    for spec in list_targets():
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join(t.name for t in list_targets())
    raise EdgekitError(f"unknown target '{name}'", f"known targets: {known} (or a path to a .toml file)")
