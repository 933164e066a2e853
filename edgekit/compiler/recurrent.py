"""LSTM / GRU / RNN -> one input-projection GEMM in ONNX + edgekit's recurrence kernel, before TVM's import.

TVM 0.27's Relax ONNX importer has no recurrent ops. Each recurrent node becomes
  - the input projection X·Wᵀ + b of all time steps and all directions: one MatMul ([T·B, I] x [I, D·G·H]), the
    big GEMM, scheduled like any other;
  - one `ai.edgekit::RecurrentSequence` node: the steps themselves, which the importer (a converter registered by
    compiler/tvm_patches.py) turns into a call of the TIR kernel in edgekit/kernels/recurrent.py, with R prepacked.
Unrolling the steps into graph ops instead (edgekit's first version) made one GEMV PrimFunc per step and ~8 VM
calls around it: a 40-step bidirectional CRNN head ran 1.75x onnxruntime and took 25-90 s to compile.
Supported: forward / reverse / bidirectional, layout 0 and 1, initial_h / initial_c inputs or initializers,
weights as initializers or Constant nodes,
peepholes (LSTM), linear_before_reset (GRU), the default activations. Anything else (clip, input_forget, other
activations, per-batch sequence_lens) is refused naming the node, never approximated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekit.compiler.onnx_builder import NodeBuilder, constant_values, inferred_shapes, replace_nodes
from edgekit.core.errors import EdgekitError
from edgekit.kernels.recurrent import GATES, RecurrentSpec, pack_recurrent_weights, sequence_func

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
EDGEKIT_DOMAIN = "ai.edgekit"
SEQUENCE_OP = "RecurrentSequence"
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _refuse(node: onnx.NodeProto, what: str) -> EdgekitError:
    return EdgekitError(
        f"node '{node.name or node.op_type}' ({node.op_type}) uses {what}, which edgekit cannot compile",
        "export the recurrent layer with the default activations and no clip, or report the model",
    )


def _check_supported(node: onnx.NodeProto, attrs: dict, constants: dict[str, np.ndarray], steps: int) -> None:
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    dirs = 2 if attrs.get("direction") in (b"bidirectional", "bidirectional") else 1
    if acts and acts != _DEFAULT_ACTIVATIONS[node.op_type] * dirs:
        raise _refuse(node, f"activations {acts}")
    for unsupported in ("clip", "input_forget", "activation_alpha", "activation_beta"):
        if attrs.get(unsupported):
            raise _refuse(node, f"the '{unsupported}' attribute")
    if len(node.input) > 4 and node.input[4]:
        lens = constants.get(node.input[4])
        if lens is None or not np.all(lens == steps):
            raise _refuse(node, "sequence_lens that are not all the full sequence length")


def _constant_input(node: onnx.NodeProto, constants: dict[str, np.ndarray], index: int) -> np.ndarray | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    if node.input[index] not in constants:
        raise _refuse(node, f"a weight '{node.input[index]}' that is computed in the graph (not a constant)")
    return constants[node.input[index]].astype(np.float32)


def _direction_arrays(node: onnx.NodeProto, constants: dict[str, np.ndarray], d: int, hidden: int) -> dict:
    """Direction d's input projection (Wᵀ, bias), recurrence weights R [G·H, H] and the per-step extras."""
    gates = GATES[node.op_type]
    w, r = _constant_input(node, constants, 1)[d], _constant_input(node, constants, 2)[d]
    b = _constant_input(node, constants, 3)
    wb, rb = (
        (np.zeros(gates * hidden, np.float32),) * 2 if b is None else (b[d, : gates * hidden], b[d, gates * hidden :])
    )
    out = {"w_t": w.T, "r": r, "bias": wb + rb}
    if node.op_type == "GRU":  # R·h of the candidate gate is gated by r: its bias stays on the recurrent side
        out["bias"] = np.concatenate([wb[: 2 * hidden] + rb[: 2 * hidden], wb[2 * hidden :]])
        out["rb_h"] = rb[2 * hidden :]
    if node.op_type == "LSTM":
        p = _constant_input(node, constants, 7)
        out["peep"] = np.zeros((3, hidden), np.float32) if p is None else p[d].reshape(3, hidden)  # i, o, f
    return out


def _initial_state(g: NodeBuilder, node: onnx.NodeProto, index: int, spec: RecurrentSpec, layout: int) -> str:
    """[D, B, H] from initial_h / initial_c (layout 1: [B, D, H]) or zeros."""
    if len(node.input) > index and node.input[index]:
        return g.op("Transpose", [node.input[index]], perm=[1, 0, 2]) if layout else node.input[index]
    return g.const(np.zeros((spec.directions, spec.batch, spec.hidden), np.float32), "zeros")


