"""Winograd F(4x4, 3x3) for stride-1 3x3 NHWC convs: 36 multiplies per 4x4 output tile instead of 144.

A direct fp32 conv cannot beat onnxruntime by much on x86: ORT's own 3x3 convs run at ~91 % of the FMA
peak (see #4's notes). Winograd does 4x fewer multiplies for the 3x3 layers, at the cost of two cheap
transforms and ~1e-6 relative fp32 error. The conv becomes three Relax calls:

    V[e, p, c] = (B^T d_p B)[e]          input transform, one 6x6 tile d_p per 4x4 output tile p  (te)
    M[e, p, k] = sum_c V[e, p, c] U[e, c, k]     36 batched GEMMs; U = G g G^T folded at compile time
    y[n, h, w, k] = (A^T M_p A)[h % 4, w % 4]    output transform, fused with bias / residual / ReLU

Each transform is separable (rows, then columns: B^T d then (B^T d) B) and written as explicit sums over the
nonzero matrix entries (no multiplies by 0 or 1), picked per position by a Select chain that collapses once
the position loops are unrolled (the winograd-input / winograd-output rules in cpu.py). The GEMM is an ordinary
batched matmul and gets the `dense` rule. The matrices are the standard ones for interpolation points 0, +-1, +-2
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015); test_winograd checks them against a direct
convolution.
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import tvm
from tvm import relax, te

TILE = 4  # output tile m: F(m x m, 3 x 3) with alpha = m + 2 = 6
ALPHA = TILE + 2
INPUT_BLOCK = "winograd_input"
INPUT_ROWS_BLOCK = "winograd_input_rows"
OUTPUT_BLOCK = "winograd_output"
OUTPUT_ROWS_BLOCK = "winograd_output_rows"
# Winograd pays where the GEMM has enough tiles (rows) per streamed U (36/9 = 4x the conv's weights): with
# ResNet-18's 14x14x256 convs (16 tiles) the whole model ran 0.68x ORT, without them 0.72-0.77x; its 7x7x512
# ones (4 tiles) would stream 37 MB of U per conv for 4 rows of GEMM.
MIN_TILES = 16
MIN_CHANNELS = 16
GEMM_ROWS = 6  # the dense rule's AVX-512 tile: 6 rows x 64 lanes = 24 accumulator registers
OUT_ELEMWISE_FUSABLE, OPAQUE = 4, 8  # relax's OpPatternKind (kOutEWiseFusable, kOpaque)

B_T = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
G = [
    [F(1, 4), 0, 0],
    [F(-1, 6), F(-1, 6), F(-1, 6)],
    [F(-1, 6), F(1, 6), F(-1, 6)],
    [F(1, 24), F(1, 12), F(1, 6)],
    [F(1, 24), F(-1, 12), F(1, 6)],
    [0, 0, 1],
]
A_T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def transform_weights(hwio: np.ndarray) -> np.ndarray:
    """HWIO 3x3 weights -> U[e = a*6 + b, ci, co] = (G g G^T)[a, b], in float64 then cast back."""
    g = np.asarray(G, dtype=np.float64)
    u = np.einsum("ai,ijck,bj->abck", g, hwio.astype(np.float64), g)
    return u.reshape(ALPHA * ALPHA, *hwio.shape[2:]).astype(hwio.dtype)


def _linear(coefs: list, load, dtype: str) -> tvm.tirx.PrimExpr:
    """sum_i coefs[i] * load(i) over the nonzero coefficients, without multiplies by +-1."""
    total = None
    for i, coef in enumerate(coefs):
        if coef == 0:
            continue
        term = load(i) if abs(coef) == 1 else load(i) * tvm.tirx.const(float(abs(coef)), dtype)
        if total is None:
            total = -term if coef < 0 else term
        else:
            total = total - term if coef < 0 else total + term
    return total


def _select(index: tvm.tirx.PrimExpr, values: list[tvm.tirx.PrimExpr]) -> tvm.tirx.PrimExpr:
    """values[index] as a Select chain; folded to one branch once the index's loop is unrolled."""
    out = values[-1]
    for k in range(len(values) - 2, -1, -1):
        out = tvm.tirx.Select(index == k, values[k], out)
    return out


