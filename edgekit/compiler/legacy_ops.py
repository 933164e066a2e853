"""Ops of old exports (PyTorch <= 1.4, Keras through old tf2onnx) that TVM 0.27's ONNX importer converts wrongly,
with converters that replace its own (registered by compiler/tvm_patches.py)."""

from __future__ import annotations

import numpy as np

_F32 = np.float32
_UPSAMPLE_MODES = {"nearest": "nearest_neighbor", "linear": "linear", "bilinear": "linear"}


def _upsample_scales(inputs: list, attr: dict, params) -> list[float]:
    import tvm
    from tvm.relax.frontend.onnx.onnx_frontend import get_constant

    if attr.get("scales") is not None:  # opset 7-8: an attribute
        return [float(s) for s in attr["scales"]]
    scales = get_constant(inputs[1], params) if len(inputs) > 1 else None
    if isinstance(scales, tvm.ir.GenericConst):  # opset 9: the second input
        return [float(s) for s in scales.value.numpy().reshape(-1)]
    raise ValueError(
        "Upsample's scales are not constant: make them an initializer, or bind the input with --freeze NAME=VALUE"
    )


class UpsampleConverter:
    """ONNX Upsample (opset 7-9; Resize replaced it at 10). TVM's converter reads the `scales` attribute of opset 7
    even at opset 9, where the scales are the second input, so every opset 9 export failed ("object of type
    'NoneType' has no len()"); and resize2d derives its coordinates from the sizes, where Upsample (as
    onnxruntime computes it) uses the scales: x_in = x_out / scale, nearest = floor. Where out / in is the scale
    exactly, resize2d computes the same; otherwise the source pixels are gathered as onnxruntime picks them."""

    @classmethod
    def get_converter(cls, _opset: int):
        return cls._convert

    @classmethod
    def _convert(cls, bb, inputs: list, attr: dict, params) -> object:
        from tvm import relax

        from edgekit.compiler.relax_passes.bilinear_resize import ort_bilinear

        scales = _upsample_scales(inputs, attr, params)
        shape = [int(d) for d in inputs[0].ty.shape]
        mode = attr.get("mode", b"nearest").decode()
        if len(shape) != 4 or scales[:2] != [1.0, 1.0] or mode not in _UPSAMPLE_MODES or min(scales) < 1:
            raise ValueError(
                f"Upsample of a {len(shape)}-D tensor with scales {scales}, mode {mode}: edgekit converts 4-D "
                "NCHW with unit batch and channel scales >= 1, nearest or linear"
            )
        out_hw = tuple(int(np.floor(d * s)) for d, s in zip(shape[2:], scales[2:]))
        if all(_F32(o) / _F32(d) == _F32(s) for o, d, s in zip(out_hw, shape[2:], scales[2:])):
            return relax.op.image.resize2d(
                inputs[0],
                roi=None,
                size=relax.ShapeExpr(list(out_hw)),
                layout="NCHW",
                method=_UPSAMPLE_MODES[mode],
                coordinate_transformation_mode="asymmetric",
                rounding_method="floor",
            )
        if _UPSAMPLE_MODES[mode] == "linear":
            return ort_bilinear(inputs[0], tuple(shape), out_hw, "asymmetric", (scales[2], scales[3]))
        out = inputs[0]
        for axis, (n_in, n_out, scale) in enumerate(zip(shape[2:], out_hw, scales[2:]), start=2):
            index = np.minimum(np.floor(np.arange(n_out, dtype=_F32) / _F32(scale)), n_in - 1).astype("int32")
            out = relax.op.take(out, relax.const(index), axis=axis)
        return out


class SliceConverter:
    """ONNX Slice at opsets 1-9 (starts / ends / axes as attributes, as PyTorch's opset 9 exports write every
    `x[:, 1:]`): TVM's converter has only the opset 13 form, which reads them from inputs, and failed with
    "Cannot cast <class 'NoneType'> to list of Expr". The attributes become those inputs."""

    @classmethod
    def get_converter(cls, opset: int):
        from tvm.relax.frontend.onnx.onnx_frontend import Slice

        return cls._convert_attributes if opset < 10 else Slice.get_converter(opset)

    @classmethod
    def _convert_attributes(cls, bb, inputs: list, attr: dict, params) -> object:
        from tvm import relax
        from tvm.relax.frontend.onnx.onnx_frontend import Slice

        starts, ends = (np.array(attr[k], np.int64) for k in ("starts", "ends"))
        axes = np.array(attr.get("axes", range(len(starts))), np.int64)
        args = [inputs[0], *(relax.const(v, "int64") for v in (starts, ends, axes)), None]
        return Slice.get_converter(13)(bb, args, {}, params)
