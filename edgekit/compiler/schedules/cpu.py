"""edgekit's default CPU schedules: fast untuned TVM builds for x86-64 / AArch64.

TVM 0.27's default CPU pipeline applies no schedule at all (every op is a naive single-threaded loop).
``build_cpu`` lowers a Relax module in NHWC, fuses ops as usual, then gives every fused PrimFunc a
hand-written rule picked by inspecting its sblocks:

  conv2d-nhwc-regblock    dense conv (any stride/padding/kernel): register tile of output pixels x channel lanes
  conv2d-nhwc-depthwise   the same tile shape for depthwise conv (vector over channels, no broadcast)
  dense                   matmul/Gemm/batched matmul: register tile of rows x output-feature lanes
  dlight-reduction        softmax / layer norm (dlight's CPU Reduction rule: rows in parallel)
  reduction-vec           pooling / mean over non-innermost axes: channels vectorized, rows in parallel
  injective               elementwise / transpose / reshape chains: inlined, parallel + vectorized
  fallback-parallel       anything else or a rule that raised: outer loops parallel, inner loop vectorized
  none                    left as TVM emitted it (only when even the fallback failed)

Every rule runs inside try/except and falls back, so a rule failure never breaks a build.

The three register-tiling rules have knobs (tile rows, lanes, reduction unroll, parallel loop, loop order; see
KNOB_NAMES). Their defaults are the heuristics below, sized to the target's vector registers (AVX-512 or
AVX2); `edgekit tune` (edgekit.compiler.tune) times other settings per fused PrimFunc and `tuning=` applies
the winners, keyed by the PrimFunc's structural hash. Transcendentals (erf, exp, tanh, softmax) use TVM's
vectorizable fast_* approximations (FAST_MATH; max error ~1e-7 on the zoo).
"""
from __future__ import annotations

import contextvars
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import Schedule

from edgekit.compiler.schedules import inverted_residual, winograd

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
# A model doing fewer multiply-adds than this in all its convs/matmuls runs single-threaded throughout.
SMALL_MODEL_MACS = 30_000_000
# Conv weights re-laid out for streaming (see _prepack_weights). Off while `edgekit tune` times candidates: each
# candidate's packed layout would differ, and inside a lone PrimFunc the re-layout would run on every call.
PREPACK_WEIGHTS: contextvars.ContextVar[bool] = contextvars.ContextVar("edgekit_prepack_weights", default=True)
CONST_PARAMS_ATTR = "edgekit.const_params"  # PrimFunc attr set by schedule_prim_func: indices of constant parameters
LANES = 16  # fp32 lanes of one AVX-512 register (LLVM splits wider vectors, and narrows on AVX2/NEON)
FAST_MATH = True  # see _FastMath
MAX_ACC_VECTORS = 24  # accumulator registers a register tile may use (32 zmm: leave room for operands)

Report = dict[str, str]
Knobs = dict[str, object]
Tuning = Mapping[str, Knobs] | str | Path | None


# ----------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------

def build_cpu(
    mod: tvm.IRModule, target: tvm.target.Target, threads_hint: int = 0, tuning: Tuning = None
) -> tuple[tvm.runtime.Executable, Report]:
    """Lower a Relax IRModule imported by tvm.relax.frontend.onnx.from_onnx(..., keep_params_in_input=False)
    with edgekit's default CPU schedules and build it. Returns the executable (like relax.build) and a report
    mapping each PrimFunc name -> the rule applied (e.g. "conv2d-nhwc-regblock", "dense", "fallback: ...").
    `tuning`: a database written by `edgekit tune` (a .json file or a directory of them) or a
    {task key: knobs} mapping; matching PrimFuncs get the tuned knobs ("... (tuned: vec=16,row=7,...)")."""
    mod, report = schedule_cpu(mod, target, threads_hint, tuning)
    return relax.build(mod, target=target), report


def schedule_cpu(
    mod: tvm.IRModule, target: tvm.target.Target, threads_hint: int = 0, tuning: Tuning = None
) -> tuple[tvm.IRModule, Report]:
    """The Relax passes and per-PrimFunc schedules of build_cpu, without code generation."""
    threads = threads_hint or int(os.environ.get("TVM_NUM_THREADS", 0)) or _cpu_count()
    if tuning is not None and not isinstance(tuning, Mapping):
        from edgekit.compiler.tune import load_database

        tuning = load_database(tuning, target)
    report: Report = {}
    with target:  # dlight rules read the target (vector width) from the context
        bands = inverted_residual.BANDS.set(threads)  # the fused blocks' kernel splits rows over the threads
        try:
            mod = prepare_relax(mod)
        finally:
            inverted_residual.BANDS.reset(bands)
        threads = effective_threads(mod, threads)
        constants = constant_params(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, tvm.tirx.PrimFunc):
                knobs = tuning.get(task_key(func, target)) if tuning else None
                new_func, rule = schedule_prim_func(func, threads, knobs, constants.get(gv.name_hint, ()))
                mod[gv] = new_func
                report[gv.name_hint] = rule
        mod = fold_weight_prepacks(mod)
    return mod, report


def fold_weight_prepacks(mod: tvm.IRModule) -> tvm.IRModule:
    """Weight re-layouts marked by _prepack_weights become their own PrimFuncs (SplitLayoutRewritePreproc),
    which FoldConstant then runs once on the constant weights. The split pass aborts on PrimFuncs without
    sblocks (edgekit's hand-written kernels), so it sees only the marked ones; the rest are put back."""
    marked = {gv for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and _has_prepack(func)}
    if not marked:
        return mod
    others = {gv: func for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and gv not in marked}
    split = relax.transform.SplitLayoutRewritePreproc()(
        tvm.IRModule({gv: func for gv, func in mod.functions.items() if gv not in others}, attrs=mod.attrs))
    for gv, func in others.items():
        split.update_func(gv, func)
    # the split leaves the original PrimFuncs behind, and FoldConstant the re-layout ones: drop what main no
    # longer calls, or relax.build compiles every conv twice
    entries = [gv.name_hint for gv, func in split.functions.items() if isinstance(func, relax.Function)]
    return relax.transform.DeadCodeElimination(entries)(relax.transform.FoldConstant()(split))


def _has_prepack(func: tvm.tirx.PrimFunc) -> bool:
    return "meta_schedule.layout_rewrite_preproc" in func.script()


