"""Small TIR scheduling helpers shared by the rules: block queries and the parallel/vectorize idioms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import tvm
from tvm.s_tir import Schedule

# fp32 lanes of one AVX-512 register: the one definition. The helpers below (par_vec, vectorize_lanes, pick_lanes)
# cut vectors at this width on every target (LLVM splits them into ymm / q registers on AVX2 / NEON); the
# register tiles use the target's width, tiles.simd(caps). Deriving these helpers' width from the target too
# would change AVX2 and NEON code (not AVX-512's): a measured change, not a refactor.
LANES = 16
# TVM's thread pool splits each parallel loop statically over the threads and joins it with a barrier. On a
# quiet machine that costs microseconds; when another process holds a core, a descheduled worker makes the
# barrier wait a scheduler time slice (ms), once per parallel op. Measured (2-core znver4, 2 threads):
# ViT-tiny at load ~3, every op >= 200k MACs parallel 1.55x ORT, single-threaded 1.11x; MobileNetV2 with one
# busy-loop process beside it 22-152 ms at 2 threads vs 8.2 ms at 1 thread (4.6 ms quiet). Small models (below
# SMALL_MODEL_MACS) therefore get no parallel loops at all; bigger ones keep per-op thresholds (raising these
# to 2M MACs / 64k elements cost MobileNetV2 14% on a lightly loaded machine and did not cure the heavily
# loaded case: that needs fewer threads at run time, TVM_NUM_THREADS=1 / --threads 1).
# Below this many output elements an op runs single-threaded: waking the thread pool costs more.
PARALLEL_MIN_ELEMS = 4096

# Below this many multiply-adds a conv/matmul runs single-threaded.
PARALLEL_MIN_MACS = 200_000


def par_vec(sch: Schedule, blk, threads: int) -> None:
    """Spatial block: vectorize the innermost loop in register-sized pieces; parallel over just enough
    leading loops (fused) to feed the threads, so the inner loops keep simple contiguous indexing."""
    loops = sch.get_loops(blk)
    if not loops:
        return
    total = math.prod(extent(sch, lp) for lp in loops)
    if extent(sch, loops[-1]) < 4:
        # e.g. the NCHW -> NHWC transpose of an RGB input: 3 lanes gathered from 3 planes per pixel. Unrolled,
        # LLVM vectorizes the loop above it (MobileNetV2's 224x224 input 32 -> 6 us, 640x640 121 -> 56 us)
        sch.unroll(loops[-1])
    else:
        vectorize_lanes(sch, loops[-1], unroll_outer=extent(sch, loops[-1]) <= 4 * LANES)
    if len(loops) < 2 or threads <= 1 or total < PARALLEL_MIN_ELEMS:
        return
    lead, n = [], 1
    for lp in loops[:-1]:
        lead.append(lp)
        n *= extent(sch, lp)
        if n >= 8 * threads:
            break
    sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])


def vectorize_lanes(sch: Schedule, loop, unroll_outer: bool) -> None:
    """Vectorize a lane loop in pieces of at most one register (e.g. 24 -> 3 x 8): odd-width LLVM vectors
    such as <24 x float> compile to slow code, so wide loops are split by their largest divisor <= 16."""
    n = extent(sch, loop)
    if n > LANES:
        piece = max(
            (d for d in range(4, LANES + 1) if n % d == 0), key=lambda d: (d % 8 == 0, d % 4 == 0, d), default=1
        )
        if piece < 4:
            # no register-sized piece divides n (249 = 3 x 83 frames of an STFT): left to LLVM's loop vectorizer.
            # As one <249 x float> vector of strided loads and log calls LLVM's code generation took 70 s (Zen 4/5
            # scheduling models) for a 32 x 249 elementwise function
            return
        o, loop = sch.split(loop, [None, piece])
        if unroll_outer:
            sch.unroll(o)
    if n > 1:
        sch.vectorize(loop)


def inline_pad(sch: Schedule, red_block) -> None:
    """Inline a producer that is a plain copy (padding 0 or the identity 'pad' of a 1x1 conv)."""
    for prod in sch.get_producers(red_block):
        body = sch.get(prod).body
        if isinstance(body, tvm.tirx.BufferStore) and is_load(body.value):
            sch.compute_inline(prod)


def inline_elementwise(sch: Schedule, keep: set) -> None:
    """compute_inline every spatial non-output block into its consumers (epilogue chains collapse to one)."""
    keep_names = {sch.get(b).name_hint for b in keep}
    progress = True
    while progress:
        progress = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
        for blk in blocks(sch):
            name = sch.get(blk).name_hint
            if name in keep_names or name in outputs or "R" in iter_kinds(sch, blk) or name.startswith("pad"):
                continue
            if not all("R" not in iter_kinds(sch, c) for c in sch.get_consumers(blk)):
                continue  # never inline into the reduction (e.g. a transpose feeding a matmul stays a stage)
            try:
                sch.compute_inline(blk)
                progress = True
                break
            except tvm.error.TVMError:
                continue


def reverse_inline_epilogue(sch: Schedule, store) -> None:
    """Fold the single-consumer chain after the accumulator store (bias, residual add, activation) into it."""
    while True:
        consumers = sch.get_consumers(store)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except tvm.error.TVMError:
            return


def inline_intermediates(sch: Schedule, keep) -> None:
    """compute_inline every spatial block except `keep` and the outputs, so a branching epilogue (hardswish:
    x * clip(x + 3, 0, 6) / 6 reads x twice) becomes one expression the accumulator store can absorb."""
    keep_name = sch.get(keep).name_hint
    for blk in blocks(sch):
        if sch.get(blk).name_hint != keep_name and "R" not in iter_kinds(sch, blk):
            try:
                sch.compute_inline(blk)
            except Exception:  # noqa: BLE001 - an output block (or a non-injective one) stays as it is
                pass


def unbound_blocks(func: tvm.tirx.PrimFunc) -> list[str]:
    """The blocks of a GPU-scheduled PrimFunc outside every thread-bound loop: code that would not run on
    the GPU's threads (the check every GPU rule's result must pass)."""
    import tvm_ffi
    from tvm.s_tir import SBlock

    every: list[str] = []
    bound: set[str] = set()
    bindings: list = []

    def under_binding(loop) -> None:
        if loop.thread_binding is not None:
            bindings.append(loop)
            tvm_ffi.structural_walk(loop.body, (SBlock, lambda b: bound.add(b.name_hint)), order="pre")

    tvm_ffi.structural_walk(func.body, (SBlock, lambda b: every.append(b.name_hint)), order="pre")
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, under_binding), order="pre")
    if not bindings:  # e.g. a hand-written CPU kernel (its only block is the root): all of it runs on one thread
        return ["root"]
    return [name for name in every if name not in bound and name != "root"]


def other_spatial(sch: Schedule, red_block) -> list:
    """Spatial blocks other than red_block, each still in its own root-level loop nest (call before tiling)."""
    name = sch.get(red_block).name_hint
    return [b for b in blocks(sch) if sch.get(b).name_hint != name and "R" not in iter_kinds(sch, b)]


def blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def iter_kinds(sch: Schedule, blk) -> str:
    """'S' per data-parallel block iter, 'R' per reduction iter, 'O' otherwise (e.g. 'SSSSRRR' for conv)."""
    return "".join({0: "S", 2: "R"}.get(int(iv.iter_type), "O") for iv in sch.get(blk).iter_vars)


def single_reduction(sch: Schedule):
    reds = [b for b in blocks(sch) if "R" in iter_kinds(sch, b)]
    if len(reds) != 1:
        raise ValueError(f"expected one reduction block, found {len(reds)}")
    return reds[0]


def is_matmul(sch: Schedule, blk) -> bool:
    """S..SSR block whose output's last index is the last spatial iter and one input is indexed [.., k, j]."""
    block = sch.get(blk)
    kinds = iter_kinds(sch, blk)
    if not kinds.endswith("SSR") or kinds.count("R") != 1 or len(block.reads) < 2:
        return False
    j, k = block.iter_vars[-2].var, block.iter_vars[-1].var

    def last_is(region, var) -> bool:
        return len(region.region) >= 2 and uses_only(region.region[-1].min, var)

    return any(last_is(r, j) for r in block.reads) and any(last_is(r, k) for r in block.reads)


