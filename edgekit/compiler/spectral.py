"""ONNX DFT and STFT (audio front ends exported with torch.stft / tf.signal.stft) -> MatMul with a constant DFT
matrix, before TVM's import (its importer has neither op).

For a fixed length N the DFT is a linear map, so it is one MatMul. The matrix takes the ONNX layout as it is:
rows (n, re/im) of the input's interleaved [..., N, 1 or 2] samples, columns (k, re/im) of the output's
[..., K, 2], so no Split / Concat is needed around it:

    out[2k]   = Σ_n xr[n]·cos θ - s·xi[n]·sin θ        θ = 2π k n / L,  s = -1 forward, +1 inverse (then / L)
    out[2k+1] = Σ_n xi[n]·cos θ + s·xr[n]·sin θ

dft_length L != N (truncation or zero padding) only changes which rows are non-zero. STFT is the same matrix, with a
constant window folded into its rows, applied to every frame: a Conv1d with stride = frame step (which edgekit
runs as a conv2d, see relax_passes/conv1d_as_conv2d.py).
O(N²) MACs instead of an FFT's O(N log N): for the frame sizes of speech models (256-1024) a GEMM at full
vector speed beats an FFT written in TIR, and it stays exact to float rounding (validated like every build).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekit.compiler.onnx_builder import NodeBuilder, constant_values, inferred_shapes, replace_nodes
from edgekit.core.errors import EdgekitError
from edgekit.passes.opset import default_opset

SPECTRAL_OPS = ("DFT", "STFT")
MAX_MATRIX_BYTES = 64 << 20  # a DFT of 2048 complex samples: 64 MB of matrix; longer ones need an FFT edgekit lacks


def matrix_bytes(samples: int, length: int, components: int, onesided: bool) -> int:
    return 4 * samples * components * 2 * (length // 2 + 1 if onesided else length)


def dft_matrix(
    samples: int, length: int, components: int, onesided: bool, inverse: bool, window: np.ndarray | None = None
) -> np.ndarray:
    """[samples·components, bins·2] float32: interleaved input (n, re/im) -> interleaved output (k, re/im)."""
    bins = length // 2 + 1 if onesided else length
    n = np.arange(min(samples, length))[:, None]
    theta = 2 * np.pi * np.arange(bins)[None, :] * n / length
    sign = 1.0 if inverse else -1.0
    scale = (1.0 / length if inverse else 1.0) * (window[: len(n), None] if window is not None else 1.0)
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    m = np.zeros((samples, components, bins, 2))
    m[: len(n), 0, :, 0], m[: len(n), 0, :, 1] = cos, sign * sin  # from the real part
    if components == 2:
        m[: len(n), 1, :, 0], m[: len(n), 1, :, 1] = -sign * sin, cos  # from the imaginary part
    return m.reshape(samples * components, bins * 2).astype(np.float32)


def _refuse(node: onnx.NodeProto, what: str) -> EdgekitError:
    return EdgekitError(
        f"node '{node.name or node.op_type}' ({node.op_type}) has {what}, which edgekit cannot compile",
        "fix the input shapes with --input-shape and make the lengths constants (--freeze NAME=VALUE)",
    )


def _check_size(node: onnx.NodeProto, samples: int, length: int, components: int, onesided: bool) -> None:
    size = matrix_bytes(samples, length, components, onesided)
    if size > MAX_MATRIX_BYTES:
        raise EdgekitError(
            f"node '{node.name or node.op_type}' ({node.op_type}) is a DFT of length {length}: its matrix would take "
            f"{size / 2**20:.0f} MB (edgekit lowers DFT to a MatMul and has no FFT)",
            "frame the signal (STFT) or compute the long transform outside the model",
        )


def _scalar(node: onnx.NodeProto, index: int, constants: dict, what: str) -> int | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    if node.input[index] not in constants:
        raise _refuse(node, f"a {what} that is not a constant")
    return int(np.asarray(constants[node.input[index]]).reshape(-1)[0])


def _lower_dft(node: onnx.NodeProto, shape: list[int], constants: dict, opset: int) -> tuple[list, list]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inverse, onesided = bool(attrs.get("inverse", 0)), bool(attrs.get("onesided", 0))
    axis = _scalar(node, 2, constants, "axis") if opset >= 20 else int(attrs.get("axis", 1))
    axis = (-2 if axis is None else axis) % len(shape)
    components = shape[-1]
    if axis == len(shape) - 1 or components not in (1, 2):
        raise _refuse(node, f"input shape {shape} with axis {axis}")
    if inverse and onesided:
        raise _refuse(node, "inverse with onesided")
    samples = shape[axis]
    length = _scalar(node, 1, constants, "dft_length") or samples
    _check_size(node, samples, length, components, onesided)
    g = NodeBuilder(node.name or "dft")
    perm = [i for i in range(len(shape) - 1) if i != axis] + [axis, len(shape) - 1]
    x = g.op("Transpose", [node.input[0]], perm=perm) if axis != len(shape) - 2 else node.input[0]
    lead = [shape[i] for i in perm[:-2]]
    matrix = dft_matrix(samples, length, components, onesided, inverse)
    y = g.reshape(
        g.op("MatMul", [g.reshape(x, [*lead, samples * components]), g.const(matrix, "dft_matrix")]),
        [*lead, matrix.shape[1] // 2, 2],
    )
    if axis != len(shape) - 2:
        g.op("Transpose", [y], node.output[0], perm=list(np.argsort(perm)))
    else:
        g.op("Identity", [y], node.output[0])
    return g.nodes, g.inits


def _lower_stft(node: onnx.NodeProto, shape: list[int], constants: dict) -> tuple[list, list]:
    onesided = bool(next((helper.get_attribute_value(a) for a in node.attribute if a.name == "onesided"), 1))
    batch, signal_length, components = shape
    step = _scalar(node, 1, constants, "frame_step")
    window = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and window is None:
        raise _refuse(node, "a window that is not a constant")
    frame_length = _scalar(node, 3, constants, "frame_length") or (len(window) if window is not None else None)
    if step is None or frame_length is None:
        raise _refuse(node, "no frame length (neither a window nor frame_length)")
    _check_size(node, frame_length, frame_length, components, onesided)
    frames = (signal_length - frame_length) // step + 1
    g = NodeBuilder(node.name or "stft")
    matrix = dft_matrix(
        frame_length,
        frame_length,
        components,
        onesided,
        False,
        None if window is None else np.asarray(window, np.float64),
    )
    bins = matrix.shape[1] // 2
    # the framed MatMul is a strided Conv1d: kernel [bins·2, components, frame_length], stride = frame step
    kernel = matrix.reshape(frame_length, components, bins * 2).transpose(2, 1, 0)
    y = g.op(
        "Conv",
        [g.op("Transpose", [node.input[0]], perm=[0, 2, 1]), g.const(np.ascontiguousarray(kernel), "dft_kernel")],
        strides=[step],
    )  # [B, bins·2, F]
    g.op("Transpose", [g.reshape(y, [batch, bins, 2, frames])], node.output[0], perm=[0, 3, 1, 2])
    return g.nodes, g.inits


def lower_spectral(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every DFT / STFT node as a MatMul (the model itself if it has none)."""
    if not any(n.op_type in SPECTRAL_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    shapes, constants, opset = inferred_shapes(model), constant_values(model), default_opset(model)
    lowered = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in SPECTRAL_OPS or node.domain not in ("", "ai.onnx"):
            continue
        shape = shapes.get(node.input[0])
        if not shape or None in shape or (node.op_type == "STFT" and len(shape) != 3):
            raise _refuse(node, f"an input of unknown or unsupported shape {shape}")
        lowered[i] = (
            _lower_dft(node, shape, constants, opset) if node.op_type == "DFT" else _lower_stft(node, shape, constants)
        )
    return replace_nodes(model, lowered)
