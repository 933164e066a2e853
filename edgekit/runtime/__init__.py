"""Load and run a compiled artifact (model.so + meta.json). Needs only TVM's runtime, not the compiler.

import edgekit
model = edgekit.load("artifact/")
logits, = model(x)                 # positional, in input order
outs = model.run({"input": x})     # {output name: array}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.graph import TensorSpec
from edgekit.runtime.lite import Model as LiteModel
from edgekit.runtime.lite import cpu_count, set_threads  # noqa: F401 - re-exported for the tuner and the RPC server

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

    @property
    def frozen(self) -> dict[str, np.ndarray]:
        """Inputs compile --freeze bound to constants: gone from the artifact, fed to onnxruntime when validating."""
        return {name: np.asarray(v["value"], dtype=v["dtype"]) for name, v in self.raw.get("frozen", {}).items()}

    @classmethod
    def from_json(cls, data: object, where: Path) -> "ArtifactMeta":
        try:
            assert isinstance(data, dict)
            return cls(
                int(data.get("schema_version", 1)),
                dict(data["target"]),
                _specs(data["inputs"]),
                _specs(data["outputs"]),
                Path(data["source"]["path"]) if data.get("source", {}).get("path") else None,
                {str(k): int(v) for k, v in data.get("index_inputs", {}).items()},
                data.get("validation"),
                data,
            )
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgekitError(
                f"{where} is not a valid edgekit meta.json (bad or missing {exc})", "re-run edgekit compile"
            ) from None


def read_meta(artifact_dir: Path | str) -> ArtifactMeta:
    artifact_dir = Path(artifact_dir)
    meta_path = artifact_dir / META
    if not artifact_dir.is_dir() or not meta_path.exists():
        raise EdgekitError(
            f"{artifact_dir} is not an edgekit artifact (no {META})",
            "create one with `edgekit compile model.onnx -o DIR`",
        )
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgekitError(f"{meta_path} is corrupt", "re-run edgekit compile") from None
    return ArtifactMeta.from_json(data, meta_path)


def refuse_if_not_runnable(artifact_dir: Path, target: dict) -> None:
    """lite's refusal as an EdgekitError, with edgekit's feature check (missing_here: also re-derives the
    needs of artifacts older than meta.json's "caps" record, which the standalone runtime lets through)."""
    from edgekit.runtime.lite import refusal
    from edgekit.targets import missing_here

    why = refusal(artifact_dir, target, missing_here(target))
    if why:
        raise EdgekitError(*why)


def check_index_inputs(feeds: dict[str, np.ndarray], bounds: dict[str, int]) -> None:
    """Integer inputs that index a dimension of known size (meta.json "index_inputs", from edgekit.onnxkit.checks) must
    be in range: compiled code does not bounds-check a gather, and an out-of-range index reads past a buffer."""
    for name, size in bounds.items():
        arr = np.asarray(feeds.get(name, ()))
        if arr.size == 0 or arr.dtype.kind not in "iu":
            continue
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -size or hi >= size:
            raise EdgekitError(
                f"input '{name}' indexes a dimension of size {size}, but holds values {lo}..{hi}",
                f"index values must be in [{-size}, {size - 1}]",
            )


def _specs(items: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in items]


class CompiledModel(LiteModel):
    """edgekit's loader: edgekit-runtime's Model (runtime/lite.py) with edgekit's checks and error type."""

    def __init__(self, artifact_dir: Path | str, threads: int = 0) -> None:
        self.meta = read_meta(Path(artifact_dir))
        super().__init__(artifact_dir, threads)
        self.inputs, self.outputs = self.meta.inputs, self.meta.outputs

    def _fail(self, message: str, hint: str = ""):
        raise EdgekitError(message, hint)

    def _interrupted(self) -> None:
        interrupts.check()

    def check_runnable(self, target: dict) -> None:
        refuse_if_not_runnable(self.path, target)

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        super().check_feeds(feeds)
        check_index_inputs(feeds, self.meta.index_inputs)


def load(artifact_dir: Path | str, threads: int = 0) -> CompiledModel:
    return CompiledModel(artifact_dir, threads)