def effective_threads(mod: tvm.IRModule, threads: int) -> int:
    """`threads`, or 1 for a small model (see SMALL_MODEL_MACS): its ops are too short to amortize a
    thread-pool barrier each, and under machine load those barriers dominate (ViT-tiny, digits CNN)."""
    if threads <= 1:
        return threads
    try:
        total = model_macs(mod)
    except Exception:  # noqa: BLE001 - an estimate only
        return threads
    return 1 if total < SMALL_MODEL_MACS else threads


def model_macs(mod: tvm.IRModule) -> int:
    """Multiply-adds of the prepared module's conv/matmul PrimFuncs, times how often main calls each."""
    calls = call_counts(mod)
    total = 0
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                sch = Schedule(func)
                if _pick_rule(sch) in _TILE_RULES:
                    total += _block_work(sch, _single_reduction(sch)) * max(1, calls.get(gv.name_hint, 1))
            except Exception:  # noqa: BLE001
                continue
    return total


def constant_params(mod: tvm.IRModule) -> dict[str, set[int]]:
    """Per PrimFunc, the parameters that every call_tir in main passes a constant (weights): only these may
    be re-laid out at compile time (a re-layout of a runtime input would run on every call)."""
    seen: dict[str, set[int]] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and isinstance(expr.args[0], tvm.ir.GlobalVar):
            consts = {i for i, arg in enumerate(expr.args[1].fields) if isinstance(arg, tvm.ir.expr.Constant)}
            name = expr.args[0].name_hint
            seen[name] = seen[name] & consts if name in seen else consts

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return seen


def call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How often the Relax functions call each PrimFunc (identical layers share one PrimFunc)."""
    counts: dict[str, int] = {}

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:  # noqa: D102
            for arg in call.args:
                if isinstance(arg, tvm.ir.GlobalVar):
                    counts[arg.name_hint] = counts.get(arg.name_hint, 0) + 1
            super().visit_call_(call)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Count().visit_expr(func)
    return counts


def task_key(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> str:
    """Tuning-database key of a fused PrimFunc (before scheduling): its structural hash. Identical convs of a
    model share one key; the target is recorded once per database (see edgekit.compiler.tune)."""
    import tvm_ffi

    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _prepare_relax(mod: tvm.IRModule) -> tvm.IRModule:  # kept for callers of the old private name
    return prepare_relax(mod)


def _clip_keeps_layout() -> None:
    """Give relax.clip the layout rule of the unary elementwise ops (it is elementwise; its bounds are scalars).
    TVM 0.27 registers none, so ConvertLayout put every clip of an NHWC network back in NCHW between two full
    transposes: ReLU6 (edgekit used to cancel those pairs with a rewrite) and Hardswish x * clip(x + 3, 0, 6)
    / 6, whose transposes took ~1.8 ms of the 640x640 detector (now fused into the conv epilogues)."""
    clip = tvm.ir.Op.get("relax.clip")
    if clip.get_attr("FRelaxInferLayout") is None:
        clip.set_attr("FRelaxInferLayout", tvm.ir.Op.get("relax.nn.relu").get_attr("FRelaxInferLayout"))


def prepare_relax(mod: tvm.IRModule) -> tvm.IRModule:
    """NHWC convs (channels innermost = vector lanes), Clip as Relax ops so it fuses, then legalize + fuse."""
    _clip_keeps_layout()
    seq = tvm.transform.Sequential([
        relax.transform.FoldConstant(),
        _ScalarMinMaxToRelax,
        _ConvTransposeToConv,
        relax.transform.DeadCodeElimination(),
        # conv2d_transpose pinned to NCHW: ConvertLayout would otherwise carry NHWC into it, and TVM has no
        # NHWC legalization for it (the op then reaches VM codegen un-lowered: "cannot emit this Relax operator")
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}),
        _MeanBeforePermutes,
        relax.transform.DeadCodeElimination(),
        relax.transform.FoldConstant(),
        *([_FuseInvertedResiduals, relax.transform.DeadCodeElimination()] if inverted_residual.ENABLED.get() else []),
        *([_WinogradConvs] if winograd.ENABLED.get() else []),
        *([_FastMath] if FAST_MATH else []),
        relax.get_pipeline("zero"),  # LegalizeOps, FoldConstant (transposes the weights), FuseOps, FuseTIR
    ])
    return seq(mod)


# ----------------------------------------------------------------------------------------------------------
# Relax rewrite: the ONNX importer emits Clip (ReLU6) as call_tir(maximum/minimum, (x, scalar)). Opaque
# call_tirs block ConvertLayout (NCHW<->NHWC transposes around every ReLU6) and conv epilogue fusion.
# ----------------------------------------------------------------------------------------------------------

@relax.expr_functor.mutator
class _MinMaxMutator(relax.PyExprMutator):
    """call_tir(maximum, (x, lo)) -> clip(x, lo, inf); call_tir(minimum, (that, hi)) -> clip(x, lo, hi)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self._call_tir = tvm.ir.Op.get("relax.call_tir")

    def _match(self, expr: relax.Expr) -> tuple[str, relax.Expr, float] | None:
        """(kind, x, bound) when expr is call_tir of an elementwise max/min of x and a scalar constant."""
        if not isinstance(expr, relax.Call) or not expr.op.same_as(self._call_tir):
            return None
        if not isinstance(expr.args[0], tvm.ir.GlobalVar) or not isinstance(expr.args[1], relax.Tuple):
            return None
        fields = expr.args[1].fields
        if len(fields) != 2 or not isinstance(fields[1], tvm.ir.expr.Constant) or getattr(fields[1].ty, "ndim", -1) != 0:
            return None
        kind = _scalar_minmax_kind(self.mod_[expr.args[0]])
        return None if kind is None else (kind, fields[0], float(fields[1].value.numpy()))

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        m = self._match(call)
        if m is None:
            return self.visit_expr_post_order(call)
        kind, x, bound = m
        x = self.visit_expr(x)
        lo, hi = (bound, math.inf) if kind == "max" else (-math.inf, bound)
        inner = binding_of(self, x, "relax.clip")
        if kind == "min" and inner is not None and math.isinf(_prim_float(inner.args[2])):
            x, lo = inner.args[0], _prim_float(inner.args[1])  # min(max(y, lo), hi) = one clip of y
        dtype = call.ty.dtype if hasattr(call.ty, "dtype") else "float32"
        return relax.op.clip(x, relax.prim_value(tvm.tirx.FloatImm(dtype, lo)), relax.prim_value(tvm.tirx.FloatImm(dtype, hi)))


