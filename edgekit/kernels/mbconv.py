"""Fused inverted-residual block (MobileNetV2's "MBConv"): 1x1 expansion -> 3x3 depthwise -> 1x1 projection
in one kernel, so the expanded tensor never reaches memory.

Run as three fused ops, each expansion writes a tensor 4-6x the size of the block's input (MobileNetV2's
112x112x96 is 4.8 MB), which the depthwise conv reads back from L3/DRAM and writes again at the same size for
the projection. On this machine that made the depthwise convs memory-bound: 157 us in the model against 48 us
with warm caches for the 112x112x96 stride-2 layer (see #4's notes). FuseOps never fuses two convs, and
TVM's schedule primitives cannot express a per-thread line buffer without recomputing halo rows, so this is
hand-written TIR (like edgekit/kernels/binary.py).

Per thread: a contiguous band of output rows. For each output row, the expanded input rows it needs that the
previous row did not (1 for stride 1, 2 for stride 2; 3 at the band's first row) are computed into a ring
buffer of three rows (zero columns at both ends = the depthwise padding), the depthwise row goes to a
scratch row, and the projection GEMM reads that and writes the output row (+ bias, + residual). Every
buffer a row touches stays in L1/L2.

Register tiles: R pixels x V channels per GEMM/depthwise step, V = NV vector registers of the target's
lanes. Tiles overlap at the far edge of a row (start = min(t * R, width - R)) instead of being masked; the
recomputed pixels store identical values.

Pruned blocks: either 1x1 conv may come block-sparse (kernels/sparse.py's 1 x BLOCK output-channel blocks,
block-CSR): its GEMM then runs over the kept blocks of each channel group only, with BLOCK-wide tiles.
"""

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from edgekit.kernels import clamp
from edgekit.kernels import sparse as ks
from edgekit.kernels.binary import STACK_BYTES, _root_block

KERNEL = 3  # depthwise kernel size (pad 1); the only one MobileNetV2-style blocks use
ACC_REGS_AVX512 = 24


@dataclass(frozen=True)
class MBConvSpec:
    batch: int
    height: int
    width: int
    in_channels: int
    expand_channels: int  # 0: no expansion conv (MobileNetV2's first block: depthwise -> projection)
    out_channels: int
    stride: int  # depthwise stride, 1 or 2
    residual: bool  # add the block input to the output (stride 1, in == out channels)
    expand_clip: tuple[float, float] = (0.0, 6.0)  # activation after expansion / depthwise (ReLU6)
    dw_clip: tuple[float, float] = (0.0, 6.0)

    def __post_init__(self) -> None:
        if self.stride not in (1, 2):
            raise ValueError(f"depthwise stride {self.stride}: 1 or 2 only")
        if self.residual and (self.stride != 1 or self.in_channels != self.out_channels):
            raise ValueError("a residual needs stride 1 and as many output channels as input channels")

    @property
    def mid_channels(self) -> int:
        return self.expand_channels or self.in_channels

    @property
    def out_h(self) -> int:
        return (self.height - 1) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.width - 1) // self.stride + 1


@dataclass(frozen=True)
class Tile:
    rows: int  # pixels (unrolled)
    nv: int  # vector registers across channels
    lanes: int

    @property
    def vec(self) -> int:
        return self.nv * self.lanes


