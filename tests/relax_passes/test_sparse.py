"""sparse_layers_pass: a block-pruned MatMul + bias -> call_tir of the block-sparse kernel, weights as kept blocks.

The Expected kernel comes from the same kernel builder (kernels/sparse.spmm_func, tested there); the kept blocks,
their indices and the group pointers are written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import KernelTable, sparse
from edgekit.compiler.relax_passes.sparse import sparse_layers_pass
from edgekit.kernels.sparse import BlockSparse, spmm_func

from .ir import build, calls, const

X = ((4, 16), "float32")
BIAS = np.arange(16, dtype="float32")


@pytest.fixture(autouse=True)
def tiny_layers_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # the size floor is tuned on real layers (a 16x16 MatMul is far below it): lifted so a tiny layer qualifies
    monkeypatch.setattr(sparse, "MIN_DENSE_MACS", 0)


def matmul_bias(w: np.ndarray) -> tvm.IRModule:
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        return relax.op.add(bb.emit(relax.op.matmul(x, const(w, "float32"))), const(BIAS, "float32"))

    return build(body, x=X)


def pruned_weight() -> np.ndarray:
    """W [K 16, N 16] with three non-zero 1x8 blocks of 32: rows 3 and 10 of group 0, row 5 of group 1."""
    w = np.zeros((16, 16), "float32")
    w[3, :8], w[10, :8], w[5, 8:] = 1.0, np.arange(8), -2.0
    return w


def test_pruned_matmul_becomes_block_sparse_kernel() -> None:
    w = pruned_weight()
    blocks = BlockSparse(
        values=np.stack([w[3, :8], w[10, :8], w[5, 8:]]),
        indices=np.array([3, 10, 5], "int32"),
        indptr=np.array([0, 2, 3], "int32"),
        k=16,
        n=16,
    )
    kernels = KernelTable(tvm.IRModule())
    spmm = kernels.get("block_sparse_4_16_16_3_1", lambda: spmm_func((4,), blocks, True))  # bias folded in: "_1"
    args = [
        const(blocks.values, "float32"),
        const(blocks.indices, "int32"),
        const(blocks.indptr, "int32"),
        const(BIAS, "float32"),
    ]
    expected = kernels.module()
    main = build(lambda bb, x: relax.call_tir(spmm, [x, *args], relax.TensorType((4, 16), "float32")), x=X)
    expected["main"] = main["main"]

    report: list[dict] = []
    tvm.ir.assert_structural_equal(sparse_layers_pass(report)(matmul_bias(w)), expected)
    assert [(r["op"], r["kernel"], r["block_density"]) for r in report] == [("matmul", "sparse", round(3 / 32, 4))]


def test_unstructured_zeros_stay_dense() -> None:
    w = np.ones((16, 16), "float32")
    w[::2] = 0  # half the weights zero, yet every 1x8 block of an odd row non-zero: density 0.5 > MAX_DENSITY
    before = matmul_bias(w)
    report: list[dict] = []
    tvm.ir.assert_structural_equal(sparse_layers_pass(report)(before), before)
    assert [(r["kernel"], r["block_density"]) for r in report] == [("dense", 0.5)]


def test_relu_and_residual_add_fold_into_the_kernel() -> None:
    w = pruned_weight()

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, const(w, "float32"))), const(BIAS, "float32")))
        return relax.op.nn.relu(bb.emit(relax.op.add(y, x)))  # ResNet's relu(conv + bias + shortcut)

    out = sparse_layers_pass([])(build(body, x=X))
    assert calls(out) == ["block_sparse_4_16_16_3_1_clip0_inf_res_first"]
    kernel = out["block_sparse_4_16_16_3_1_clip0_inf_res_first"]
    assert len(kernel.params) == 7  # x, the blocks, indices, indptr, bias, the residual, out


def test_an_intermediate_read_twice_stays_outside_the_kernel() -> None:
    w = pruned_weight()

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, const(w, "float32"))), const(BIAS, "float32")))
        return relax.op.add(bb.emit(relax.op.nn.relu(y)), y)  # y is also read after the relu

    out = relax.transform.DeadCodeElimination()(sparse_layers_pass([])(build(body, x=X)))
    assert calls(out) == ["block_sparse_4_16_16_3_1", "relax.nn.relu", "relax.add"]


def test_a_row_keeping_reshape_before_the_residual_add_folds_too() -> None:
    w = pruned_weight()

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, const(w, "float32"))), const(BIAS, "float32")))
        back = bb.emit(relax.op.reshape(y, (1, 4, 16)))  # a Linear on [B, T, C], flattened by the importer
        return relax.op.add(relax.op.reshape(x, (1, 4, 16)), back)

    out = relax.transform.DeadCodeElimination()(sparse_layers_pass([])(build(body, x=X)))
    assert calls(out) == ["relax.reshape", "block_sparse_4_16_16_3_1_as_1_4_res"]


def test_a_two_four_weight_stays_dense_and_says_why() -> None:
    w = np.ones((16, 16), "float32")
    w.reshape(4, 4, 16)[:, 2:, :] = 0  # 2 of every 4 input weights kept: every 1x8 block non-zero
    report: list[dict] = []
    before = matmul_bias(w)
    tvm.ir.assert_structural_equal(sparse_layers_pass(report)(before), before)
    assert report[0]["kernel"] == "dense" and "2:4 pattern" in report[0]["why"], report
