"""Opset housekeeping shared by the passes: upgrade a model to the opset a pass emits (onnx's version converter,
so ops whose signature changed, e.g. ReduceMean's axes or Split's sizes, are rewritten, not just relabelled), and
drop opset imports no node uses (onnxruntime's pre-processing leaves ai.onnx.training, com.microsoft.nchwc, ...)."""

from __future__ import annotations

import onnx

from edgekit.core.errors import EdgekitError, message_line

DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto, missing: int = 1) -> int:
    """The version of the default ONNX domain the model imports (`missing` if it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), missing)


def upgrade(model: onnx.ModelProto, minimum: int, notes: list[str] | None = None) -> onnx.ModelProto:
    """`model` itself if its default opset is >= minimum, else a converted copy (the conversion noted in `notes`)."""
    current = default_opset(model)
    if current >= minimum:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:  # noqa: BLE001 - onnx's converter raises plain RuntimeErrors on ops it cannot adapt
        first = message_line(exc, 200, first=True)
        raise EdgekitError(
            f"the pass needs opset {minimum}, and onnx could not convert the model from opset {current}: {first}",
            f"re-export the model at opset {minimum} or later",
        ) from None
    if notes is not None:
        notes.append(f"opset {current} -> {minimum} (onnx version converter)")
    return converted


def _domains(graph: onnx.GraphProto) -> set[str]:
    """The domains of the graph's nodes and of the nodes in their subgraphs (If branches, Loop and Scan bodies)."""
    used: set[str] = set()
    for n in graph.node:
        used.add(n.domain)
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs:
                used |= _domains(sub)
    return used


def keep_used_imports(model: onnx.ModelProto) -> None:
    """Remove (in place) opset imports of domains no node uses (in subgraphs too); the default domain always stays."""
    used = _domains(model.graph) | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain in DEFAULT_DOMAINS]
    del model.opset_import[:]
    model.opset_import.extend(kept)
