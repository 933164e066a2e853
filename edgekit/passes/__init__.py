"""Compression passes over ONNX graphs. One file per pass; each exposes

    def run(model: onnx.ModelProto, cfg: <PassConfig dataclass>) -> tuple[onnx.ModelProto, PassReport]

A pass never mutates its input; it returns a new model (standard ONNX that onnxruntime runs) and a report.
Passes record themselves in the model's metadata ("edgekit.passes", comma-separated) so that compile
and the artifact's meta.json know what was applied.

`edgekit compress` runs them through a registry (compress.methods(), in order): each pass file ends with a
`METHOD = CompressionMethod(...)` saying when the command asks for it and how its config is built from the
command's options, so a new compression method is its file plus one line in that list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    from edgekit.onnxkit.graph import TensorSpec
    from edgekit.passes.options import CompressOptions


@dataclass
class LayerReport:
    name: str  # the node (Conv/Gemm/MatMul) name
    op: str
    bits: int | None  # weight bits after the pass (None = untouched)
    weight_bytes_before: int
    weight_bytes_after: int
    sqnr_db: float | None = None  # weight SQNR, 10·log10(|w|² / |w - ŵ|²)
    note: str = ""


@dataclass
class PassReport:
    name: str
    size_before: int  # serialized model bytes
    size_after: int
    layers: list[LayerReport] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.size_before / self.size_after if self.size_after else 0.0

    @property
    def weight_bytes_before(self) -> int:
        return sum(l.weight_bytes_before for l in self.layers)

    @property
    def weight_bytes_after(self) -> int:
        return sum(l.weight_bytes_after for l in self.layers)

    def to_json(self) -> dict:
        wb, wa = self.weight_bytes_before, self.weight_bytes_after
        return {
            "pass": self.name,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "ratio": self.ratio,
            "weight_bytes_before": wb,
            "weight_bytes_after": wa,
            "weight_ratio": wb / wa if wa else None,
            "layers": [asdict(l) for l in self.layers],
            **self.extra,
        }


def record_pass(model: onnx.ModelProto, name: str) -> None:
    """Append `name` to the model's edgekit.passes metadata (in place: call it on the pass's new model)."""
    props = {p.key: p for p in model.metadata_props}
    if "edgekit.passes" in props:
        entry = props["edgekit.passes"]
        entry.value = ",".join([v for v in entry.value.split(",") if v] + [name])
    else:
        model.metadata_props.add(key="edgekit.passes", value=name)


def passes_applied(model: onnx.ModelProto) -> list[str]:
    props = {p.key: p.value for p in model.metadata_props}
    return [p for p in props.get("edgekit.passes", "").split(",") if p]


@dataclass
class MethodContext:
    """What a method's configure may read besides the options: the model's inputs and calibration samples."""

    opts: CompressOptions
    specs: list[TensorSpec]
    calibration: Callable[[int], list[dict[str, np.ndarray]] | None]  # at most n samples of --calib (None: none given)
    accuracy: Callable[[onnx.ModelProto], float] | None = None  # labelled-set accuracy, where --calib names one


@dataclass(frozen=True)
class CompressionMethod:
    """One entry of compress's registry. `wanted`: does the command ask for it; `check`: option errors, raised
    before any pass runs; `configure`: the pass's own config; `run`: the pass."""

    name: str
    wanted: Callable[[CompressOptions], bool]
    configure: Callable[[MethodContext], Any]
    run: Callable[[onnx.ModelProto, Any], tuple[onnx.ModelProto, PassReport]]
    check: Callable[[CompressOptions], None] = lambda _opts: None