@relax.expr_functor.mutator
class _MeanBeforePermute(relax.PyExprMutator):
    """mean(act(permute(y, p)), axes, keepdims) -> permute(mean(act(y), p[axes], keepdims), p), act = clip or none:
    global average pooling of an NHWC network (ConvertLayout leaves mean in NCHW) then reduces over H, W with
    channels as vector lanes, the clip fuses into the conv before it, and only a 1x1xC tensor is permuted
    (MobileNetV2: a 7x7x1280 transpose+clip pass of 27 us gone)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.mean")) or not call.attrs.keepdims or call.attrs.axis is None:
            return call
        clip = binding_of(self, call.args[0], "relax.clip")
        permute = binding_of(self, clip.args[0] if clip is not None else call.args[0], "relax.permute_dims")
        if permute is None or permute.attrs.axes is None:
            return call
        p = [int(a) for a in permute.attrs.axes]
        y = permute.args[0]
        if clip is not None:
            y = relax.op.clip(y, clip.args[1], clip.args[2])
        axes = [p[int(a) % len(p)] for a in call.attrs.axis]
        return relax.op.permute_dims(relax.op.mean(y, axes, keepdims=True), p)


def _prim_float(prim_value: relax.Expr) -> float:
    value = prim_value.value
    return float(getattr(value, "value", value))


def binding_of(mutator: relax.PyExprMutator, expr: relax.Expr, op_name: str) -> relax.Call | None:
    """The call bound to var `expr` if it is a call of op_name (else None)."""
    if not isinstance(expr, relax.Var):
        return None
    value = mutator.lookup_binding(expr)
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == op_name:
        return value
    return None


def _scalar_minmax_kind(func: tvm.tirx.PrimFunc) -> str | None:
    """'max'/'min' if func is one elementwise T.max/T.min block of a tensor and a 0-d buffer (else None)."""
    try:
        sch = Schedule(func)
        blocks = _blocks(sch)
    except Exception:  # noqa: BLE001 - not a schedulable PrimFunc: leave the call alone
        return None
    if len(blocks) != 1 or _iter_kinds(sch, blocks[0]).strip("S"):
        return None
    value = sch.get(blocks[0]).body.value
    kind = {tvm.tirx.Max: "max", tvm.tirx.Min: "min"}.get(type(value))
    if kind is None or not _is_load(value.b) or len(value.b.indices) != 0:
        return None
    return kind


def _relax_rewrite(mutator_cls: type, name: str) -> tvm.transform.Pass:
    """Run a PyExprMutator over every Relax function; on any error keep the module (optimization only)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        try:
            mutator = mutator_cls(mod)
            out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
            for gv, func in list(mod.functions.items()):
                if isinstance(func, relax.Function):
                    out[gv] = mutator.visit_expr(func)
            for gv, func in mutator.builder_.get().functions.items():  # PrimFuncs the mutator emitted (emit_te)
                if isinstance(func, tvm.tirx.PrimFunc) and gv not in out.functions:
                    out[gv] = func
            return out
        except Exception:  # noqa: BLE001
            return mod

    return _pass


_ScalarMinMaxToRelax = _relax_rewrite(_MinMaxMutator, "ScalarMinMaxToClip")


