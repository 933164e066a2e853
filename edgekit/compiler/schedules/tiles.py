"""The register-tiling core shared by the conv, depthwise and dense rules, and its knobs.

Knobs (defaults are the untuned heuristics; edgekit.compiler.tuning.search times other settings per fused PrimFunc):
  vec    output-channel / output-feature lanes of the register tile (divides that axis)
  row    register-tile rows: output pixels along W (conv) or matmul rows M (dense); divides that axis
  red    innermost reduction axis (ci / k) split by this and unrolled (1 = not split)
  par    "outer": parallel over fused (col_o, outer...); "outer+row": also the tile-row loop (more, smaller
         chunks: helps when col_o x outer is smaller than the thread count); "none": single-threaded
  order  "col": col_o outermost (a thread's chunk reuses one weight tile); "outer": outer loops first
Tiles are sized to the target's vector registers (TargetCaps: AVX-512, AVX2, NEON).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import CONST_PARAMS_ATTR, Knobs
from edgekit.compiler.schedules.tir import (
    LANES,
    PARALLEL_MIN_MACS,
    block_work,
    extent,
    inline_elementwise,
    inline_pad,
    largest_divisor,
    other_spatial,
    par_vec,
    pick_lanes,
    reverse_inline_epilogue,
    single_reduction,
    uses_only,
    vectorize_lanes,
)
from edgekit.targets import TargetCaps

MAX_ACC_VECTORS = 24  # accumulator registers a register tile may use (32 zmm: leave room for operands)
KNOB_NAMES = ("vec", "row", "red", "par", "order")

COL_ORDER_MIN_WEIGHT_BYTES = 2 << 20


def tile_dims(sch: Schedule, kind: str) -> dict[str, int]:
    red_block = single_reduction(sch)
    loops = sch.get_loops(red_block)
    macs = block_work(sch, red_block)
    if kind == "dense":
        *batch, i, j, k = loops
        return {
            "row_n": extent(sch, i),
            "col_n": extent(sch, j),
            "red_n": extent(sch, k),
            "macs": macs,
            "outer": len(batch),
        }
    n, h, w, co, kh, kw, ci = loops
    weight_bytes = 4 * extent(sch, co) * extent(sch, kh) * extent(sch, kw) * extent(sch, ci)
    return {
        "row_n": extent(sch, w),
        "col_n": extent(sch, co),
        "red_n": extent(sch, ci),
        "macs": macs,
        "outer": 2,
        "weight_bytes": weight_bytes,
    }


VEC_PREFER = {
    "conv": (32, 48, 64, 16, 24, 8),
    "depthwise": (32, 16, 48, 64, 24, 8),
    "dense": (64, 32, 48, 16, 40, 24, 8),
}

# depthwise: no input reuse across a row tile (every tap is its own load), so short tiles win; the MobileNetV2
# tuning runs picked rows of 2-4 over 8 on 6 of 10 depthwise layers (e.g. 112x112x32: 53 vs 66 us)
ROW_CAP = {"conv": 14, "depthwise": 4, "dense": 8}


def simd(caps: TargetCaps) -> tuple[int, int]:
    """(fp32 lanes per vector register, accumulator registers a tile may use) for the target.
    AVX-512 (and anything not known to be narrower): 16 lanes, 24 of 32 zmm. AVX2-only x86 (the x86_64
    target is x86-64-v3): 8 lanes and 16 ymm registers, so at most 12 accumulators or the tile spills.
    AArch64 NEON: 4 lanes, 32 q registers; ARMv7 NEON: 4 lanes, 16 q registers."""
    if caps.arch == "aarch64":
        return 4, 24  # NEON: 32 q registers. With AVX-512's 16-lane tiles every FMA spilled (ldr/fmla/str)
    if caps.arch == "armv7":
        return 4, 12  # ARMv7 NEON: 16 q registers
    if caps.arch == "x86_64" and not caps.has_avx512:
        return 8, 12
    return LANES, MAX_ACC_VECTORS


def pick_tile(kind: str, dims: dict[str, int], caps: TargetCaps) -> tuple[int, int]:
    lanes, budget = simd(caps)
    cap = ROW_CAP[kind]
    if kind == "dense" and dims["row_n"] == 1:
        # GEMV (a classifier on one image): each output vector is one dependent FMA chain over K, so the tile
        # needs ~8 vectors in flight (FMA latency x pipes) to stream the weights at memory speed. MobileNetV2's
        # 1280 -> 1000 classifier in the model: 83-93 us at 100 lanes, 104-137 at 40, 108-153 at 8.
        widest = [v for v in range(4, 8 * lanes + 1, 4) if dims["col_n"] % v == 0]
        if widest:
            return max(widest), 1
    if (lanes, budget) == (LANES, MAX_ACC_VECTORS):  # the AVX-512 heuristic, as measured (ResNet-18 1.13x ORT)
        vec = pick_lanes(dims["col_n"], prefer=VEC_PREFER[kind])
        row = largest_divisor(dims["row_n"], max(1, min(cap, budget // math.ceil(vec / lanes))))
        if kind == "depthwise" and row == 1 and dims["row_n"] <= 8:
            row = dims["row_n"]  # 7-wide rows: one tile of 7 beats 7 tiles of 1 (MobileNetV2 tuning runs)
        return vec, row
    if kind == "depthwise":
        # no input reuse across the tile (every tap is its own load), so the FMAs-per-load score below does not
        # apply: two registers of lanes, as on AVX-512. MobileNetV2 on AVX2: the tuner replaced the score's
        # 48-lane tiles by 8-24 lanes on every depthwise layer it timed (30-44 % faster)
        vec = pick_lanes(dims["col_n"], prefer=(2 * lanes, lanes, 3 * lanes, 4 * lanes))
        return vec, largest_divisor(dims["row_n"], max(1, min(cap, budget // math.ceil(vec / lanes))))
    # narrower SIMD: the (vec, row) tile that fits the accumulator budget with the most FMAs per load
    # (row*nv FMAs per nv weight loads + row broadcasts); ties go to the preference order
    best, best_score = None, -1.0
    prefer = [v for v in VEC_PREFER[kind] if dims["col_n"] % v == 0] or [pick_lanes(dims["col_n"], VEC_PREFER[kind])]
    for vec in prefer:
        nv = math.ceil(vec / lanes)
        # LLVM loads the tile's nv weight vectors once per step and keeps them for all rows: accumulators +
        # weights + the broadcast must fit the 16 registers, or it spills (48 lanes x 2 rows on AVX2 did)
        registers = budget + 4
        row = largest_divisor(dims["row_n"], max(1, min(cap, budget // nv, (registers - nv - 1) // nv)))
        score = row * nv / (row + nv) if row * nv + nv + 1 <= registers else 0.0
        if score > best_score + 1e-9:
            best, best_score = (vec, row), score
    return best


def default_knobs(kind: str, dims: dict[str, int], threads: int, caps: TargetCaps) -> Knobs:
    vec, row = pick_tile(kind, dims, caps)
    red = 4 if kind != "depthwise" and dims["red_n"] % 4 == 0 and dims["red_n"] > 4 else 1
    par = "outer" if threads > 1 and dims["macs"] >= PARALLEL_MIN_MACS else "none"
    # "col" (weight tile outermost) streams the weights once; "outer" streams them once per output row tile
    # but writes each output line once. Weights over ~2 L2s: "col" (cold-cache tuning of ResNet-18: 2.4 MB
    # layer3 conv 11 % faster, 4.7 MB stride-2 conv 25 %); small weights and big outputs: "outer"
    # (MobileNetV2's 56x56x144 expansion conv, 14 KB of weights: 358 us "col" vs 134 us "outer")
    order = "col" if kind == "conv" and dims.get("weight_bytes", 0) > COL_ORDER_MIN_WEIGHT_BYTES else "outer"
    return {"vec": vec, "row": row, "red": red, "par": par, "order": order}


def knob_space(kind: str, dims: dict[str, int], threads: int, caps: TargetCaps) -> dict[str, list]:
    default = default_knobs(kind, dims, threads, caps)
    col_n, row_n, red_n = dims["col_n"], dims["row_n"], dims["red_n"]
    vecs = sorted(
        {v for v in range(4, 129) if col_n % v == 0 and (v % 4 == 0 or v == col_n or v < LANES)} | {default["vec"]}
    )
    rows = sorted({r for r in range(1, 17) if row_n % r == 0} | {default["row"]})
    reds = (
        [1]
        if kind == "depthwise"
        else sorted({u for u in (1, 2, 4, 8) if red_n % u == 0 and red_n > u} | {1, default["red"]})
    )
    # "none" only for small tasks, where waking the thread pool is the question: for big ones a
    # single-threaded win only means another process held the other core while tuning (machine load)
    pars = (
        ["none"]
        if threads <= 1
        else ["outer", "outer+row"] + (["none"] if dims["macs"] < 16 * PARALLEL_MIN_MACS else [])
    )
    orders = ["col", "outer"] if dims["outer"] else ["col"]
    return {"vec": vecs, "row": rows, "red": reds, "par": pars, "order": orders}


def resolve_knobs(kind: str, dims: dict[str, int], threads: int, knobs: Knobs | None, caps: TargetCaps) -> Knobs:
    out = default_knobs(kind, dims, threads, caps)
    if knobs:
        unknown = set(knobs) - set(KNOB_NAMES)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}")
        out.update(knobs)
    if threads <= 1:
        out["par"] = "none"  # a database tuned for more threads, compiled for one (or a small model)
    if (
        dims["col_n"] % int(out["vec"])
        or dims["row_n"] % int(out["row"])
        or (int(out["red"]) > 1 and dims["red_n"] % int(out["red"]))
    ):
        raise ValueError(f"knobs {format_knobs(out)} do not divide the loop extents")
    return out


def format_knobs(knobs: Knobs) -> str:
    return ",".join(f"{k}={knobs[k]}" for k in sorted(knobs))


def regblock(sch: Schedule, red_block, outer: list, row: tuple, col: tuple, red: list, knobs: Knobs) -> None:
    """Shared register-tiling core of the conv and dense rules.

    Loop nest: parallel(col_o, outer..) > row_o > red.. > row_i (unrolled) > col_i (vector lanes).
    Each red step broadcasts one input per row and loads V contiguous weights (NHWC/HWIO, K x N layouts),
    so the accumulator tile stays in registers for the whole reduction; the fused epilogue (bias, residual,
    ReLU/Clip, GELU...) is applied when the tile is stored. `knobs` (see default_knobs) pick the tile
    shape, the reduction unroll, the parallel loop and the loop order.
    """
    threads = 2 if knobs["par"] != "none" else 1  # only parallel-or-not matters to the helpers below
    inline_pad(sch, red_block)
    inline_elementwise(sch, keep={red_block})
    for blk in other_spatial(sch, red_block):  # padding stages left over: their own parallel nests
        par_vec(sch, blk, threads)
    (row_loop, row_f), (col_loop, col_f) = row, col
    row_o, row_i = sch.split(row_loop, [None, int(row_f)])
    col_o, col_i = sch.split(col_loop, [None, int(col_f)])
    # col_o outermost (order "col"): each thread's contiguous chunk of the parallel loop reuses one weight
    # tile (kh*kw*ci*V floats) for all output rows, instead of streaming every weight tile from L3 per row.
    head = [col_o, *outer] if knobs["order"] == "col" else [*outer, col_o]
    sch.reorder(*head, row_o, *red, row_i, col_i)
    unroll = int(knobs["red"])
    if unroll > 1 and extent(sch, red[-1]) % unroll == 0 and extent(sch, red[-1]) > unroll:
        # `unroll` reduction steps per loop trip, unrolled: fewer loop-carried branches between the FMA groups
        red_o, red_i = sch.split(red[-1], [None, unroll])
        sch.reorder(red_o, red_i, row_i)
        sch.unroll(red_i)
        red = [*red[:-1], red_o]
    # "global", not "local": TVM 0.27 puts a "local" tile in the heap workspace (alloc/free per row tile);
    # a "global" one under 1 KiB goes on the stack (see edgekit/kernels/binary.py; ResNet-18 -2.5 %)
    store = sch.cache_write(red_block, 0, "global")
    reverse_inline_epilogue(sch, store)
    sch.reverse_compute_at(store, row_o, preserve_unit_loops=True)
    if knobs["par"] == "outer+row":
        sch.parallel(sch.fuse(*head, row_o))
    elif knobs["par"] == "outer":
        sch.parallel(sch.fuse(*head) if len(head) > 1 else head[0])
    vectorize_lanes(sch, col_i, unroll_outer=True)
    sch.unroll(row_i)
    *_, s_row, s_col = sch.get_loops(store)
    vectorize_lanes(sch, s_col, unroll_outer=False)
    sch.decompose_reduction(red_block, red[0])  # last: parallel/vectorize first, or the init nest breaks them


def relayout_constant_read(sch: Schedule, block, matches: Callable, layout: Callable) -> None:
    """The first read of `block` from a constant parameter (CONST_PARAMS_ATTR) for which matches(region) holds:
    re-laid out by `layout` in a copy block marked as layout-rewrite preprocessing, which fold_weight_prepacks
    runs once at compile time. None found (weights computed at run time): the layout stays, no per-call copy."""
    func = sch.mod["main"]
    constant = [func.params[i] for i in (func.attrs or {}).get(CONST_PARAMS_ATTR, [])]
    for index, region in enumerate(sch.get(block).reads):
        if any(p.same_as(region.source) for p in constant) and matches(region):
            copy = sch.cache_read(block, index, "global")
            sch.annotate(copy, "meta_schedule.layout_rewrite_preproc", True)
            sch.transform_layout(block, ("read", index), layout)
            return


def prepack_weights(sch: Schedule, conv, hwio: tuple[int, ...], vec: int) -> None:
    """Weights HWIO -> [O/V, H, W, I, V], so the V lanes of every reduction step are the next 128 B of one
    stream. In HWIO they are V floats every O floats (a 2 KB stride for 512 channels), which the hardware
    prefetcher cannot follow: ResNet-18's last-stage convs ran at 70 % of FMA peak with weights from memory.
    The re-layout is a copy block marked as TVM's layout-rewrite preprocessing; schedule_cpu splits it out
    (SplitLayoutRewritePreproc) and FoldConstant runs it once at compile time on the constant weights."""
    relayout_constant_read(
        sch,
        conv,
        lambda region: tuple(int(d) for d in region.source.shape) == hwio,
        lambda kh, kw, ci, co: (co // vec, kh, kw, ci, co % vec),
    )


def prepack_dense_weights(sch: Schedule, mm, vec: int) -> None:
    """Constant [.., K, N] matmul weights -> [.., N/V, K, V]: the V lanes each reduction step reads are the
    next V floats of one stream (see prepack_weights). For a classifier GEMV (1280 -> 1000) the [K, N]
    layout read 160 B every 4 KB."""
    block = sch.get(mm)
    j, k = block.iter_vars[-2].var, block.iter_vars[-1].var

    def is_k_by_n(region) -> bool:
        last_two = region.region[-2:]
        return (
            len(last_two) == 2
            and uses_only(last_two[0].min, k)
            and uses_only(last_two[1].min, j)
            and int(region.source.shape[-1]) % vec == 0
        )

    relayout_constant_read(sch, mm, is_k_by_n, lambda *ix: (*ix[:-2], ix[-1] // vec, ix[-2], ix[-1] % vec))
