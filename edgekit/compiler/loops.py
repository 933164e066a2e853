"""ONNX `Loop` with a constant trip count, unrolled before TVM imports the model (its importer has no Loop).

    Loop(M, cond, v0...) with body(i, cond_in, v...) -> (cond_out, v'..., scan...)
      ->  M inlined copies of the body: i a constant, v chained copy to copy, each scan output stacked on a new
          axis 0 (Unsqueeze + Concat), as Loop defines them

Unrolled only when the loop cannot stop early: M is a constant (at most MAX_UNROLL), the initial condition is
absent or constant true, and the body's condition output is its condition input passed through or a constant
true. Other Loops stay, and the importer check names them with the --freeze hint.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.onnxkit.graph import copy_subgraph

MAX_UNROLL = 1024


def _const(model_inits: dict, name: str):
    return numpy_helper.to_array(model_inits[name]) if name in model_inits else None


def _never_stops_early(body: onnx.GraphProto) -> bool:
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    producer = {o: n for n in body.node for o in n.output}
    node = producer.get(cond_out)
    inits = {t.name: t for t in body.initializer}
    if node is not None and node.op_type == "Identity" and node.input[0] == cond_in:
        return True
    if node is not None and node.op_type == "Constant":
        return bool(numpy_helper.to_array(node.attribute[0].t).all())
    return cond_out in inits and bool(numpy_helper.to_array(inits[cond_out]).all())


def _iteration(
    node: onnx.NodeProto, body: onnx.GraphProto, i: int, carried: list[str], cond: str
) -> tuple[list, list, list[str], list[str]]:
    """(nodes, initializers, carried outputs, scan outputs) of iteration i, body names prefixed."""
    prefix = f"{node.name or node.output[0]}/iter{i}/"
    bound = {body.input[0].name: prefix + "i", body.input[1].name: cond} | {
        inp.name: v for inp, v in zip(body.input[2:], carried)
    }
    nodes, inits, rename = copy_subgraph(body, prefix, bound)
    inits.insert(0, numpy_helper.from_array(np.array(i, np.int64), prefix + "i"))
    outs = [rename.get(o.name, o.name) for o in body.output]
    n_carried = len(carried)
    return nodes, inits, outs[1 : 1 + n_carried], outs[1 + n_carried :]


def _unroll(node: onnx.NodeProto, trips: int) -> tuple[list, list]:
    body = next(a.g for a in node.attribute if a.name == "body")
    carried = list(node.input[2:])
    nodes: list = []
    inits: list = []
    if len(node.input) > 1 and node.input[1]:
        cond = node.input[1]
    else:  # no initial condition: true
        cond = f"{node.name}/cond"
        inits.append(numpy_helper.from_array(np.array(True), cond))
    scans: list[list[str]] = []
    for i in range(trips):
        n, t, carried, scan = _iteration(node, body, i, carried, cond)
        nodes += n
        inits += t
        scans.append(scan)
    n_carried = len(node.input) - 2
    for out, value in zip(node.output[:n_carried], carried):
        nodes.append(helper.make_node("Identity", [value], [out], name=f"{node.name}/out/{out}"))
    axis = numpy_helper.from_array(np.array([0], np.int64), f"{node.name}/axis0")
    inits.append(axis)
    for k, out in enumerate(node.output[n_carried:]):
        stacked = []
        for i, scan in enumerate(scans):
            nodes.append(
                helper.make_node("Unsqueeze", [scan[k], axis.name], [f"{out}/{i}"], name=f"{node.name}/stack{k}/{i}")
            )
            stacked.append(f"{out}/{i}")
        nodes.append(helper.make_node("Concat", stacked, [out], axis=0, name=f"{node.name}/scan{k}"))
    return nodes, inits


def unroll_constant_loops(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every unrollable Loop unrolled (the input itself when there is none)."""
    inits = {t.name: t for t in model.graph.initializer}
    targets = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Loop" or not node.input[0] or _const(inits, node.input[0]) is None:
            continue
        trips = int(np.asarray(_const(inits, node.input[0])).ravel()[0])
        cond = _const(inits, node.input[1]) if len(node.input) > 1 and node.input[1] else np.array(True)
        body = next(a.g for a in node.attribute if a.name == "body")
        if 0 < trips <= MAX_UNROLL and cond is not None and bool(np.asarray(cond).all()) and _never_stops_early(body):
            targets.append((index, trips))
    if not targets:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    replaced = {}
    for index, trips in targets:
        replaced[index] = _unroll(out.graph.node[index], trips)
    nodes = []
    for i, node in enumerate(out.graph.node):
        if i in replaced:
            nodes += replaced[i][0]
            out.graph.initializer.extend(replaced[i][1])
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
