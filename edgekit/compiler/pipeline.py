"""The compiler, in order, for every target kind. Read this file to see every rewrite `edgekit compile` runs
between the ONNX file and code generation; compiler/build.py drives it.

  1. ONNX_LOWERINGS          ONNX -> ONNX, before TVM's importer (frontend.to_relax): ops the importer lacks
  2. relax_passes(...)       Relax -> Relax, per target kind and model kind:
       cpu fp32:   [binary layers -> XNOR kernels] -> fold -> scalar max/min as clip -> ConvTranspose as conv ->
                   Conv1d as conv2d -> NHWC (per-conv fallback) -> mean before permute -> LayerNorm arithmetic as
                   one kernel -> softmax as one kernel -> [fused inverted-residual
                   blocks, their block-pruned 1x1 convs sparse] -> [the other block-pruned 1x1 convs and MatMuls ->
                   block-sparse kernels] -> [Winograd] ->
                   fast sigmoid -> fast math -> legalize + fuse ("zero")
       cpu int8:   QDQ layers, QLinear adds / softmaxes / bilinear resizes as integer ops -> expand Q/DQ -> NHWC ->
                   packed u8s8 convs -> legalize + fuse
       gpu:        fold -> scalar max/min as clip -> ConvTranspose as conv -> Conv1d as conv2d (NCHW kept: the
                   GPU conv rules are implicit GEMMs over it) -> [int8: the QDQ lowerings, expand Q/DQ] ->
                   [fp16: mixed precision] -> fast math -> legalize + fuse
  3. rules_for(kind, int8)   the schedule rules every fused PrimFunc is offered, in priority order
                             (schedules/dispatch.schedule_functions gives each the first that applies)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx
import tvm
from tvm import relax

from edgekit.compiler import tvm_patches
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.relax_passes import RewriteLog, mutator_pass, skippable_pass
from edgekit.compiler.relax_passes.conv1d_as_conv2d import Conv1dAsConv2d
from edgekit.compiler.relax_passes.conv_transpose_as_conv import ConvTransposeAsConv
from edgekit.compiler.relax_passes.fast_math import FastSigmoid, fast_math
from edgekit.compiler.relax_passes.inverted_residual import InvertedResidualFusion
from edgekit.compiler.relax_passes.layer_norm import layer_norm_pass
from edgekit.compiler.relax_passes.layout import nhwc_layout
from edgekit.compiler.relax_passes.mean_before_permute import MeanBeforePermute
from edgekit.compiler.relax_passes.pack_int8_convs import pack_int8_convs
from edgekit.compiler.relax_passes.qdq import expand_qdq, qdq_passes
from edgekit.compiler.relax_passes.scalar_minmax_to_clip import ScalarMinMaxToClip
from edgekit.compiler.relax_passes.softmax import softmax_pass
from edgekit.compiler.relax_passes.sparse import sparse_layers_pass
from edgekit.compiler.relax_passes.winograd import WinogradConv
from edgekit.compiler.schedules.base import Rule
from edgekit.compiler.schedules.tiles import simd
from edgekit.kernels import sparse as sparse_kernel
from edgekit.targets import TargetCaps

GPU_KINDS = ("cuda", "opencl")


def target_kind(tvm_kind: str) -> str:
    """ "gpu" for TVM's GPU target kinds, "cpu" for llvm."""
    return "gpu" if tvm_kind in GPU_KINDS else "cpu"


def _onnx_lowerings() -> list[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]]:
    from edgekit.compiler.loops import unroll_constant_loops
    from edgekit.compiler.onnx_builder import constant_nodes_as_initializers
    from edgekit.compiler.pool_indices import lower_pool_indices
    from edgekit.compiler.recurrent import lower_recurrent
    from edgekit.compiler.sequences import fold_static_sequences
    from edgekit.compiler.spectral import lower_spectral
    from edgekit.passes import sparse_format

    return [
        ("constant_nodes", constant_nodes_as_initializers),  # the importer reads Constant's `value` form only
        ("fold_static_sequences", fold_static_sequences),  # ... converts sequence ops only in part
        ("lower_recurrent", lower_recurrent),  # TVM's importer has no LSTM / GRU / RNN
        ("lower_spectral", lower_spectral),  # ... no DFT / STFT
        ("unroll_constant_loops", unroll_constant_loops),  # ... and no Loop
        ("lower_pool_indices", lower_pool_indices),  # ... nor MaxPool's Indices output
        ("densify_sparse", sparse_format.densify),  # sparse storage decoded; SparseLayers re-packs what pays as blocks
    ]


ONNX_LOWERINGS = _onnx_lowerings()


@dataclass
class Reports:
    """What the reporting passes write while they run: per-layer int8 / binary results, skipped rewrites."""

    int8_layers: list[dict] = field(default_factory=list)
    binary_layers: list[dict] = field(default_factory=list)
    sparse_layers: list[dict] = field(default_factory=list)  # pruned layers: sparse or dense kernel, and why
    skipped: RewriteLog = field(default_factory=list)


def _front(log: RewriteLog | None) -> list[tvm.transform.Pass]:
    """What every target kind runs first: constant folding and the op rewrites TVM's legalizer needs."""
    return [
        relax.transform.FoldConstant(),
        mutator_pass(ScalarMinMaxToClip, "ScalarMinMaxToClip", log),
        mutator_pass(ConvTransposeAsConv, "ConvTransposeAsConv", log),
        mutator_pass(Conv1dAsConv2d, "Conv1dAsConv2d", log),
        relax.transform.DeadCodeElimination(),
    ]


