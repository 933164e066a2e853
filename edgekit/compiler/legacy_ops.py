"""Ops that TVM 0.27's ONNX importer converts wrongly, most of them from old exports (PyTorch <= 1.4, Keras
through old tf2onnx), with converters that replace its own (registered by compiler/tvm_patches.py)."""

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


def _nearest_index(coords: np.ndarray, rounding: str, downsampling: bool) -> np.ndarray:
    """onnxruntime's nearest source pixel of each source coordinate (upsamplebase.h, GetNearestPixelFromOriginal);
    "simple" is opset 10's rule (truncate, ceil when downsampling)."""
    floor = np.floor(coords)
    frac = coords - floor
    if rounding == "round_prefer_floor":
        return np.where(frac > 0.5, floor + 1, floor)
    if rounding == "round_prefer_ceil":
        return np.where(frac >= 0.5, floor + 1, floor)
    if rounding == "simple":
        return np.ceil(coords) if downsampling else np.trunc(coords)
    return floor if rounding == "floor" else np.ceil(coords)


def _scaled_size(shape: list[int], scales: list[float]) -> tuple[list[int], bool]:
    """Output size floor(in x scale) per axis, and whether out / in is each scale exactly in float32 (then TVM's
    size-based resize2d maps pixels as onnxruntime's scale-based kernel does)."""
    out = [int(np.floor(d * s)) for d, s in zip(shape, scales)]
    return out, all(_F32(o) / _F32(d) == _F32(s) for o, d, s in zip(out, shape, scales))


def _gather_nearest(x, shape: list[int], out: list[int], scales: list[float], coordinates: str, rounding: str):
    """NCHW `x` resized to `out` by taking, per spatial axis, the source pixel onnxruntime's nearest mode picks."""
    from tvm import relax

    from edgekit.compiler.relax_passes.bilinear_resize import source_coordinates

    for axis in (2, 3):
        if coordinates == "tf_half_pixel_for_nn":
            coords = (np.arange(out[axis], dtype=_F32) + _F32(0.5)) / _F32(scales[axis])
        else:
            coords = source_coordinates(shape[axis], out[axis], coordinates, scales[axis])
        index = _nearest_index(coords, rounding, scales[axis] < 1)
        x = relax.op.take(x, relax.const(np.clip(index, 0, shape[axis] - 1).astype("int32")), axis=axis)
    return x


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
        out, exact = _scaled_size(shape, scales)
        out_hw = (out[2], out[3])
        if exact:
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
        return _gather_nearest(inputs[0], shape, out, scales, "asymmetric", "floor")  # scales >= 1: floor


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


_RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")


class ResizeConverter:
    """ONNX Resize given `scales` whose output size is not in / scale exactly (1.5x of 5 pixels is 7): TVM's
    converter turns the scales into sizes and resize2d computes its coordinates from out / in, where onnxruntime
    uses the scale itself (x_in = (x_out + 0.5) / scale - 0.5 for half_pixel): every pixel but the first is off
    (measured: 0.6 of the output's scale). Those resizes are gathered as onnxruntime picks their source pixels;
    the rest go to TVM's converter, opset 10's (X, scales) inputs first put where it expects them."""

    @classmethod
    def get_converter(cls, opset: int):
        from tvm.relax.frontend.onnx.onnx_frontend import Resize

        def convert(bb, inputs: list, attr: dict, params) -> object:
            if opset < 11:  # Resize-10: (X, scales), asymmetric coordinates, onnxruntime's "simple" nearest
                inputs = [inputs[0], None, inputs[1]]
                attr = {**attr, "coordinate_transformation_mode": b"asymmetric", "nearest_mode": b"simple"}
            by_scale = cls._by_scale(inputs, attr, params)
            if by_scale is None:
                return Resize.get_converter(opset)(bb, inputs, attr, params)
            return by_scale

        return convert

    @classmethod
    def _scales(cls, inputs: list, params) -> list[float] | None:
        import tvm
        from tvm.relax.frontend.onnx.onnx_frontend import get_constant

        if len(inputs) < 3 or inputs[2] is None or (len(inputs) > 3 and inputs[3] is not None):
            return None
        scales = get_constant(inputs[2], params)
        if not isinstance(scales, tvm.ir.GenericConst):
            return None
        values = [float(s) for s in scales.value.numpy().reshape(-1)]
        return values or None

    @classmethod
    def _by_scale(cls, inputs: list, attr: dict, params) -> object | None:
        """onnxruntime's resize where the scales are not out / in, else None (TVM's converter computes it)."""
        from edgekit.compiler.relax_passes import static_shape
        from edgekit.compiler.relax_passes.bilinear_resize import ort_bilinear

        scales, dims = cls._scales(inputs, params), static_shape(inputs[0])  # symbolic: TVM's converter says so
        if not scales or dims is None or len(dims) != len(scales) or "axes" in attr:
            return None
        shape = list(dims)
        out, exact = _scaled_size(shape, scales)
        mode = attr.get("mode", b"nearest").decode()
        coordinates = attr.get("coordinate_transformation_mode", b"half_pixel").decode()
        simple = mode == "nearest" and attr.get("nearest_mode") == b"simple"  # a rounding resize2d does not have
        if coordinates == "align_corners" or (exact and not simple):
            return None
        if len(shape) != 4 or scales[:2] != [1.0, 1.0] or mode not in ("nearest", "linear"):
            raise ValueError(
                f"Resize of a {len(shape)}-D tensor by scales {scales} (mode {mode}) to a size that is not in x scale "
                "exactly: edgekit converts 4-D NCHW with unit batch and channel scales, nearest or linear"
            )
        if coordinates not in _RESIZE_COORDINATES or (mode == "linear" and coordinates == "tf_half_pixel_for_nn"):
            raise ValueError(f"Resize by non-integral scales with coordinate_transformation_mode {coordinates}")
        if attr.get("antialias", 0):
            raise ValueError("Resize with antialias=1 by non-integral scales: edgekit does not convert it")
        if mode == "linear":
            return ort_bilinear(inputs[0], tuple(shape), (out[2], out[3]), coordinates, (scales[2], scales[3]))
        rounding = attr.get("nearest_mode", b"round_prefer_floor").decode()
        return _gather_nearest(inputs[0], shape, out, scales, coordinates, rounding)