@tvm.transform.module_pass(opt_level=0, name="EdgekitFastMath")
def _FastMath(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """erf / exp / tanh / softmax -> TVM's vectorizable polynomial versions (topi.fast_*). libm's erff/expf
    are scalar calls: GELU's erf alone was 40% of the small ViT. On any error keep the module."""
    try:
        return relax.transform.FastMathTransform()(mod)
    except Exception:  # noqa: BLE001
        return mod
_MeanBeforePermutes = _relax_rewrite(_MeanBeforePermute, "MeanBeforePermute")


@relax.expr_functor.mutator
class _ConvTransposeAsConv(relax.PyExprMutator):
    """Non-overlapping conv2d_transpose (stride = kernel, no padding; detector upsampling heads) ->
    1x1 conv2d to Cout*k*k channels + depth-to-space. Each input pixel writes its own k x k output patch:

        y[n, co, h*k+i, w*k+j] = sum_ci x[n, ci, h, w] * W[ci, co, i, j]

    so the heavy part runs on the fast NHWC conv rule instead of a naive transposed-conv loop."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv2d_transpose")):
            return call
        a, (x, w) = call.attrs, call.args
        if not isinstance(w, tvm.ir.expr.Constant) or a.data_layout != "NCHW" or a.kernel_layout != "IOHW" or int(a.groups) != 1:
            return call
        weight = w.value.numpy()  # [Cin, Cout, kh, kw]
        cin, cout, kh, kw = weight.shape
        if [int(v) for v in a.strides] != [kh, kw] or any(int(v) for v in a.padding) or any(int(v) for v in a.output_padding) \
                or any(int(v) != 1 for v in a.dilation):
            return call
        n, _, h, wd = (int(d) for d in x.ty.shape)
        w1x1 = weight.transpose(1, 2, 3, 0).reshape(cout * kh * kw, cin, 1, 1)  # rows ordered (co, i, j)
        z = relax.op.nn.conv2d(x, relax.const(w1x1.astype(weight.dtype)))
        z = relax.op.reshape(z, (n, cout, kh, kw, h, wd))
        z = relax.op.permute_dims(z, [0, 1, 4, 2, 5, 3])  # (n, co, h, i, w, j)
        return relax.op.reshape(z, (n, cout, h * kh, wd * kw))


_ConvTransposeToConv = _relax_rewrite(_ConvTransposeAsConv, "ConvTransposeAsConv")
_WinogradConvs = _relax_rewrite(winograd.WinogradConv, "WinogradConv")
_FuseInvertedResiduals = _relax_rewrite(inverted_residual.InvertedResidualFusion, "FuseInvertedResiduals")


# ----------------------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------------------

Rule = Callable[[Schedule, int], str]


def schedule_prim_func(func: tvm.tirx.PrimFunc, threads: int, knobs: Knobs | None = None,
                       constant_params: Sequence[int] = ()) -> tuple[tvm.tirx.PrimFunc, str]:
    """Pick a rule by the PrimFunc's sblocks, apply it; on any failure use the safe fallback.
    `knobs` (from a tuning database) override the register-tiling rules' heuristic choices; if the rule
    fails with them, it is retried with its defaults (a stale database never breaks a build).
    `constant_params`: parameters every caller passes a constant (see constant_params()); only their
    layouts may be rewritten at compile time."""
    if func.attrs is not None and "edgekit.kernel" in func.attrs:
        kernel = str(func.attrs["edgekit.kernel"])  # edgekit/kernels: hand-written TIR, already scheduled
        return func, "mbconv kernel" if kernel == "mbconv" else "xnor-popcount kernel"
    if constant_params:
        func = func.with_attr(CONST_PARAMS_ATTR, sorted(constant_params))
    try:
        rule = _pick_rule(Schedule(func))
    except Exception as exc:  # noqa: BLE001
        rule, why = _fallback, f"{type(exc).__name__}"
    else:
        why = ""
    if rule is not _fallback:
        if knobs and rule in _TILE_RULES:
            sch = Schedule(func)
            try:
                name = rule(sch, threads, knobs=knobs)
                return sch.mod["main"], f"{name} (tuned: {format_knobs(knobs)})"
            except Exception as exc:  # noqa: BLE001
                why = f"tuned knobs failed: {_first_line(exc)}"
        sch = Schedule(func)
        try:
            name = rule(sch, threads)
            return sch.mod["main"], f"{name} ({why})" if why else name
        except Exception as exc:  # noqa: BLE001 - a rule bug must never break the build
            why = f"{rule.__name__} failed: {_first_line(exc)}"
    sch = Schedule(func)
    try:
        _fallback(sch, threads)
        return sch.mod["main"], f"fallback-parallel ({why})" if why else "fallback-parallel"
    except Exception as exc:  # noqa: BLE001
        return func, f"none ({why}; fallback failed: {_first_line(exc)})"


def format_knobs(knobs: Knobs) -> str:
    return ",".join(f"{k}={knobs[k]}" for k in sorted(knobs))


def _pick_rule(sch: Schedule) -> Rule:
    blocks = _blocks(sch)
    names = {sch.get(b).name_hint for b in blocks}
    if winograd.INPUT_BLOCK in names:
        return _winograd_input
    if winograd.OUTPUT_BLOCK in names:
        return _winograd_output
    reductions = [b for b in blocks if "R" in _iter_kinds(sch, b)]
    if not reductions:
        return _injective
    names = {sch.get(b).name_hint for b in reductions}
    if len(reductions) == 1:
        name = next(iter(names))
        if name == "conv2d_nhwc":
            return _conv_nhwc
        if name == "group_conv2d_nhwc":
            return _conv_nhwc_depthwise
        if _is_matmul(sch, reductions[0]):
            return _dense
        if not _reduces_innermost(sch, reductions[0]):
            return _reduction_vec
    return _dlight_reduction


# ----------------------------------------------------------------------------------------------------------
# Knobs of the register-tiling rules (conv, depthwise, dense). The defaults are the untuned heuristics;
# edgekit.compiler.tune times other settings per fused PrimFunc and stores winners in a database.
#   vec    output-channel / output-feature lanes of the register tile (divides that axis)
#   row    register-tile rows: output pixels along W (conv) or matmul rows M (dense); divides that axis
#   red    innermost reduction axis (ci / k) split by this and unrolled (1 = not split)
#   par    "outer": parallel over fused (col_o, outer...); "outer+row": also the tile-row loop (more, smaller
#          chunks: helps when col_o x outer is smaller than the thread count); "none": single-threaded
#   order  "col": col_o outermost (a thread's chunk reuses one weight tile); "outer": outer loops first
# ----------------------------------------------------------------------------------------------------------

KNOB_NAMES = ("vec", "row", "red", "par", "order")
COL_ORDER_MIN_WEIGHT_BYTES = 2 << 20


def _tile_dims(sch: Schedule, rule: Rule) -> dict[str, int]:
    red_block = _single_reduction(sch)
    loops = sch.get_loops(red_block)
    macs = _block_work(sch, red_block)
    if rule is _dense:
        *batch, i, j, k = loops
        return {"row_n": _extent(sch, i), "col_n": _extent(sch, j), "red_n": _extent(sch, k), "macs": macs, "outer": len(batch)}
    n, h, w, co, kh, kw, ci = loops
    weight_bytes = 4 * _extent(sch, co) * _extent(sch, kh) * _extent(sch, kw) * _extent(sch, ci)
    return {"row_n": _extent(sch, w), "col_n": _extent(sch, co), "red_n": _extent(sch, ci), "macs": macs, "outer": 2,
            "weight_bytes": weight_bytes}


_VEC_PREFER = {
    "conv": (32, 48, 64, 16, 24, 8),
    "depthwise": (32, 16, 48, 64, 24, 8),
    "dense": (64, 32, 48, 16, 40, 24, 8),
}
# depthwise: no input reuse across a row tile (every tap is its own load), so short tiles win; the MobileNetV2
# tuning runs picked rows of 2-4 over 8 on 6 of 10 depthwise layers (e.g. 112x112x32: 53 vs 66 us)
_ROW_CAP = {"conv": 14, "depthwise": 4, "dense": 8}


def _simd() -> tuple[int, int]:
    """(fp32 lanes per vector register, accumulator registers a tile may use) for the current target.
    AVX-512 (and anything not known to be narrower): 16 lanes, 24 of 32 zmm. AVX2-only x86 (the x86_64
    target is x86-64-v3): 8 lanes and 16 ymm registers, so at most 12 accumulators or the tile spills.
    AArch64 NEON: 4 lanes, 32 q registers; ARMv7 NEON: 4 lanes, 16 q registers."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None:
        return LANES, MAX_ACC_VECTORS
    key = str(target)
    if key not in _SIMD_CACHE:
        simd = (LANES, MAX_ACC_VECTORS)
        try:
            mtriple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
            if mtriple.startswith(("aarch64", "arm64")):
                simd = (4, 24)  # NEON: 32 q registers. With AVX-512's 16-lane tiles every FMA spilled (ldr/fmla/str)
            elif mtriple.startswith(("arm", "thumb")):
                simd = (4, 12)  # ARMv7 NEON: 16 q registers
            is_x86 = mtriple.startswith("x86_64") or (not mtriple and tvm.target.codegen.target_has_features("sse2", target))
            if is_x86 and not tvm.target.codegen.target_has_features("avx512f", target):
                simd = (8, 12)
        except Exception:  # noqa: BLE001 - unknown: keep the AVX-512 assumptions
            pass
        _SIMD_CACHE[key] = simd
    return _SIMD_CACHE[key]


_SIMD_CACHE: dict[str, tuple[int, int]] = {}


def _pick_tile(kind: str, dims: dict[str, int]) -> tuple[int, int]:
    lanes, budget = _simd()
    cap = _ROW_CAP[kind]
    if kind == "dense" and dims["row_n"] == 1:
        # GEMV (a classifier on one image): each output vector is one dependent FMA chain over K, so the tile
        # needs ~8 vectors in flight (FMA latency x pipes) to stream the weights at memory speed. MobileNetV2's
        # 1280 -> 1000 classifier in the model: 83-93 us at 100 lanes, 104-137 at 40, 108-153 at 8.
        widest = [v for v in range(4, 8 * lanes + 1, 4) if dims["col_n"] % v == 0]
        if widest:
            return max(widest), 1
    if (lanes, budget) == (LANES, MAX_ACC_VECTORS):  # the AVX-512 heuristic, as measured (ResNet-18 1.13x ORT)
        vec = _pick_lanes(dims["col_n"], prefer=_VEC_PREFER[kind])
        row = _largest_divisor(dims["row_n"], max(1, min(cap, budget // math.ceil(vec / lanes))))
        if kind == "depthwise" and row == 1 and dims["row_n"] <= 8:
            row = dims["row_n"]  # 7-wide rows: one tile of 7 beats 7 tiles of 1 (MobileNetV2 tuning runs)
        return vec, row
    if kind == "depthwise":
        # no input reuse across the tile (every tap is its own load), so the FMAs-per-load score below does not
        # apply: two registers of lanes, as on AVX-512. MobileNetV2 on AVX2: the tuner replaced the score's
        # 48-lane tiles by 8-24 lanes on every depthwise layer it timed (30-44 % faster)
        vec = _pick_lanes(dims["col_n"], prefer=(2 * lanes, lanes, 3 * lanes, 4 * lanes))
        return vec, _largest_divisor(dims["row_n"], max(1, min(cap, budget // math.ceil(vec / lanes))))
    # narrower SIMD: the (vec, row) tile that fits the accumulator budget with the most FMAs per load
    # (row*nv FMAs per nv weight loads + row broadcasts); ties go to the preference order
    best, best_score = None, -1.0
    prefer = [v for v in _VEC_PREFER[kind] if dims["col_n"] % v == 0] or [_pick_lanes(dims["col_n"], _VEC_PREFER[kind])]
    for vec in prefer:
        nv = math.ceil(vec / lanes)
        # LLVM loads the tile's nv weight vectors once per step and keeps them for all rows: accumulators +
        # weights + the broadcast must fit the 16 registers, or it spills (48 lanes x 2 rows on AVX2 did)
        registers = budget + 4
        row = _largest_divisor(dims["row_n"], max(1, min(cap, budget // nv, (registers - nv - 1) // nv)))
        score = row * nv / (row + nv) if row * nv + nv + 1 <= registers else 0.0
        if score > best_score + 1e-9:
            best, best_score = (vec, row), score
    return best


def _default_knobs(kind: str, dims: dict[str, int], threads: int) -> Knobs:
    vec, row = _pick_tile(kind, dims)
    red = 4 if kind != "depthwise" and dims["red_n"] % 4 == 0 and dims["red_n"] > 4 else 1
    par = "outer" if threads > 1 and dims["macs"] >= PARALLEL_MIN_MACS else "none"
    # "col" (weight tile outermost) streams the weights once; "outer" streams them once per output row tile
    # but writes each output line once. Weights over ~2 L2s: "col" (cold-cache tuning of ResNet-18: 2.4 MB
    # layer3 conv 11 % faster, 4.7 MB stride-2 conv 25 %); small weights and big outputs: "outer"
    # (MobileNetV2's 56x56x144 expansion conv, 14 KB of weights: 358 us "col" vs 134 us "outer")
    order = "col" if kind == "conv" and dims.get("weight_bytes", 0) > COL_ORDER_MIN_WEIGHT_BYTES else "outer"
    return {"vec": vec, "row": row, "red": red, "par": par, "order": order}


def _knob_space(kind: str, dims: dict[str, int], threads: int) -> dict[str, list]:
    default = _default_knobs(kind, dims, threads)
    col_n, row_n, red_n = dims["col_n"], dims["row_n"], dims["red_n"]
    vecs = sorted({v for v in range(4, 129) if col_n % v == 0 and (v % 4 == 0 or v == col_n or v < LANES)} | {default["vec"]})
    rows = sorted({r for r in range(1, 17) if row_n % r == 0} | {default["row"]})
    reds = [1] if kind == "depthwise" else sorted({u for u in (1, 2, 4, 8) if red_n % u == 0 and red_n > u} | {1, default["red"]})
    # "none" only for small tasks, where waking the thread pool is the question: for big ones a
    # single-threaded win only means another process held the other core while tuning (machine load)
    pars = ["none"] if threads <= 1 else ["outer", "outer+row"] + (["none"] if dims["macs"] < 16 * PARALLEL_MIN_MACS else [])
    orders = ["col", "outer"] if dims["outer"] else ["col"]
    return {"vec": vecs, "row": rows, "red": reds, "par": pars, "order": orders}


def tunable_space(func: tvm.tirx.PrimFunc, threads: int) -> tuple[str, Knobs, dict[str, list], dict[str, int]] | None:
    """(rule name, default knobs, knob space, dims) of a PrimFunc whose rule has knobs, else None."""
    try:
        sch = Schedule(func)
        rule = _pick_rule(sch)
        if rule not in _TILE_RULES:
            return None
        kind = _TILE_RULES[rule]
        dims = _tile_dims(sch, rule)
    except Exception:  # noqa: BLE001 - not tunable
        return None
    if kind == "dense" and dims["row_n"] == 1:
        # a GEMV streams each weight once: the tuner's cold-cache timing (weights from DRAM) picked 8 lanes for
        # MobileNetV2's classifier (-20 % there), which ran 20-40 % slower inside the model than the default
        return None
    return kind, _default_knobs(kind, dims, threads), _knob_space(kind, dims, threads), dims


def _resolve(kind: str, dims: dict[str, int], threads: int, knobs: Knobs | None) -> Knobs:
    out = _default_knobs(kind, dims, threads)
    if knobs:
        unknown = set(knobs) - set(KNOB_NAMES)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}")
        out.update(knobs)
    if threads <= 1:
        out["par"] = "none"  # a database tuned for more threads, compiled for one (or a small model)
    if dims["col_n"] % int(out["vec"]) or dims["row_n"] % int(out["row"]) or (int(out["red"]) > 1 and dims["red_n"] % int(out["red"])):
        raise ValueError(f"knobs {format_knobs(out)} do not divide the loop extents")
    return out


# ----------------------------------------------------------------------------------------------------------
# Rules (each returns its report name)
# ----------------------------------------------------------------------------------------------------------

def _conv_nhwc(sch: Schedule, threads: int, knobs: Knobs | None = None) -> str:
    """Dense NHWC conv: (n, h, co/V, w/R, kh, kw, ci, R, V) with an R x V accumulator tile in registers."""
    conv = _single_reduction(sch)
    k = _resolve("conv", _tile_dims(sch, _conv_nhwc), threads, knobs)
    n, h, w, co, kh, kw, ci = sch.get_loops(conv)
    extents = tuple(_extent(sch, loop) for loop in (kh, kw, ci, co))
    _regblock(sch, conv, outer=[n, h], row=(w, k["row"]), col=(co, k["vec"]), red=[kh, kw, ci], knobs=k)
    if PREPACK_WEIGHTS.get():
        _prepack_weights(sch, conv, extents, int(k["vec"]))
    return "conv2d-nhwc-regblock"


def _prepack_weights(sch: Schedule, conv, hwio: tuple[int, ...], vec: int) -> None:
    """Weights HWIO -> [O/V, H, W, I, V], so the V lanes of every reduction step are the next 128 B of one
    stream. In HWIO they are V floats every O floats (a 2 KB stride for 512 channels), which the hardware
    prefetcher cannot follow: ResNet-18's last-stage convs ran at 70 % of FMA peak with weights from memory.
    The re-layout is a copy block marked as TVM's layout-rewrite preprocessing; schedule_cpu splits it out
    (SplitLayoutRewritePreproc) and FoldConstant runs it once at compile time on the constant weights."""
    _relayout_constant_read(sch, conv, lambda region: tuple(int(d) for d in region.source.shape) == hwio,
                            lambda kh, kw, ci, co: (co // vec, kh, kw, ci, co % vec))


def _relayout_constant_read(sch: Schedule, block, matches: Callable, layout: Callable) -> None:
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


def _conv_nhwc_depthwise(sch: Schedule, threads: int, knobs: Knobs | None = None) -> str:
    """Depthwise (or grouped) NHWC conv: channels are both the reduction's and the output's vector lanes.
    Depthwise is memory-bound, so the zero padding is inlined (a bounds check per tap, no padded copy)."""
    conv = _single_reduction(sch)
    k = _resolve("depthwise", _tile_dims(sch, _conv_nhwc_depthwise), threads, knobs)
    for prod in sch.get_producers(conv):
        sch.compute_inline(prod)
    n, h, w, co, kh, kw, ci = sch.get_loops(conv)
    _regblock(sch, conv, outer=[n, h], row=(w, k["row"]), col=(co, k["vec"]), red=[kh, kw, ci], knobs=k)
    return "conv2d-nhwc-depthwise" if _extent(sch, ci) == 1 else "conv2d-nhwc-grouped"


def _dense(sch: Schedule, threads: int, knobs: Knobs | None = None) -> str:
    """(batch.., M, N, K) matmul: (batch, M/R, N/V, K, R, V) with an R x V accumulator tile in registers."""
    mm = _single_reduction(sch)
    kn = _resolve("dense", _tile_dims(sch, _dense), threads, knobs)
    *batch, i, j, k = sch.get_loops(mm)
    _regblock(sch, mm, outer=list(batch), row=(i, kn["row"]), col=(j, kn["vec"]), red=[k], knobs=kn)
    if PREPACK_WEIGHTS.get():
        _prepack_dense_weights(sch, mm, int(kn["vec"]))
    return "dense"


def _prepack_dense_weights(sch: Schedule, mm, vec: int) -> None:
    """Constant [.., K, N] matmul weights -> [.., N/V, K, V]: the V lanes each reduction step reads are the
    next V floats of one stream (see _prepack_weights). For a classifier GEMV (1280 -> 1000) the [K, N]
    layout read 160 B every 4 KB."""
    block = sch.get(mm)
    j, k = block.iter_vars[-2].var, block.iter_vars[-1].var

    def is_k_by_n(region) -> bool:
        last_two = region.region[-2:]
        return len(last_two) == 2 and _uses_only(last_two[0].min, k) and _uses_only(last_two[1].min, j) \
            and int(region.source.shape[-1]) % vec == 0

    _relayout_constant_read(sch, mm, is_k_by_n, lambda *ix: (*ix[:-2], ix[-1] // vec, ix[-2], ix[-1] % vec))


_TILE_RULES: dict[Rule, str] = {_conv_nhwc: "conv", _conv_nhwc_depthwise: "depthwise", _dense: "dense"}


def _regblock(sch: Schedule, red_block, outer: list, row: tuple, col: tuple, red: list, knobs: Knobs) -> None:
    """Shared register-tiling core of the conv and dense rules.

    Loop nest: parallel(col_o, outer..) > row_o > red.. > row_i (unrolled) > col_i (vector lanes).
    Each red step broadcasts one input per row and loads V contiguous weights (NHWC/HWIO, K x N layouts),
    so the accumulator tile stays in registers for the whole reduction; the fused epilogue (bias, residual,
    ReLU/Clip, GELU...) is applied when the tile is stored. `knobs` (see _default_knobs) pick the tile
    shape, the reduction unroll, the parallel loop and the loop order.
    """
    threads = 2 if knobs["par"] != "none" else 1  # only parallel-or-not matters to the helpers below
    _inline_pad(sch, red_block)
    _inline_elementwise(sch, keep={red_block})
    for blk in _other_spatial(sch, red_block):  # padding stages left over: their own parallel nests
        _par_vec(sch, blk, threads)
    (row_loop, row_f), (col_loop, col_f) = row, col
    row_o, row_i = sch.split(row_loop, [None, int(row_f)])
    col_o, col_i = sch.split(col_loop, [None, int(col_f)])
    # col_o outermost (order "col"): each thread's contiguous chunk of the parallel loop reuses one weight
    # tile (kh*kw*ci*V floats) for all output rows, instead of streaming every weight tile from L3 per row.
    head = [col_o, *outer] if knobs["order"] == "col" else [*outer, col_o]
    sch.reorder(*head, row_o, *red, row_i, col_i)
    unroll = int(knobs["red"])
    if unroll > 1 and _extent(sch, red[-1]) % unroll == 0 and _extent(sch, red[-1]) > unroll:
        # `unroll` reduction steps per loop trip, unrolled: fewer loop-carried branches between the FMA groups
        red_o, red_i = sch.split(red[-1], [None, unroll])
        sch.reorder(red_o, red_i, row_i)
        sch.unroll(red_i)
        red = [*red[:-1], red_o]
    # "global", not "local": TVM 0.27 puts a "local" tile in the heap workspace (alloc/free per row tile);
    # a "global" one under 1 KiB goes on the stack (see edgekit/kernels/binary.py; ResNet-18 -2.5 %)
    store = sch.cache_write(red_block, 0, "global")
    _reverse_inline_epilogue(sch, store)
    sch.reverse_compute_at(store, row_o, preserve_unit_loops=True)
    if knobs["par"] == "outer+row":
        sch.parallel(sch.fuse(*head, row_o))
    elif knobs["par"] == "outer":
        sch.parallel(sch.fuse(*head) if len(head) > 1 else head[0])
    _vectorize_lanes(sch, col_i, unroll_outer=True)
    sch.unroll(row_i)
    *_, s_row, s_col = sch.get_loops(store)
    _vectorize_lanes(sch, s_col, unroll_outer=False)
    sch.decompose_reduction(red_block, red[0])  # last: parallel/vectorize first, or the init nest breaks them


def _winograd_input(sch: Schedule, threads: int) -> str:
    """V[e = (a, b), p, c]: per tile p and channel vector, for each row a of B^T d (6 vectors, computed in
    place from the input with the zero padding as bounds checks), its 6 columns b; a, b and the taps are
    unrolled, so every Select chain folds to one explicit sum."""
    blk = sch.get_sblock(winograd.INPUT_BLOCK)
    e, p, c = sch.get_loops(blk)
    a, b = sch.split(e, [None, winograd.ALPHA])
    c_o, c_i = sch.split(c, [None, _pick_lanes(_extent(sch, c), prefer=(16, 8))])
    sch.reorder(p, c_o, a, b, c_i)
    if threads > 1 and _block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
        sch.parallel(sch.fuse(p, c_o))
    _winograd_first_pass_at(sch, sch.get_sblock(winograd.INPUT_ROWS_BLOCK), at=a, unroll=(a, b), lanes=c_i)
    return "winograd-input"


def _winograd_output(sch: Schedule, threads: int) -> str:
    """y[n, h, w, k] with the bias / residual / activation epilogue: h and w split into 4x4 tiles whose 16
    positions are unrolled; the second pass of the output transform (S A) is inlined into the epilogue, the
    first (S = A^T M) computed per output row of the tile."""
    rows = sch.get_sblock(winograd.OUTPUT_ROWS_BLOCK)
    _inline_elementwise(sch, keep={rows})
    (blk,) = [b for b in _blocks(sch) if sch.get(b).name_hint != winograd.OUTPUT_ROWS_BLOCK]
    n, h, w, k = sch.get_loops(blk)
    h_o, h_i = sch.split(h, [None, winograd.TILE])
    w_o, w_i = sch.split(w, [None, winograd.TILE])
    k_o, k_i = sch.split(k, [None, _pick_lanes(_extent(sch, k), prefer=(16, 8))])
    sch.reorder(n, h_o, w_o, k_o, h_i, w_i, k_i)
    if threads > 1 and _block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
        sch.parallel(sch.fuse(n, h_o, w_o))
    _winograd_first_pass_at(sch, rows, at=h_i, unroll=(h_i, w_i), lanes=k_i)
    return "winograd-output"


def _winograd_first_pass_at(sch: Schedule, rows, at, unroll: tuple, lanes) -> None:
    """Compute one row of a transform's first pass (6 channel vectors: a stack buffer; a whole 6x6 tile would
    be heap scratch, see _regblock) inside loop `at`; unroll the position loops and its 6 taps so every Select
    chain folds; vectorize the channel lanes of both passes."""
    sch.compute_at(rows, at, preserve_unit_loops=True)
    *_, taps, _tile, row_lanes = sch.get_loops(rows)
    for loop in (*unroll, taps):
        sch.unroll(loop)
    sch.vectorize(lanes)
    sch.vectorize(row_lanes)


def _dlight_reduction(sch: Schedule, threads: int) -> str:
    """Softmax / layer norm: dlight's CPU Reduction rule (rows in parallel, all stages per row)."""
    from tvm.s_tir import dlight

    target = tvm.target.Target.current(allow_none=True) or tvm.target.Target({"kind": "llvm"})
    work = max(_block_work(sch, b) for b in _blocks(sch))
    if threads > 1 and work >= PARALLEL_MIN_ELEMS * 8:
        new = dlight.cpu.Reduction().apply(sch.mod["main"], target, False)
    else:  # the same rule without its parallel loop (small rows: a thread-pool barrier costs more)
        parallel = Schedule.parallel
        Schedule.parallel = lambda self, loop: None  # type: ignore[method-assign]
        try:
            new = dlight.cpu.Reduction().apply(sch.mod["main"], target, False)
        finally:
            Schedule.parallel = parallel  # type: ignore[method-assign]
    if new is None:
        raise ValueError("dlight Reduction does not apply")
    sch.mod["main"] = new.mod["main"]  # type: ignore[index]
    return "dlight-reduction"


def _reduction_vec(sch: Schedule, threads: int) -> str:
    """Pooling / mean over non-innermost axes: innermost spatial axis (channels in NHWC) moved inside the
    reduction and vectorized, leading spatial axes in parallel."""
    _inline_pad(sch, _single_reduction(sch))
    _inline_elementwise(sch, keep=set())
    red = _single_reduction(sch)
    for blk in _other_spatial(sch, red):
        _par_vec(sch, blk, threads)
    kinds = _iter_kinds(sch, red)
    loops = sch.get_loops(red)
    spatial, reduce_ = loops[: kinds.index("R")], loops[kinds.index("R"):]
    c_o, c_i = sch.split(spatial[-1], [None, _pick_lanes(_extent(sch, spatial[-1]), prefer=(32, 16, 64, 8))])
    sch.reorder(*spatial[:-1], c_o, *reduce_, c_i)
    par = sch.fuse(*spatial[:-1], c_o)
    if threads > 1 and _block_work(sch, red) >= PARALLEL_MIN_ELEMS * 8:
        sch.parallel(par)
    _vectorize_lanes(sch, c_i, unroll_outer=False)
    sch.decompose_reduction(red, reduce_[0])
    return "reduction-vec"


def _injective(sch: Schedule, threads: int) -> str:
    """Elementwise / layout chains: inline into the outputs, then parallel + vectorize each output."""
    _inline_elementwise(sch, keep=set())
    for blk in _blocks(sch):
        _par_vec(sch, blk, threads)
    return "injective"


def _fallback(sch: Schedule, threads: int) -> str:
    """Safe default for anything: per block, leading spatial loops in parallel, innermost spatial vectorized."""
    for blk in _blocks(sch):
        kinds = _iter_kinds(sch, blk)
        loops = sch.get_loops(blk)
        if len(loops) != len(kinds):
            continue  # loops do not map 1:1 onto block iters: leave it alone
        lead = len(kinds) - len(kinds.lstrip("S"))
        if "R" not in kinds:
            _par_vec(sch, blk, threads)
        elif lead and threads > 1 and _block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
            sch.parallel(sch.fuse(*loops[:lead]) if lead > 1 else loops[0])
    return "fallback-parallel"


# ----------------------------------------------------------------------------------------------------------
# Small scheduling helpers
# ----------------------------------------------------------------------------------------------------------

def _par_vec(sch: Schedule, blk, threads: int) -> None:
    """Spatial block: vectorize the innermost loop in register-sized pieces; parallel over just enough
    leading loops (fused) to feed the threads, so the inner loops keep simple contiguous indexing."""
    loops = sch.get_loops(blk)
    if not loops:
        return
    total = math.prod(_extent(sch, lp) for lp in loops)
    if _extent(sch, loops[-1]) < 4:
        # e.g. the NCHW -> NHWC transpose of an RGB input: 3 lanes gathered from 3 planes per pixel. Unrolled,
        # LLVM vectorizes the loop above it (MobileNetV2's 224x224 input 32 -> 6 us, 640x640 121 -> 56 us)
        sch.unroll(loops[-1])
    else:
        _vectorize_lanes(sch, loops[-1], unroll_outer=_extent(sch, loops[-1]) <= 4 * LANES)
    if len(loops) < 2 or threads <= 1 or total < PARALLEL_MIN_ELEMS:
        return
    lead, n = [], 1
    for lp in loops[:-1]:
        lead.append(lp)
        n *= _extent(sch, lp)
        if n >= 8 * threads:
            break
    sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])


def _vectorize_lanes(sch: Schedule, loop, unroll_outer: bool) -> None:
    """Vectorize a lane loop in pieces of at most one register (e.g. 24 -> 3 x 8): odd-width LLVM vectors
    such as <24 x float> compile to slow code, so wide loops are split by their largest divisor <= 16."""
    n = _extent(sch, loop)
    if n > LANES:
        piece = max((d for d in range(4, LANES + 1) if n % d == 0), key=lambda d: (d % 8 == 0, d % 4 == 0, d), default=1)
        if piece >= 4:
            o, loop = sch.split(loop, [None, piece])
            if unroll_outer:
                sch.unroll(o)
    if n > 1:
        sch.vectorize(loop)


def _inline_pad(sch: Schedule, red_block) -> None:
    """Inline a producer that is a plain copy (padding 0 or the identity 'pad' of a 1x1 conv)."""
    for prod in sch.get_producers(red_block):
        body = sch.get(prod).body
        if isinstance(body, tvm.tirx.BufferStore) and _is_load(body.value):
            sch.compute_inline(prod)


def _inline_elementwise(sch: Schedule, keep: set) -> None:
    """compute_inline every spatial non-output block into its consumers (epilogue chains collapse to one)."""
    keep_names = {sch.get(b).name_hint for b in keep}
    progress = True
    while progress:
        progress = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
        for blk in _blocks(sch):
            name = sch.get(blk).name_hint
            if name in keep_names or name in outputs or "R" in _iter_kinds(sch, blk) or name.startswith("pad"):
                continue
            if not all("R" not in _iter_kinds(sch, c) for c in sch.get_consumers(blk)):
                continue  # never inline into the reduction (e.g. a transpose feeding a matmul stays a stage)
            try:
                sch.compute_inline(blk)
                progress = True
                break
            except tvm.error.TVMError:
                continue


def _reverse_inline_epilogue(sch: Schedule, store) -> None:
    """Fold the single-consumer chain after the accumulator store (bias, residual add, activation) into it."""
    while True:
        consumers = sch.get_consumers(store)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except tvm.error.TVMError:
            return


def _other_spatial(sch: Schedule, red_block) -> list:
    """Spatial blocks other than red_block, each still in its own root-level loop nest (call before tiling)."""
    name = sch.get(red_block).name_hint
    return [b for b in _blocks(sch) if sch.get(b).name_hint != name and "R" not in _iter_kinds(sch, b)]


def _blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _iter_kinds(sch: Schedule, blk) -> str:
    """'S' per data-parallel block iter, 'R' per reduction iter, 'O' otherwise (e.g. 'SSSSRRR' for conv)."""
    return "".join({0: "S", 2: "R"}.get(int(iv.iter_type), "O") for iv in sch.get(blk).iter_vars)


def _single_reduction(sch: Schedule):
    reds = [b for b in _blocks(sch) if "R" in _iter_kinds(sch, b)]
    if len(reds) != 1:
        raise ValueError(f"expected one reduction block, found {len(reds)}")
    return reds[0]


def _is_matmul(sch: Schedule, blk) -> bool:
    """S..SSR block whose output's last index is the last spatial iter and one input is indexed [.., k, j]."""
    block = sch.get(blk)
    kinds = _iter_kinds(sch, blk)
    if not kinds.endswith("SSR") or kinds.count("R") != 1 or len(block.reads) < 2:
        return False
    j, k = block.iter_vars[-2].var, block.iter_vars[-1].var
    def last_is(region, var) -> bool:
        return len(region.region) >= 2 and _uses_only(region.region[-1].min, var)
    return any(last_is(r, j) for r in block.reads) and any(last_is(r, k) for r in block.reads)


def _reduces_innermost(sch: Schedule, blk) -> bool:
    """True when the reduction runs over the input's innermost (contiguous) axis (softmax, layer norm)."""
    block = sch.get(blk)
    red_vars = [iv.var for iv, kd in zip(block.iter_vars, _iter_kinds(sch, blk)) if kd == "R"]
    return any(r.region and any(_uses_only(r.region[-1].min, v) for v in red_vars) for r in block.reads)


def _uses_only(expr, var) -> bool:
    used = tvm.tirx.analysis.undefined_vars(expr)
    return bool(used) and all(u.same_as(var) for u in used)


def _is_load(obj) -> bool:
    # tvm.tirx.BufferLoad is a constructor function in TVM 0.27 (the node class is ir.TensorLoad): duck-type.
    return (hasattr(obj, "buffer") or hasattr(obj, "source")) and hasattr(obj, "indices")


def _block_work(sch: Schedule, blk) -> int:
    return math.prod(int(iv.dom.extent) for iv in sch.get(blk).iter_vars)


def _extent(sch: Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _pick_lanes(n: int, prefer: Sequence[int]) -> int:
    """A vector width that divides n: the first preferred one, else n itself when short, else a divisor."""
    for f in prefer:
        if n % f == 0:
            return f
    if n <= 5 * LANES:
        return n
    return _largest_divisor(n, 4 * LANES)


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]
