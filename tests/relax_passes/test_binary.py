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
            x = bb.emit(
                relax.op.where(
                    bb.emit(relax.op.greater_equal(x, const(0.0, "float32"))),
                    const(1.0, "float32"),
                    const(-1.0, "float32"),
                )
            )
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


def test_binary_conv_becomes_pack_and_xnor_conv() -> None:
    # Structure of main only: the conv kernel's border-correction table is too long to rework here (its numerics
    # are in tests/test_kernels_binary.py); names, shapes, weight bits, alpha and bias are checked
    alpha = np.arange(1, 17, dtype="float32")
    signs = np.where(np.random.default_rng(1).random((16, 64, 3, 3)) < 0.5, -1.0, 1.0).astype("float32")  # OIHW

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        s = bb.emit(
            relax.op.where(
                bb.emit(relax.op.greater_equal(x, const(0.0, "float32"))), const(1.0, "float32"), const(-1.0, "float32")
            )
        )
        y = bb.emit(relax.op.nn.conv2d(s, const(signs * alpha[:, None, None, None], "float32"), strides=2, padding=1))
        return relax.op.add(y, const(BIAS.repeat(2).reshape(1, 16, 1, 1), "float32"))

    out, report = lower_binary_layers(build(body, x=((1, 64, 8, 8), "float32")), AVX2)
    (pack, conv) = [b.value for b in out["main"].body.blocks[0].bindings]
    assert pack.args[0].name_hint == "xnor_conv_pack_1_1_10_33_64_8_8_1"
    assert pack.args[1].fields[0].same_as(out["main"].params[0])
    assert [int(d) for d in pack.ty.shape] == [1, 1, 10, 33] and pack.ty.dtype == "uint64"  # packed, padded input
    assert conv.args[0].name_hint == "xnor_conv_1_64_8_8_16_3_2_1_float32_avx2"  # the row kernel: stride 2
    packed, bits, table, alpha_arg, bias_arg = conv.args[1].fields
    assert packed.same_as(out["main"].body.blocks[0].bindings[0].var)
    # bits[o, i, j, 0]: bit c set where W[o, c, i, j] >= 0
    want = np.array(
        [
            [[[sum(1 << c for c in range(64) if signs[o, c, i, j] > 0)] for j in range(3)] for i in range(3)]
            for o in range(16)
        ],
        "uint64",
    )
    np.testing.assert_array_equal(bits.value.numpy(), want)
    assert table.value.numpy().shape == (16, 4, 4) and table.value.numpy().dtype == np.int32
    np.testing.assert_array_equal(alpha_arg.value.numpy(), alpha)
    np.testing.assert_array_equal(bias_arg.value.numpy(), BIAS.repeat(2))
    assert [int(d) for d in conv.ty.shape] == [1, 16, 4, 4]
    assert report == [{"op": "conv2d", "status": "lowered", "detail": "binary_conv2d 3x3 s2 p1 64->16 8x8"}]
