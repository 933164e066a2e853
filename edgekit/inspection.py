"""`edgekit inspect`: what is in an ONNX model and what edgekit will do with each op, before any compile.

Inputs / outputs (dynamic dims and the --input-shape that fixes them), an op histogram with each op's status
(TVM imports it / edgekit rewrites it first / unsupported, naming the first node), parameters, and MACs of the
Conv / ConvTranspose / Gemm / MatMul nodes once every input shape is known (onnx shape inference).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgekit.compiler.recurrent import RECURRENT_OPS
from edgekit.compiler.spectral import SPECTRAL_OPS
from edgekit.onnxkit.graph import TensorSpec, graph_inputs, graph_outputs, load_onnx
from edgekit.passes.opset import default_opset

# ops edgekit rewrites before TVM's importer sees them (compiler/recurrent.py, compiler/tvm_patches.py)
EDGEKIT_LOWERED = {
    **{op: "edgekit recurrence kernel" for op in RECURRENT_OPS},
    **{op: "MatMul with a DFT matrix (edgekit)" for op in SPECTRAL_OPS},
    **{op: "pairwise by edgekit" for op in ("Max", "Min", "Sum", "Mean")},
}
# control flow TVM cannot import, and what makes it compile
CONTROL_FLOW = {
    "If": "folds to its branch once its condition is constant: --freeze the input it depends on",
    "Loop": "unrolled when its trip count is constant and it cannot exit early (--freeze the trip count)",
}


@dataclass
class OpRow:
    op: str
    domain: str
    count: int
    status: str  # "tvm", "edgekit", "unsupported"
    note: str = ""
    first_node: str = ""


@dataclass
class Inspection:
    path: str
    opset: int
    producer: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: list[OpRow]
    params: int
    weight_bytes: int
    macs: int | None
    fix_shapes: list[str] = field(default_factory=list)  # --input-shape flags that would fix the dynamic dims

    @property
    def unsupported(self) -> list[OpRow]:
        return [r for r in self.ops if r.status == "unsupported"]

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "opset": self.opset,
            "producer": self.producer,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "ops": [r.__dict__ for r in self.ops],
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "macs": self.macs,
            "fix_shapes": self.fix_shapes,
            "compilable": not self.unsupported,
        }


def _op_rows(model: onnx.ModelProto) -> list[OpRow]:
    from edgekit.compiler.frontend import supported_onnx_ops

    supported = supported_onnx_ops()
    counts = Counter((n.domain, n.op_type) for n in model.graph.node)
    first = {}
    for n in model.graph.node:
        first.setdefault((n.domain, n.op_type), n.name or "(unnamed)")
    rows = []
    for (domain, op), count in counts.most_common():
        if domain not in ("", "ai.onnx"):
            status, note = "unsupported", f"custom domain {domain}"
        elif op in EDGEKIT_LOWERED:
            status, note = "edgekit", EDGEKIT_LOWERED[op]
        elif op in supported:
            status, note = "tvm", ""
        else:
            status, note = "unsupported", CONTROL_FLOW.get(op, "TVM's ONNX importer has no converter")
        rows.append(OpRow(op, domain, count, status, note, first[(domain, op)] if status == "unsupported" else ""))
    return rows


def _fixed(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        if vi.name in shapes:
            for dim, value in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                dim.Clear()
                dim.dim_value = int(value)
    return onnx.shape_inference.infer_shapes(out)


def count_macs(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None) -> int | None:
    """Multiply-accumulates of the weight layers; None if a shape they need is unknown (`shapes`: known ones)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    known.update({name: list(shape) for name, shape in (shapes or {}).items()})
    known.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("LSTM", "GRU", "RNN"):
            w, x = known.get(node.input[1]), known.get(node.input[0])  # W: [dirs, gates*H, I]; R adds gates*H*H
            if not w or not x or None in w + x:
                return None
            hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
            total += int(x[0] * x[1]) * w[0] * w[1] * (w[2] + hidden)  # steps x batch (either layout)
            continue
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        a, b = known.get(node.input[0]), known.get(node.input[1])
        y = known.get(node.output[0])
        if not a or not b or not y or None in a + b + y:
            return None
        if node.op_type == "Conv":
            total += int(np.prod(y)) * int(np.prod(b[1:]))  # every output: Cin/groups x kernel MACs
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(a)) * int(np.prod(b[1:]))  # every input pixel scatters Cout/groups x kernel
        else:
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            reduced = a[-1] if node.op_type == "MatMul" else a[0] if trans_a else a[1]
            total += int(np.prod(y)) * int(reduced)
    return total


def inspect_model(path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Inspection:
    model = load_onnx(path)
    inputs = graph_inputs(model)
    shapes = dict(input_shapes or {})
    if "" in shapes and len(inputs) == 1:
        shapes = {inputs[0].name: shapes[""]}
    fix = [
        f"--input-shape {s.name}=" + ",".join(str(d) if isinstance(d, int) else "1" for d in s.shape)
        for s in inputs
        if not s.is_static and s.name not in shapes
    ]
    fixed = _fixed(model, shapes) if shapes else model
    inputs = graph_inputs(fixed)
    weight_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return Inspection(
        path=str(path),
        opset=default_opset(model, missing=0),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=inputs,
        outputs=graph_outputs(fixed),
        ops=_op_rows(model),
        params=sum(int(np.prod(t.dims)) for t in model.graph.initializer),
        weight_bytes=weight_bytes,
        macs=None if fix else count_macs(fixed),
        fix_shapes=fix,
    )
