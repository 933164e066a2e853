"""The compiler, in order: every Relax pass of the fp32, int8 and binary builds. Read this file to see what
`edgekit compile` does to a model between the ONNX importer and the per-PrimFunc schedule rules.

    binary:  lower_binary_layers (XNOR-popcount kernels), then the fp32 passes
    fp32:    fold -> scalar max/min as clip -> ConvTranspose as conv -> Conv1d as conv2d -> NHWC (per-conv fallback) ->
             mean before permute -> [fused inverted-residual blocks] -> [Winograd] -> fast math (+ sigmoid) -> legalize + fuse ("zero")
    int8:    lower_qdq (integer ops) -> expand Q/DQ -> NHWC -> packed u8s8 convs -> legalize + fuse
Then schedules/cpu.py (or schedules/int8.py) gives every fused PrimFunc its rule (schedules/dispatch.py).
"""
from __future__ import annotations

import tvm
from tvm import relax

from edgekit.compiler import tvm_patches
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.relax_passes import RewriteLog, mutator_pass
from edgekit.compiler.relax_passes.conv1d_as_conv2d import Conv1dAsConv2d
from edgekit.compiler.relax_passes.conv_transpose_as_conv import ConvTransposeAsConv
from edgekit.compiler.relax_passes.fast_math import FastSigmoid, fast_math
from edgekit.compiler.relax_passes.inverted_residual import InvertedResidualFusion
from edgekit.compiler.relax_passes.layout import nhwc_layout
from edgekit.compiler.relax_passes.mean_before_permute import MeanBeforePermute
from edgekit.compiler.relax_passes.pack_int8_convs import pack_int8_convs
from edgekit.compiler.relax_passes.qdq import expand_qdq, lower_qdq
from edgekit.compiler.relax_passes.scalar_minmax_to_clip import ScalarMinMaxToClip
from edgekit.compiler.relax_passes.winograd import WinogradConv
from edgekit.compiler.schedules.tiles import simd
from edgekit.targets import TargetCaps



def fp32_passes(opts: BuildOptions, caps: TargetCaps, threads: int, log: RewriteLog | None = None) -> list[tvm.transform.Pass]:
    """`threads`: what the fused blocks' row bands are planned for. `log` collects rewrites that failed
    (skipped, with the reason); without one they raise."""
    lanes, acc_regs = simd(caps)
    fused_blocks = mutator_pass(lambda mod: InvertedResidualFusion(mod, lanes, acc_regs, threads), "FuseInvertedResiduals", log)
    return [
        relax.transform.FoldConstant(),
        mutator_pass(ScalarMinMaxToClip, "ScalarMinMaxToClip", log),
        mutator_pass(ConvTransposeAsConv, "ConvTransposeAsConv", log),
        mutator_pass(Conv1dAsConv2d, "Conv1dAsConv2d", log),
        relax.transform.DeadCodeElimination(),
        nhwc_layout(log),
        mutator_pass(MeanBeforePermute, "MeanBeforePermute", log),
        relax.transform.DeadCodeElimination(),
        relax.transform.FoldConstant(),
        *([fused_blocks, relax.transform.DeadCodeElimination()] if opts.fuse_blocks else []),
        *([mutator_pass(WinogradConv, "WinogradConv", log)] if opts.winograd else []),
        mutator_pass(FastSigmoid, "FastSigmoid", log),
        fast_math(log),
        relax.get_pipeline("zero"),  # LegalizeOps, FoldConstant (transposes the weights), FuseOps, FuseTIR
    ]


def int8_passes(caps: TargetCaps, log: RewriteLog | None = None) -> list[tvm.transform.Pass]:
    """After lower_qdq: per-tensor Q/DQ expanded into elementwise ops (so ConvertLayout carries NHWC through
    residual adds), NHWC, every eligible integer conv a packed-weight kernel, legalize + fuse."""
    return [
        expand_qdq,
        relax.transform.FoldConstant(),
        nhwc_layout(log),
        relax.transform.FoldConstant(),  # HWIO weights become constants: pack_int8_convs reads them
        pack_int8_convs(same_signed_dot=caps.arch == "aarch64" and caps.has_dotprod),
        relax.transform.DeadCodeElimination(),
        relax.get_pipeline("zero"),  # LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
    ]


def prepare_fp32(mod: tvm.IRModule, opts: BuildOptions, caps: TargetCaps, threads: int,
                 log: RewriteLog | None = None) -> tvm.IRModule:
    tvm_patches.apply()
    return tvm.transform.Sequential(fp32_passes(opts, caps, threads, log))(mod)


def prepare_int8(mod: tvm.IRModule, caps: TargetCaps, log: RewriteLog | None = None) -> tuple[tvm.IRModule, list[dict]]:
    """Relax side of the int8 build; returns lower_qdq's per-layer report too."""
    tvm_patches.apply()
    mod, layers = lower_qdq(mod)
    return tvm.transform.Sequential(int8_passes(caps, log))(mod), layers


def lower_binary(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, list[dict]]:
    """Fold the packed-bit unpack subgraphs to ±alpha constants, then swap binary layers for XNOR kernels."""
    from edgekit.compiler.relax_passes.binary import lower_binary_layers

    return lower_binary_layers(relax.transform.FoldConstant()(mod), target)
