"""`--freeze NAME=VALUE`: bind model inputs to constants, fold what depends only on them, and inline every `If`
whose condition becomes constant (a VAD model's branch on its sample-rate input, an export's `if training:`).

    freeze_inputs(model, {"sr": array(16000)})  ->  a model without input `sr`, the taken branches inlined

Folding evaluates, with onnx.reference, only nodes downstream of a frozen input whose inputs are all constant;
weights and quantization subgraphs that do not depend on a frozen input are left as they are. Names inside an
inlined branch are prefixed with the If node's name, so they cannot collide with the outer graph's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.compiler.onnx_builder import constant_node_value
from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.checks import load_arrays
from edgekit.onnxkit.graph import copy_subgraph

MAX_FOLDED_ELEMENTS = 1 << 20  # shape arithmetic and flags, not tensors of activations


def parse_freeze(items: list[str] | None, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """NAME=VALUE pairs (a number, a comma list, or an .npy file), typed and shaped as the model's input."""
    inputs = {i.name: i for i in model.graph.input}
    values: dict[str, np.ndarray] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise EdgekitError(
                f"bad --freeze '{item}'",
                "write NAME=VALUE: a number, a comma list or an .npy file, e.g. --freeze sr=16000",
            )
        if name not in inputs:
            raise EdgekitError(
                f"--freeze {name}: the model has no input '{name}'", f"inputs: {', '.join(inputs) or '(none)'}"
            )
        t = inputs[name].type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else np.dtype("float32")
        try:
            value = (
                load_arrays(Path(text))[""]
                if text.endswith(".npy") and Path(text).exists()
                else np.array([float(v) for v in text.split(",")])
            )
        except ValueError:
            raise EdgekitError(
                f"--freeze {name}: '{text}' is not a number, a comma list or an .npy file", "e.g. --freeze sr=16000"
            ) from None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if None not in dims:
            if int(np.prod(dims, dtype=np.int64)) != value.size:
                raise EdgekitError(
                    f"--freeze {name}: {value.size} value(s) for an input of shape {dims}",
                    f"give {int(np.prod(dims))} value(s)",
                )
            value = value.reshape(dims)
        values[name] = value.astype(dtype)
    return values


def _evaluate(node: onnx.NodeProto, consts: dict[str, np.ndarray], opsets) -> list[np.ndarray] | None:
    """The node's outputs, computed by onnx.reference from its constant inputs; None if it cannot."""
    from onnx.reference import ReferenceEvaluator

    feeds = [numpy_helper.from_array(np.asarray(consts[i]), i) for i in dict.fromkeys(node.input) if i]
    graph = helper.make_graph(
        [node], "fold", [], [helper.make_value_info(o, onnx.TypeProto()) for o in node.output], feeds
    )
    try:
        return list(ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(None, {}))
    except Exception:  # noqa: BLE001 - a node the reference cannot fold stays in the graph for the compiler
        return None


def _inline(node: onnx.NodeProto, branch: onnx.GraphProto) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The branch's nodes and initializers under prefixed names, then Identity nodes onto the If's outputs."""
    prefix = f"{node.name or node.output[0]}/"
    nodes, inits, rename = copy_subgraph(branch, prefix)
    for out, branch_out in zip(node.output, branch.output):
        nodes.append(
            helper.make_node(
                "Identity", [rename.get(branch_out.name, branch_out.name)], [out], name=prefix + "out/" + out
            )
        )
    return nodes, inits


def freeze_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    if not values:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    kept_inputs = [i for i in g.input if i.name not in values]
    del g.input[:]
    g.input.extend(kept_inputs)
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer} | dict(values)
    derived = set(values)  # tensors that depend on a frozen input: the only ones folded
    # outputs of Constant nodes and of what computes on them alone (onnxscript / spox write constants as nodes:
    # Equal(sr, Constant(16000)) -> If): folded like frozen inputs, while initializer-only subgraphs (weights,
    # quantization parameters) stay as they are
    constant_made: set[str] = set()
    folded: set[str] = set()  # produced by a node folding removed: written back as initializers where used
    changed = True
    while changed:
        changed = False
        nodes = []
        for node in list(g.node):
            if node.op_type == "Constant" and node.output[0] not in consts:
                value = constant_node_value(node)
                if value is not None:
                    consts[node.output[0]] = value
                    constant_made.add(node.output[0])
            if node.op_type == "If" and node.input[0] in consts:
                taken = next(
                    a.g
                    for a in node.attribute
                    if a.name
                    == ("then_branch" if bool(np.asarray(consts[node.input[0]]).ravel()[0]) else "else_branch")
                )
                branch_nodes, branch_inits = _inline(node, taken)
                nodes.extend(branch_nodes)
                g.initializer.extend(branch_inits)
                consts.update({t.name: numpy_helper.to_array(t) for t in branch_inits})
                changed = True
                continue
            real_inputs = [i for i in node.input if i]
            from_frozen = any(i in derived for i in real_inputs)
            from_constants = bool(real_inputs) and all(i in constant_made for i in real_inputs)
            foldable = (
                node.op_type not in ("If", "Constant")
                and (from_frozen or from_constants)
                and all(i in consts for i in real_inputs)
            )
            results = _evaluate(node, consts, out.opset_import) if foldable else None
            if results is not None and all(np.asarray(r).size <= MAX_FOLDED_ELEMENTS for r in results):
                for name, value in zip(node.output, results):
                    consts[name] = np.asarray(value)
                    (derived if from_frozen else constant_made).add(name)
                    folded.add(name)
                changed = True
                continue
            nodes.append(node)
        del g.node[:]
        g.node.extend(nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    have = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    emitted = set(values) | folded
    g.initializer.extend(
        numpy_helper.from_array(np.asarray(v), k)
        for k, v in consts.items()
        if k in used and k not in have and k in emitted
    )
    for o in g.output:  # an output that folded to a constant: an Identity of its initializer keeps it an output
        if o.name in consts and o.name in emitted and not any(o.name in n.output for n in g.node):
            g.initializer.append(numpy_helper.from_array(np.asarray(consts[o.name]), o.name + "/frozen"))
            g.node.append(helper.make_node("Identity", [o.name + "/frozen"], [o.name], name="freeze/" + o.name))
    return out
