"""Targets: one TOML file per target in targets/, the only place target facts live.

A file gives the TVM target (kind, mtriple, mcpu, mattr), the C++ compiler that links the
shared object (and the apt package that provides it), and the default runner and thread count.
Users add a target by adding a file; `--target path/to/file.toml` works too.
"""
from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgekit.errors import EdgekitError
from edgekit.paths import TARGETS_DIR

_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    tvm: dict
    cc: str
    apt_package: str
    runner: str = "local"
    threads: int = 0
    simd_bits: int = 0
    aliases: tuple[str, ...] = field(default_factory=tuple)
    link_options: tuple[str, ...] = field(default_factory=tuple)
    qemu: str | None = None  # user-mode emulator for runner "qemu"
    qemu_sysroot: str | None = None  # the target's libc (-L for qemu)
    runtime_platform: str | None = None  # pip --platform tag of wheels carrying this arch's TVM runtime

    @property
    def arch(self) -> str:
        return self.tvm.get("mtriple", f"{platform.machine()}-linux-gnu").split("-")[0]

    @property
    def runs_on_host(self) -> bool:
        return self.tvm.get("kind") == "llvm" and self.arch == _HOST_ARCH.get(platform.machine().lower(), "")

    @property
    def elf_machine(self) -> int:
        """e_machine of the shared objects this target must produce (checked after linking)."""
        return {"x86_64": 62, "aarch64": 183}.get(self.arch, 40 if self.arch.startswith("arm") else 0)

    @property
    def runnable_here(self) -> str:
        """How this host can execute the target's artifacts: 'native', 'emulated' or 'no'."""
        if self.runs_on_host:
            return "native"
        return "emulated" if self.runner == "qemu" else "no"

    def tvm_target(self):
        import tvm

        config = dict(self.tvm)
        if config.get("mcpu") == "native":
            config["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        return tvm.target.Target(config)

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
            "qemu": self.qemu,
            "qemu_sysroot": self.qemu_sysroot,
            "runtime_platform": self.runtime_platform,
        }


def _parse(path: Path) -> TargetSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgekitError(f"target file {path} is not valid TOML: {exc}") from None
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
            simd_bits=int(runner.get("simd_bits", 0)),
            aliases=tuple(raw.get("aliases", ())),
            link_options=tuple(toolchain.get("link_options", ())),
            qemu=runner.get("qemu"),
            qemu_sysroot=runner.get("qemu_sysroot"),
            runtime_platform=runner.get("runtime_platform"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgekitError(f"target file {path} is missing or has a bad field: {exc}", "see targets/x86_64.toml for the format") from None


def list_targets() -> list[TargetSpec]:
    return [_parse(p) for p in sorted(TARGETS_DIR.glob("*.toml"))]


def load_target(name: str) -> TargetSpec:
    """A target by file name, alias, or path to a .toml file."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.exists():
            raise EdgekitError(f"target file {path}: no such file")
        return _parse(path)
    for spec in list_targets():
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join(t.name for t in list_targets())
    raise EdgekitError(f"unknown target '{name}'", f"known targets: {known} (or a path to a .toml file)")
