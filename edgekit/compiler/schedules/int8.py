"""int8 builds: QDQ lowering + uint8 x int8 -> int32 conv kernels (AVX-512 VNNI `vpdpbusd` where the target has it).

``build_int8`` = ``lower_qdq`` (integer Relax ops, exact vs onnxruntime) -> per-tensor Q/DQ expanded into
elementwise ops (so ConvertLayout carries NHWC through residual adds) -> NHWC -> every eligible integer conv
replaced by a packed-weight TE kernel (``conv2d_nhwc_u8s8``) -> legalize/fuse -> schedules:

  conv2d-u8s8-vnni     output row tile x 16 int32 lanes, `vpdpbusd` over 4 input channels per step
  conv2d-u8s8-vec      same nest without VNNI (x86-64-v3, AArch64): 16 int32 lanes, correct, not tuned
  anything else        edgekit.compiler.schedules.cpu.schedule_prim_func (the fp32 rules, dtype-agnostic)

Weights are packed once at build time as [CO/16, KH, KW, CI/4, 16, 4]: one 64-byte load is the `vpdpbusd`
operand for 16 output channels x 4 input channels; activations are NHWC so 4 input channels are one int32.
"""
from __future__ import annotations

import os

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from edgekit.compiler.lower.qdq import expand_qdq, lower_qdq
from edgekit.compiler.schedules import cpu

CONV_BLOCK = "conv2d_nhwc_u8s8"
PAD_BLOCK = "pad_u8"
LANES_I32 = 16  # int32 lanes of one zmm = output channels per vpdpbusd
DOT_K = 4  # input channels summed per lane by vpdpbusd
MAX_ROW = 14  # output pixels per register tile (accumulators: MAX_ROW zmm)
PARALLEL_MIN_MACS = 200_000  # below this a conv runs single-threaded (thread wake-up costs more)
PARALLEL_MIN_ELEMS = 4096

Report = dict[str, str]


# ----------------------------------------------------------------------------------------------------------
# VNNI tensor intrinsic on a register-tile accumulator (scope "global" = stack, see cpu.py) (fixed copy of tvm.s_tir.tensor_intrin.x86.VNNI_DOT_16x4_INTRIN: with LLVM 22 the
# intrinsic takes <64 x i8> operands, the shipped one passes <16 x i32> and fails LLVM verification)
# ----------------------------------------------------------------------------------------------------------

VNNI_INTRIN = "edgekit_dot_16x4_u8i8i32_vnni"


@T.prim_func(s_tir=True)
def _dot_16x4_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


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


def _register_intrin() -> None:
    if TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is None:
        TensorIntrin.register(VNNI_INTRIN, _dot_16x4_desc, _dot_16x4_vnni)


def has_vnni(target: tvm.target.Target) -> bool:
    """AVX-512 VNNI (vpdpbusd on zmm): znver4, Ice Lake / Cascade Lake server and later."""
    try:
        return bool(tvm.target.codegen.target_has_features("avx512vnni", target))
    except Exception:  # noqa: BLE001 - not an LLVM x86 target
        return False


# ----------------------------------------------------------------------------------------------------------
# The packed-weight conv (TE) and the Relax rewrite that introduces it
# ----------------------------------------------------------------------------------------------------------

