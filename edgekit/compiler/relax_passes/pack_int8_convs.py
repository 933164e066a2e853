"""Every eligible integer conv (NHWC uint8 x HWIO int8 constant -> int32, from qdq.lower_qdq) becomes one packed-
weight TE kernel, conv2d_nhwc_u8s8, which schedules/int8_conv.py tensorizes.

Weights are packed once at build time as [CO/16, KH, KW, CI/4, 16, 4]: one 64-byte load is the `vpdpbusd`
operand for 16 output channels x 4 input channels; activations are NHWC so 4 input channels are one int32.

ARM's dot products are same-signed (sdot s8 x s8, udot u8 x u8; usdot needs +i8mm, which Cortex-A76/A78 lack), so on
+dotprod targets the kernel is conv2d_nhwc_s8s8: the padding stage also flips the activations' top bit
(x - 128 as int8, exact) and the sum gets 128·Σw back per output channel, a constant folded at build time:
    Σ x·w = Σ (x - 128)·w + 128·Σ w
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from edgekit.compiler.relax_passes import binding_of, constant_array

CONV_BLOCK = "conv2d_nhwc_u8s8"
# the same conv whose weights all fit 7 bits (|w| <= 64, e.g. quantized with reduce_range): a pair of u8 x s7
# products fits int16 (2 x 255 x 64 < 2^15), so AVX2's vpmaddubsw is exact on it (see schedules/int8_conv.py)
CONV_BLOCK_7BIT = "conv2d_nhwc_u8s7"
CONV_BLOCK_S8S8 = "conv2d_nhwc_s8s8"  # activations shifted to int8 (ARM sdot), see the module docstring
CONV_BLOCKS = (CONV_BLOCK, CONV_BLOCK_7BIT, CONV_BLOCK_S8S8)
PAD_BLOCK = "pad_u8"
LANES_I32 = 16  # int32 lanes of one zmm = output channels per vpdpbusd
DOT_K = 4  # input channels summed per lane by vpdpbusd


# ----------------------------------------------------------------------------------------------------------


def pack_weights(w_hwio: np.ndarray) -> np.ndarray:
    """HWIO int8 -> [CO/16, KH, KW, CI/4, 16, 4] (input channels zero-padded to a multiple of 4)."""
    kh, kw, ci, co = w_hwio.shape
    ci_p = -(-ci // DOT_K) * DOT_K
    w = np.zeros((kh, kw, ci_p, co), np.int8)
    w[:, :, :ci] = w_hwio
    w = w.reshape(kh, kw, ci_p // DOT_K, DOT_K, co // LANES_I32, LANES_I32)
    return np.ascontiguousarray(w.transpose(4, 0, 1, 2, 5, 3))


def conv2d_u8s8_te(
    x: te.Tensor,
    wp: te.Tensor,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int],
    pad_value: int,
    block_name: str = CONV_BLOCK,
) -> te.Tensor:
    """NHWC uint8 x packed int8 -> NHWC int32. Spatial padding uses pad_value (the input zero point);
    the channel padding to a multiple of 4 meets zero weights, so its value does not matter."""
    n, h, w, c = (int(d) for d in x.shape)
    cob, kh, kw, cib = (int(d) for d in wp.shape[:4])
    pt, pl, pb, pr = pads
    (sh, sw), (dh, dw) = strides, dilation
    hp, wpad, cp = h + pt + pb, w + pl + pr, cib * DOT_K
    if (hp, wpad, cp) != (h, w, c):
        fill = tirx.const(pad_value, "uint8")

        def padded(b, i, j, k):
            inside = tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl, k < c)
            return tirx.if_then_else(inside, x[b, i - pt, j - pl, tirx.min(k, c - 1)], fill)

        x = te.compute((n, hp, wpad, cp), padded, name=PAD_BLOCK)
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wpad - (kw - 1) * dw - 1) // sw + 1
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc, rk = te.reduce_axis((0, cib), "rc"), te.reduce_axis((0, DOT_K), "rk")
    return te.compute(
        (n, oh, ow, cob * LANES_I32),
        lambda b, i, j, o: te.sum(
            x[b, i * sh + rh * dh, j * sw + rw * dw, rc * DOT_K + rk].astype("int32")
            * wp[o // LANES_I32, rh, rw, rc, o % LANES_I32, rk].astype("int32"),
            axis=[rh, rw, rc, rk],
        ),
        name=block_name,
    )


def conv2d_s8s8_te(
    x: te.Tensor,
    wp: te.Tensor,
    correction: te.Tensor,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int],
    pad_value: int,
) -> te.Tensor:
    """conv2d_u8s8_te for same-signed dot products: the padding stage (always present here) writes x - 128 as
    int8, the reduction is s8 x s8, and `correction` [CO] int32 = 128·Σw adds the shift back."""
    n, h, w, c = (int(d) for d in x.shape)
    cob, kh, kw, cib = (int(d) for d in wp.shape[:4])
    pt, pl, pb, pr = pads

    def shifted(b, i, j, k):
        inside = tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl, k < c)
        value = tirx.if_then_else(inside, x[b, i - pt, j - pl, tirx.min(k, c - 1)], tirx.const(pad_value, "uint8"))
        return (value ^ tirx.const(128, "uint8")).astype("int8")  # u8 -> u8 - 128 in two's complement

    xs = te.compute((n, h + pt + pb, w + pl + pr, cib * DOT_K), shifted, name=PAD_BLOCK)
    summed = conv2d_u8s8_te(xs, wp, strides, (0, 0, 0, 0), dilation, 0, CONV_BLOCK_S8S8)
    return te.compute(summed.shape, lambda b, i, j, o: summed[b, i, j, o] + correction[o], name="shift_correction")


def _const(expr: relax.Expr) -> np.ndarray | None:
    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    return constant_array(expr)


@relax.expr_functor.mutator
class PackInt8Conv(relax.PyExprMutator):
    """conv2d(NHWC uint8 [through permute(pad(permute(x)))], HWIO int8 const, out int32) -> call_tir(conv2d_u8s8).

    pad has no ConvertLayout rule, so the zero-point pad of lower_qdq stays NCHW between two transposes:
    it is folded into the kernel here (and the transposes die)."""

    def __init__(self, mod: tvm.IRModule, same_signed_dot: bool = False) -> None:
        super().__init__(mod)
        self.builder = relax.BlockBuilder(mod)
        self.same_signed_dot = same_signed_dot  # ARM +dotprod: the s8 x s8 kernel (sdot)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
            return call
        new = self._rewrite(call)
        return call if new is None else new

    def _rewrite(self, call: relax.Call) -> relax.Expr | None:
        a = call.attrs
        w = _const(call.args[1])
        if (a.data_layout, a.kernel_layout, a.out_layout, a.out_dtype, int(a.groups)) != (
            "NHWC",
            "HWIO",
            "NHWC",
            "int32",
            1,
        ):
            return None
        if w is None or w.dtype != np.int8 or w.shape[3] % LANES_I32 or str(call.args[0].ty.dtype) != "uint8":
            return None
        x, pads, pad_value = self._unpad(call.args[0], [int(v) for v in a.padding])
        if pads is None:
            return None
        strides, dilation = tuple(int(v) for v in a.strides), tuple(int(v) for v in a.dilation)
        wp = pack_weights(w)
        if self.same_signed_dot:
            correction = 128 * w.astype(np.int32).sum(axis=(0, 1, 2))
            return self.builder.call_te(
                conv2d_s8s8_te,
                x,
                relax.const(wp, "int8"),
                relax.const(correction, "int32"),
                strides,
                pads,
                dilation,
                pad_value,
                primfunc_name_hint="conv2d_s8s8",
            )
        # call_te: placeholders take the Relax (int64) shapes, as legalized PrimFuncs do (FuseTIR needs them equal);
        # add_func reuses a structurally equal PrimFunc, so repeated layer shapes share one kernel
        block = CONV_BLOCK_7BIT if int(np.abs(w.astype(np.int32)).max(initial=0)) <= 64 else CONV_BLOCK
        return self.builder.call_te(
            conv2d_u8s8_te,
            x,
            relax.const(wp, "int8"),
            strides,
            pads,
            dilation,
            pad_value,
            block,
            primfunc_name_hint="conv2d_u8s8",
        )

    def _unpad(self, x: relax.Expr, conv_pads: list[int]) -> tuple[relax.Expr, tuple[int, ...] | None, int]:
        """(NHWC input, (top, left, bottom, right), pad value): absorbs permute([0,2,3,1], pad(y)) and the
        NHWC->NCHW permute before that pad."""
        if any(conv_pads):
            return x, tuple(conv_pads), 0  # the conv's own padding is zeros
        perm = binding_of(self, x, "relax.permute_dims")
        pad = binding_of(self, perm.args[0], "relax.nn.pad") if perm is not None else None
        if pad is None or [int(v) for v in perm.attrs.axes] != [0, 2, 3, 1] or pad.attrs.pad_mode != "constant":
            return x, (0, 0, 0, 0), 0
        w = [int(v) for v in pad.attrs.pad_width]  # NCHW: (before, after) per axis
        if any(w[:4]):
            return x, None, 0
        value = float(pad.attrs.pad_value)
        inner = binding_of(self, pad.args[0], "relax.permute_dims")
        if inner is not None and [int(v) for v in inner.attrs.axes] == [0, 3, 1, 2]:
            y = inner.args[0]
        else:
            y = self.builder.normalize(relax.op.permute_dims(pad.args[0], [0, 2, 3, 1]))
        return y, (w[4], w[6], w[5], w[7]), int(value)


def pack_int8_convs(same_signed_dot: bool = False) -> tvm.transform.Pass:
    """same_signed_dot: the target's dot product is s8 x s8 (ARM +dotprod), so convs become conv2d_nhwc_s8s8."""

    @tvm.transform.module_pass(opt_level=0, name="PackInt8Conv")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mutator = PackInt8Conv(mod, same_signed_dot)
        funcs = {gv: mutator.visit_expr(f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
        out = mutator.builder.get()
        for gv, f in funcs.items():
            out[gv] = f
        return relax.transform.DeadCodeElimination()(out)

    return _pass
