"""LSTM / GRU / RNN -> plain ONNX ops, unrolled over the (fixed) sequence length, before TVM's import.

TVM 0.27's Relax ONNX importer has no recurrent ops, so a CRNN recognizer or a keyword-spotting GRU could not be
compiled at all. Unrolling in ONNX keeps the rewrite checkable by onnxruntime itself (the validation step runs
the original graph), and it lets TVM see ordinary MatMul / Sigmoid / Tanh ops it fuses and schedules:
  - the input projection X·Wᵀ + b of all time steps is one MatMul ([T·B, I] x [I, G·H]), the big GEMM;
  - each step then adds H·Rᵀ (a [B, H] x [H, G·H] GEMV) and applies the gate equations of the ONNX spec.
Supported: forward / reverse / bidirectional, layout 0 and 1, initial_h / initial_c inputs or initializers,
peepholes (LSTM), linear_before_reset (GRU), the default activations. Anything else (clip, input_forget, other
activations, per-batch sequence_lens) is refused naming the node, never approximated.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import EdgekitError
from edgekit.passes.opset import default_opset

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


class _Graph:
    """New nodes and initializers with fresh, readable names (prefixed by the node being unrolled)."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix, self.opset, self.nodes, self.inits, self._ids = prefix, opset, [], [], itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._ids)}"

    def const(self, array: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # ascontiguousarray makes 0-d 1-d
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.name(op_type), **attrs))
        return output

    def split(self, x: str, sizes: list[int], axis: int = 1) -> list[str]:
        """Split along `axis` (Split's sizes moved from an attribute to an input in opset 13)."""
        outs = [self.name("part") for _ in sizes]
        if self.opset >= 13:
            node = helper.make_node("Split", [x, self.const(np.array(sizes, np.int64), "sizes")], outs, name=self.name("Split"), axis=axis)
        else:
            node = helper.make_node("Split", [x], outs, name=self.name("Split"), axis=axis, split=sizes)
        self.nodes.append(node)
        return outs

    def reshape(self, x: str, shape: list[int], output: str | None = None) -> str:
        return self.op("Reshape", [x, self.const(np.array(shape, np.int64), "shape")], output)

    def unstack(self, x: str, count: int, axis: int, shape: list[int]) -> list[str]:
        """x split into `count` slices along `axis`, each reshaped to `shape` (one Split: a scalar-index Gather
        per step made TVM print a bounds warning per step)."""
        return [self.reshape(part, shape) for part in self.split(x, [1] * count, axis)]


def _refuse(node: onnx.NodeProto, what: str) -> EdgekitError:
    return EdgekitError(f"node '{node.name or node.op_type}' ({node.op_type}) uses {what}, which edgekit cannot unroll",
                        "export the recurrent layer with the default activations and no clip, or report the model")


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
        raise _refuse(node, f"a weight '{node.input[index]}' that is not an initializer")
    return constants[node.input[index]].astype(np.float32)


def _direction_weights(node: onnx.NodeProto, constants: dict[str, np.ndarray], d: int, hidden: int, g: _Graph) -> dict:
    """Initializers of direction d: the input projection (Wᵀ, bias) and what each step needs (Rᵀ, ...)."""
    gates = _GATES[node.op_type]
    w, r = _constant_input(node, constants, 1)[d], _constant_input(node, constants, 2)[d]
    b = _constant_input(node, constants, 3)
    wb, rb = (np.zeros(gates * hidden, np.float32),) * 2 if b is None else (b[d, : gates * hidden], b[d, gates * hidden:])
    out = {"w_t": g.const(w.T, "W_t")}
    if node.op_type == "GRU":  # R·h of the candidate gate is gated by r: its bias stays on the recurrent side
        out["bias"] = g.const(np.concatenate([wb[: 2 * hidden] + rb[: 2 * hidden], wb[2 * hidden:]]), "bias")
        out["r_zr"], out["r_h"] = g.const(r[: 2 * hidden].T, "R_zr_t"), g.const(r[2 * hidden:].T, "R_h_t")
        out["rb_h"] = g.const(rb[2 * hidden:], "Rb_h")
        return out
    out["bias"], out["r_t"] = g.const(wb + rb, "bias"), g.const(r.T, "R_t")
    p = _constant_input(node, constants, 7) if node.op_type == "LSTM" else None
    if p is not None and np.any(p[d]):
        out["peep"] = [g.const(p[d, k * hidden:(k + 1) * hidden], f"P{n}") for k, n in enumerate("iof")]
    return out


def _lstm_step(g: _Graph, x_t: str, h: str, c: str, wd: dict, hidden: int) -> tuple[str, str]:
    i, o, f, cand = g.split(g.op("Add", [x_t, g.op("MatMul", [h, wd["r_t"]])]), [hidden] * 4)
    if "peep" in wd:
        pi, _po, pf = wd["peep"]
        i, f = g.op("Add", [i, g.op("Mul", [c, pi])]), g.op("Add", [f, g.op("Mul", [c, pf])])
    c_new = g.op("Add", [g.op("Mul", [g.op("Sigmoid", [f]), c]), g.op("Mul", [g.op("Sigmoid", [i]), g.op("Tanh", [cand])])])
    if "peep" in wd:
        o = g.op("Add", [o, g.op("Mul", [c_new, wd["peep"][1]])])  # the output gate peeks at the new cell
    return g.op("Mul", [g.op("Sigmoid", [o]), g.op("Tanh", [c_new])]), c_new


