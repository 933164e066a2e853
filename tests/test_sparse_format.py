"""passes/sparse_format.py: the mask and coo encodings of sparse weights (plain onnxruntime computes the dense model
from either), densify (what the compiler does before TVM imports the model) and the byte counts the prune pass
chooses an encoding by."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.onnxkit.tools import ort_session
from edgekit.passes import sparse_format

RNG = np.random.default_rng(0)


def _sparse(shape: tuple[int, ...], density: float) -> np.ndarray:
    w = RNG.standard_normal(shape).astype(np.float32)
    return w * (RNG.random(shape) < density)


def _matmul(w: np.ndarray) -> onnx.ModelProto:
    """y = x @ w with w an initializer, at opset 18 (the mask decoder's BitwiseAnd)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _dense_weight(model: onnx.ModelProto) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))


def test_byte_counts_and_the_break_even_points_the_docstring_gives():
    w = np.zeros((3, 5), np.float32)
    w.flat[[0, 4, 7, 14]] = 1.0
    assert sparse_format.mask_bytes(w) == 2 + 4 * 5  # 15 bits -> 2 bytes, the non-zeros and the leading 0
    assert sparse_format.coo_bytes(w) == 12 * 4
    n = 1 << 16
    nm = np.tile(np.array([1, 0, 1, 0], np.float32), n // 4)  # 2:4
    assert sparse_format.mask_bytes(nm) / n == pytest.approx(2.125, abs=1e-3)
    dense = 4 * n
    for zeros, smaller in ((0.02, False), (0.04, True)):  # mask beats dense from about 3% zeros
        w = np.ones(n, np.float32)
        w[: int(zeros * n)] = 0
        assert (sparse_format.mask_bytes(w) < dense) is smaller
    for zeros, smaller in ((0.6, False), (0.7, True)):  # coo only above 2/3
        w = np.ones(n, np.float32)
        w[: int(zeros * n)] = 0
        assert (sparse_format.coo_bytes(w) < dense) is smaller


@pytest.mark.parametrize(("shape", "density"), [((3, 5), 0.4), ((16, 8), 0.1), ((4, 4), 0.0), ((2, 8), 1.0)])
def test_mask_encoding_runs_in_onnxruntime_and_densifies_back(shape: tuple[int, ...], density: float):
    """Sizes that are not a multiple of 8 (the Slice of the unpacked bits), an all-zero and an all-dense weight."""
    w = _sparse(shape, density)
    model = _matmul(w)
    sparse_format.encode_mask(model.graph, "w", w)
    onnx.checker.check_model(model, full_check=True)
    assert "w" not in {t.name for t in model.graph.initializer}
    assert model.graph.node[-1].name == "mm"  # the decoder comes first: the graph stays topologically sorted
    x = RNG.standard_normal((2, shape[0])).astype(np.float32)
    np.testing.assert_allclose(ort_session(model).run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-6)
    dense = sparse_format.densify(model)
    assert [n.name for n in dense.graph.node] == ["mm"]
    assert [t.name for t in dense.graph.initializer] == ["w"]  # the decoder's constants are gone too
    np.testing.assert_array_equal(_dense_weight(dense), w)
    assert len(model.graph.node) > 1  # densify works on a copy


def test_decode_mask_inverts_the_packed_bits():
    w = _sparse((5, 7), 0.3)
    mask = np.packbits(w.ravel() != 0, bitorder="little")
    values = np.concatenate([[0], w.ravel()[w.ravel() != 0]]).astype(np.float32)
    np.testing.assert_array_equal(sparse_format.decode_mask(mask, values, (5, 7)), w)


def test_coo_encoding_runs_in_onnxruntime_and_densifies_back():
    w = _sparse((6, 4), 0.25)
    model = _matmul(w)
    sparse_format.encode_coo(model.graph, "w", w)
    onnx.checker.check_model(model)
    (sp,) = model.graph.sparse_initializer
    assert sp.values.name == "w" and list(sp.dims) == [6, 4] and sp.indices.data_type == TensorProto.INT64
    assert not model.graph.initializer
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(ort_session(model).run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-6)
    dense = sparse_format.densify(model)
    assert not dense.graph.sparse_initializer and len(model.graph.sparse_initializer) == 1
    np.testing.assert_array_equal(_dense_weight(dense), w)


def test_densify_reads_coordinate_indices_too():
    """ONNX allows [nnz, rank] coordinates besides linear indices (other writers use them)."""
    w = _sparse((3, 4), 0.5)
    coords = np.argwhere(w).astype(np.int64)
    model = _matmul(w)
    del model.graph.initializer[:]
    model.graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            numpy_helper.from_array(w[tuple(coords.T)], "w"), numpy_helper.from_array(coords, "w.indices"), [3, 4]
        )
    )
    np.testing.assert_array_equal(_dense_weight(sparse_format.densify(model)), w)


def test_densify_returns_a_dense_model_itself():
    model = _matmul(_sparse((3, 4), 0.5))
    assert sparse_format.densify(model) is model