def pick_tile(width: int, channels: int, lanes: int, acc_regs: int, row_cap: int, max_nv: int = 2) -> Tile:
    """The widest channel vector (up to max_nv registers) dividing `channels`, then as many pixel rows as the
    accumulator budget, the 1 KiB stack limit (see binary.STACK_BYTES) and the row width allow. Measured on
    MobileNetV2's blocks (2 Zen 4 cores): other tiles are within +-3 %, except that the 24-channel
    projections run 5 % faster as one 3 x 8-lane tile (max_nv=3 there; 3-register expansion and depthwise
    tiles were 0-10 % slower)."""
    if channels % lanes:
        lanes = math.gcd(channels, lanes)  # e.g. 24 channels on AVX-512: 8-lane (ymm) vectors
    nv = next(n for n in range(max_nv, 0, -1) if channels % (n * lanes) == 0)
    rows = max(1, min(width, row_cap, acc_regs // nv, (STACK_BYTES - 1) // (4 * nv * lanes)))
    return Tile(rows, nv, lanes)


@dataclass(frozen=True)
class Pointwise:
    """A 1x1 conv's weights as the kernel reads them: `values` [blocks, V], V the GEMM tile's channel vector.
    Dense: every block, channel group cb's K rows at cb * K (`indices` / `indptr` one-element placeholders).
    Sparse: block-CSR as kernels/sparse.py writes it (V = its BLOCK), the kept blocks only."""

    values: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    sparse: bool

    @property
    def kept(self) -> int | None:
        """Kept blocks of a sparse pack (the kernel's buffer sizes); None for a dense one."""
        return len(self.indices) if self.sparse else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.values, self.indices, self.indptr


def mbconv_func(
    spec: MBConvSpec,
    lanes: int = 16,
    acc_regs: int = ACC_REGS_AVX512,
    bands: int = 1,
    tiling: tuple[Tile, Tile, Tile] | None = None,
    kept: tuple[int | None, int | None] = (None, None),
) -> tvm.tirx.PrimFunc:
    """The fused block for NHWC float32. Parameters (x, we, ei, ep, be, wd, bd, wp, pi, pp, bp, out): see
    pack_weights. `bands`: parallel jobs per image (the thread count; each recomputes up to 2 expanded rows at
    its start). `kept`: the kept blocks of a block-sparse expansion / projection (Pointwise.kept), None: dense."""
    n_, h_, w_, ci_, cm_, co_, s = (
        spec.batch,
        spec.height,
        spec.width,
        spec.in_channels,
        spec.mid_channels,
        spec.out_channels,
        spec.stride,
    )
    ho, wo = spec.out_h, spec.out_w
    expand = spec.expand_channels > 0
    sparse_e, sparse_p = (k is not None for k in kept)
    et, dt, pt = tiling or tiles(spec, lanes, acc_regs, (sparse_e, sparse_p))
    bands = max(1, min(bands, ho))
    band = -(-ho // bands)
    elo, ehi = spec.expand_clip
    dlo, dhi = spec.dw_clip
    residual = spec.residual
    wpad = w_ + 2
    we_rows = kept[0] if sparse_e else (cm_ // et.vec if expand else 1) * ci_  # no expansion: a 1-group dummy
    e_csr = ((kept[0],), (cm_ // ks.BLOCK + 1,)) if sparse_e else ((1,), (1,))
    p_csr = ((kept[1],), (co_ // ks.BLOCK + 1,)) if sparse_p else ((1,), (1,))
    wp_rows = kept[1] if sparse_p else co_ * cm_ // pt.vec

    @T.macro
    def gemm_tile(acc, tl, bias, a, a0, a1, px0, k_n, w, idx, ptr, sparse, cb):
        # acc[i, :] = bias + sum_k a[a0, a1, px0 + i, k] * W[k, cb's channels]: one register tile of the 1x1
        # convs; dense W: block cb * k_n + k; sparse: the kept blocks of group cb, at input channel idx[j]
        for i in T.unroll(tl.rows):
            for j in T.unroll(tl.nv):
                for v in T.vectorized(tl.lanes):
                    acc[i, j * tl.lanes + v] = bias[cb * tl.vec + j * tl.lanes + v]
        if sparse:
            for jb in range(ptr[cb], ptr[cb + 1]):
                for i in T.unroll(tl.rows):
                    for v in T.vectorized(tl.lanes):
                        acc[i, v] = acc[i, v] + a[a0, a1, px0 + i, idx[jb]] * w[jb, v]
        else:
            for k in range(k_n):
                for i in T.unroll(tl.rows):
                    for j in T.unroll(tl.nv):
                        for v in T.vectorized(tl.lanes):
                            acc[i, j * tl.lanes + v] = (
                                acc[i, j * tl.lanes + v] + a[a0, a1, px0 + i, k] * w[cb * k_n + k, j * tl.lanes + v]
                            )

    @T.macro
    def expand_row(x, we, ei, ep, be, ring, n, ih, slot):
        # ring[slot, 1 + w, :] = act(x[n, ih, w, :] @ we + be): register tiles of et.rows pixels x et.vec channels
        for cb in range(cm_ // et.vec):
            for t in range(-(-w_ // et.rows)):
                acc = T.alloc_buffer((et.rows, et.vec), "float32", scope="global")
                gemm_tile(acc, et, be, x, n, ih, T.min(t * et.rows, w_ - et.rows), ci_, we, ei, ep, sparse_e, cb)
                for i in T.unroll(et.rows):
                    for j in T.unroll(et.nv):
                        for v in T.vectorized(et.lanes):
                            ring[slot, 1 + T.min(t * et.rows, w_ - et.rows) + i, cb * et.vec + j * et.lanes + v] = (
                                clamp(acc[i, j * et.lanes + v], elo, ehi)
                            )

    @T.macro
    def copy_row(x, ring, n, ih, slot):
        for w in range(w_):
            for c in T.vectorized(cm_):
                ring[slot, 1 + w, c] = x[n, ih, w, c]

    @T.prim_func
    def mbconv(
        x: T.Buffer((n_, h_, w_, ci_), "float32"),
        we: T.Buffer((we_rows, et.vec), "float32"),
        ei: T.Buffer(e_csr[0], "int32"),
        ep: T.Buffer(e_csr[1], "int32"),
        be: T.Buffer((cm_,), "float32"),
        wd: T.Buffer((KERNEL * KERNEL, cm_), "float32"),
        bd: T.Buffer((cm_,), "float32"),
        wp: T.Buffer((wp_rows, pt.vec), "float32"),
        pi: T.Buffer(p_csr[0], "int32"),
        pp: T.Buffer(p_csr[1], "int32"),
        bp: T.Buffer((co_,), "float32"),
        out: T.Buffer((n_, ho, wo, co_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "mbconv"})
        for job in T.parallel(n_ * bands):
            n = T.meta_var(job // bands)
            r0 = T.meta_var(job % bands * band)
            ring = T.alloc_buffer((3, wpad, cm_), "float32", scope="global")
            mid = T.alloc_buffer((1, 1, wo, cm_), "float32", scope="global")  # 4-D like x, for gemm_tile
            for slot in range(3):
                for c in T.vectorized(cm_):
                    ring[slot, 0, c] = T.float32(0)
                    ring[slot, wpad - 1, c] = T.float32(0)
            for r in range(T.min(band, ho - r0)):
                # expanded input rows oh*s - 1 + kh: the band's first row needs all three, later rows only
                # the ones the previous row did not (the ring slot of row ih is ih mod 3)
                for kh in range(KERNEL):
                    if r == 0 or kh >= KERNEL - s:
                        ih = T.meta_var((r0 + r) * s - 1 + kh)
                        if ih < 0 or ih >= h_:
                            for w in range(wpad):
                                for c in T.vectorized(cm_):
                                    ring[(ih + 3) % 3, w, c] = T.float32(0)
                        else:
                            if expand:
                                expand_row(x, we, ei, ep, be, ring, n, ih, ih % 3)
                            else:
                                copy_row(x, ring, n, ih, ih % 3)
                # depthwise row -> mid
                for cb in range(cm_ // dt.vec):
                    for t in range(-(-wo // dt.rows)):
                        dacc = T.alloc_buffer((dt.rows, dt.vec), "float32", scope="global")
                        for i in T.unroll(dt.rows):
                            for j in T.unroll(dt.nv):
                                for v in T.vectorized(dt.lanes):
                                    dacc[i, j * dt.lanes + v] = bd[cb * dt.vec + j * dt.lanes + v]
                        for kh in T.unroll(KERNEL):
                            for kw in T.unroll(KERNEL):
                                for i in T.unroll(dt.rows):
                                    for j in T.unroll(dt.nv):
                                        for v in T.vectorized(dt.lanes):
                                            dacc[i, j * dt.lanes + v] = (
                                                dacc[i, j * dt.lanes + v]
                                                + ring[
                                                    ((r0 + r) * s + 2 + kh) % 3,
                                                    (T.min(t * dt.rows, wo - dt.rows) + i) * s + kw,
                                                    cb * dt.vec + j * dt.lanes + v,
                                                ]
                                                * wd[kh * KERNEL + kw, cb * dt.vec + j * dt.lanes + v]
                                            )
                        for i in T.unroll(dt.rows):
                            for j in T.unroll(dt.nv):
                                for v in T.vectorized(dt.lanes):
                                    mid[0, 0, T.min(t * dt.rows, wo - dt.rows) + i, cb * dt.vec + j * dt.lanes + v] = (
                                        clamp(dacc[i, j * dt.lanes + v], dlo, dhi)
                                    )
                # projection row -> out (+ bias, + residual)
                for cb in range(co_ // pt.vec):
                    for t in range(-(-wo // pt.rows)):
                        pacc = T.alloc_buffer((pt.rows, pt.vec), "float32", scope="global")
                        gemm_tile(
                            pacc, pt, bp, mid, 0, 0, T.min(t * pt.rows, wo - pt.rows), cm_, wp, pi, pp, sparse_p, cb
                        )
                        # the residual branch is outside the vector loops: an `if` inside one scalarizes it
                        if residual:
                            for i in T.unroll(pt.rows):
                                for j in T.unroll(pt.nv):
                                    for v in T.vectorized(pt.lanes):
                                        out[
                                            n,
                                            r0 + r,
                                            T.min(t * pt.rows, wo - pt.rows) + i,
                                            cb * pt.vec + j * pt.lanes + v,
                                        ] = (
                                            pacc[i, j * pt.lanes + v]
                                            + x[
                                                n,
                                                r0 + r,
                                                T.min(t * pt.rows, wo - pt.rows) + i,
                                                cb * pt.vec + j * pt.lanes + v,
                                            ]
                                        )
                        else:
                            for i in T.unroll(pt.rows):
                                for j in T.unroll(pt.nv):
                                    for v in T.vectorized(pt.lanes):
                                        out[
                                            n,
                                            r0 + r,
                                            T.min(t * pt.rows, wo - pt.rows) + i,
                                            cb * pt.vec + j * pt.lanes + v,
                                        ] = pacc[i, j * pt.lanes + v]

    return _root_block(mbconv)


def tiles(
    spec: MBConvSpec, lanes: int = 16, acc_regs: int = ACC_REGS_AVX512, sparse: tuple[bool, bool] = (False, False)
) -> tuple[Tile, Tile, Tile]:
    """(expansion, depthwise, projection) register tiles mbconv_func uses for this spec; a sparse GEMM's tile
    is one BLOCK-wide vector (the width of a kept block)."""
    cm = spec.mid_channels
    return (
        pick_tile(spec.width, cm, ks.BLOCK, acc_regs, 14, max_nv=1)
        if sparse[0]
        else pick_tile(spec.width, cm, lanes, acc_regs, 14),
        pick_tile(spec.out_w, cm, lanes, acc_regs, 4),
        pick_tile(spec.out_w, spec.out_channels, ks.BLOCK, acc_regs, 14, max_nv=1)
        if sparse[1]
        else pick_tile(spec.out_w, spec.out_channels, lanes, acc_regs, 14, max_nv=3),
    )


def pack_weights(
    spec: MBConvSpec,
    w_expand: np.ndarray | None,
    w_dw: np.ndarray,
    w_project: np.ndarray,
    lanes: int = 16,
    acc_regs: int = ACC_REGS_AVX512,
    tiling: tuple[Tile, Tile, Tile] | None = None,
    sparse: tuple[bool, bool] = (False, False),
) -> tuple[Pointwise, np.ndarray, Pointwise]:
    """HWIO weights (1x1xCIxCM, 3x3x1xCM, 1x1xCMxCO) -> the kernel's layouts: the 1x1 convs as Pointwise
    (dense: [CM/V * CI, V], the V lanes of a reduction step contiguous; sparse: the kept 1 x BLOCK blocks),
    wd [9, CM]. No expansion: a zero dense [CI, V] dummy. `sparse`: which of expansion / projection go sparse."""
    et, _, pt = tiling or tiles(spec, lanes, acc_regs, sparse)
    cm, co = spec.mid_channels, spec.out_channels
    w_e = np.zeros((spec.in_channels, et.vec), np.float32) if w_expand is None else w_expand.reshape(-1, cm)
    wd = np.ascontiguousarray(w_dw.reshape(KERNEL * KERNEL, cm), dtype=np.float32)
    return _pointwise(w_e, et.vec, sparse[0]), wd, _pointwise(w_project.reshape(cm, co), pt.vec, sparse[1])


def _pointwise(w: np.ndarray, vec: int, sparse: bool) -> Pointwise:
    """W [K, N] -> Pointwise: dense blocks [N/V * K, V], or the kept blocks of kernels/sparse.py's format."""
    if sparse:
        b = ks.to_block_sparse(w.astype(np.float32))
        return Pointwise(b.values, b.indices, b.indptr, True)
    k, n = w.shape
    dense = np.ascontiguousarray(w.reshape(k, n // vec, vec).transpose(1, 0, 2).reshape(-1, vec), dtype=np.float32)
    unused = np.zeros(1, np.int32)
    return Pointwise(dense, unused, unused, False)


def mbconv_reference(
    spec: MBConvSpec, x: np.ndarray, w_expand, b_expand, w_dw, b_dw, w_project, b_project
) -> np.ndarray:
    """NumPy reference on HWIO weights (the test oracle)."""
    h = x.astype(np.float64)
    if w_expand is not None:
        h = np.clip(h @ w_expand.reshape(spec.in_channels, -1) + b_expand, *spec.expand_clip)
    n, hh, ww, c = h.shape
    p = np.zeros((n, hh + 2, ww + 2, c))
    p[:, 1:-1, 1:-1] = h
    s, ho, wo = spec.stride, spec.out_h, spec.out_w
    d = np.zeros((n, ho, wo, c))
    for kh in range(KERNEL):
        for kw in range(KERNEL):
            d += p[:, kh : kh + s * (ho - 1) + 1 : s, kw : kw + s * (wo - 1) + 1 : s] * w_dw[kh, kw, 0]
    d = np.clip(d + b_dw, *spec.dw_clip)
    y = d @ w_project.reshape(c, -1) + b_project
    if spec.residual:
        y = y + x
    return y.astype(np.float32)
