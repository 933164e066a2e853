"""ONNX -> Relax: fixed shapes, a supported-op check that names the node, and TVM's importer."""

from __future__ import annotations

import contextlib
import io
import warnings

import onnx

import edgekit.core.interrupts as interrupts
from edgekit.compiler.pool_indices import POOL_INDICES_OP
from edgekit.compiler.recurrent import EDGEKIT_DOMAIN, RECURRENT_OPS, SEQUENCE_OP
from edgekit.compiler.spectral import SPECTRAL_OPS
from edgekit.core.errors import EdgekitError, message_line
from edgekit.onnxkit.graph import TensorSpec


def supported_onnx_ops() -> set[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return (
        set(onnx_frontend._get_convert_map()) | set(RECURRENT_OPS) | set(SPECTRAL_OPS)
    )  # lowered by edgekit before the import


def check_supported(model: onnx.ModelProto) -> None:
    """Fail before importing, naming the first node TVM cannot take (the importer only lists op types)."""
    supported = supported_onnx_ops()
    for node in model.graph.node:
        if node.domain == EDGEKIT_DOMAIN and node.op_type in (SEQUENCE_OP, POOL_INDICES_OP):
            continue  # written by lower_recurrent / lower_pool_indices; converted by edgekit's importer patch
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            where = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
            control = node.op_type in ("If", "Loop", "Scan")
            raise EdgekitError(
                f"node '{node.name or '<unnamed>'}' uses op {where}{node.op_type}, "
                "which TVM's ONNX importer does not support",
                "bind the input its condition or trip count depends on with --freeze NAME=VALUE, so that it folds"
                if control
                else "replace or remove that op before compiling (it still runs in onnxruntime)",
            )


def widen_subbyte_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """INT4/INT2 initializers -> INT8 with the same values (a copy).

    TVM's importer copies initializers byte for byte and rejects packed sub-byte tensors
    ("TensorCopyFromBytes: size mismatch"). DequantizeLinear gives the same result on the wider
    container, so this changes storage inside the build only, never the arithmetic.
    """
    from onnx import TensorProto, numpy_helper

    subbyte = {TensorProto.INT4, TensorProto.INT2, TensorProto.UINT4, TensorProto.UINT2}
    if not any(t.data_type in subbyte for t in model.graph.initializer):
        return model
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    for i, t in enumerate(widened.graph.initializer):
        if t.data_type in subbyte:
            signed = t.data_type in (TensorProto.INT4, TensorProto.INT2)
            values = numpy_helper.to_array(t).astype("int8" if signed else "uint8")
            widened.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, t.name))
    return widened


def to_relax(model: onnx.ModelProto, inputs: list[TensorSpec]):
    """Import into a Relax IRModule with weights bound as constants (so they are folded into the build)."""
    from tvm.relax.frontend.onnx import from_onnx

    from edgekit.compiler import tvm_patches

    tvm_patches.apply()  # before the import: two of the patches change how ONNX ops are converted
    from edgekit.compiler.pipeline import ONNX_LOWERINGS

    for _name, lower in ONNX_LOWERINGS:
        model = lower(model)
    check_supported(model)
    model = widen_subbyte_initializers(model)
    shape_dict = {s.name: [int(d) for d in s.shape] for s in inputs}
    dtype_dict = {s.name: s.dtype for s in inputs}
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # the importer prints "Error converting operator ..." to stdout (--json's), and warns "Renaming name 0
            # to input_0" for input names that are not identifiers: harmless, the VM takes inputs by position
            warnings.filterwarnings("ignore", message="Renaming name", category=UserWarning)
            return from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False)
    except Exception as exc:
        interrupts.check()
        first = message_line(exc, 300)
        raise EdgekitError(
            f"TVM could not import the model: {first}",
            "run `edgekit export`/onnxsim with fixed shapes first, or report the op",
        ) from None
