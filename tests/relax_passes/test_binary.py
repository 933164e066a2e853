"""lower_binary_layers: matmul(sign(x), ±alpha weights) + bias -> call_tir(pack) -> call_tir(XNOR-popcount dense).

The two kernels come from their builders in kernels/binary.py (tested numerically in tests/test_kernels_binary.py);
the weight bits, alpha and the bias operand are worked out here."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import KernelTable
from edgekit.compiler.relax_passes.binary import lower_binary_layers
from edgekit.kernels import binary as kb

from .ir import build, const

AVX2 = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})
X = ((2, 64), "float32")
ALPHA = np.array([0.5, 1, 2, 0.25, 1, 1, 3, 0.75], "float32")
SIGNS = np.where(np.random.default_rng(0).random((64, 8)) < 0.5, -1.0, 1.0).astype("float32")  # [K, O]
BIAS = np.arange(8, dtype="float32")


def binary_dense(sign_activations: bool = True) -> tvm.IRModule:
    """Gemm of a binarized model after import and FoldConstant: the weight is ±alpha_o per column."""
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        if sign_activations:
            x = bb.emit(relax.op.where(bb.emit(relax.op.greater_equal(x, const(0.0, "float32"))),
                                       const(1.0, "float32"), const(-1.0, "float32")))
        y = bb.emit(relax.op.matmul(x, const(SIGNS * ALPHA, "float32")))
        return relax.op.add(y, const(BIAS, "float32"))

    return build(body, x=X)


def test_binary_gemm_becomes_pack_and_xnor_dense() -> None:
    spec, isa = kb.DenseSpec(2, 64, 8, "float32"), kb.AVX2
    kernels = KernelTable(tvm.IRModule())
    pack = kernels.get("xnor_dense_pack_2_64", lambda: kb.dense_pack_func(spec))
    dense = kernels.get("xnor_dense_2_64_8_float32_avx2", lambda: kb.dense_func(spec, isa))
    # one 64-bit word per output feature: bit k set where W[k, o] >= 0 (LSB first); [blocks 1, words 1, features 8]
    bits = np.array([[[sum(1 << k for k in range(64) if SIGNS[k, o] > 0) for o in range(8)]]], "uint64")

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        packed = bb.emit(relax.call_tir(pack, [x], relax.TensorType((2, 1), "uint64")))
        args = [packed, const(bits, "uint64"), const(ALPHA, "float32"), const(BIAS, "float32")]
        return relax.call_tir(dense, args, relax.TensorType((2, 8), "float32"))

    want = kernels.module()
    want["main"] = build(expected, x=X)["main"]
    out, report = lower_binary_layers(binary_dense(), AVX2)
    tvm.ir.assert_structural_equal(out, want)
    assert report == [{"op": "dense", "status": "lowered", "detail": "binary_dense 64->8 batch 2"}]


def test_binary_weights_on_float_activations_are_left_alone() -> None:
    before = binary_dense(sign_activations=False)  # BWN: XNOR needs both operands binary
    out, report = lower_binary_layers(before, AVX2)
    tvm.ir.assert_structural_equal(out, before)
    assert [r["status"] for r in report] == ["skipped"] and "BWN" in report[0]["reason"]