def reduces_innermost(sch: Schedule, blk) -> bool:
    """True when the reduction runs over the input's innermost (contiguous) axis (softmax, layer norm)."""
    block = sch.get(blk)
    red_vars = [iv.var for iv, kd in zip(block.iter_vars, iter_kinds(sch, blk)) if kd == "R"]
    return any(r.region and any(uses_only(r.region[-1].min, v) for v in red_vars) for r in block.reads)


def uses_only(expr, var) -> bool:
    used = tvm.tirx.analysis.undefined_vars(expr)
    return bool(used) and all(u.same_as(var) for u in used)


def is_load(obj) -> bool:
    # tvm.tirx.BufferLoad is a constructor function in TVM 0.27 (the node class is ir.TensorLoad): duck-type.
    return (hasattr(obj, "buffer") or hasattr(obj, "source")) and hasattr(obj, "indices")


def block_work(sch: Schedule, blk) -> int:
    return math.prod(int(iv.dom.extent) for iv in sch.get(blk).iter_vars)


def extent(sch: Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def pick_lanes(n: int, prefer: Sequence[int]) -> int:
    """A vector width that divides n: the first preferred one, else n itself when short, else a divisor."""
    for f in prefer:
        if n % f == 0:
            return f
    if n <= 5 * LANES:
        return n
    return largest_divisor(n, 4 * LANES)


def largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def reduction_blocks(sch: Schedule) -> list:
    return [b for b in blocks(sch) if "R" in iter_kinds(sch, b)]


def block_names(sch: Schedule) -> set[str]:
    return {sch.get(b).name_hint for b in blocks(sch)}


def the_reduction_is(sch: Schedule, name: str) -> bool:
    """True when the PrimFunc has exactly one reduction block and it is called `name`."""
    reds = reduction_blocks(sch)
    return len(reds) == 1 and sch.get(reds[0]).name_hint == name
