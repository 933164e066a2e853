"""Input validation before any work: what a model, a data file or an input array may be. Every check raises one
EdgekitError naming the offending node, tensor or array; nothing here runs a model.

  model size      every input (and weight) tensor at most MAX_ELEMENTS elements (`--max-elements` raises it)
  opsets          the default domain within what onnx / onnxruntime implement; no unknown op (the node is named)
  external data   only files inside the model's own directory
  data files      .npy/.npz without pickles, numeric dtypes only, finite floats
  shape inputs    no graph input may decide a shape (Expand's shape, Reshape's, Tile's repeats, ...): a compiled
                  artifact has fixed shapes, so the node is named and --freeze offered
  index inputs    integer inputs that index a known dimension (Gather): index_bounds() is recorded in meta.json
                  and edgekit.runtime checks every call against it (an out-of-range index reads past a buffer
                  in compiled code: `edgekit run` died of SIGSEGV)
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx

from edgekit.core.errors import EdgekitError

MAX_ELEMENTS = 1 << 28  # 268M elements: 1 GiB of fp32 per tensor
MIN_OPSET = 1  # opsets 1-6 are upgraded on load (passes/legacy_opset.py)
NUMERIC_KINDS = "biuf"


def check_opsets(model: onnx.ModelProto, path: Path) -> None:
    import onnxruntime

    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not MIN_OPSET <= imp.version <= newest:
            raise EdgekitError(
                f"{path} uses ONNX opset {imp.version}; onnx {onnx.__version__} and onnxruntime "
                f"{onnxruntime.__version__} implement opsets {MIN_OPSET}-{newest}",
                "re-export the model with a supported opset (edgekit export uses 18)",
            )


def check_ops_known(model: onnx.ModelProto) -> None:
    """Every node's op exists in the ONNX standard (or is one of onnxruntime's com.microsoft contrib ops, which
    onnx.defs also knows); custom-domain ops cannot be compiled: name the first such node."""
    functions = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if not isinstance(node.op_type, str) or not isinstance(node.domain, str):  # invalid UTF-8 in the protobuf
            raise EdgekitError(
                f"node '{node.name!s:.60}' has a corrupt op type or domain", "the file is damaged: re-export it"
            )
        if (node.domain, node.op_type) in functions:
            continue
        if not onnx.defs.has(node.op_type, node.domain or ""):
            domain = f" in domain '{node.domain}'" if node.domain else ""
            raise EdgekitError(
                f"node '{node.name or '(unnamed)'}' is op {node.op_type}{domain}, which is not an ONNX operator "
                "onnxruntime or TVM can run",
                "replace it (or export without the custom op) before compiling",
            )


# the operand positions whose value (not shape) decides an op's output shape
SHAPE_OPERANDS = {
    "Expand": (1,),
    "Reshape": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Pad": (1,),
    "Resize": (2, 3),
    "Upsample": (1,),
    "TopK": (1,),
    "OneHot": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
}
_PASS_THROUGH = ("Cast", "Identity", "Concat")  # a shape built from an input by these still comes from it


def check_shape_inputs(model: onnx.ModelProto) -> None:
    """Refuse a graph input whose value becomes a shape: onnxruntime sizes the output at run time, a compiled
    artifact cannot (TVM's importer either fails on it or builds for a guessed rank, seen with Expand)."""
    initializers = {t.name for t in model.graph.initializer}
    origin = {i.name: i.name for i in model.graph.input if i.name not in initializers}
    for node in model.graph.node:
        if node.op_type in _PASS_THROUGH:
            source = next((origin[x] for x in node.input if x in origin), None)
            if source:
                origin.update({o: source for o in node.output})
            continue
        for pos in SHAPE_OPERANDS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in origin:
                name = origin[node.input[pos]]
                raise EdgekitError(
                    f"input '{name}' decides the output shape of node '{node.name or '(unnamed)'}' "
                    f"({node.op_type}); a compiled model has fixed shapes",
                    f"compile it for the value you run with: --freeze {name}=V1,V2,...",
                )


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """External tensor data must be a file inside the model's directory: an ONNX file may name any path
    (../../etc/shadow), and loading it would read that file into the model."""
    base = path.resolve().parent
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or base not in target.parents:
            raise EdgekitError(
                f"tensor '{tensor.name}' of {path} keeps its data in '{location}', outside the model's directory",
                "external data must sit beside the .onnx file; edgekit does not read files elsewhere",
            )
        if not target.is_file():
            raise EdgekitError(
                f"tensor '{tensor.name}' of {path}: its external data file '{location}' is missing",
                "copy the .data file(s) next to the .onnx file",
            )


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def check_element_counts(specs, max_elements: int = MAX_ELEMENTS) -> None:
    for spec in specs:
        n = math.prod(int(d) for d in spec.shape)
        if n > max_elements:
            shape = "x".join(str(d) for d in spec.shape)
            raise EdgekitError(
                f"input '{spec.name}' has {n:,} elements ({shape}), more than the limit of {max_elements:,}",
                "use a smaller --input-shape, or raise the limit with --max-elements",
            )


def check_array(name: str, arr: np.ndarray, where: str, finite: bool = True) -> None:
    """A numeric array; floats all finite (one Inf in calibration data makes an int8 scale of inf)."""
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise EdgekitError(
            f"{where}: array '{name}' has dtype {arr.dtype}, not a number type",
            "save numeric arrays (float32, int64, ...)",
        )
    if finite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise EdgekitError(
            f"{where}: array '{name}' has {bad} non-finite value(s) (NaN or Inf) of {arr.size}",
            "clean the data: calibration and inputs must be finite numbers",
        )


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """An .npz (named arrays) or .npy (one array, named '') without ever unpickling."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{path}: no such file", "check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {"": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise EdgekitError(
                f"{path} holds pickled objects, which edgekit never loads", "save plain numeric arrays with numpy.savez"
            ) from None
        raise EdgekitError(
            f"{path} is not a readable .npy/.npz file", "write it with numpy.save / numpy.savez"
        ) from None
    except (
        OSError,
        EOFError,
        KeyError,
        TypeError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
    ) as exc:
        raise EdgekitError(
            f"{path} is not a readable .npy/.npz file ({type(exc).__name__})", "write it with numpy.save / numpy.savez"
        ) from None
    for name, arr in arrays.items():
        check_array(name or "(array)", arr, str(path), finite=False)
    return arrays


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Integer graph inputs used directly as Gather indices into a tensor whose gathered dimension is known
    (an initializer, e.g. an embedding table): {input name: that dimension}."""
    inputs = {vi.name for vi in model.graph.input}
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in inputs or node.input[0] not in dims:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shape = dims[node.input[0]]
        if shape and -len(shape) <= axis < len(shape):
            size = int(shape[axis])
            bounds[node.input[1]] = min(size, bounds.get(node.input[1], size))
    return bounds


OUTLIER_RATIO = 1e8


def check_calibration(samples: list[dict[str, np.ndarray]], where: str) -> None:
    """Calibration data sets the int8 ranges: one extreme value (1e30 among N(0,1) data) would make a scale of
    ~4e27 and every real activation quantize to 0. Refuse values over OUTLIER_RATIO x the median magnitude."""
    if not samples:
        raise EdgekitError(f"{where}: no calibration samples", "give at least one sample per input")
    for name in samples[0]:
        arr = np.concatenate([np.ravel(s[name]) for s in samples])
        check_array(name, arr, where)
        if arr.dtype.kind != "f":
            continue
        mags = np.abs(arr[arr != 0])
        if mags.size and float(mags.max()) > OUTLIER_RATIO * float(np.median(mags)):
            raise EdgekitError(
                f"{where}: input '{name}' has an extreme value {float(arr[np.argmax(np.abs(arr))]):.3g} "
                f"(median magnitude {float(np.median(mags)):.3g}): int8 scales would collapse",
                "remove outliers from the calibration data",
            )


def check_initializers(model: onnx.ModelProto) -> None:
    """Every weight holds as many values as its dims say (a flipped bit in a dim leaves the data the old size)."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        if any(d < 0 for d in tensor.dims):
            raise EdgekitError(
                f"initializer '{tensor.name}' has a negative dimension {list(tensor.dims)}",
                "the file is damaged: re-export it",
            )
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise EdgekitError(
                f"initializer '{tensor.name}' has an unknown data type {tensor.data_type}",
                "the file is damaged: re-export it",
            ) from None
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(tensor.data_type)
        need = math.ceil(math.prod(tensor.dims) * bits / 8) if bits else math.prod(tensor.dims) * itemsize
        if (
            tensor.data_type in (onnx.TensorProto.STRING,)
            or getattr(onnx.TensorProto, "INT2", -1) == tensor.data_type
            or getattr(onnx.TensorProto, "UINT2", -1) == tensor.data_type
        ):
            continue
        if len(tensor.raw_data) != need:
            raise EdgekitError(
                f"initializer '{tensor.name}' has {len(tensor.raw_data)} bytes of data for dims {list(tensor.dims)} "
                f"({need} expected)",
                "the file is damaged or truncated: re-export it",
            )
