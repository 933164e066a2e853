"""passes/structured.py: structured channel pruning (dependency groups on the ONNX graph). References:
onnxruntime runs every pruned model; edgekit compiles and validates them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from prune_models import Mlp, Residual, cbr, export, feed_for, outputs
from realworld import CORPUS, build
from torch import nn

from edgekit.compiler.build import compile_onnx
from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.graph import random_inputs, resolve_input_specs
from edgekit.passes import structured
from edgekit.passes.channels import build_channel_graph


class Inverted(nn.Module):
    """MobileNetV2 blocks: 1x1 expand, depthwise 3x3, squeeze-excite (Mul), 1x1 project, residual Add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16, s=2)
        self.expand, self.dw = cbr(16, 64, 1), cbr(64, 64, groups=64)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 16, 1), nn.ReLU(), nn.Conv2d(16, 64, 1), nn.Hardsigmoid()
        )
        self.project = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(self.expand(x))
        return self.head(x + self.project(y * self.se(y)))


class Pyramid(nn.Module):
    """FPN-like: two scales, nearest upsampling, Concat, a constant Split, a Flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = cbr(3, 32), cbr(32, 48, s=2)
        self.lat = cbr(48, 32, 1)
        self.fuse = cbr(64, 32)
        self.fc = nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        a = self.c1(x)
        b = nn.functional.interpolate(self.lat(self.c2(a)), scale_factor=2.0, mode="nearest")
        f = self.fuse(torch.cat([a, b], 1))
        left, right = torch.split(f, [16, 16], 1)
        pooled = nn.functional.max_pool2d(left * right, 2)
        return self.fc(torch.flatten(pooled, 1))


class Decoder(nn.Module):
    """Encoder-decoder: strided conv, ConvTranspose back up, a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = cbr(3, 32, s=2)
        self.mid = cbr(32, 48)
        self.up = nn.Sequential(nn.ConvTranspose2d(48, 32, 2, 2), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Conv2d(32, 2, 3, 1, 1)

    def forward(self, x):
        return self.head(self.up(self.mid(self.enc(x))))


NETS = {
    "residual": (Residual, (1, 3, 16, 16)),
    "depthwise": (Inverted, (1, 3, 16, 16)),
    "concat": (Pyramid, (1, 3, 16, 16)),
    "convtranspose": (Decoder, (1, 3, 16, 16)),
    "mlp": (lambda: Mlp(), (1, 3, 16, 16)),
}


@pytest.mark.parametrize("net", NETS)
def test_structured_ratio_zero_is_bit_identical_and_half_is_smaller_and_compiles(net, tmp_path):
    cls, shape = NETS[net]
    model = export(cls(), shape)
    feed = feed_for(model)
    same, report0 = structured.run(model, structured.StructuredConfig(ratio=0.0))
    for a, b in zip(outputs(model, feed), outputs(same, feed)):
        assert np.array_equal(a, b)
    assert report0.extra["macs_after"] == report0.extra["macs_before"]

    pruned, report = structured.run(model, structured.StructuredConfig(ratio=0.5, round_to=4))
    for a, b in zip(outputs(model, feed), outputs(pruned, feed)):
        assert a.shape == b.shape  # the model's outputs never change shape
    assert report.extra["macs_after"] < 0.5 * report.extra["macs_before"], report.extra
    assert pruned.graph.input[0].type == model.graph.input[0].type  # the first conv's input untouched
    onnx.save(pruned, tmp_path / "p.onnx")
    result = compile_onnx(tmp_path / "p.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok, result.validation


def zeroed_reference(model: onnx.ModelProto, cfg: structured.StructuredConfig) -> onnx.ModelProto:
    """The dense model with the columns of every dropped channel zeroed in the layers that read it: what
    removing those channels must compute (an independent statement of the pass's contract)."""
    m = structured.prepare(model)
    graph = build_channel_graph(m)
    groups, roots = structured.prunable_groups(graph, cfg)
    structured.choose(groups, cfg)
    mask = structured.keep_mask(graph, groups, roots)
    inits = {t.name: t for t in m.graph.initializer}
    for c in graph.consumers:
        w = numpy_helper.to_array(inits[c.node.input[1]]).copy()
        index = [slice(None)] * w.ndim
        index[c.in_axis] = np.nonzero(~mask[c.ids])[0]
        w[tuple(index)] = 0
        inits[c.node.input[1]].CopyFrom(numpy_helper.from_array(w, c.node.input[1]))
    return m


@pytest.mark.parametrize(
    "name",
    ["residual", "depthwise", "concat", "convtranspose", "mlp", "tf_classifier", "yolo_like", "ocr_detector", "crnn"],
)
def test_pruned_model_equals_the_dense_one_with_dropped_channels_zeroed(name):
    model = export(NETS[name][0](), NETS[name][1]) if name in NETS else build(name)
    cfg = structured.StructuredConfig(ratio=0.5, round_to=4)
    pruned, _ = structured.run(model, cfg)
    feed = feed_for(model)
    for got, want in zip(outputs(pruned, feed), outputs(zeroed_reference(model, cfg), feed)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_bias_compensation_reduces_the_error_on_calibration_data():
    model = export(Residual(), (4, 3, 16, 16))
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    errors = {}
    for with_calib in (False, True):
        cfg = structured.StructuredConfig(ratio=0.25, round_to=4, calibration=calib if with_calib else None)
        pruned, report = structured.run(model, cfg)
        assert report.extra["bias_compensation"].startswith("on" if with_calib else "off")
        errors[with_calib] = np.mean([np.abs(outputs(pruned, f)[0] - outputs(model, f)[0]).mean() for f in calib])
    assert errors[True] < 0.7 * errors[False], errors


def _conv_out_channels(model: onnx.ModelProto) -> dict[str, int]:
    inits = {t.name: t for t in model.graph.initializer}
    return {n.name: inits[n.input[1]].dims[0] for n in model.graph.node if n.op_type == "Conv"}


def test_residual_branches_are_pruned_together():
    model = export(Residual(), (1, 3, 16, 16))
    pruned, report = structured.run(model, structured.StructuredConfig(ratio=0.5, round_to=4))
    ch = _conv_out_channels(pruned)
    by_module = {name.split("/")[1]: c for name, c in ch.items()}
    # stem, a2 (identity shortcut) share one group; proj and b2 (projection shortcut) another
    assert by_module["stem"] == by_module["a2"] == 16
    assert by_module["proj"] == by_module["b2"] == 32
    assert by_module["a1"] == 16 and by_module["b1"] == 32
    layers = {tuple(sorted(n.split("/")[1] for n in g["layers"])) for g in report.extra["groups"]}
    assert ("a2", "stem") in layers and ("b2", "proj") in layers


def test_depthwise_follows_its_producer_and_se_multiplies_alike():
    model = export(Inverted(), (1, 3, 16, 16))
    pruned, _ = structured.run(model, structured.StructuredConfig(ratio=0.5, round_to=4))
    inits = {t.name: t for t in pruned.graph.initializer}
    dw = next(
        n for n in pruned.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    group = next(a.i for a in dw.attribute if a.name == "group")
    assert group == inits[dw.input[1]].dims[0] == 32 and inits[dw.input[1]].dims[1] == 1
    ch = {name.split("/")[1]: c for name, c in _conv_out_channels(pruned).items()}
    assert ch["expand"] == 32 and ch["head"] == 8  # the output conv keeps its channels


def test_frozen_nodes_are_named_and_graph_outputs_kept():
    graph = build_channel_graph(structured.prepare(build("crnn")))
    assert any("LSTM" in reason for reason in graph.blocked.values())
    token = build("token_model")
    with pytest.raises(EdgekitError, match="no channel of this model can be pruned safely"):
        structured.run(token, structured.StructuredConfig(ratio=0.5))


@pytest.mark.parametrize("name", [n for n in CORPUS if n not in ("token_model", "gru_kws")])
def test_structured_on_third_party_graphs(name):
    """tf2onnx-style, YOLO-like, OCR, CRNN and audio graphs: ratio 0 is bit-identical, 0.5 runs in onnxruntime
    with the outputs' shapes unchanged, and at least one layer actually got smaller."""
    model = build(name)
    feed = feed_for(model)
    same, _ = structured.run(model, structured.StructuredConfig(ratio=0.0))
    reference = outputs(model, feed)
    for a, b in zip(reference, outputs(same, feed)):
        assert np.array_equal(a, b)
    pruned, report = structured.run(model, structured.StructuredConfig(ratio=0.5, round_to=4))
    for a, b in zip(reference, outputs(pruned, feed)):
        assert a.shape == b.shape
    assert report.weight_bytes_after < report.weight_bytes_before
    assert report.extra["macs_after"] < 0.8 * report.extra["macs_before"], report.extra["left_dense"]


def test_activation_criterion_and_global_scope():
    model = export(Residual(), (4, 3, 16, 16))
    calib = [random_inputs(resolve_input_specs(model, {}), seed=i) for i in range(4)]
    pruned, report = structured.run(
        model, structured.StructuredConfig(ratio=0.5, criterion="activation", calibration=calib, round_to=4)
    )
    assert report.extra["macs_after"] < 0.5 * report.extra["macs_before"]
    with pytest.raises(EdgekitError, match="needs calibration"):
        structured.run(model, structured.StructuredConfig(ratio=0.5, criterion="activation"))
    pruned_g, report_g = structured.run(model, structured.StructuredConfig(ratio=0.5, scope="global", round_to=4))
    kept = sum(g["kept"] for g in report_g.extra["groups"])
    total = sum(g["channels"] for g in report_g.extra["groups"])
    assert abs(kept / total - 0.5) < 0.1
    feed = feed_for(model)
    assert outputs(pruned_g, feed)[0].shape == (4, 10)
