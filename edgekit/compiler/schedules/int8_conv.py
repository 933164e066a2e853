"""uint8 x int8 -> int32 convolution (the packed-weight kernel of relax_passes/pack_int8_convs.py):

conv2d-u8s8-vnni     output row tile x 16 int32 lanes, AVX-512 VNNI `vpdpbusd` over 4 input channels per step
conv2d-u8s7-avx2     the same nest on AVX2 without VNNI, for 7-bit weights: `vpmaddubsw` (u8 x s8 pairs -> s16,
                     exact when |w| <= 64) + `vpmaddwd` by ones (-> s32) + `vpaddd`; tiles of 8 int32 lanes (one ymm)
                     x up to 12 rows, so that the accumulators fit AVX2's 16 registers
conv2d-s8s8-sdot     AArch64 +dotprod (rpi5, Jetson Orin): activations shifted to int8 by the padding stage, four
                     `sdot` (4 int32 lanes x 4 channels each) per 16 lanes, 6-row tiles (24 of the 32 q registers)
conv2d-u8s8-vec      same nest otherwise (full-range weights without VNNI, AArch64 without dotprod): widening vector
                     code
"""

from __future__ import annotations

from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

import edgekit.core.interrupts as interrupts
from edgekit.compiler.relax_passes.pack_int8_convs import (
    CONV_BLOCK_7BIT,
    CONV_BLOCK_S8S8,
    CONV_BLOCKS,
    LANES_I32,
    PAD_BLOCK,
)
from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import (
    PARALLEL_MIN_ELEMS,
    PARALLEL_MIN_MACS,
    block_names,
    block_work,
    blocks,
    extent,
)

MAX_ROW = 14  # output pixels per register tile (accumulators: MAX_ROW zmm)
# AVX2: 12 ymm accumulators (one per row of 8 lanes) + weights, broadcast, product and the ones vector = 16.
# The 16-lane tile of 14 rows needed 28 ymm and spilled: ResNet-18's 3x3 convs ran at ~35 % of vpmaddubsw's peak.
MAX_ROW_AVX2 = 12
LANES_AVX2 = 8
MAX_ROW_NEON = 6  # 16 int32 lanes are 4 q registers: 6 rows = 24 accumulators + 4 weight vectors + the broadcast
# ----------------------------------------------------------------------------------------------------------
# VNNI tensor intrinsic on a register-tile accumulator (scope "global" = stack, see cpu.py) (fixed copy of
# tvm.s_tir.tensor_intrin.x86.VNNI_DOT_16x4_INTRIN: with LLVM 22 the intrinsic takes <64 x i8> operands, the shipped
# one passes <16 x i32> and fails LLVM verification)
# ----------------------------------------------------------------------------------------------------------

VNNI_INTRIN = "edgekit_dot_16x4_u8i8i32_vnni"


