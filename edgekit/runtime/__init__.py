"""Load and run a compiled artifact (model.so + meta.json). Needs only TVM's runtime, not the compiler.

    import edgekit
    model = edgekit.load("artifact/")
    logits, = model(x)                 # positional, in input order
    outs = model.run({"input": x})     # {output name: array}
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import edgekit.interrupts as interrupts
from edgekit.errors import EdgekitError
from edgekit.graph import TensorSpec

META = "meta.json"
LIBRARY = "model.so"
BUNDLE = "bundle.npz"


@dataclass(frozen=True)
class ArtifactMeta:
    """meta.json as read back by the runtime, the runners, bench and validate: the fields they use, typed and
    checked once (a missing or malformed field is one error line), plus the whole document in `raw`."""

    schema_version: int
    target: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source_path: Path | None
    index_inputs: dict[str, int]
    validation: dict | None
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, data: object, where: Path) -> "ArtifactMeta":
        try:
            assert isinstance(data, dict)
            return cls(int(data.get("schema_version", 1)), dict(data["target"]), _specs(data["inputs"]), _specs(data["outputs"]),
                       Path(data["source"]["path"]) if data.get("source", {}).get("path") else None,
                       {str(k): int(v) for k, v in data.get("index_inputs", {}).items()}, data.get("validation"), data)
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgekitError(f"{where} is not a valid edgekit meta.json (bad or missing {exc})", "re-run edgekit compile") from None


def read_meta(artifact_dir: Path | str) -> ArtifactMeta:
    artifact_dir = Path(artifact_dir)
    meta_path = artifact_dir / META
    if not artifact_dir.is_dir() or not meta_path.exists():
        raise EdgekitError(f"{artifact_dir} is not an edgekit artifact (no {META})", "create one with `edgekit compile model.onnx -o DIR`")
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgekitError(f"{meta_path} is corrupt", "re-run edgekit compile") from None
    return ArtifactMeta.from_json(data, meta_path)


def refuse_if_not_runnable(artifact_dir: Path, target: dict) -> None:
    """Never execute code this CPU cannot run (an AVX-512 artifact on an AVX2 host dies of SIGILL)."""
    from edgekit.targets import missing_here

    missing = missing_here(target)
    if missing:
        what = f"it is built for {missing[0]}" if missing[0] in ("aarch64", "armv7", "x86_64") else f"this CPU lacks {', '.join(missing)}"
        raise EdgekitError(
            f"{artifact_dir} targets {target.get('name', '?')} and cannot run on this machine: {what}",
            "run it on a machine that has them, under its emulator, or on the board over --rpc",
        )


def check_index_inputs(feeds: dict[str, np.ndarray], bounds: dict[str, int]) -> None:
    """Integer inputs that index a dimension of known size (meta.json "index_inputs", from edgekit.checks) must
    be in range: compiled code does not bounds-check a gather, and an out-of-range index reads past a buffer."""
    for name, size in bounds.items():
        arr = np.asarray(feeds.get(name, ()))
        if arr.size == 0 or arr.dtype.kind not in "iu":
            continue
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -size or hi >= size:
            raise EdgekitError(f"input '{name}' indexes a dimension of size {size}, but holds values {lo}..{hi}",
                               f"index values must be in [{-size}, {size - 1}]")


def _specs(items: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in items]


def set_threads(threads: int) -> None:
    """TVM reads TVM_NUM_THREADS when its thread pool starts (the first parallel call)."""
    if threads > 0:
        os.environ["TVM_NUM_THREADS"] = str(threads)


class CompiledModel:
    def __init__(self, artifact_dir: Path | str, threads: int = 0) -> None:
        self.path = Path(artifact_dir)
        self.meta = read_meta(self.path)
        self.inputs, self.outputs = self.meta.inputs, self.meta.outputs
        refuse_if_not_runnable(self.path, self.meta.target)
        set_threads(threads)
        import tvm
        from tvm.runtime.vm import (
            VirtualMachine,  # runtime-only: works without libtvm_compiler
        )

        try:
            lib = tvm.runtime.load_module(str(self.path / LIBRARY))
        except Exception as exc:
            interrupts.check()
            raise EdgekitError(f"cannot load {self.path / LIBRARY}: {str(exc).splitlines()[0][:200]}", "re-run edgekit compile") from None
        self._tvm = tvm
        self._vm = VirtualMachine(lib, tvm.cpu())
        self._main = self._vm["main"]  # look the function up once: a lookup costs ~10 µs

    def _check(self, spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if np.asarray(value).dtype.kind not in "biuf":
            raise EdgekitError(f"input '{spec.name}' has dtype {np.asarray(value).dtype}, the artifact takes {spec.dtype}", "convert the array to the dtype the artifact was compiled for")
        arr = np.ascontiguousarray(value, dtype=spec.dtype)
        if tuple(arr.shape) != tuple(spec.shape):
            raise EdgekitError(f"input '{spec.name}' has shape {list(arr.shape)}, the artifact was compiled for {list(spec.shape)}", "recompile with --input-shape for this shape, or reshape the input")
        return arr

    def prepare(self, feeds: dict[str, np.ndarray]) -> list:
        """Convert inputs to TVM tensors once (benchmarks time the model, not the copy)."""
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise EdgekitError(f"missing input(s) {missing}", f"the artifact takes: {', '.join(s.name for s in self.inputs)}")
        check_index_inputs(feeds, self.meta.index_inputs)
        return [self._tvm.runtime.tensor(self._check(s, feeds[s.name])) for s in self.inputs]

    def invoke(self, prepared: list):
        return self._main(*prepared)

    def _to_numpy(self, result) -> list[np.ndarray]:
        if hasattr(result, "numpy"):
            return [result.numpy()]
        return [r.numpy() for r in result]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self._to_numpy(self.invoke(self.prepare(feeds)))
        return {spec.name: arr for spec, arr in zip(self.outputs, arrays)}

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> list[np.ndarray]:
        feeds = dict(zip((s.name for s in self.inputs), args)) | kwargs
        return list(self.run(feeds).values())


def load(artifact_dir: Path | str, threads: int = 0) -> CompiledModel:
    return CompiledModel(artifact_dir, threads)
