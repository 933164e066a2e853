"""XNOR-popcount kernels (TIR) for binarized conv2d and dense, generated per shape.

Sign convention everywhere: bit 1 = +1 (x >= 0), bit 0 = -1. For K real ±1 products packed in 64-bit
words, dot = K - 2 * popcount(a XOR w); bits past K (channel padding) are 0 in both operands, so their XOR
is 0 and they never count.

Layouts (chosen so the float tensors Relax passes around stay NCHW / [N, K]):
  conv activations  A  [N, CW, H + 2p, W + 2p] uint64   CW = ceil(C / 64), zero words on the border
  conv weights      Wt [O, k, k, CW]           uint64   (bits of W[o, c, kh, kw] along c)
  conv base         B  [O, 4, 4]               int32    K + border correction per (row class, column class)
  conv output          [N, O, Ho, Wo]          int32 (dot) or float32 (dot * alpha[o] + bias[o])
  dense activations    [N, KW]                 uint64   KW = ceil(K / 64)
  dense weights        [NB, KW, OV]            uint64   OV output features per block (last block overlaps)
  dense output         [N, O]                  int32 or float32

Zero padding: the packed border holds 0 bits (= -1), so a tap on the border adds -S[o, kh, kw] where
S = sum over c of the ±1 weights. Only the first/last output row and column see border taps (pad <= 1),
so a 4x4 table per output channel (row class x column class: bit 0 = first, bit 1 = last) restores the
exact fp32-conv-with-zeros result; it is folded into the per-row "base" the epilogue subtracts from.

Scratch buffers are declared with scope "global", not "local": TVM 0.27's LowerTVMBuiltin keeps only
"global" allocations under 1 KiB (STACK_BYTES) on the stack; any "local" one becomes a heap-workspace
alloc/free per loop iteration, and accumulators in heap memory cannot live in registers (measured: the
3x3 256->256 14x14 conv went from 129 to 115 us once its accumulators fit; binary_flat.py 146 -> 107 us).

Vector work: conv vectorizes over output width (contiguous NCHW stores, 1 weight word broadcast against
a row of activation words; stride 2 loads every other word), with OB output channels unrolled in
registers; dense vectorizes over output features. Both parallelize the outermost fused loop
(TVM thread pool, TVM_NUM_THREADS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from edgekit.targets import TargetCaps

WORD = 64
STACK_BYTES = 1024  # scratch buffers must stay below this to be stack (register) allocated
EPILOGUES = ("int32", "float32")


# ----------------------------------------------------------------------------------------------------------
# Target ISA: how many uint64 lanes a vector register holds and how many registers accumulators may take
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Isa:
    name: str
    lanes: int  # uint64 lanes per vector register
    acc_regs: int  # vector registers the accumulator tile may use (leave room for operands)


AVX512 = Isa("avx512_vpopcntdq", 8, 24)
AVX2 = Isa("avx2", 4, 10)  # 16 ymm registers; LLVM's popcount is the pshufb nibble table here
NEON = Isa("neon", 2, 16)  # 32 q registers (24 accumulators spilled); popcount is cnt.16b + pairwise widening adds


def isa_for_target(target: tvm.target.Target) -> Isa:
    """Pick the kernel tiling for a TVM llvm target (dict-form targets, as edgekit's targets/*.toml give)."""
    caps = TargetCaps.from_tvm(target)
    if caps.arch in ("aarch64", "armv7"):
        return NEON
    return AVX512 if caps.has_avx512 else AVX2


def words(k: int) -> int:
    return -(-k // WORD)


# ----------------------------------------------------------------------------------------------------------
# Conv2d
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvSpec:
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int  # square kernels: 1 or 3 (any k works; pad must be 0 or 1)
    stride: int = 1
    pad: int = 0
    epilogue: str = "float32"  # "int32": raw dot; "float32": dot * alpha[o] + bias[o]

    def __post_init__(self) -> None:
        if self.pad not in (0, 1):
            raise ValueError(f"binary conv supports pad 0 or 1, got {self.pad}")
        if self.epilogue not in EPILOGUES:
            raise ValueError(f"epilogue must be one of {EPILOGUES}, got {self.epilogue!r}")
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError("kernel larger than the padded input")

    @property
    def cw(self) -> int:
        return words(self.in_channels)

    @property
    def out_h(self) -> int:
        return (self.height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.width + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def packed_shape(self) -> tuple[int, int, int, int]:
        """[N, CW, H+2p, Wa]: Wa adds zero slack columns so a register tile of up to MAX_TILE output
        columns may read past a narrow row (its extra results are never stored)."""
        slack = (MAX_TILE - 1) * self.stride + self.kernel
        return (self.batch, self.cw, self.height + 2 * self.pad, max(self.width + 2 * self.pad, slack))

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.kernel, self.kernel, self.cw)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_h, self.out_w)

    @property
    def reduction(self) -> int:
        return self.in_channels * self.kernel * self.kernel


def _last_has_border(out: int, size: int, spec: ConvSpec) -> bool:
    """Does the last output row/column read past the input's far edge (into the zero padding)?"""
    return (out - 1) * spec.stride - spec.pad + spec.kernel - 1 >= size


def _border_taps(spec: ConvSpec, code: int, size: int, out: int) -> np.ndarray:
    """Mask over kernel taps (one axis) that fall on padding for a row/column class (bit0 first, bit1 last)."""
    taps = np.arange(spec.kernel)
    bad = np.zeros(spec.kernel, dtype=bool)
    if code & 1:
        bad |= taps - spec.pad < 0
    if code & 2:
        bad |= (out - 1) * spec.stride - spec.pad + taps >= size
    return bad


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool [..., K] -> uint64 [..., ceil(K/64)], LSB-first within a word, tail bits 0."""
    k = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (words(k) * WORD,), dtype=np.uint8)
    padded[..., :k] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8")


def conv_weights(weight: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, np.ndarray]:
    """Float/±1 weights [O, C, k, k] -> (packed Wt [O, k, k, CW] uint64, base table [O, 4, 4] int32).

    Only the sign is kept (w >= 0 -> +1); the magnitude belongs in alpha."""
    o, c, kh, kw = weight.shape
    if (o, c, kh, kw) != (spec.out_channels, spec.in_channels, spec.kernel, spec.kernel):
        raise ValueError(f"weight shape {weight.shape} does not match {spec}")
    positive = np.asarray(weight) >= 0
    packed = pack_bits(positive.transpose(0, 2, 3, 1))
    tap_sum = (2 * positive.astype(np.int64) - 1).sum(axis=1)  # S[o, kh, kw]
    base = np.full((o, 4, 4), spec.reduction, dtype=np.int64)
    for rc in range(4):
        rows = _border_taps(spec, rc, spec.height, spec.out_h)
        for cc in range(4):
            cols = _border_taps(spec, cc, spec.width, spec.out_w)
            on_border = rows[:, None] | cols[None, :]
            base[:, rc, cc] += (tap_sum * on_border).sum(axis=(1, 2))
    return np.ascontiguousarray(packed), base.astype(np.int32)


MAX_TILE = 16  # output columns one register tile covers at most (packed rows carry slack for it)


def _pow2_tile(extent: int, lanes: int, cap: int) -> int:
    """Largest power-of-two multiple of `lanes` that is <= min(extent, cap); `lanes` if extent is smaller.

    Non-power-of-two vector lengths (e.g. 14 x uint64) make LLVM scalarize the accumulators onto the stack."""
    tile = lanes
    while tile * 2 <= min(extent, cap):
        tile *= 2
    return tile


def conv_pack_func(spec: ConvSpec) -> tvm.tirx.PrimFunc:
    """Float NCHW -> packed bits [N, CW, H+2p, Wa] with zero border and zero slack columns.

    Vectorized over input columns: for each of the 64 channels of a word, one vector compare and one
    masked OR of (1 << bit) into a row of words (the channels of NCHW are H*W apart, so a 64-lane gather
    per word would be slower). Column tiles overlap at the right edge instead of being masked."""
    n_, c_, h_, w_ = spec.batch, spec.in_channels, spec.height, spec.width
    cw_, p = spec.cw, spec.pad
    _, _, hp, wa = spec.packed_shape
    xt = _pow2_tile(w_, 8, 32) if w_ >= 8 else w_
    n_xt = -(-w_ // xt)
    right = wa - w_ - p  # zero columns right of the image (border + slack)

    @T.prim_func
    def pack(x: T.Buffer((n_, c_, h_, w_), "float32"), a: T.Buffer((n_, cw_, hp, wa), "uint64")):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_conv2d_pack"})
        for nc in T.parallel(n_ * cw_):
            if p > 0:
                for xx in T.vectorized(wa):
                    a[nc // cw_, nc % cw_, 0, xx] = T.uint64(0)
                    a[nc // cw_, nc % cw_, hp - 1, xx] = T.uint64(0)
            for y in range(h_):
                if p > 0:
                    a[nc // cw_, nc % cw_, y + p, 0] = T.uint64(0)
                for xx in range(right):
                    a[nc // cw_, nc % cw_, y + p, w_ + p + xx] = T.uint64(0)
                for t in range(n_xt):
                    word = T.alloc_buffer((xt,), "uint64", scope="global")
                    for xv in T.vectorized(xt):
                        word[xv] = T.uint64(0)
                    for b in range(T.min(WORD, c_ - (nc % cw_) * WORD)):
                        for xv in T.vectorized(xt):
                            word[xv] = word[xv] | T.Select(
                                x[nc // cw_, (nc % cw_) * WORD + b, y, T.min(t * xt, w_ - xt) + xv] >= T.float32(0),
                                T.shift_left(T.uint64(1), T.Cast("uint64", b)),
                                T.uint64(0),
                            )
                    for xv in T.vectorized(xt):
                        a[nc // cw_, nc % cw_, y + p, T.min(t * xt, w_ - xt) + xv + p] = word[xv]

    return _root_block(pack)


@dataclass(frozen=True)
class ConvTiling:
    ob: int  # output channels per register tile (unrolled)
    wt: int  # output columns per register tile (vector lanes, a power-of-two multiple of the ISA's lanes)


def vector_tile(extent: int, lanes: int) -> int:
    """Output positions one register tile covers along `extent`: one zmm of uint64 on AVX-512, up to four
    vectors on narrower ISAs (shared by the row kernel and binary_flat)."""
    return _pow2_tile(extent, lanes, 8 if lanes >= 8 else 4 * lanes)


def conv_tiling(spec: ConvSpec, isa: Isa) -> ConvTiling:
    wt = vector_tile(spec.out_w, isa.lanes)
    nvec = wt // isa.lanes
    # 8 measured best on Zen 4 (115 vs 124 us at 16); the int64 tile must stay under STACK_BYTES
    ob = max(1, min(spec.out_channels, isa.acc_regs // nvec, 8, (STACK_BYTES - 1) // (wt * 8)))
    return ConvTiling(ob, wt)


def conv_func(spec: ConvSpec, isa: Isa = AVX512) -> tvm.tirx.PrimFunc:
    """Binary conv over packed activations; int32 dot or float dot * alpha + bias, NCHW output.

    Signature: (A, Wt, base, out) for epilogue "int32", (A, Wt, base, alpha, bias, out) for "float32".
    Register tile: OB output channels x WT output columns of one output row; parallel over (n, o-block, row)."""
    tiling = conv_tiling(spec, isa)
    ob, wt = tiling.ob, tiling.wt
    n_, o_, k, s, p = spec.batch, spec.out_channels, spec.kernel, spec.stride, spec.pad
    cw_, ho, wo = spec.cw, spec.out_h, spec.out_w
    n_ob = -(-o_ // ob)
    ragged = wo < wt  # narrower than one vector: compute wt columns (slack reads), store wo of them
    n_wt = 1 if ragged else -(-wo // wt)
    last_w = 0 if ragged else wo - wt  # start of the last (overlapping) column tile
    a_shape, w_shape, out_shape = spec.packed_shape, spec.weight_shape, spec.out_shape
    last_row = 2 if _last_has_border(ho, spec.height, spec) else 0
    last_col = 2 if _last_has_border(wo, spec.width, spec) else 0
    first = 1 if p > 0 else 0
    float_out = spec.epilogue == "float32"
    out_dtype = spec.epilogue

    # Tiles overlap at the far edge (start = min(i * tile, extent - tile)) instead of masking: every vector
    # has a constant power-of-two length and recomputed columns/channels store identical values.
    @T.prim_func
    def conv(
        a: T.Buffer(a_shape, "uint64"),
        wb: T.Buffer(w_shape, "uint64"),
        base: T.Buffer((o_, 4, 4), "int32"),
        alpha: T.Buffer((o_,), "float32"),
        bias: T.Buffer((o_,), "float32"),
        out: T.Buffer(out_shape, out_dtype),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_conv2d"})
        for job in T.parallel(n_ * n_ob * ho):
            n = T.meta_var(job // (n_ob * ho))
            o0 = T.meta_var(T.min((job // ho) % n_ob * ob, o_ - ob))
            h = T.meta_var(job % ho)
            rc = T.meta_var(T.Select(h == 0, first, 0) + T.Select(h == ho - 1, last_row, 0))
            for t in range(n_wt):
                w0 = T.meta_var(T.min(t * wt, last_w))
                acc = T.alloc_buffer((ob, wt), "int64", scope="global")
                for i in T.unroll(ob):
                    for w in T.vectorized(wt):
                        acc[i, w] = T.int64(0)
                for cw in range(cw_):
                    for kh in range(k):
                        for kw in T.unroll(k):
                            for i in T.unroll(ob):
                                for w in T.vectorized(wt):
                                    acc[i, w] = acc[i, w] + T.Cast(
                                        "int64",
                                        T.popcount(a[n, cw, h * s + kh, (w0 + w) * s + kw] ^ wb[o0 + i, kh, kw, cw]),
                                    )
                for i in range(ob):
                    res = T.alloc_buffer((wt,), out_dtype, scope="global")
                    for w in T.vectorized(wt):
                        # base = K + border correction for this row class and the column's class
                        res[w] = T.Cast(
                            out_dtype,
                            T.Select(
                                w0 + w == 0,
                                T.Select(w0 + w == wo - 1, base[o0 + i, rc, first + last_col], base[o0 + i, rc, first]),
                                T.Select(w0 + w == wo - 1, base[o0 + i, rc, last_col], base[o0 + i, rc, 0]),
                            )
                            - T.Cast("int32", acc[i, w]) * 2,
                        ) * (alpha[o0 + i] if float_out else 1) + (bias[o0 + i] if float_out else 0)
                    if ragged:
                        for w in range(wo):
                            out[n, o0 + i, h, w] = res[w]
                    else:
                        for w in T.vectorized(wt):
                            out[n, o0 + i, h, w0 + w] = res[w]

    return _root_block(conv if float_out else _drop_params(conv, ("alpha", "bias")))


def _drop_params(func: tvm.tirx.PrimFunc, names: tuple[str, ...]) -> tvm.tirx.PrimFunc:
    """Remove unused buffer parameters (the int32 epilogue reads no alpha/bias)."""
    keep = [v for v in func.params if v.name not in names]
    return tvm.tirx.PrimFunc(keep, func.body, func.ret_type, func.attrs)


def _root_block(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """Wrap the body in an opaque root sblock: Relax passes (RewriteDataflowReshape's HasReshapePattern)
    assume every call_tir callee has one; the TIR pipeline strips it again."""
    from tvm import s_tir

    block = s_tir.SBlock([], [], [], "root", func.body)
    return func.with_body(s_tir.SBlockRealize([], True, block))


# ----------------------------------------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseSpec:
    batch: int
    in_features: int
    out_features: int
    epilogue: str = "float32"

    def __post_init__(self) -> None:
        if self.epilogue not in EPILOGUES:
            raise ValueError(f"epilogue must be one of {EPILOGUES}, got {self.epilogue!r}")

    @property
    def kw(self) -> int:
        return words(self.in_features)

    @property
    def ov(self) -> int:
        """Output features per block: 32 uint64 lanes (4 zmm, 16 q registers)."""
        return min(self.out_features, 32)

    @property
    def blocks(self) -> int:
        return -(-self.out_features // self.ov)

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.blocks, self.kw, self.ov)


def dense_weights(weight: np.ndarray, spec: DenseSpec) -> np.ndarray:
    """Float/±1 weights [O, K] -> uint64 [NB, KW, OV]; block b holds features min(b*OV, O-OV) + j."""
    o, k = weight.shape
    if (o, k) != (spec.out_features, spec.in_features):
        raise ValueError(f"weight shape {weight.shape} does not match {spec}")
    packed = pack_bits(np.asarray(weight) >= 0)  # [O, KW]
    starts = np.minimum(np.arange(spec.blocks) * spec.ov, o - spec.ov)
    rows = starts[:, None] + np.arange(spec.ov)[None, :]  # [NB, OV]
    return np.ascontiguousarray(packed[rows].transpose(0, 2, 1))


def dense_pack_func(spec: DenseSpec) -> tvm.tirx.PrimFunc:
    """Float [N, K] -> uint64 [N, KW]: a 64-lane compare turned into one word (vcmpps -> k-mask -> kmov on
    AVX-512); the partial last word is built bit by bit."""
    n_, k_, kw_ = spec.batch, spec.in_features, spec.kw
    full = k_ // WORD
    tail = k_ - full * WORD

    @T.prim_func
    def pack(x: T.Buffer((n_, k_), "float32"), a: T.Buffer((n_, kw_), "uint64")):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_dense_pack"})
        for n in range(n_):
            for j in range(full):
                a[n, j] = T.reinterpret(
                    "uint64", T.Cast("uint1x64", x[n, T.Ramp(j * WORD, 1, WORD)] >= T.Broadcast(T.float32(0), WORD))
                )
            if tail > 0:
                word = T.alloc_buffer((1,), "uint64", scope="global")
                word[0] = T.uint64(0)
                for b in range(tail):
                    word[0] = word[0] | T.Select(
                        x[n, full * WORD + b] >= T.float32(0),
                        T.shift_left(T.uint64(1), T.Cast("uint64", b)),
                        T.uint64(0),
                    )
                a[n, kw_ - 1] = word[0]

    return _root_block(pack)


def dense_func(spec: DenseSpec, isa: Isa = AVX512) -> tvm.tirx.PrimFunc:
    """Binary dense: parallel over blocks of OV output features, vectorized over them; a few batch rows
    share each weight load. Signature: (A, Wb, out) or (A, Wb, alpha, bias, out)."""
    n_, k_, o_, kw_, ov, nb = spec.batch, spec.in_features, spec.out_features, spec.kw, spec.ov, spec.blocks
    nt = max(1, min(n_, isa.acc_regs // max(1, ov // isa.lanes), 4, (STACK_BYTES - 1) // (ov * 8)))
    n_nt = -(-n_ // nt)
    float_out = spec.epilogue == "float32"
    out_dtype = spec.epilogue

    @T.prim_func
    def dense(
        a: T.Buffer((n_, kw_), "uint64"),
        wb: T.Buffer((nb, kw_, ov), "uint64"),
        alpha: T.Buffer((o_,), "float32"),
        bias: T.Buffer((o_,), "float32"),
        out: T.Buffer((n_, o_), out_dtype),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "binary_dense"})
        for blk in T.parallel(nb):
            for r in range(n_nt):
                acc = T.alloc_buffer((nt, ov), "int64", scope="global")
                for i in T.unroll(nt):
                    for j in T.vectorized(ov):
                        acc[i, j] = T.int64(0)
                for kk in range(kw_):
                    for i in T.unroll(nt):
                        for j in T.vectorized(ov):
                            acc[i, j] = acc[i, j] + T.Cast(
                                "int64", T.popcount(a[T.min(r * nt, n_ - nt) + i, kk] ^ wb[blk, kk, j])
                            )
                for i in range(nt):
                    for j in T.vectorized(ov):
                        out[T.min(r * nt, n_ - nt) + i, T.min(blk * ov, o_ - ov) + j] = T.Cast(
                            out_dtype, k_ - T.Cast("int32", acc[i, j]) * 2
                        ) * (alpha[T.min(blk * ov, o_ - ov) + j] if float_out else 1) + (
                            bias[T.min(blk * ov, o_ - ov) + j] if float_out else 0
                        )

    return _root_block(dense if float_out else _drop_params(dense, ("alpha", "bias")))


# ----------------------------------------------------------------------------------------------------------
# numpy references (the fp32 conv / matmul of ±1 values is exact in integers)
# ----------------------------------------------------------------------------------------------------------


def sign_pm1(x: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int64)


def conv_reference(x: np.ndarray, weight: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """int64 conv of sign(x) with sign(weight), zero padding, NCHW."""
    xs = np.pad(sign_pm1(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ws = sign_pm1(weight)
    n, _, hp, wp = xs.shape
    o, _, k, _ = ws.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    for kh in range(k):
        for kw in range(k):
            patch = xs[:, :, kh : kh + stride * (ho - 1) + 1 : stride, kw : kw + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, ws[:, :, kh, kw])
    return out


def dense_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return sign_pm1(x) @ sign_pm1(weight).T
