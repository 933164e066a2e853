"""DFT / STFT lowered to a MatMul with a constant DFT matrix (compiler/spectral.py): compiled and validated against
onnxruntime's own DFT / STFT kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.spectral import dft_matrix, lower_spectral
from edgekit.core.errors import EdgekitError


def _model(nodes, inputs, output_shape, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "spectral",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 20 else 9
    return model


def _compiles_and_validates(model: onnx.ModelProto, tmp_path) -> None:
    onnx.save(model, tmp_path / "m.onnx")
    result = compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok, result.validation


def test_dft_matrix_is_numpy_fft():
    x = np.random.default_rng(0).standard_normal((3, 20, 2))
    got = (x.reshape(3, 40) @ dft_matrix(20, 20, 2, False, False)).reshape(3, 20, 2)
    want = np.fft.fft(x[..., 0] + 1j * x[..., 1], axis=1)
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, atol=1e-4)
    back = (got.reshape(3, 40) @ dft_matrix(20, 20, 2, False, True)).reshape(3, 20, 2)
    np.testing.assert_allclose(back, x, atol=1e-5)


@pytest.mark.parametrize(
    "shape,axis,onesided,inverse,length",
    [
        ((2, 64, 1), 1, 1, 0, None),  # real signal, half spectrum (torch.fft.rfft)
        ((2, 32, 2), 1, 0, 0, None),  # complex
        ((2, 32, 2), 1, 0, 1, None),  # inverse
        ((2, 64, 1), 1, 0, 0, 48),  # dft_length < N: truncated
        ((1, 40, 1), 1, 1, 0, 64),  # dft_length > N: zero padded
        ((2, 16, 3, 1), 1, 0, 0, None),  # signal axis not next to the last: transposed around the MatMul
    ],
)
def test_dft_matches_onnxruntime(shape, axis, onesided, inverse, length, tmp_path):
    inits = [numpy_helper.from_array(np.array(length, np.int64), "n")] if length else []
    node = helper.make_node(
        "DFT", ["x", "n"] if length else ["x"], ["y"], axis=axis, onesided=onesided, inverse=inverse
    )
    n = length or shape[axis]
    out = list(shape[:-1]) + [2]
    out[axis] = n // 2 + 1 if onesided else n
    model = _model([node], [("x", list(shape))], out, inits)
    assert not any(nd.op_type == "DFT" for nd in lower_spectral(model).graph.node)
    _compiles_and_validates(model, tmp_path)


def test_dft_opset_20_axis_input(tmp_path):
    axis = numpy_helper.from_array(np.array(-2, np.int64), "axis")
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], onesided=1)
    _compiles_and_validates(_model([node], [("x", [2, 50, 1])], [2, 26, 2], [axis], opset=20), tmp_path)


@pytest.mark.parametrize("window", [True, False])
def test_stft_matches_onnxruntime(window, tmp_path):
    """A speech front end: 25 ms Hann windows every 10 ms of 16 kHz audio (torch.stft(..., onesided=True))."""
    frame, hop, samples = 400, 160, 4000
    inits = [numpy_helper.from_array(np.array(hop, np.int64), "step")]
    if window:
        inits.append(numpy_helper.from_array(np.hanning(frame).astype(np.float32), "window"))
        node = helper.make_node("STFT", ["x", "step", "window"], ["y"], onesided=1)
    else:
        inits.append(numpy_helper.from_array(np.array(frame, np.int64), "frame"))
        node = helper.make_node("STFT", ["x", "step", "", "frame"], ["y"], onesided=1)
    frames = (samples - frame) // hop + 1
    _compiles_and_validates(_model([node], [("x", [1, samples, 1])], [1, frames, frame // 2 + 1, 2], inits), tmp_path)


def test_stft_with_a_runtime_frame_step_is_refused_naming_the_node():
    node = helper.make_node("STFT", ["x", "step", "", "frame"], ["y"], name="frontend/stft", onesided=1)
    model = _model(
        [node], [("x", [1, 1000, 1])], [1, 5, 129, 2], [numpy_helper.from_array(np.array(256, np.int64), "frame")]
    )
    model.graph.input.append(helper.make_tensor_value_info("step", TensorProto.INT64, []))
    with pytest.raises(EdgekitError, match="frontend/stft.*frame_step"):
        lower_spectral(model)


def test_a_dft_too_long_for_a_matrix_is_refused_naming_the_node():
    node = helper.make_node("DFT", ["x"], ["y"], name="long_fft", axis=1)
    with pytest.raises(EdgekitError, match="long_fft.*length 8192.*no FFT"):
        lower_spectral(_model([node], [("x", [1, 8192, 2])], [1, 8192, 2]))
