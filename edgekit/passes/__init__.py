"""Compression passes over ONNX graphs. One file per pass; each exposes

    def run(model: onnx.ModelProto, cfg: <PassConfig dataclass>) -> tuple[onnx.ModelProto, PassReport]

A pass never mutates its input; it returns a new model (standard ONNX that onnxruntime runs) and a report.
Passes record themselves in the model's metadata ("edgekit.passes", comma-separated) so that compile
and the artifact's meta.json know what was applied.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx


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
