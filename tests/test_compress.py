"""compress.py: the registry of compression methods (order, selection, a new method is one list entry) and the
chaining of methods in one command."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compress import CompressOptions, apply_passes, methods
from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.graph import resolve_input_specs
from edgekit.passes import CompressionMethod, PassReport, passes_applied, record_pass


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(32, 64)).astype(np.float32), rng.normal(size=(10, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_methods_run_in_the_documented_order():
    assert [m.name for m in methods()] == ["depth", "structured", "lowrank", "prune", "binarize", "quantize"]


@pytest.mark.parametrize(
    ("opts", "chosen"),
    [
        (CompressOptions(bits=8), ["quantize"]),
        (CompressOptions(bits=1), ["binarize"]),
        (CompressOptions(bits=None, prune=0.5), ["prune"]),
        (CompressOptions(bits=8, prune=0.5, structured=True), ["structured", "quantize"]),
        (CompressOptions(bits=4, rank=4, nm="2:4"), ["lowrank", "prune", "quantize"]),
    ],
)
def test_each_option_set_selects_its_methods(opts: CompressOptions, chosen: list[str]):
    assert [m.name for m in methods() if m.wanted(opts)] == chosen


def test_a_new_method_is_one_registry_entry():
    """What adding a compression method takes: a CompressionMethod (its file) and its place in the list."""
    seen: list[str] = []

    def mark(model: onnx.ModelProto, tag: str) -> tuple[onnx.ModelProto, PassReport]:
        seen.append(tag)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        record_pass(out, f"mark-{tag}")
        return out, PassReport(f"mark-{tag}", model.ByteSize(), out.ByteSize(), extra={"mode": tag})

    marker = CompressionMethod(
        "mark", wanted=lambda opts: opts.calib == "random", configure=lambda ctx: f"{len(ctx.specs)} input", run=mark
    )
    model = _mlp()
    out, reports = apply_passes(
        model,
        CompressOptions(bits=None, prune=0.5, calib="random"),
        resolve_input_specs(model, {}),
        registry=[marker, *methods()],
    )
    assert seen == ["1 input"]
    assert [r.name for r in reports] == ["mark-1 input", "prune"]
    assert passes_applied(out) == ["mark-1 input", "prune0.5"]


def test_every_option_is_checked_before_any_pass_runs():
    ran: list[str] = []
    spy = CompressionMethod(
        "spy",
        wanted=lambda opts: True,
        configure=lambda ctx: None,
        run=lambda model, cfg: ran.append("spy") or (model, PassReport("spy", 0, 0)),
    )
    model = _mlp()
    with pytest.raises(EdgekitError, match="--bits 3"):
        apply_passes(model, CompressOptions(bits=3), resolve_input_specs(model, {}), registry=[spy, *methods()])
    assert ran == []


def test_factorized_model_is_quantized_in_the_same_command():
    """low-rank (and depth) keep fp32: quantizing after them is not 'already quantized' (it was, before)."""
    model = _mlp()
    out, reports = apply_passes(model, CompressOptions(bits=8, rank=4, calib="random"), resolve_input_specs(model, {}))
    assert [r.name for r in reports] == ["lowrank", reports[1].name] and reports[1].name.startswith("quantize")
    assert passes_applied(out)[0] == "lowrank" and any(n.op_type == "DequantizeLinear" for n in out.graph.node)
    with pytest.raises(EdgekitError, match="already quantized"):
        apply_passes(out, CompressOptions(bits=8, calib="random"), resolve_input_specs(out, {}))
