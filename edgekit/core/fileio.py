"""Atomic writes: outputs appear whole or not at all; inputs are never overwritten.

Output safety lives here and only here: `check_output_path` decides whether a path may be (re)written,
`atomic_file` / `atomic_dir` write it. `--force` replaces only an output edgekit itself wrote (an artifact
directory holding only artifact files, an ONNX file, a NumPy file), never a directory that contains an
input, the working directory, $HOME or /.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError

OutputKind = Literal["artifact", "onnx", "npy", "bundle", "file"]

# What `compile` writes into an artifact directory (edgekit.runtime names them; kept here as plain strings so
# this module stays a leaf). A directory holding anything else is not ours to replace.
ARTIFACT_FILES = frozenset({"model.so", "meta.json", "bundle.npz", "tuning.json"})
# What `package` writes into a bundle directory
BUNDLE_FILES = frozenset(
    {"edgekit.txt", "model.so", "meta.json", "README.md", "sample", "lib", "include", "example", "bin", "python"}
)
_SLACK = 8 << 20  # bytes an output needs beyond twice its inputs (code, metadata, the temp copy's slack)
_NPY_MAGIC = (b"\x93NUMPY", b"PK\x03\x04")


def _protected_dirs() -> list[Path]:
    return [Path("/"), Path.cwd().resolve(), Path.home().resolve()]


def _is_edgekit_output(out: Path, kind: OutputKind) -> str | None:
    """None if `out` is an existing output of this kind that --force may replace, else why not."""
    if kind == "artifact":
        if not out.is_dir():
            return "it is not a directory"
        names = {p.name for p in out.iterdir()}
        if "meta.json" not in names:
            return "it is a directory without meta.json, not an edgekit artifact"
        foreign = sorted(names - ARTIFACT_FILES)
        if foreign:
            return f"it holds files edgekit did not write ({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''})"
        return None
    if kind == "bundle":
        if not out.is_dir() or not (out / "edgekit.txt").exists():
            return "it is not an edgekit bundle (no edgekit.txt)"
        foreign = sorted({p.name for p in out.iterdir()} - BUNDLE_FILES)
        return f"it holds files edgekit did not write ({', '.join(foreign[:3])})" if foreign else None
    if out.is_dir():
        return "it is a directory"
    if kind == "onnx":
        # a serialized ModelProto starts with its field 1, ir_version, a varint: tag byte 0x08
        with open(out, "rb") as fh:
            if fh.read(1) != b"\x08":
                return "it is not an ONNX file"
    if kind == "npy":
        with open(out, "rb") as fh:
            head = fh.read(6)
        if head and not head.startswith(_NPY_MAGIC):
            return "it is not a .npy/.npz file"
    return None


def check_output_path(out: Path, force: bool, inputs: tuple[Path | None, ...] = (), kind: OutputKind = "file") -> None:
    """Refuse an output path that would overwrite or delete anything but an earlier edgekit output of the same
    kind (and that only with --force): never an input, a directory containing an input, ., $HOME or /."""
    target = Path(out).resolve()
    for protected in _protected_dirs():
        if target == protected or target in protected.parents:
            raise EdgekitError(
                f"output {out} is "
                f"{'the working directory' if target == Path.cwd().resolve() else 'a protected directory'} ({target})",
                "write to a new path, e.g. -o out/model",
            )
    for src in inputs:
        if src is None:
            continue
        src_path = Path(src).resolve()
        if src_path == target:
            raise EdgekitError(
                f"output {out} is the input file", "choose another output path; inputs are never overwritten"
            )
        if target in src_path.parents:
            raise EdgekitError(
                f"output {out} contains the input {src}",
                "choose an output path outside the input's directory; inputs are never overwritten",
            )
    check_writable(out, 2 * sum(Path(p).stat().st_size for p in inputs if p is not None and Path(p).is_file()) + _SLACK)
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise EdgekitError(f"output {out} already exists", "pass --force to replace it")
    why = _is_edgekit_output(out, kind)
    if why is not None:
        raise EdgekitError(
            f"refusing to replace {out}: {why}",
            "--force replaces only an earlier edgekit output of the same kind; choose a new path",
        )


def check_writable(out: Path, need_bytes: int) -> None:
    """Before any long work: the output's directory (its nearest existing ancestor, as it is created on write)
    must be writable and hold about `need_bytes`, so a read-only or full disk fails in the first second, not
    after the build. The estimate is deliberately rough (twice the inputs); ENOSPC later is still reported."""
    place = Path(out).resolve().parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise EdgekitError(f"cannot create {out}: {place} is not a directory", "choose another output path (-o)")
    if not os.access(place, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        raise EdgekitError(
            f"cannot write to {place}: {'the file system is read-only' if read_only else 'permission denied'}",
            "choose another output path (-o)",
        )
    free = shutil.disk_usage(place).free
    if free < need_bytes:
        raise EdgekitError(
            f"{place} has {free / 1e6:.1f} MB free; writing {out.name} needs about {need_bytes / 1e6:.0f} MB",
            "free space or choose an output path on another disk (-o)",
        )


@contextlib.contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a temp path beside `out`; on success rename it over `out` (same filesystem => atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        interrupts.check()  # never commit an output whose writing a signal interrupted
        os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(out: Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temp directory beside `out`; on success swap it in place of `out`.

    keep_existing: for caches keyed by their content, where another process may publish the same directory
    first: then that one stays (a process may be running from it) and ours is dropped."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        interrupts.check()
        if keep_existing:
            try:
                os.rename(tmp, out)  # atomic, and fails where a non-empty `out` appeared meanwhile
            except OSError:
                if not out.is_dir():
                    raise
        elif out.exists():
            # a fresh empty directory to move the old output onto (rename may replace an empty directory),
            # so no existing path of the user's is ever the one removed
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy a file so that no process ever sees `dest` half written (a shared library another process loads)."""
    with atomic_file(dest) as tmp:
        shutil.copy2(src, tmp)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
