"""How sparse weights are stored in standard ONNX, and how the compiler turns them dense again.

Two encodings, both loaded by plain onnxruntime:

    coo   ONNX `sparse_initializer`: values (float32) + linear int64 indices, 12 bytes per non-zero. The
          checker allows only int64 indices, so it shrinks the file only above 2/3 sparsity; used there only.
    mask  a packed bitmask (1 bit per weight, LSB first) + the non-zero values (4 bytes each), decoded by a
          subgraph of standard ops (opset 18) named `sparse/<W>/...` whose output takes W's name:
              mask -> Unsqueeze -> BitShift(RIGHT, 0..7) -> BitwiseAnd(1) -> Reshape[-1] -> Slice[:n]
                   -> Cast(int64) = m;  Gather([0, values...], CumSum(m)·m) -> Reshape(W's shape)
          Smaller than dense from about 3% sparsity on (2:4 sparsity: 2.125 of 4 bytes per weight).

onnxruntime densifies both when the session is created (sparse initializers are converted to dense ones; the
decode subgraph is constant-folded), so latency and memory at run time are those of the dense model: the
encoding shrinks the file, not the work. `densify` does the same before TVM imports the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FORMATS = ("mask", "coo", "dense")
PREFIX = "sparse/"


def mask_bytes(w: np.ndarray) -> int:
    return (w.size + 7) // 8 + 4 * (int(np.count_nonzero(w)) + 1)


def coo_bytes(w: np.ndarray) -> int:
    return 12 * int(np.count_nonzero(w))


def encode_mask(graph: onnx.GraphProto, name: str, w: np.ndarray) -> None:
    """Replace initializer `name` by a bitmask, the non-zeros and the decode nodes (appended to `graph`)."""
    flat = w.ravel()
    nz = flat != 0
    p = f"{PREFIX}{name}/"
    inits = [
        numpy_helper.from_array(np.packbits(nz, bitorder="little"), p + "mask"),
        numpy_helper.from_array(np.concatenate([[0], flat[nz]]).astype(w.dtype), p + "values"),
        numpy_helper.from_array(np.arange(8, dtype=np.uint8), p + "shifts"),
        numpy_helper.from_array(np.array([1], np.uint8), p + "one"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "flat"),
        numpy_helper.from_array(np.array([0], np.int64), p + "zero"),
        numpy_helper.from_array(np.array([w.size], np.int64), p + "size"),
        numpy_helper.from_array(np.array(0, np.int64), p + "axis"),
        numpy_helper.from_array(np.array(w.shape, np.int64), p + "shape"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", [p + "mask", p + "flat"], [p + "m2"], name=p + "unsqueeze"),
        helper.make_node("BitShift", [p + "m2", p + "shifts"], [p + "shifted"], direction="RIGHT", name=p + "shift"),
        helper.make_node("BitwiseAnd", [p + "shifted", p + "one"], [p + "bits2"], name=p + "and"),
        helper.make_node("Reshape", [p + "bits2", p + "flat"], [p + "bits"], name=p + "reshape_bits"),
        helper.make_node("Slice", [p + "bits", p + "zero", p + "size"], [p + "bits_n"], name=p + "slice"),
        helper.make_node("Cast", [p + "bits_n"], [p + "m"], to=TensorProto.INT64, name=p + "cast"),
        helper.make_node("CumSum", [p + "m", p + "axis"], [p + "rank"], name=p + "cumsum"),
        helper.make_node("Mul", [p + "rank", p + "m"], [p + "index"], name=p + "index"),
        helper.make_node("Gather", [p + "values", p + "index"], [p + "dense"], axis=0, name=p + "gather"),
        helper.make_node("Reshape", [p + "dense", p + "shape"], [name], name=p + "reshape"),
    ]
    _remove_initializer(graph, name)
    graph.initializer.extend(inits)
    for i, node in enumerate(nodes):  # before every node: the graph stays topologically sorted
        graph.node.insert(i, node)


def encode_coo(graph: onnx.GraphProto, name: str, w: np.ndarray) -> None:
    flat = w.ravel()
    index = np.nonzero(flat)[0].astype(np.int64)
    values = numpy_helper.from_array(flat[index], name)
    graph.sparse_initializer.append(
        helper.make_sparse_tensor(values, numpy_helper.from_array(index, name + ".indices"), list(w.shape))
    )
    _remove_initializer(graph, name)


def _remove_initializer(graph: onnx.GraphProto, name: str) -> None:
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            del graph.initializer[i]
            return


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(sp.values)
    index = numpy_helper.to_array(sp.indices)
    dense = np.zeros(int(np.prod(sp.dims)), values.dtype)
    flat = index if index.ndim == 1 else np.ravel_multi_index(tuple(index.T), tuple(sp.dims))
    dense[flat] = values
    return numpy_helper.from_array(dense.reshape(tuple(sp.dims)), sp.values.name)


def decode_mask(mask: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    m = np.unpackbits(mask, bitorder="little")[:size].astype(np.int64)
    return values[np.cumsum(m) * m].reshape(shape)


def densify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Sparse initializers and mask-decode subgraphs -> plain dense initializers (a copy; the input unchanged)."""
    decoded = [
        n
        for n in model.graph.node
        if n.name.startswith(PREFIX) and n.name.endswith("/reshape") and n.op_type == "Reshape"
    ]
    if not decoded and not model.graph.sparse_initializer:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    for node in decoded:
        p = node.name[: -len("reshape")]
        dense = decode_mask(
            numpy_helper.to_array(inits[p + "mask"]),
            numpy_helper.to_array(inits[p + "values"]),
            tuple(numpy_helper.to_array(inits[p + "shape"]).tolist()),
        )
        g.initializer.append(numpy_helper.from_array(dense, node.output[0]))
    keep = [n for n in g.node if not any(n.name.startswith(d.name[: -len("reshape")]) for d in decoded)]
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(_sparse_to_dense(sp) for sp in g.sparse_initializer)
    del g.sparse_initializer[:]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return out