def _dot_desc(a_dtype: str, lanes: int = LANES_I32):
    """What every lanes x 4 dot-product intrinsic computes: C[i] += A[k] * B[i, k] in int32 (A uint8 or int8)."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="global"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            a_u8x64,
            B.vload([0, 0], dtype="int8x64"),
            dtype="int32x16",
        )


AVX2_INTRIN = "edgekit_dot_8x4_u8i7i32_avx2"


@T.prim_func(s_tir=True)
def _dot_8x4_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="global"),
) -> None:
    """vpdpbusd's sum on AVX2 for 8 lanes: pmaddubsw(a x4 broadcast, w) adds adjacent u8 x s8 products into int16
    (exact only for |w| <= 64: the rule applies it to 7-bit weights only), pmaddwd by ones adds the two int16 of
    each lane into int32."""
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_u8x32 = T.reinterpret(T.broadcast(a_i32, 8), dtype="uint8x32")
        pairs = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
            a_u8x32,
            B.vload([0, 0], dtype="int8x32"),
            dtype="int16x16",
        )
        C[T.ramp(0, 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16), dtype="int32x8"
        )


SDOT_INTRIN = "edgekit_dot_16x4_s8s8i32_sdot"


@T.prim_func(s_tir=True)
def _dot_16x4_sdot(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    """AArch64 `sdot vd.4s, vn.16b, vm.16b` (lane i += Σ_k n[4i+k]·m[4i+k]) four times: the 4 activation bytes
    broadcast to all lanes, 16 weight bytes (4 output channels x 4 input channels) per instruction."""
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_i32 = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
        a_s8x16 = T.reinterpret(T.broadcast(a_i32, 4), dtype="int8x16")
        for quad in T.unroll(4):
            C[T.ramp(quad * 4, 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([quad * 4], dtype="int32x4"),
                B.vload([quad * 4, 0], dtype="int8x16"),
                a_s8x16,
                dtype="int32x4",
            )


def _register_intrin() -> None:
    if TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is None:
        TensorIntrin.register(VNNI_INTRIN, _dot_desc("uint8"), _dot_16x4_vnni)
    if TensorIntrin.get(AVX2_INTRIN, allow_missing=True) is None:
        TensorIntrin.register(AVX2_INTRIN, _dot_desc("uint8", LANES_AVX2), _dot_8x4_avx2)
    if TensorIntrin.get(SDOT_INTRIN, allow_missing=True) is None:
        TensorIntrin.register(SDOT_INTRIN, _dot_desc("int8"), _dot_16x4_sdot)


class Int8Conv(Rule):
    name = "conv2d-u8s8"
    marks_constant_params = False  # weights are packed by relax_passes/pack_int8_convs

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return bool(block_names(sch) & set(CONV_BLOCKS))

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        block = next(b for b in CONV_BLOCKS if b in block_names(sch))
        if block == CONV_BLOCK_S8S8:  # packed so only on AArch64 +dotprod targets (pipeline.int8_passes)
            _conv_u8s8(sch, block, ctx.threads, SDOT_INTRIN, MAX_ROW_NEON)
            return "conv2d-s8s8-sdot"
        max_row, lanes = (MAX_ROW_NEON if ctx.caps.arch in ("aarch64", "armv7") else MAX_ROW), LANES_I32
        if ctx.caps.has_vnni:
            intrin, name = VNNI_INTRIN, "conv2d-u8s8-vnni"
        elif block == CONV_BLOCK_7BIT and "avx2" in ctx.caps.features:
            intrin, name, max_row, lanes = AVX2_INTRIN, "conv2d-u8s7-avx2", MAX_ROW_AVX2, LANES_AVX2
        else:
            intrin, name = None, "conv2d-u8s8-vec"
        _conv_u8s8(sch, block, ctx.threads, intrin, max_row, lanes)
        return name


def _conv_u8s8(
    sch: Schedule, block: str, threads: int, intrin: str | None, max_row: int = MAX_ROW, lanes: int = LANES_I32
) -> None:
    """(co/16, n, h, w/R) parallel > [16/lanes] > kh, kw, ci/4 > R (unrolled) > [lanes x 4 channels] (a dot-product
    intrinsic). lanes < 16 runs the packed 16-channel weight block in parts, each a register tile of its own."""
    vnni = intrin is not None  # (every intrinsic has the lanes x 4 shape)
    conv = sch.get_sblock(block)
    macs = block_work(sch, conv)
    for blk in blocks(sch):
        if sch.get(blk).name_hint == PAD_BLOCK:
            _pad_stage(sch, blk, threads)
    n, h, w, o, rh, rw, rc, rk = sch.get_loops(conv)
    row = max(d for d in range(1, min(max_row, extent(sch, w)) + 1) if extent(sch, w) % d == 0)
    oo, oi = sch.split(o, [None, LANES_I32])
    wo, wi = sch.split(w, [None, row])
    part, oi = sch.split(oi, [LANES_I32 // lanes, lanes])
    # VNNI: (16 lanes, 4 channels) is the intrinsic's shape; without it, 4 channels outside 16 int32 lanes
    sch.reorder(oo, n, h, wo, part, rh, rw, rc, wi, *((oi, rk) if vnni else (rk, oi)))
    store = sch.cache_write(conv, 0, "global")  # stack, not heap workspace: see cpu.py's _regblock
    _fuse_epilogue(sch, store, block)
    # the epilogue runs over all 16 lanes once both parts are summed: per 8-lane part, LLVM turned the uint8x8
    # stores into a transpose and byte stores down the rows (the 7x7 stem ran at half layer1's MAC rate)
    sch.reverse_compute_at(store, wo, preserve_unit_loops=True)
    par = sch.fuse(oo, n, h)
    if threads > 1 and macs >= PARALLEL_MIN_MACS:
        sch.parallel(par)
    sch.unroll(wi)
    if lanes < LANES_I32:
        sch.unroll(part)  # constant offsets: each part's accumulators are promoted to registers
    *_, s_col = sch.get_loops(store)
    sch.vectorize(s_col)
    if not vnni:  # vectorize before decompose_reduction (after it the update block is no reduction)
        sch.unroll(rk)
        sch.vectorize(oi)
    init = sch.decompose_reduction(conv, rh)
    sch.vectorize(sch.get_loops(init)[-1])
    if vnni:  # tensorize the update block after decompose_reduction: the intrinsic has no init
        _register_intrin()
        sch.tensorize(oi, intrin)


def _fuse_epilogue(sch: Schedule, store, block: str) -> None:
    """Requantize (+ residual dequantize/add/quantize) chain -> one elementwise block -> into the tile store."""
    keep = {block, PAD_BLOCK, sch.get(store).name_hint}
    progress = True
    while progress:  # inline producers first: a multi-input chain cannot be reverse-inlined block by block
        progress = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
        for blk in blocks(sch):
            if sch.get(blk).name_hint in keep | outputs:
                continue
            try:
                sch.compute_inline(blk)
                progress = True
                break
            except Exception:  # noqa: BLE001 - not inlinable (e.g. reads the store twice): leave it
                interrupts.check()
                continue
    while len(consumers := sch.get_consumers(store)) == 1:
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001
            interrupts.check()
            return


def _pad_stage(sch: Schedule, blk, threads: int) -> None:
    """The zero-point padding copy: rows in parallel, channels vectorized."""
    n, h, w, c = sch.get_loops(blk)
    if extent(sch, c) >= 16 and extent(sch, c) % 16 == 0:
        _, ci = sch.split(c, [None, 16])
        sch.vectorize(ci)
    if threads > 1 and block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
        sch.parallel(sch.fuse(n, h))
