"""Stage 1: torch nn.Module -> checked, simplified ONNX, with its error vs torch recorded in the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgekit.core.errors import EdgekitError, first_line, message_line
from edgekit.core.fileio import atomic_file, check_output_path
from edgekit.onnxkit.tools import ort_session, quiet, simplify
from edgekit.validate import ValidationReport, compare_outputs
from edgekit.zoo import load_model

MIN_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass
class ExportResult:
    model: str
    path: Path
    input_shape: list[int]
    opset: int
    nodes: int
    size_bytes: int
    simplified: bool
    check: ValidationReport  # ORT vs torch

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "path": str(self.path),
            "input_shape": self.input_shape,
            "opset": self.opset,
            "nodes": self.nodes,
            "size_bytes": self.size_bytes,
            "simplified": self.simplified,
            "ort_vs_torch": self.check.to_json(),
        }


def torch_to_onnx(module, example, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    import torch

    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    try:
        with quiet():
            program = torch.onnx.export(
                module,
                (example,),
                None,
                opset_version=opset,
                input_names=[INPUT_NAME],
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    except Exception as exc:
        msg = message_line(exc, 300, first=True)
        raise EdgekitError(
            f"torch.onnx.export failed: {msg}", "check that the model runs on the given --input-shape"
        ) from None
    model = program.model_proto
    if len(model.graph.output) == 1:  # name single outputs predictably; multi-output keeps torch's names
        old = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        model.graph.output[0].name = OUTPUT_NAME
    return model


def export_model(
    ref: str,
    out: Path,
    input_shape: tuple[int, ...] | None = None,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = False,
    weights: Path | None = None,
    force: bool = False,
    seed: int = 0,
) -> ExportResult:
    import torch

    if opset < MIN_OPSET:
        raise EdgekitError(f"opset {opset} is too old", f"edgekit needs opset >= {MIN_OPSET}")
    check_output_path(out, force, (weights,), kind="onnx")
    loaded = load_model(ref, weights)
    shape = input_shape or loaded.input_shape
    if not shape:
        raise EdgekitError(f"{ref} declares no INPUT_SHAPE", "pass --input-shape 1,3,224,224")
    example = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        expected = loaded.module(example)
    model = torch_to_onnx(loaded.module, example, opset, dynamic_batch)
    model, simplified = simplify(model, None if dynamic_batch else {INPUT_NAME: list(shape)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise EdgekitError(
            f"the exported ONNX fails onnx.checker: {first_line(str(exc))}",
            "try another --opset, or report the model (a torch exporter bug)",
        ) from None

    outputs = expected if isinstance(expected, (tuple, list)) else (expected,)
    session = ort_session(model)
    got = session.run(None, {INPUT_NAME: example.numpy()})
    names = [o.name for o in model.graph.output]
    report = compare_outputs(
        {n: t.detach().numpy() for n, t in zip(names, outputs)},
        dict(zip(names, got)),
        reference_name="torch",
        actual_name="onnxruntime",
    )
    _record_metadata(model, ref, report)
    with atomic_file(out) as tmp:
        onnx.save(model, str(tmp))
    return ExportResult(
        loaded.name, out, list(shape), opset, len(model.graph.node), out.stat().st_size, simplified, report
    )


def _record_metadata(model: onnx.ModelProto, ref: str, report: ValidationReport) -> None:
    from edgekit import __version__

    props = {
        "edgekit.version": __version__,
        "edgekit.source": ref,
        "edgekit.ort_vs_torch.max_abs": f"{report.max_abs:.3e}",
        "edgekit.ort_vs_torch.max_rel": f"{report.max_rel:.3e}",
    }
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