def tiles(n: int, out_h: int, out_w: int) -> int:
    """Output tiles P of the GEMM (its rows) before padding."""
    return n * -(-out_h // TILE) * -(-out_w // TILE)


def padded_tiles(n: int, out_h: int, out_w: int) -> int:
    """P rounded up to a multiple of GEMM_ROWS, so the matmul's register tile divides it (ResNet-18's 28x28
    layer has 49 tiles: untouched, the dense rule could only tile them 1 row at a time)."""
    return -(-tiles(n, out_h, out_w) // GEMM_ROWS) * GEMM_ROWS


def input_transform(x: te.Tensor, pad_top: int, pad_left: int, out_h: int, out_w: int) -> te.Tensor:
    """x NHWC -> V[36, P', C]: one row per 4x4 output tile (P of them, then zero rows up to P'); the conv's
    zero padding is read as 0 in place. Separable: T = B^T d (INPUT_ROWS_BLOCK), then V = T B, 264 instead of
    484 operations per tile and channel, and small expressions (the one-pass form took LLVM 28 s per layer)."""
    n, h, w, c = (int(d) for d in x.shape)
    th, tw = -(-out_h // TILE), -(-out_w // TILE)

    def rows(a, j, p, ch):  # T[a, j] = sum_i B^T[a, i] d[i, j]
        b, y0, x0 = p // (th * tw), (p // tw) % th * TILE - pad_top, p % tw * TILE - pad_left

        def load(i):
            yy, xx = y0 + i, x0 + j
            inside = tvm.tirx.all(b < n, yy >= 0, yy < h, xx >= 0, xx < w)
            return tvm.tirx.if_then_else(inside, x[b, yy, xx, ch], tvm.tirx.const(0, x.dtype))

        return _select(a, [_linear(B_T[r], load, x.dtype) for r in range(ALPHA)])

    t = te.compute((ALPHA, ALPHA, padded_tiles(n, out_h, out_w), c), rows, name=INPUT_ROWS_BLOCK)
    return te.compute(
        (ALPHA * ALPHA, padded_tiles(n, out_h, out_w), c),
        lambda e, p, ch: _select(
            e % ALPHA, [_linear(B_T[r], lambda j: t[e // ALPHA, j, p, ch], x.dtype) for r in range(ALPHA)]
        ),
        name=INPUT_BLOCK,
    )


def output_transform(m: te.Tensor, n: int, out_h: int, out_w: int) -> te.Tensor:
    """M[36, P', K] -> y NHWC [n, out_h, out_w, K]. Separable like the input: S = A^T M (OUTPUT_ROWS_BLOCK),
    then y = S A, 180 instead of 324 operations per tile and channel."""
    th, tw = -(-out_h // TILE), -(-out_w // TILE)
    s = te.compute(
        (TILE, ALPHA, int(m.shape[1]), int(m.shape[2])),
        lambda r, c, p, k: _select(
            r, [_linear(A_T[row], lambda a: m[a * ALPHA + c, p, k], m.dtype) for row in range(TILE)]
        ),
        name=OUTPUT_ROWS_BLOCK,
    )

    def value(b, y, x, k):
        p = (b * th + y // TILE) * tw + x // TILE
        return _select(x % TILE, [_linear(A_T[col], lambda c: s[y % TILE, c, p, k], m.dtype) for col in range(TILE)])

    return te.compute((n, out_h, out_w, int(m.shape[2])), value, name=OUTPUT_BLOCK)


def applies(call: relax.Call) -> bool:
    """A 3x3, stride-1, undilated, ungrouped NHWC/HWIO fp32 conv with constant weights and enough tiles."""
    if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv2d")) or not isinstance(call.args[1], tvm.ir.expr.Constant):
        return False
    a = call.attrs
    if a.data_layout != "NHWC" or a.kernel_layout != "HWIO" or a.out_layout != "NHWC" or int(a.groups) != 1:
        return False
    if any(int(v) != 1 for v in (*a.strides, *a.dilation)):
        return False
    try:
        kh, kw, ci, co = (int(d) for d in call.args[1].ty.shape)
        n, _, _, _ = (int(d) for d in call.args[0].ty.shape)
        _, oh, ow, _ = (int(d) for d in call.ty.shape)
    except (TypeError, ValueError, AttributeError):
        return False  # symbolic shapes
    if (kh, kw) != (3, 3) or min(ci, co) < MIN_CHANNELS or call.ty.dtype != "float32":
        return False
    return tiles(n, oh, ow) >= MIN_TILES


@relax.expr_functor.mutator
class WinogradConv(relax.PyExprMutator):
    """relax.nn.conv2d -> input transform, batched matmul with transformed weights, output transform."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not applies(call):
            return call
        x, w = call.args
        pad_top, pad_left = int(call.attrs.padding[0]), int(call.attrs.padding[1])
        n, oh, ow, _ = (int(d) for d in call.ty.shape)
        u = relax.const(transform_weights(w.value.numpy()))
        # FuseOps patterns: TE would make both transforms "injective". Then the input transform absorbs the
        # previous conv's bias/ReLU (run 9/4 times per pixel on the overlapping tiles) and the output transform
        # fuses with any injective consumer (a detector's resize + concat of four branches). Opaque input and a
        # conv-like output transform (only elementwise consumers fuse) keep each epilogue in the output transform.
        v = self.builder_.emit(self._call_te(input_transform, INPUT_BLOCK, OPAQUE, x, pad_top, pad_left, oh, ow))
        mm = self.builder_.emit(relax.op.matmul(v, u))
        # returned, not emitted: a var-to-var binding in between would stop FuseOps fusing the epilogue
        return self._call_te(output_transform, OUTPUT_BLOCK, OUT_ELEMWISE_FUSABLE, mm, n, oh, ow)

    def _call_te(self, fte, name: str, op_pattern: int, x: relax.Expr, *args) -> relax.Call:
        """call_tir of the PrimFunc of fte(x, *args), with its FuseOps pattern set (AnnotateTIROpPattern keeps it)."""
        return self.builder_.call_te(fte, x, *args, primfunc_name_hint=name, primfunc_attrs={"op_pattern": op_pattern})
