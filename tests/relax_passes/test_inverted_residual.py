"""InvertedResidualFusion: expand 1x1 -> ReLU6 -> depthwise 3x3 -> ReLU6 -> project 1x1 (+ x) -> one mbconv call.

The Expected call is built with the kernel module's own builders (mbconv_func, and pack_weights, the kernel's
weight layout, tested with the kernel in tests/test_mbconv.py): what is checked is the rewrite's reading of the
graph: the block spec (shapes, stride, clips, residual), which constant goes to which operand, the biases."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from edgekit.compiler.relax_passes import inverted_residual, mutator_pass, sparse
from edgekit.compiler.relax_passes.inverted_residual import InvertedResidualFusion
from edgekit.kernels import mbconv

from .ir import build, const

LANES, ACC_REGS = 8, 12  # AVX2
X = ((1, 8, 8, 16), "float32")
rng = np.random.default_rng(0)
W_E, W_D, W_P = (rng.standard_normal(s).astype("float32") for s in ((1, 1, 16, 32), (3, 3, 1, 32), (1, 1, 32, 16)))
B_E, B_D, B_P = (rng.standard_normal(c).astype("float32") for c in (32, 32, 16))

run = mutator_pass(lambda mod: InvertedResidualFusion(mod, LANES, ACC_REGS, 1), "FuseInvertedResiduals")


def block(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
    """MobileNetV2's stride-1 residual block after ConvertLayout (NHWC / HWIO) and ScalarMinMaxToClip."""

    def conv_bias(y: relax.Expr, w: np.ndarray, b: np.ndarray, groups: int = 1, padding: int = 0) -> relax.Var:
        conv = bb.emit(
            relax.op.nn.conv2d(
                y, const(w, "float32"), padding=padding, groups=groups, data_layout="NHWC", kernel_layout="HWIO"
            )
        )
        return bb.emit(relax.op.add(conv, const(b.reshape(1, 1, 1, -1), "float32")))

    def relu6(y: relax.Expr) -> relax.Var:
        return bb.emit(relax.op.clip(y, relax.prim_value(T.float32(0)), relax.prim_value(T.float32(6))))

    e = relu6(conv_bias(x, W_E, B_E))
    d = relu6(conv_bias(e, W_D, B_D, groups=32, padding=1))
    return relax.op.add(conv_bias(d, W_P, B_P), x)


def test_residual_block_becomes_one_mbconv_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # fusion pays only where the expanded tensor leaves the caches (>= 512 kB); 8x8x32 is lifted over that floor
    monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES", 0)
    spec = mbconv.MBConvSpec(1, 8, 8, 16, 32, 16, stride=1, residual=True, expand_clip=(0.0, 6.0), dw_clip=(0.0, 6.0))
    func = mbconv.mbconv_func(spec, LANES, ACC_REGS, 1).without_attr("global_symbol").with_attr("op_pattern", 8)
    pe, wd, pp = mbconv.pack_weights(spec, W_E, W_D, W_P, LANES, ACC_REGS)
    bb = relax.BlockBuilder()
    gv = bb.add_func(func, "fused_mbconv")
    args = [const(a, str(a.dtype)) for a in (*pe.arrays(), B_E, wd, B_D, *pp.arrays(), B_P)]
    expected = build(lambda bb, x: relax.call_tir(gv, [x, *args], relax.TensorType((1, 8, 8, 16), "float32")), x=X)
    expected[gv] = func

    out = relax.transform.DeadCodeElimination()(run(build(block, x=X)))  # as the pipeline runs it
    tvm.ir.assert_structural_equal(out, expected)


def test_block_below_the_cache_threshold_is_left_alone() -> None:
    before = build(block, x=X)  # 8x8x32 fp32 = 8 kB expanded: the three ops stay
    tvm.ir.assert_structural_equal(run(before), before)


def test_block_pruned_expansion_runs_sparse_inside_the_fused_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES_SPARSE", 0)
    monkeypatch.setattr(sparse, "MIN_DENSE_MACS", 0)  # 8x8 pixels: lifted over the sparse layers' size floor
    pruned = W_E.copy()
    pruned[..., 8:] = 0  # 1x8 blocks: only the first output-channel group of the expansion kept (density 1/4)
    monkeypatch.setattr(sys.modules[__name__], "W_E", pruned)
    spec = mbconv.MBConvSpec(1, 8, 8, 16, 32, 16, stride=1, residual=True)
    pe, wd, pp = mbconv.pack_weights(spec, pruned, W_D, W_P, LANES, ACC_REGS, sparse=(True, False))
    assert pe.kept == 16 and pp.kept is None  # 16 input channels x 1 kept group; the projection stays dense
    func = mbconv.mbconv_func(spec, LANES, ACC_REGS, 1, kept=(pe.kept, None))
    func = func.without_attr("global_symbol").with_attr("op_pattern", 8)
    bb = relax.BlockBuilder()
    gv = bb.add_func(func, "fused_mbconv")
    args = [const(a, str(a.dtype)) for a in (*pe.arrays(), B_E, wd, B_D, *pp.arrays(), B_P)]
    expected = build(lambda bb, x: relax.call_tir(gv, [x, *args], relax.TensorType((1, 8, 8, 16), "float32")), x=X)
    expected[gv] = func

    report: list[dict] = []
    fuse = mutator_pass(lambda mod: InvertedResidualFusion(mod, LANES, ACC_REGS, 1, report), "FuseInvertedResiduals")
    out = relax.transform.DeadCodeElimination()(fuse(build(block, x=X)))
    tvm.ir.assert_structural_equal(out, expected)
    assert [(r["kernel"], r["fused"], r["block_density"]) for r in report] == [("sparse", "mbconv", 0.25)]


def test_a_block_with_a_sparse_expansion_fuses_from_the_lower_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse, "MIN_DENSE_MACS", 0)
    pruned = W_E.copy()
    pruned[..., 8:] = 0
    monkeypatch.setattr(sys.modules[__name__], "W_E", pruned)
    before = build(block, x=X)  # 8 kB expanded: below both floors
    fuse = mutator_pass(lambda mod: InvertedResidualFusion(mod, LANES, ACC_REGS, 1, []), "FuseInvertedResiduals")
    tvm.ir.assert_structural_equal(fuse(before), before)
    monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES_SPARSE", 8 << 10)  # at the sparse floor: fused
    assert "fused_mbconv" in [gv.name_hint for gv in fuse(before).functions]
    dense_only = mutator_pass(lambda mod: InvertedResidualFusion(mod, LANES, ACC_REGS, 1), "FuseInvertedResiduals")
    tvm.ir.assert_structural_equal(dense_only(before), before)  # sparse kernels off: the dense floor applies
