"""Small helpers over onnx.ModelProto: safe loading, input/output specs, shape overrides."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model

from edgekit.core.errors import EdgekitError, first_line
from edgekit.onnxkit.checks import (
    MAX_ELEMENTS,
    check_element_counts,
    check_external_data,
    check_initializers,
    check_ops_known,
    check_opsets,
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # str = symbolic (dynamic) dim
    dtype: str  # numpy dtype name

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def to_json(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}


def load_onnx(path: Path | str) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every way it can be bad into one clear EdgekitError."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise EdgekitError(f"{path} is a directory, not an .onnx file", "pass the .onnx file itself")
    if path.stat().st_size == 0:
        raise EdgekitError(f"{path} is empty", "re-export the model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(
            f"{path} is not a readable ONNX model (corrupt or truncated: {type(exc).__name__})",
            "re-export or re-download it",
        ) from None
    if model.ir_version == 0 or not model.graph.node or not model.opset_import:
        raise EdgekitError(
            f"{path} is not an ONNX model (no graph found)", "pass a .onnx file written by an ONNX exporter"
        )
    check_external_data(model, path)
    try:
        load_external_data_for_model(model, str(path.resolve().parent))
    except (OSError, ValueError, DecodeError) as exc:
        raise EdgekitError(
            f"{path}: its external data cannot be read ({type(exc).__name__})",
            "copy the .data file(s) next to the .onnx file",
        ) from None
    check_opsets(model, path)
    check_ops_known(model)
    check_initializers(model)
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, ValueError, TypeError) as exc:
        first = first_line(str(exc))
        raise EdgekitError(
            f"{path} fails onnx.checker: {first}", "the file is corrupt or was written by a broken exporter"
        ) from None
    from edgekit.passes.legacy_opset import upgrade_legacy

    return upgrade_legacy(model)  # opsets 1-6: converted and checked, else one error line


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for i, d in enumerate(value_info.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f"?{i}")
    return tuple(dims)


def _spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    elem = value_info.type.tensor_type.elem_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"
    return TensorSpec(value_info.name, _dims(value_info), dtype)


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers: older exporters also list initializers as graph inputs."""
    init_names = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in init_names]


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs only (real_inputs), as TensorSpecs."""
    return [_spec(vi) for vi in real_inputs(model)]


def fixed_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every real input's shape with each dynamic dim set to 1 (batch 1), as a user passes with --input-shape."""
    return {
        vi.name: tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
        for vi in real_inputs(model)
    }


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_spec(vi) for vi in model.graph.output]


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in re.split(r"[,x]", text.strip()))
    except ValueError:
        raise EdgekitError(f"bad shape '{text}'", "write it as comma-separated integers, e.g. 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise EdgekitError(f"bad shape '{text}'", "every dimension must be a positive integer")
    return dims


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`--input-shape name=1,3,224,224` (repeatable) or a bare `1,3,224,224` for a single-input model (key '')."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        for part in item.split(";"):
            if not part.strip():
                continue
            name, _, dims = part.rpartition("=")
            shapes[name.strip()] = parse_shape(dims)
    return shapes


def resolve_input_specs(
    model: onnx.ModelProto, overrides: dict[str, tuple[int, ...]], max_elements: int = MAX_ELEMENTS
) -> list[TensorSpec]:
    """Fix every input shape: static dims from the model, dynamic ones from --input-shape, else a clear error;
    no input over `max_elements` elements (a 1x3x100000x100000 input would allocate 112 GiB)."""
    inputs = graph_inputs(model)
    if "" in overrides:
        if len(inputs) != 1:
            raise EdgekitError(
                f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "a bare --input-shape is ambiguous",
                "write --input-shape NAME=1,3,224,224 for each input",
            )
        overrides = {inputs[0].name: overrides[""]}
    unknown = set(overrides) - {i.name for i in inputs}
    if unknown:
        raise EdgekitError(
            f"--input-shape names unknown input(s) {sorted(unknown)}",
            f"the model's inputs are: {', '.join(i.name for i in inputs)}",
        )
    resolved = []
    for spec in inputs:
        if spec.name in overrides:
            shape = overrides[spec.name]
            if len(shape) != len(spec.shape):
                raise EdgekitError(
                    f"--input-shape for '{spec.name}' has rank {len(shape)}, the model expects rank {len(spec.shape)}",
                    "give one number per dimension of that input",
                )
            for given, declared in zip(shape, spec.shape):
                if isinstance(declared, int) and declared != given:
                    raise EdgekitError(
                        f"--input-shape for '{spec.name}' is {list(shape)}, "
                        f"but the model fixes it to {list(spec.shape)}",
                        "only dynamic (named) dimensions can be set with --input-shape",
                    )
            resolved.append(TensorSpec(spec.name, tuple(shape), spec.dtype))
        elif spec.is_static:
            resolved.append(spec)
        else:
            example = ",".join(str(d) if isinstance(d, int) else "1" for d in spec.shape)
            raise EdgekitError(
                f"input '{spec.name}' has dynamic shape {list(spec.shape)}",
                f"pass --input-shape {spec.name}={example}",
            )
    check_element_counts(resolved, max_elements)
    return resolved


def name_unnamed_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every node has a unique name (`<op>_<index>` where it had none; the model if all had one).
    Exporters may leave names empty (they are optional in ONNX), and the passes name what they add after the node
    they rewrite, so two unnamed layers gave onnxruntime two nodes of the same name ("quantize//dq")."""
    if all(n.name for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n.name for n in out.graph.node}
    for i, node in enumerate(out.graph.node):
        if not node.name:
            name, k = f"{node.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{node.op_type}_{i}_{k}"
            node.name = name
            taken.add(name)
    return out


def random_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible test inputs: N(0,1) floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [int(d) for d in spec.shape]
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise EdgekitError(
                f"input '{spec.name}' has dtype {dtype}, which edgekit cannot generate test data for",
                "pass --inputs data.npz",
            )
    return feeds


def copy_subgraph(
    body: onnx.GraphProto, prefix: str, bound: dict[str, str] | None = None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, str]]:
    """A subgraph's nodes and initializers (an If branch, a Loop body) for inlining into the outer graph: every name
    it defines prefixed, so copies collide neither with the outer graph nor with each other; its inputs renamed
    by `bound`; names from the outer scope kept. Returns the renaming too, for the subgraph's outputs."""
    rename = (
        {t.name: prefix + t.name for t in body.initializer}
        | {o: prefix + o for n in body.node for o in n.output}
        | (bound or {})
    )
    inits = []
    for t in body.initializer:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(t)
        tensor.name = rename[t.name]
        inits.append(tensor)
    nodes = []
    for n in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = prefix + (n.name or n.output[0])
        copy.input[:] = [rename.get(x, x) for x in n.input]
        copy.output[:] = [rename.get(x, x) for x in n.output]
        nodes.append(copy)
    return nodes, inits, rename
