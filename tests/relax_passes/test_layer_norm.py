"""layer_norm_pass: LayerNorm arithmetic (mean, subtract, power, mean, add eps, sqrt, divide, * gamma + beta) and
TVM's layer_norm op -> one call of edgekit/kernels/layer_norm.py (the kernel is tested in tests/test_layer_norm.py)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import constant_array
from edgekit.compiler.relax_passes.layer_norm import layer_norm_pass

from .ir import build, calls, const

X = ((2, 5, 16), "float32")
GAMMA, BETA = np.linspace(0.5, 1.5, 16, dtype="float32"), np.linspace(-1, 1, 16, dtype="float32")


def decomposed(bb: relax.BlockBuilder, x: relax.Var, extra_use: bool = False) -> relax.Expr:
    """What torch's opset-13 export of nn.LayerNorm(16) becomes after import."""
    d = bb.emit(relax.op.subtract(x, bb.emit(relax.op.mean(x, axis=[-1], keepdims=True))))
    var = bb.emit(relax.op.mean(bb.emit(relax.op.power(d, const(2.0, "float32"))), axis=[-1], keepdims=True))
    y = bb.emit(relax.op.divide(d, bb.emit(relax.op.sqrt(bb.emit(relax.op.add(var, const(1e-5, "float32")))))))
    out = relax.op.add(bb.emit(relax.op.multiply(y, const(GAMMA, "float32"))), const(BETA, "float32"))
    return relax.op.add(bb.emit(out), d) if extra_use else out


def test_layer_norm_arithmetic_becomes_one_kernel_call() -> None:
    out = layer_norm_pass(lanes=8)(build(decomposed, x=X))
    assert calls(out) == ["layer_norm_2_5_16_eps1e-05"]
    args = out["main"].body.blocks[0].bindings[0].value.args[1]
    np.testing.assert_array_equal(constant_array(args[1]), GAMMA)  # gamma and beta go to the kernel
    np.testing.assert_array_equal(constant_array(args[2]), BETA)


def test_deviation_read_elsewhere_keeps_the_arithmetic() -> None:
    before = build(lambda bb, x: decomposed(bb, x, extra_use=True), x=X)
    tvm.ir.assert_structural_equal(layer_norm_pass(lanes=8)(before), before)


def test_layer_norm_op_becomes_the_same_kernel() -> None:
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        return relax.op.nn.layer_norm(x, const(GAMMA, "float32"), const(BETA, "float32"), axes=[-1], epsilon=1e-5)

    assert calls(layer_norm_pass(lanes=16)(build(body, x=X))) == ["layer_norm_2_5_16_eps1e-05"]