def pack_weights(w_hwio: np.ndarray) -> np.ndarray:
    """HWIO int8 -> [CO/16, KH, KW, CI/4, 16, 4] (input channels zero-padded to a multiple of 4)."""
    kh, kw, ci, co = w_hwio.shape
    ci_p = -(-ci // DOT_K) * DOT_K
    w = np.zeros((kh, kw, ci_p, co), np.int8)
    w[:, :, :ci] = w_hwio
    w = w.reshape(kh, kw, ci_p // DOT_K, DOT_K, co // LANES_I32, LANES_I32)
    return np.ascontiguousarray(w.transpose(4, 0, 1, 2, 5, 3))


def conv2d_u8s8_te(x: te.Tensor, wp: te.Tensor, strides: tuple[int, int], pads: tuple[int, int, int, int],
                   dilation: tuple[int, int], pad_value: int) -> te.Tensor:
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
        name=CONV_BLOCK,
    )


def _const(expr: relax.Expr) -> np.ndarray | None:
    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    value = expr.value if hasattr(expr, "value") else expr.data
    return value.numpy()


@relax.expr_functor.mutator
class _PackInt8Conv(relax.PyExprMutator):
    """conv2d(NHWC uint8 [through permute(pad(permute(x)))], HWIO int8 const, out int32) -> call_tir(conv2d_u8s8).

    pad has no ConvertLayout rule, so the zero-point pad of lower_qdq stays NCHW between two transposes:
    it is folded into the kernel here (and the transposes die)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.builder = relax.BlockBuilder(mod)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
            return call
        new = self._rewrite(call)
        return call if new is None else new

    def _rewrite(self, call: relax.Call) -> relax.Expr | None:
        a = call.attrs
        w = _const(call.args[1])
        if (a.data_layout, a.kernel_layout, a.out_layout, a.out_dtype, int(a.groups)) != ("NHWC", "HWIO", "NHWC", "int32", 1):
            return None
        if w is None or w.dtype != np.int8 or w.shape[3] % LANES_I32 or str(call.args[0].ty.dtype) != "uint8":
            return None
        x, pads, pad_value = self._unpad(call.args[0], [int(v) for v in a.padding])
        if pads is None:
            return None
        strides, dilation = tuple(int(v) for v in a.strides), tuple(int(v) for v in a.dilation)
        wp = pack_weights(w)
        # call_te: placeholders take the Relax (int64) shapes, as legalized PrimFuncs do (FuseTIR needs them equal);
        # add_func reuses a structurally equal PrimFunc, so repeated layer shapes share one kernel
        return self.builder.call_te(conv2d_u8s8_te, x, relax.const(wp, "int8"), strides, pads, dilation, pad_value,
                                    primfunc_name_hint="conv2d_u8s8")

    def _unpad(self, x: relax.Expr, conv_pads: list[int]) -> tuple[relax.Expr, tuple[int, ...] | None, int]:
        """(NHWC input, (top, left, bottom, right), pad value): absorbs permute([0,2,3,1], pad(y)) and the
        NHWC->NCHW permute before that pad."""
        if any(conv_pads):
            return x, tuple(conv_pads), 0  # the conv's own padding is zeros
        perm = cpu.binding_of(self, x, "relax.permute_dims")
        pad = cpu.binding_of(self, perm.args[0], "relax.nn.pad") if perm is not None else None
        if pad is None or [int(v) for v in perm.attrs.axes] != [0, 2, 3, 1] or pad.attrs.pad_mode != "constant":
            return x, (0, 0, 0, 0), 0
        w = [int(v) for v in pad.attrs.pad_width]  # NCHW: (before, after) per axis
        if any(w[:4]):
            return x, None, 0
        value = float(pad.attrs.pad_value)
        inner = cpu.binding_of(self, pad.args[0], "relax.permute_dims")
        if inner is not None and [int(v) for v in inner.attrs.axes] == [0, 3, 1, 2]:
            y = inner.args[0]
        else:
            y = self.builder.normalize(relax.op.permute_dims(pad.args[0], [0, 2, 3, 1]))
        return y, (w[4], w[6], w[5], w[7]), int(value)



@tvm.transform.module_pass(opt_level=0, name="PackInt8Conv")
def pack_int8_convs(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    mutator = _PackInt8Conv(mod)
    funcs = {gv: mutator.visit_expr(f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
    out = mutator.builder.get()
    for gv, f in funcs.items():
        out[gv] = f
    return relax.transform.DeadCodeElimination()(out)


# ----------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------

def schedule_int8_prim_func(func: tvm.tirx.PrimFunc, target: tvm.target.Target, threads: int) -> tuple[tvm.tirx.PrimFunc, str] | None:
    """The int8 rule for a fused PrimFunc containing a conv2d_u8s8 block; None for anything else."""
    sch = Schedule(func)
    if not any(sch.get(b).name_hint == CONV_BLOCK for b in _blocks(sch)):
        return None
    vnni = has_vnni(target)
    try:
        _conv_u8s8(sch, threads, vnni)
        return sch.mod["main"], "conv2d-u8s8-vnni" if vnni else "conv2d-u8s8-vec"
    except Exception as exc:  # noqa: BLE001 - never break a build: let the generic rules try
        return None if os.environ.get("EDGEKIT_INT8_STRICT") is None else _raise(exc)


def _raise(exc: Exception):
    raise exc


def _conv_u8s8(sch: Schedule, threads: int, vnni: bool) -> None:
    """(co/16, n, h, w/R) parallel > kh, kw, ci/4 > R (unrolled) > [16 lanes x 4 channels] (vpdpbusd)."""
    conv = sch.get_sblock(CONV_BLOCK)
    macs = _block_work(sch, conv)
    for blk in _blocks(sch):
        if sch.get(blk).name_hint == PAD_BLOCK:
            _pad_stage(sch, blk, threads)
    n, h, w, o, rh, rw, rc, rk = sch.get_loops(conv)
    row = max(d for d in range(1, min(MAX_ROW, _extent(sch, w)) + 1) if _extent(sch, w) % d == 0)
    oo, oi = sch.split(o, [None, LANES_I32])
    wo, wi = sch.split(w, [None, row])
    # VNNI: (16 lanes, 4 channels) is the intrinsic's shape; without it, 4 channels outside 16 int32 lanes
    sch.reorder(oo, n, h, wo, rh, rw, rc, wi, *((oi, rk) if vnni else (rk, oi)))
    store = sch.cache_write(conv, 0, "global")  # stack, not heap workspace: see cpu.py's _regblock
    _fuse_epilogue(sch, store)
    sch.reverse_compute_at(store, wo, preserve_unit_loops=True)
    par = sch.fuse(oo, n, h)
    if threads > 1 and macs >= PARALLEL_MIN_MACS:
        sch.parallel(par)
    sch.unroll(wi)
    *_, s_col = sch.get_loops(store)
    sch.vectorize(s_col)
    if not vnni:  # vectorize before decompose_reduction (after it the update block is no reduction)
        sch.unroll(rk)
        sch.vectorize(oi)
    init = sch.decompose_reduction(conv, rh)
    sch.vectorize(sch.get_loops(init)[-1])
    if vnni:  # tensorize the update block after decompose_reduction: the intrinsic has no init
        _register_intrin()
        sch.tensorize(oi, VNNI_INTRIN)


def _fuse_epilogue(sch: Schedule, store) -> None:
    """Requantize (+ residual dequantize/add/quantize) chain -> one elementwise block -> into the tile store."""
    keep = {CONV_BLOCK, PAD_BLOCK, sch.get(store).name_hint}
    progress = True
    while progress:  # inline producers first: a multi-input chain cannot be reverse-inlined block by block
        progress = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
        for blk in _blocks(sch):
            if sch.get(blk).name_hint in keep | outputs:
                continue
            try:
                sch.compute_inline(blk)
                progress = True
                break
            except Exception:  # noqa: BLE001 - not inlinable (e.g. reads the store twice): leave it
                continue
    while len(consumers := sch.get_consumers(store)) == 1:
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001
            return


def _pad_stage(sch: Schedule, blk, threads: int) -> None:
    """The zero-point padding copy: rows in parallel, channels vectorized."""
    n, h, w, c = sch.get_loops(blk)
    if _extent(sch, c) >= 16 and _extent(sch, c) % 16 == 0:
        _, ci = sch.split(c, [None, 16])
        sch.vectorize(ci)
    if threads > 1 and _block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
        sch.parallel(sch.fuse(n, h))


def _blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _extent(sch: Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _block_work(sch: Schedule, blk) -> int:
    return int(np.prod([int(iv.dom.extent) for iv in sch.get(blk).iter_vars]))


# ----------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------

def prepare_int8(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[dict]]:
    """Relax side of build_int8: QDQ lowering, NHWC, packed int8 convs, legalize + fuse."""
    mod, layers = lower_qdq(mod)
    seq = tvm.transform.Sequential([
        expand_qdq,
        relax.transform.FoldConstant(),
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
        relax.transform.FoldConstant(),  # HWIO weights become constants: pack_int8_convs reads them
        pack_int8_convs,
        relax.transform.DeadCodeElimination(),
        relax.get_pipeline("zero"),  # LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
    ])
    return seq(mod), layers


def schedule_int8(mod: tvm.IRModule, target: tvm.target.Target, threads: int = 0) -> tuple[tvm.IRModule, Report, list[dict]]:
    threads = threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or os.cpu_count() or 1
    report: Report = {}
    with target:
        mod, layers = prepare_int8(mod)
        constants = cpu.constant_params(mod)
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            done = schedule_int8_prim_func(func, target, threads)
            mod[gv], report[gv.name_hint] = done if done is not None else \
                cpu.schedule_prim_func(func, threads, constant_params=constants.get(gv.name_hint, ()))
        # float layers left in a quantized model got the fp32 rules' weight re-layouts: fold them at compile
        # time, as build_cpu does (unfolded, each call would copy its weights first)
        mod = cpu.fold_weight_prepacks(mod)
    return mod, report, layers


def build_int8(mod: tvm.IRModule, target: tvm.target.Target, threads: int = 0) -> tuple[tvm.runtime.Executable, Report, list[dict]]:
    """Lower QDQ layers to integer ops, schedule (VNNI where available) and build.
    Returns (executable, {PrimFunc: rule}, lower_qdq's per-layer report)."""
    mod, report, layers = schedule_int8(mod, target, threads)
    return relax.build(mod, target=target), report, layers


__all__ = ["build_int8", "schedule_int8", "schedule_int8_prim_func", "prepare_int8", "has_vnni", "pack_weights",
           "conv2d_u8s8_te"]
