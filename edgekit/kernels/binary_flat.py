"""Stride-1 binary conv over a flattened output plane: no wasted vector lanes on narrow rows.

The row kernel in binary.py tiles each output row with power-of-two vectors; a 14-wide row takes two
overlapping 8-lane tiles, so 16 of every 14 columns are computed (14 % waste; 7- and 28-wide rows alike).
Here the output plane is one flat axis q = h * Wo + w tiled by 8 lanes, which wastes at most one tile per
plane. That needs the activation words of consecutive q to be consecutive in memory for every tap, which
the packing provides for stride 1 by writing one column-shifted copy of the packed image per kernel column:

  shifted  S  [N, k, CW, L] uint64   S[n, kw, c, y * Wo + w] = packed padded image [n, c, y, w + kw]
  so tap (kh, kw) of output q reads S[n, kw, c, q + kh * Wo]: a plain vector load.

AVX2 has no vector popcount; LLVM's ctpop is the nibble table (and, shift, and, two vpshufb, add, vpsadbw, add:
9 ops per 256 bits with the XOR). Here the nibbles are split once instead: the packing writes each word's low
and high nibbles as two planes (bytes 0-15), the weights come split the same way, so a tap is
XOR, XOR, two vpshufb and two byte adds (6 ops); the byte counts go through vpsadbw into the int64 accumulators
once per input word group (at most 31 taps of 8 per byte: below 256).

Zero padding is corrected as in binary.py, but per lane: each lane knows whether it sits in the first/last
output row/column, and the border correction base[o, row class, col class] is rebuilt from additive terms
(constant, first row, last row, first col, last col, and the four corners) with masked adds. Tiles that touch
neither the first nor the last row skip the row terms.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from edgekit.kernels.binary import (
    AVX512,
    WORD,
    ConvSpec,
    Isa,
    _drop_params,
    _last_has_border,
    _pow2_tile,
    _root_block,
    vector_tile,
)

# coefficient columns of the epilogue table, in this order
TERMS = ("const", "first_row", "last_row", "first_col", "last_col", "fr_fc", "fr_lc", "lr_fc", "lr_lc")
_TERM = {name: i for i, name in enumerate(TERMS)}
NIBBLES = 0x0F0F0F0F0F0F0F0F
POPCOUNT_LO = 0x0302020102010100  # popcount of 0..7, one per byte: vpshufb's table, its low half
POPCOUNT_HI = 0x0403030203020201  # 8..15


def splits_nibbles(isa: Isa) -> bool:
    """AVX2 (no vpopcntq): the kernel looks nibbles up with vpshufb, from pre-split activations and weights."""
    return isa.name == "avx2"


def kernel_weights(bits: np.ndarray, isa: Isa) -> np.ndarray:
    """binary.conv_weights' bits [O, k, k, CW] as conv_func takes them: [2, O, k, k, CW] (low, high nibbles)
    where splits_nibbles(isa)."""
    if not splits_nibbles(isa):
        return bits
    return np.ascontiguousarray(np.stack([bits & np.uint64(NIBBLES), (bits >> np.uint64(4)) & np.uint64(NIBBLES)]))


def applies(spec: ConvSpec, lanes: int) -> bool:
    """Use the flat kernel where the row kernel would waste > 5 % of its lanes. Needs stride 1, at least two output
    rows and columns (a lane is never both first and last row) and a plane of at least one tile."""
    plane = spec.out_h * spec.out_w
    wt = flat_tile(spec, lanes)
    if spec.stride != 1 or spec.out_h < 2 or spec.out_w < 2 or plane < wt:
        return False
    flat_lanes = -(-plane // wt) * wt
    row_wt = vector_tile(spec.out_w, lanes)  # the row kernel's tile (binary.conv_tiling)
    row_lanes = spec.out_h * max(1, -(-spec.out_w // row_wt)) * row_wt
    return row_lanes > 1.05 * flat_lanes


def flat_tile(spec: ConvSpec, lanes: int) -> int:
    return vector_tile(spec.out_h * spec.out_w, lanes)


def shifted_shape(spec: ConvSpec, isa: Isa = AVX512) -> tuple[int, ...]:
    """[N, k, CW, L], or [N, k, CW, 2, L] (low, high nibble planes) where splits_nibbles(isa)."""
    hp = spec.height + 2 * spec.pad
    # tiles start at q0 <= Ho * Wo - WT (planes smaller than a tile use the row kernel), so the last tap
    # reads up to (Ho - 1 + k - 1) * Wo + Wo - 1 = Hp * Wo - 1
    return (spec.batch, spec.kernel, spec.cw, *((2,) if splits_nibbles(isa) else ()), hp * spec.out_w)


def epilogue_terms(base: np.ndarray) -> np.ndarray:
    """base [O, 4, 4] (row class x col class; bit 0 first, bit 1 last) -> additive terms [O, 9] (TERMS order)."""
    b = base.astype(np.int64)
    c = b[:, 0, 0]
    fr, lr, fc, lc = b[:, 1, 0] - c, b[:, 2, 0] - c, b[:, 0, 1] - c, b[:, 0, 2] - c
    corners = [
        b[:, r, k] - c - (fr if r == 1 else lr) - (fc if k == 1 else lc) for r, k in ((1, 1), (1, 2), (2, 1), (2, 2))
    ]
    return np.stack([c, fr, lr, fc, lc, *corners], axis=1).astype(np.int32)


def shifted_pack_func(spec: ConvSpec, isa: Isa = AVX512) -> tvm.tirx.PrimFunc:
    """Float NCHW -> S [N, k, CW, Hp * Wo]: parallel over (n, word, padded row); each job packs one row of
    64 channels into words (vector compare + masked OR per channel, as binary.conv_pack_func) and stores
    the k column-shifted copies (as nibble planes where splits_nibbles(isa))."""
    n_, c_, h_, w_ = spec.batch, spec.in_channels, spec.height, spec.width
    cw_, p, k, wo = spec.cw, spec.pad, spec.kernel, spec.out_w
    hp, wp = h_ + 2 * p, w_ + 2 * p
    nibbles = splits_nibbles(isa)
    s_shape = shifted_shape(spec, isa)
    xt = _pow2_tile(w_, 8, 32) if w_ >= 8 else w_
    n_xt = -(-w_ // xt)

    @T.prim_func
    def pack(x: T.Buffer((n_, c_, h_, w_), "float32"), s: T.Buffer(s_shape, "uint64")):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_conv2d_pack"})
        for job in T.parallel(n_ * cw_ * hp):
            n = T.meta_var(job // (cw_ * hp))
            cw = T.meta_var(job // hp % cw_)
            y = T.meta_var(job % hp)
            row = T.alloc_buffer((wp,), "uint64", scope="global")
            for xx in range(wp):
                row[xx] = T.uint64(0)
            if p <= y and y < h_ + p:
                for t in range(n_xt):
                    word = T.alloc_buffer((xt,), "uint64", scope="global")
                    for xv in T.vectorized(xt):
                        word[xv] = T.uint64(0)
                    for b in range(T.min(WORD, c_ - cw * WORD)):
                        for xv in T.vectorized(xt):
                            word[xv] = word[xv] | T.Select(
                                x[n, cw * WORD + b, y - p, T.min(t * xt, w_ - xt) + xv] >= T.float32(0),
                                T.shift_left(T.uint64(1), T.Cast("uint64", b)),
                                T.uint64(0),
                            )
                    for xv in range(xt):
                        row[T.min(t * xt, w_ - xt) + xv + p] = word[xv]
            for kw in range(k):
                for w in range(wo):
                    if nibbles:
                        s[n, kw, cw, 0, y * wo + w] = row[w + kw] & T.uint64(NIBBLES)
                        s[n, kw, cw, 1, y * wo + w] = T.shift_right(row[w + kw], T.uint64(4)) & T.uint64(NIBBLES)
                    else:
                        s[n, kw, cw, y * wo + w] = row[w + kw]

    return _root_block(pack)


def _nibble_taps(k: int, wo: int, ob: int, ob_lo: int, wt: int, nv: int, flush_rows: int):
    """The AVX2 tap loop of conv_func (a TVMScript macro): vpshufb lookups of pre-split nibbles into byte counters."""
    lut = T.reinterpret(  # popcounts of 0..15, per 128-bit lane: words [lo, hi, lo, hi]
        T.Broadcast(T.uint64(POPCOUNT_LO), 4)
        + (T.Ramp(T.uint64(0), T.uint64(1), 4) & T.Broadcast(T.uint64(1), 4))
        * T.Broadcast(T.uint64(POPCOUNT_HI - POPCOUNT_LO), 4),
        dtype="uint8x32",
    )

    @T.macro
    def nibble_taps(s, wb, n, o0, q0, cw, kh_first, lo, hi):
        """flush_rows kernel rows of taps into byte counters (vpshufb lookups), then vpsadbw them into lo / hi."""
        counts = T.alloc_buffer((ob, wt * 8), "uint8", scope="global")
        for i in T.unroll(ob):
            for b in T.vectorized(wt * 8):
                counts[i, b] = T.uint8(0)
        for kh in range(kh_first, kh_first + flush_rows):
            for kw in T.unroll(k):
                for v in T.unroll(nv):
                    a_lo = T.meta_var(s.vload([n, kw, cw, 0, q0 + kh * wo + v * 4], "uint64x4"))
                    a_hi = T.meta_var(s.vload([n, kw, cw, 1, q0 + kh * wo + v * 4], "uint64x4"))
                    for i in T.unroll(ob):
                        x_lo = T.meta_var(
                            T.reinterpret(a_lo ^ T.Broadcast(wb[0, o0 + i, kh, kw, cw], 4), dtype="uint8x32")
                        )
                        x_hi = T.meta_var(
                            T.reinterpret(a_hi ^ T.Broadcast(wb[1, o0 + i, kh, kw, cw], 4), dtype="uint8x32")
                        )
                        counts[i, T.Ramp(v * 32, 1, 32)] = counts[i, T.Ramp(v * 32, 1, 32)] + (
                            T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"), lut, x_lo, dtype="uint8x32"
                            )
                            + T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"), lut, x_hi, dtype="uint8x32"
                            )
                        )
        for i in T.unroll(ob):
            for v in T.unroll(nv):
                total = T.meta_var(
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.psad.bw"),
                        counts[i, T.Ramp(v * 32, 1, 32)],
                        T.Broadcast(T.uint8(0), 32),
                        dtype="int64x4",
                    )
                )
                if i < ob_lo:
                    lo[i, T.Ramp(v * 4, 1, 4)] = lo[i, T.Ramp(v * 4, 1, 4)] + total
                else:
                    hi[i - ob_lo, T.Ramp(v * 4, 1, 4)] = hi[i - ob_lo, T.Ramp(v * 4, 1, 4)] + total

    return nibble_taps


def conv_func(spec: ConvSpec, isa: Isa = AVX512) -> tvm.tirx.PrimFunc:
    """Binary conv (stride 1) over S; (S, Wt [O, k, k, CW], terms [O, 9], alpha, bias, out) for the float
    epilogue, (S, Wt, terms, out) for int32. Register tile: OB output channels x WT flat output positions;
    parallel over (n, o-block, tile) with the tiles of one o-block adjacent (its weights stay in L1)."""
    nibbles = splits_nibbles(isa)
    wt = flat_tile(spec, isa.lanes)
    nv = wt // isa.lanes  # vectors per tile row
    # AVX2's nibble tile (2 channels x 4 ymm here) timed like 3 x 2 and 4 x 2 on Zen 4, within this VM's noise
    ob = max(1, min(spec.out_channels, isa.acc_regs // nv, 16))  # 16 and 8 measured alike
    ob_lo = (ob + 1) // 2
    ob_hi = max(1, ob - ob_lo)
    n_, o_, k = spec.batch, spec.out_channels, spec.kernel
    cw_, ho, wo = spec.cw, spec.out_h, spec.out_w
    plane = ho * wo
    n_ob, n_t = -(-o_ // ob), -(-plane // wt)
    s_shape, out_shape = shifted_shape(spec, isa), spec.out_shape
    w_shape = (2, *spec.weight_shape) if nibbles else spec.weight_shape
    # byte counters take at most 8 per tap (two nibbles): flush them to int64 after every input word when its
    # k*k taps fit a byte, else after every kernel row
    flush_rows = k if 8 * k * k <= 255 else 1
    first = spec.pad > 0
    last_row = _last_has_border(ho, spec.height, spec)
    last_col = _last_has_border(wo, spec.width, spec)
    float_out = spec.epilogue == "float32"
    out_dtype = spec.epilogue

    def result(terms, alpha, bias, o, q, acc, rows: bool):
        """(K + border correction of position q, channel o) - 2 * popcounts, then the float epilogue. The border
        correction (TERMS order) is a sum of masked adds; `rows` says the tile may hold first/last-row lanes."""
        row, col = q // wo, q % wo
        value = terms[o, _TERM["const"]]
        if first:
            value = value + T.Select(col == 0, terms[o, _TERM["first_col"]], 0)
        if last_col:
            value = value + T.Select(col == wo - 1, terms[o, _TERM["last_col"]], 0)
        for flag, on, edge, at_first_col, at_last_col in (
            (first, row == 0, "first_row", "fr_fc", "fr_lc"),
            (last_row, row == ho - 1, "last_row", "lr_fc", "lr_lc"),
        ):
            if rows and flag:
                corner = T.Select(
                    col == 0, terms[o, _TERM[at_first_col]], T.Select(col == wo - 1, terms[o, _TERM[at_last_col]], 0)
                )
                value = value + T.Select(on, terms[o, _TERM[edge]] + corner, 0)
        dot = T.Cast(out_dtype, value - T.Cast("int32", acc) * 2)
        return dot * alpha[o] + bias[o] if float_out else dot

    @T.macro
    def store(flat, terms, alpha, bias, n, o0, q0, lo, hi, rows: bool):
        """Both accumulator halves -> out, through result(); `rows`: the tile may hold first/last-row lanes."""
        for i in range(ob_lo):
            for w in T.vectorized(wt):
                flat[n, o0 + i, q0 + w] = result(terms, alpha, bias, o0 + i, q0 + w, lo[i, w], rows)
        for i in range(ob - ob_lo):
            for w in T.vectorized(wt):
                flat[n, o0 + ob_lo + i, q0 + w] = result(terms, alpha, bias, o0 + ob_lo + i, q0 + w, hi[i, w], rows)

    nibble_taps = _nibble_taps(k, wo, ob, ob_lo, wt, nv, flush_rows)

    @T.prim_func
    def conv(
        s: T.Buffer(s_shape, "uint64"),
        wb: T.Buffer(w_shape, "uint64"),
        terms: T.Buffer((o_, 9), "int32"),
        alpha: T.Buffer((o_,), "float32"),
        bias: T.Buffer((o_,), "float32"),
        out: T.Buffer(out_shape, out_dtype),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_conv2d"})
        flat = T.decl_buffer((n_, o_, plane), out_dtype, data=out.data)
        for job in T.parallel(n_ * n_ob * n_t):
            n = T.meta_var(job // (n_ob * n_t))
            o0 = T.meta_var(T.min(job // n_t % n_ob * ob, o_ - ob))
            q0 = T.meta_var(T.min(job % n_t * wt, plane - wt))
            # two accumulator halves: one 16 x 8 int64 tile is exactly 1 KiB, and TVM stack-allocates (and LLVM
            # keeps in registers) only buffers under 1 KiB; a larger one is a heap alloc/free per job (binary.py)
            lo = T.alloc_buffer((ob_lo, wt), "int64", scope="global")
            hi = T.alloc_buffer((ob_hi, wt), "int64", scope="global")
            for i in T.unroll(ob_lo):
                for w in T.vectorized(wt):
                    lo[i, w] = T.int64(0)
            for i in T.unroll(ob - ob_lo):
                for w in T.vectorized(wt):
                    hi[i, w] = T.int64(0)
            if nibbles:
                for cw in range(cw_):
                    for kh0 in range(k // flush_rows):
                        nibble_taps(s, wb, n, o0, q0, cw, kh0 * flush_rows, lo, hi)
            else:
                for cw in range(cw_):
                    for kh in range(k):
                        for kw in T.unroll(k):
                            for i in T.unroll(ob_lo):
                                for w in T.vectorized(wt):
                                    lo[i, w] = lo[i, w] + T.Cast(
                                        "int64", T.popcount(s[n, kw, cw, q0 + kh * wo + w] ^ wb[o0 + i, kh, kw, cw])
                                    )
                            for i in T.unroll(ob - ob_lo):
                                for w in T.vectorized(wt):
                                    hi[i, w] = hi[i, w] + T.Cast(
                                        "int64",
                                        T.popcount(s[n, kw, cw, q0 + kh * wo + w] ^ wb[o0 + ob_lo + i, kh, kw, cw]),
                                    )
            # the store twice on purpose: a branch per tile lets interior tiles (21 of 25 at 14x14) skip the
            # row-border terms (a select would evaluate them for every tile)
            if q0 < wo or q0 + wt > (ho - 1) * wo:  # the tile holds first- or last-row lanes
                store(flat, terms, alpha, bias, n, o0, q0, lo, hi, True)
            else:
                store(flat, terms, alpha, bias, n, o0, q0, lo, hi, False)

    return _root_block(conv if float_out else _drop_params(conv, ("alpha", "bias")))