def lower(node: onnx.NodeProto, x_shape: list[int], constants: dict[str, np.ndarray]) -> tuple[list, list]:
    """The nodes and initializers that compute `node`'s outputs (same names): projection GEMM + sequence node."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = int(attrs.get("layout", 0))
    steps, batch, _features = (x_shape[1], x_shape[0], x_shape[2]) if layout else x_shape
    _check_supported(node, attrs, constants, steps)
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    reverse = (False, True) if direction == "bidirectional" else (direction == "reverse",)
    spec = RecurrentSpec(
        node.op_type, steps, batch, int(attrs["hidden_size"]), reverse, bool(attrs.get("linear_before_reset", 0))
    )
    g = NodeBuilder(node.name or node.op_type.lower())
    x = g.op("Transpose", [node.input[0]], perm=[1, 0, 2]) if layout else node.input[0]
    arrays = [_direction_arrays(node, constants, d, spec.hidden) for d in range(spec.directions)]
    w_all = np.concatenate([a["w_t"] for a in arrays], axis=1)  # [I, D·G·H]: all directions in one GEMM
    proj = g.op(
        "Add",
        [
            g.op("MatMul", [g.reshape(x, [steps * batch, -1]), g.const(w_all, "W_t")]),
            g.const(np.concatenate([a["bias"] for a in arrays]), "bias"),
        ],
    )
    inputs = [
        g.reshape(proj, [steps, batch, spec.directions, spec.gate_width]),
        g.const(pack_recurrent_weights(np.stack([a["r"] for a in arrays]), spec), "R_packed"),
        _initial_state(g, node, 5, spec, layout),
    ]
    if node.op_type == "LSTM":
        inputs += [
            _initial_state(g, node, 6, spec, layout),
            g.const(np.stack([a["peep"] for a in arrays]), "peepholes"),
        ]
    if node.op_type == "GRU":
        inputs.append(g.const(np.stack([a["rb_h"] for a in arrays]), "Rb_h"))
    outputs = [g.name(n) for n in ("Y", "Y_h", "Y_c")[: 3 if node.op_type == "LSTM" else 2]]
    g.nodes.append(
        helper.make_node(
            SEQUENCE_OP,
            inputs,
            outputs,
            name=g.name(SEQUENCE_OP),
            domain=EDGEKIT_DOMAIN,
            kind=node.op_type,
            hidden=spec.hidden,
            reverse=[int(r) for r in reverse],
            linear_before_reset=int(spec.linear_before_reset),
        )
    )
    for k, (produced, wanted) in enumerate(zip(outputs, node.output)):
        if wanted:  # Y [T, D, B, H] (layout 1: [B, T, D, H]); Y_h, Y_c [D, B, H] (layout 1: [B, D, H])
            g.op("Transpose", [produced], wanted, perm=[2, 0, 1, 3] if k == 0 else [1, 0, 2]) if layout else g.op(
                "Identity", [produced], wanted
            )
    return g.nodes, g.inits


class RecurrentSequenceConverter:
    """TVM ONNX-importer converter for ai.edgekit::RecurrentSequence: a call_tir of the recurrence kernel
    (registered by compiler/tvm_patches.py)."""

    @classmethod
    def get_converter(cls, _opset: int):
        return cls._convert

    @classmethod
    def _convert(cls, bb, inputs: list, attr: dict, _params) -> object:
        from tvm import relax

        steps, batch, dirs, _gate_width = (int(v) for v in inputs[0].ty.shape)
        kind = attr["kind"].decode()  # the importer's _parse_attr: strings as bytes, ints lists as tuples
        reverse = tuple(bool(v) for v in attr["reverse"])
        spec = RecurrentSpec(kind, steps, batch, int(attr["hidden"]), reverse, bool(attr.get("linear_before_reset", 0)))
        kernel = bb.add_func(sequence_func(spec), f"recurrent_{kind.lower()}")
        state = relax.TensorType((dirs, batch, spec.hidden), "float32")
        outs = [relax.TensorType((steps, dirs, batch, spec.hidden), "float32"), state] + (
            [state] if kind == "LSTM" else []
        )
        call = bb.emit(relax.call_tir(kernel, list(inputs), outs))
        return relax.Tuple([bb.emit(relax.TupleGetItem(call, i)) for i in range(len(outs))])


def lower_recurrent(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every LSTM / GRU / RNN node lowered (the model itself if it has none). The copy
    uses edgekit's own op: only TVM's importer (with edgekit's converter) reads it, never onnxruntime."""
    if not any(n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    shapes = inferred_shapes(model)
    constants = constant_values(model)  # initializers, and Constant nodes (some exporters write weights so)
    lowered = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in RECURRENT_OPS or node.domain not in ("", "ai.onnx"):
            continue
        x_shape = shapes.get(node.input[0])
        if not x_shape or len(x_shape) != 3 or None in x_shape:
            raise EdgekitError(
                f"node '{node.name or node.op_type}' ({node.op_type}) "
                "needs a fixed sequence length and batch to be compiled",
                "fix the input shapes with --input-shape NAME=...",
            )
        lowered[i] = lower(node, x_shape, constants)
    out = replace_nodes(model, lowered)  # the original W / R / B are transposed / packed copies now
    out.opset_import.append(helper.make_opsetid(EDGEKIT_DOMAIN, 1))
    return out
