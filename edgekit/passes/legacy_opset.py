"""Models at ONNX opsets 1-6 (PyTorch 0.3 / 0.4-era exports) upgraded to opset 13, checked, when loaded.

onnxruntime has no kernels for many opset-6 ops (BatchNormalization(6), PRelu(6), Gemm(6), Add(6), AveragePool(1):
"Could not find an implementation"), and TVM's importer expects the newer forms, so edgekit converts such a model
with onnx's version converter, and only keeps a conversion that computes what the original does: onnxruntime
runs the original where it can, onnx.reference (which implements the old op versions) where onnxruntime cannot,
on random inputs, against onnxruntime on the conversion. Two facts of the converter, measured: on an IR-3 model
it fails ("Input w is undefined") unless the IR version is raised, and raised it converts per op exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgekit.core.errors import EdgekitError, message_line
from edgekit.passes.opset import default_opset

FIRST_SUPPORTED = 7  # onnxruntime's own minimum; older models are converted
TARGET_OPSET = 13
UPGRADED_KEY = "edgekit.upgraded_from_opset"
TOLERANCE = 1e-4  # of the output scale: float rounding only, a changed semantics is off by far more


def _random_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    rng, feeds = np.random.default_rng(0), {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type or onnx.TensorProto.FLOAT))
        feeds[vi.name] = rng.standard_normal(dims).astype(dtype) if dtype.kind == "f" else np.zeros(dims, dtype)
    return feeds


def reference_model(path: Path) -> Path | onnx.ModelProto:
    """What onnxruntime should load for the ONNX file at `path` as edgekit's reference: the file itself, or for
    an opset 1-6 model the same checked conversion load_onnx gives the rest of edgekit."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: onnxruntime's own load reports it
        return path
    return upgrade_legacy(model) if default_opset(model) < FIRST_SUPPORTED else path


def _outputs_of_original(model: onnx.ModelProto, feeds: dict) -> tuple[list | None, str]:
    """The original's outputs from onnxruntime, else onnx.reference; (None, why both failed) where neither runs it."""
    from edgekit.onnxkit.tools import ort_error_line, ort_session

    try:
        return ort_session(model).run(None, feeds), ""
    except Exception as exc:  # noqa: BLE001 - no kernel for an old op version: try the reference implementation
        ort_why = (
            exc.message.removeprefix("onnxruntime cannot load the model: ")
            if isinstance(exc, EdgekitError)
            else ort_error_line(exc)
        )
    try:
        from onnx.reference import ReferenceEvaluator

        return list(ReferenceEvaluator(model).run(None, feeds)), ""
    except Exception as exc:  # noqa: BLE001 - neither implements the original: reported by the caller
        return None, f"onnxruntime: {ort_why[:150]}; onnx.reference: {message_line(exc, 150)}"


def _per_channel_prelu(model: onnx.ModelProto) -> None:
    """PRelu before opset 7 applied a slope of shape [C] per channel (axis 1), as PyTorch 0.3 exported it; from 7 it
    broadcasts numpy-style (against the last axis), and the version converter leaves the slope as it is. Reshaped
    here to [C, 1, ...] (in place, on the working copy), which means the same at every opset."""
    from onnx import numpy_helper

    from edgekit.compiler.onnx_builder import inferred_shapes

    try:
        shapes = inferred_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference refuses the old graph: the converter's own error follows
        return
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2:
            continue
        slope, dims = inits.get(node.input[1]), shapes.get(node.input[0])
        if slope is None or not dims or len(dims) < 3 or list(slope.dims) != [dims[1]] or dims[1] == dims[-1]:
            continue
        value = numpy_helper.to_array(slope).reshape([dims[1]] + [1] * (len(dims) - 2))
        slope.CopyFrom(numpy_helper.from_array(value, slope.name))
        for vi in model.graph.input:  # IR 3 lists initializers as inputs too, with their old shape
            if vi.name == slope.name:
                vi.CopyFrom(helper.make_tensor_value_info(vi.name, slope.data_type, list(value.shape)))


def upgrade_legacy(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` itself at opset >= 7; else its conversion to TARGET_OPSET, checked against the original."""
    current = default_opset(model)
    if current >= FIRST_SUPPORTED:
        return model
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work.ir_version = max(work.ir_version, 7)  # IR 3 makes the converter require initializers as inputs
    hint = f"re-export the model at opset {FIRST_SUPPORTED} or later (edgekit export uses 18)"
    _per_channel_prelu(work)
    try:
        converted = onnx.version_converter.convert_version(work, TARGET_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001 - the converter's RuntimeErrors: one line naming what it could not adapt
        raise EdgekitError(
            f"the model uses ONNX opset {current}, and onnx's version converter cannot upgrade it: {message_line(exc)}",
            hint,
        ) from None
    feeds = _random_feeds(model)
    want, why = _outputs_of_original(model, feeds)
    if want is None:
        raise EdgekitError(
            f"the model uses ONNX opset {current}, and neither onnxruntime nor onnx.reference runs it, so "
            f"edgekit cannot check its conversion to a newer opset ({why})",
            hint,
        )
    from edgekit.onnxkit.comparison import compare_outputs
    from edgekit.onnxkit.tools import ort_session

    names = [o.name for o in model.graph.output]
    try:
        got = ort_session(converted).run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses the converted graph: the converter got it wrong
        raise EdgekitError(
            f"the model uses ONNX opset {current}, and onnxruntime cannot run onnx's conversion of it "
            f"({message_line(exc, 200)})",
            hint,
        ) from None
    check = compare_outputs(dict(zip(names, want)), dict(zip(names, got)), atol=TOLERANCE, rtol=TOLERANCE)
    for out in check.outputs:
        if not out.ok:
            raise EdgekitError(
                f"the model uses ONNX opset {current}, and onnx's version converter changes its output "
                f"'{out.name}' (error {out.max_abs:.2g} at scale {out.scale:.2g})",
                hint,
            )
    converted.metadata_props.append(onnx.StringStringEntryProto(key=UPGRADED_KEY, value=str(current)))
    return converted
