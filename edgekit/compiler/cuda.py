"""CUDA device code at compile time: TVM's CUDA C -> nvcc -> a fatbin that model.so carries.

TVM 0.27 on a machine without libcuda keeps the device module as CUDA C source (format "cuda") and its CUDA
runtime compiles that source when the library is loaded, through the global `tvm_callback_cuda_compile`
(NVRTC or nvcc on the board). edgekit compiles it here instead, so that a build proves the kernels compile
for the target's sm_XY and the board needs no CUDA compiler: the fatbin (SASS for the arch + PTX for newer
GPUs) is linked into model.so as the ELF section SECTION, and the loader (runtime/lite.py) hands it to TVM
from that callback, matched to the source by its sha256.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError, last_line
from edgekit.runtime.lite import FATBIN_SECTION as SECTION

FATBIN_MAGIC = 0xBA55ED50
_IMAGE_KINDS = {1: "ptx", 2: "sass"}


@dataclass
class DeviceCode:
    """What compile records about the GPU half of model.so (meta.json build.cuda)."""

    arch: str
    source_sha256: str
    fatbin_sha256: str
    fatbin_bytes: int
    images: list[str]  # e.g. ["sass sm_80", "ptx sm_80"], read back from the fatbin
    nvcc: str

    def to_json(self) -> dict:
        return dict(self.__dict__) | {"section": SECTION}


def cuda_source(executable) -> str:
    """The CUDA C of a relax.build executable for a CUDA target (its imported module of kind "cuda")."""
    pending, found = [executable.mod], []
    while pending:
        module = pending.pop()
        if module.kind == "cuda":
            found.append(module.inspect_source("cuda"))
        pending.extend(module.imports)
    if len(found) != 1:
        raise EdgekitError(f"the CUDA build has {len(found)} device modules, edgekit expects one", "report the model")
    return found[0]


def fatbin_images(data: bytes) -> list[str]:
    """The images in an NVIDIA fatbin ("sass sm_87", "ptx sm_87"). Hand-read because no library on PyPI parses
    fatbins and cuobjdump is not part of every CUDA install; layout: a 16-byte header (magic, version, header
    size, payload size) then entries (kind, version, header size, payload size; the sm number at byte 28)."""
    if len(data) < 16 or struct.unpack_from("<I", data)[0] != FATBIN_MAGIC:
        raise EdgekitError("nvcc's output is not a fatbin", "check the nvcc of the target file")
    _, _, header, payload = struct.unpack_from("<IHHQ", data)
    images, offset = [], header
    while offset + 32 <= min(len(data), header + payload):
        kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, offset)
        (sm,) = struct.unpack_from("<I", data, offset + 28)
        images.append(f"{_IMAGE_KINDS.get(kind, f'kind{kind}')} sm_{sm}")
        offset += entry_header + size
    return images


def require_nvcc(nvcc: str) -> str:
    """The path of the target's nvcc; checked before any work, so a missing toolkit fails in a second."""
    exe = shutil.which(nvcc)
    if exe is None:
        raise EdgekitError(
            f"CUDA targets need nvcc ('{nvcc}'), which is not installed",
            "install the CUDA toolkit (it puts nvcc in /usr/local/cuda/bin) or set [toolchain] nvcc in the target file",
        )
    return exe


def compile_fatbin(source: str, arch: str, nvcc: str, workdir: Path) -> tuple[Path, DeviceCode]:
    """nvcc --fatbin for `arch` (sm_XY code + compute_XY PTX); a clear error if nvcc is absent or fails."""
    exe = require_nvcc(nvcc)
    number = arch.removeprefix("sm_")
    cu, fatbin = workdir / "device.cu", workdir / "device.fatbin"
    cu.write_text(source)
    cmd = [
        exe,
        "--fatbin",
        "-O3",
        "-w",
        "-gencode",
        f"arch=compute_{number},code=[sm_{number},compute_{number}]",
        "-o",
        str(fatbin),
        str(cu),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise EdgekitError(f"nvcc took over 30 minutes on the kernels for {arch}", "report the model") from None
    interrupts.check()
    if done.returncode != 0:
        said = [ln for ln in (done.stderr + done.stdout).splitlines() if "error" in ln.lower()] or [
            done.stderr.strip()[-200:]
        ]
        raise EdgekitError(
            f"nvcc could not compile TVM's CUDA kernels for {arch}: {said[0][:200]}",
            "check that this nvcc supports the arch (`nvcc --list-gpu-code`), or report the model",
        )
    data = fatbin.read_bytes()
    version = last_line(subprocess.run([exe, "--version"], capture_output=True, text=True).stdout, None)
    code = DeviceCode(
        arch,
        hashlib.sha256(source.encode()).hexdigest(),
        hashlib.sha256(data).hexdigest(),
        len(data),
        fatbin_images(data),
        version,
    )
    if f"sass {arch}" not in code.images:
        raise EdgekitError(f"nvcc's fatbin holds {code.images}, not {arch} code", "check the nvcc of the target file")
    return fatbin, code


def fatbin_object(fatbin: Path, workdir: Path) -> Path:
    """An assembler file placing the fatbin in SECTION; linked into model.so with the target's g++ (any arch)."""
    asm = workdir / "device_fatbin.S"
    asm.write_text(
        f'.section {SECTION},"a",%progbits\n.balign 16\n.incbin "{fatbin.resolve()}"\n'
        '.section .note.GNU-stack,"",%progbits\n'
    )
    return asm