def _gru_step(g: _Graph, x_t: str, h: str, wd: dict, hidden: int, linear_before_reset: bool) -> str:
    x_zr, x_h = g.split(x_t, [2 * hidden, hidden])
    z, r = g.split(g.op("Sigmoid", [g.op("Add", [x_zr, g.op("MatMul", [h, wd["r_zr"]])])]), [hidden, hidden])
    if linear_before_reset:
        recurrent = g.op("Mul", [r, g.op("Add", [g.op("MatMul", [h, wd["r_h"]]), wd["rb_h"]])])
    else:
        recurrent = g.op("Add", [g.op("MatMul", [g.op("Mul", [r, h]), wd["r_h"]]), wd["rb_h"]])
    cand = g.op("Tanh", [g.op("Add", [x_h, recurrent])])
    return g.op("Add", [cand, g.op("Mul", [z, g.op("Sub", [h, cand])])])  # (1 - z)·cand + z·h


def _initial_states(g: _Graph, node: onnx.NodeProto, index: int, dirs: int, batch: int, hidden: int, layout: int) -> list[str]:
    """[B, H] per direction: from initial_h / initial_c ([dirs, B, H], layout 1: [B, dirs, H]) or zeros."""
    if len(node.input) > index and node.input[index]:
        return g.unstack(node.input[index], dirs, 1 if layout else 0, [batch, hidden])
    return [g.const(np.zeros((batch, hidden), np.float32), "zeros")] * dirs


def unroll(node: onnx.NodeProto, x_shape: list[int], constants: dict[str, np.ndarray], opset: int) -> tuple[list, list]:
    """The nodes and initializers that compute `node`'s outputs (same names) with plain ops."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = int(attrs.get("layout", 0))
    steps, batch, _features = (x_shape[1], x_shape[0], x_shape[2]) if layout else x_shape
    _check_supported(node, attrs, constants, steps)
    hidden = int(attrs["hidden_size"])
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    g = _Graph(node.name or f"{node.op_type.lower()}", opset)
    x = g.op("Transpose", [node.input[0]], perm=[1, 0, 2]) if layout else node.input[0]
    x2d = g.reshape(x, [steps * batch, -1])
    dirs = [False, True] if direction == "bidirectional" else [direction == "reverse"]
    h0 = _initial_states(g, node, 5, len(dirs), batch, hidden, layout)
    c0 = _initial_states(g, node, 6, len(dirs), batch, hidden, layout) if node.op_type == "LSTM" else [None] * len(dirs)
    ys, hs, cs = [], [], []
    for d, backwards in enumerate(dirs):
        wd = _direction_weights(node, constants, d, hidden, g)
        proj = g.op("Add", [g.op("MatMul", [x2d, wd["w_t"]]), wd["bias"]])  # [steps * batch, gates * hidden]
        x_steps = g.unstack(g.reshape(proj, [steps, batch, -1]), steps, 0, [batch, -1])
        h, c = h0[d], c0[d]
        outs: dict[int, str] = {}
        for t in (reversed(range(steps)) if backwards else range(steps)):
            x_t = x_steps[t]
            if node.op_type == "LSTM":
                h, c = _lstm_step(g, x_t, h, c, wd, hidden)
            elif node.op_type == "GRU":
                h = _gru_step(g, x_t, h, wd, hidden, bool(attrs.get("linear_before_reset", 0)))
            else:
                h = g.op("Tanh", [g.op("Add", [x_t, g.op("MatMul", [h, wd["r_t"]])])])
            outs[t] = g.reshape(h, [1, 1, batch, hidden])
        ys.append(g.op("Concat", [outs[t] for t in range(steps)], axis=0))
        hs.append(g.reshape(h, [1, batch, hidden]))
        if c is not None:
            cs.append(g.reshape(c, [1, batch, hidden]))
    _emit_outputs(g, node, ys, hs, cs, layout)
    return g.nodes, g.inits


def _emit_outputs(g: _Graph, node: onnx.NodeProto, ys: list[str], hs: list[str], cs: list[str], layout: int) -> None:
    """Y [T, dirs, B, H] (layout 1: [B, T, dirs, H]), Y_h and Y_c [dirs, B, H] (layout 1: [B, dirs, H])."""
    wanted = list(node.output) + [""] * 3
    for k, (parts, perm) in enumerate([(ys, [2, 0, 1, 3]), (hs, [1, 0, 2]), (cs, [1, 0, 2])]):
        if not wanted[k] or not parts:
            continue
        joined = g.op("Concat", parts, axis=1 if k == 0 else 0)
        g.op("Transpose", [joined], wanted[k], perm=perm) if layout else g.op("Identity", [joined], wanted[k])


def unroll_recurrent(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every LSTM / GRU / RNN node unrolled (the model itself if it has none)."""
    if not any(n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    opset = default_opset(model)  # an LSTM/GRU/RNN node means the model imports the default domain
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_nodes, recurrent_inputs = [], set()
    for node in model.graph.node:
        if node.op_type not in RECURRENT_OPS or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        x_shape = shapes.get(node.input[0])
        if not x_shape or len(x_shape) != 3 or None in x_shape:
            raise EdgekitError(f"node '{node.name or node.op_type}' ({node.op_type}) needs a fixed sequence length and batch to be unrolled",
                               "fix the input shapes with --input-shape NAME=...")
        nodes, inits = unroll(node, x_shape, constants, opset)
        recurrent_inputs.update(node.input)
        new_nodes += nodes
        out.graph.initializer.extend(inits)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    used = {i for n in new_nodes for i in n.input} | {o.name for o in out.graph.output}
    kept = [t for t in out.graph.initializer if t.name in used or t.name not in recurrent_inputs]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)  # the original W / R / B are transposed copies now
    return out
