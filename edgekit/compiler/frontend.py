"""ONNX -> Relax: fixed shapes, a supported-op check that names the node, and TVM's importer."""
from __future__ import annotations

import onnx

from edgekit.errors import EdgekitError
from edgekit.graph import TensorSpec


def supported_onnx_ops() -> set[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map())


def check_supported(model: onnx.ModelProto) -> None:
    """Fail before importing, naming the first node TVM cannot take (the importer only lists op types)."""
    supported = supported_onnx_ops()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            where = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
            raise EdgekitError(
                f"node '{node.name or '<unnamed>'}' uses op {where}{node.op_type}, which TVM's ONNX importer does not support",
                "replace or remove that op before compiling (it still runs in onnxruntime)",
            )


def to_relax(model: onnx.ModelProto, inputs: list[TensorSpec]):
    """Import into a Relax IRModule with weights bound as constants (so they are folded into the build)."""
    from tvm.relax.frontend.onnx import from_onnx

    check_supported(model)
    shape_dict = {s.name: [int(d) for d in s.shape] for s in inputs}
    dtype_dict = {s.name: s.dtype for s in inputs}
    try:
        return from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise EdgekitError(f"TVM could not import the model: {first}", "run `edgekit export`/onnxsim with fixed shapes first, or report the op") from None