def _binary(target: tvm.target.Target, reports: Reports) -> tvm.transform.Pass:
    """Fold the packed-bit unpack subgraphs to ±alpha constants, then swap binary layers for XNOR kernels."""
    from edgekit.compiler.relax_passes.binary import lower_binary_layers

    def run(mod: tvm.IRModule) -> tvm.IRModule:
        mod, layers = lower_binary_layers(relax.transform.FoldConstant()(mod), target)
        reports.binary_layers.extend(layers)
        return mod

    return skippable_pass("LowerBinaryLayers", run)


def xnor_passes(kind: str, target: tvm.target.Target, binary: bool, reports: Reports) -> list[tvm.transform.Pass]:
    """Binary layers as XNOR-popcount kernels: CPU targets, models with sign activations."""
    return [_binary(target, reports)] if binary and kind == "cpu" else []


def cpu_fp32_passes(
    opts: BuildOptions,
    caps: TargetCaps,
    threads: int,
    log: RewriteLog | None = None,
    sparse_report: list[dict] | None = None,
) -> list[tvm.transform.Pass]:
    """`threads`: what the fused blocks' row bands are planned for. `log` collects rewrites that failed
    (skipped, with the reason); without one they raise. `sparse_report` gets the per-layer sparse / dense choice."""
    lanes, acc_regs = simd(caps)
    sparse_report = ([] if sparse_report is None else sparse_report) if opts.sparse else None
    fused_blocks = mutator_pass(
        lambda mod: InvertedResidualFusion(mod, lanes, acc_regs, threads, sparse_report), "FuseInvertedResiduals", log
    )
    return [
        *_front(log),
        nhwc_layout(log),
        mutator_pass(MeanBeforePermute, "MeanBeforePermute", log),
        relax.transform.DeadCodeElimination(),
        relax.transform.FoldConstant(),
        layer_norm_pass(lanes, log),
        softmax_pass(lanes, log),
        *([fused_blocks, relax.transform.DeadCodeElimination()] if opts.fuse_blocks else []),
        *(
            [sparse_layers_pass(sparse_report, log, sparse_kernel.tile_rows(lanes, acc_regs))]
            if sparse_report is not None
            else []
        ),  # after the fused blocks: see its docstring
        *([mutator_pass(WinogradConv, "WinogradConv", log)] if opts.winograd else []),
        mutator_pass(FastSigmoid, "FastSigmoid", log),
        fast_math(log),
        relax.get_pipeline("zero"),  # LegalizeOps, FoldConstant (transposes the weights), FuseOps, FuseTIR
    ]


def cpu_int8_passes(caps: TargetCaps, reports: Reports, log: RewriteLog | None = None) -> list[tvm.transform.Pass]:
    """The QDQ lowerings (exact integer math vs onnxruntime), then per-tensor Q/DQ expanded into elementwise ops
    (so ConvertLayout carries NHWC through residual adds), NHWC, every eligible integer conv a packed-weight
    kernel, legalize + fuse."""
    return [
        *qdq_passes(reports.int8_layers),
        expand_qdq,
        relax.transform.FoldConstant(),
        nhwc_layout(log),
        relax.transform.FoldConstant(),  # HWIO weights become constants: pack_int8_convs reads them
        pack_int8_convs(same_signed_dot=caps.arch == "aarch64" and caps.has_dotprod),
        relax.transform.DeadCodeElimination(),
        relax.get_pipeline("zero"),  # LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
    ]


def gpu_passes(
    opts: BuildOptions, reports: Reports, int8: bool, log: RewriteLog | None = None
) -> list[tvm.transform.Pass]:
    """GPU builds keep NCHW (the GPU conv rules read it as an implicit GEMM) and TVM's own fusion."""
    return [
        *_front(log),
        *([*qdq_passes(reports.int8_layers), expand_qdq, relax.transform.FoldConstant()] if int8 else []),
        *([relax.transform.ToMixedPrecision(out_dtype="float32")] if opts.precision == "fp16" else []),
        fast_math(log),
        relax.get_pipeline("zero"),
    ]


def relax_passes(
    kind: str,
    opts: BuildOptions,
    caps: TargetCaps,
    target: tvm.target.Target,
    threads: int,
    *,
    int8: bool,
    binary: bool,
    reports: Reports,
) -> list[tvm.transform.Pass]:
    """Every Relax pass of a build, in order (see the module docstring)."""
    tvm_patches.apply()
    log = reports.skipped
    if kind == "gpu":
        return gpu_passes(opts, reports, int8, log)
    return [
        *xnor_passes(kind, target, binary, reports),
        *(
            cpu_int8_passes(caps, reports, log)
            if int8
            else cpu_fp32_passes(opts, caps, threads, log, reports.sparse_layers)
        ),
    ]


def rules_for(kind: str, int8: bool) -> tuple[Sequence[Rule], Rule]:
    """The schedule rules of a target kind in priority order, and the fallback for what none fits (or a rule
    that failed)."""
    from edgekit.compiler.schedules.dispatch import CPU_INT8_RULES, CPU_RULES, FALLBACK, GPU_FALLBACK, GPU_RULES

    if kind == "gpu":
        return GPU_RULES, GPU_FALLBACK
    return CPU_INT8_RULES if int8 else CPU_RULES, FALLBACK


def run_passes(mod: tvm.IRModule, passes: Sequence[tvm.transform.Pass]) -> tvm.IRModule:
    return tvm.transform.Sequential(list(passes))(mod)
