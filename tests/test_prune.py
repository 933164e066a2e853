"""Pruning: structured channel pruning (dependency groups on the ONNX graph), unstructured and N:M sparsity with
sparse storage, the sweep, the CLI and its errors. References: onnxruntime runs every pruned model; edgekit
compiles and validates the structured ones."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from realworld import CORPUS, build
from torch import nn

from edgekit.compiler.build import compile_onnx
from edgekit.errors import EdgekitError
from edgekit.graph import fixed_shapes, random_inputs, resolve_input_specs
from edgekit.onnxtools import ort_session
from edgekit.passes import prune, sparse_format, structured
from edgekit.passes.channels import build_channel_graph


def export(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(*shape),), buf, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"])
    return onnx.load_from_string(buf.getvalue())


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """Two basic blocks (identity and 1x1-projection shortcuts), GAP, Flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.a1, self.a2 = cbr(32, 32), nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32))
        self.b1, self.b2 = cbr(32, 64, s=2), nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.BatchNorm2d(64))
        self.proj = nn.Sequential(nn.Conv2d(32, 64, 1, 2), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a2(self.a1(x)))
        x = torch.relu(self.proj(x) + self.b2(self.b1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Inverted(nn.Module):
    """MobileNetV2 blocks: 1x1 expand, depthwise 3x3, squeeze-excite (Mul), 1x1 project, residual Add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16, s=2)
        self.expand, self.dw = cbr(16, 64, 1), cbr(64, 64, groups=64)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 16, 1), nn.ReLU(), nn.Conv2d(16, 64, 1), nn.Hardsigmoid())
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


NETS = {"residual": (Residual, (1, 3, 16, 16)), "depthwise": (Inverted, (1, 3, 16, 16)), "concat": (Pyramid, (1, 3, 16, 16)),
        "convtranspose": (Decoder, (1, 3, 16, 16)), "mlp": (lambda: Mlp(), (1, 3, 16, 16))}


def outputs(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort_session(model).run(None, feed)


def feed_for(model: onnx.ModelProto) -> dict:
    return random_inputs(resolve_input_specs(model, fixed_shapes(model)))


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


@pytest.mark.parametrize("name", ["residual", "depthwise", "concat", "convtranspose", "mlp", "tf_classifier", "yolo_like", "ocr_detector", "crnn"])
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
    dw = next(n for n in pruned.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
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
    pruned, report = structured.run(model, structured.StructuredConfig(ratio=0.5, criterion="activation", calibration=calib, round_to=4))
    assert report.extra["macs_after"] < 0.5 * report.extra["macs_before"]
    with pytest.raises(EdgekitError, match="needs calibration"):
        structured.run(model, structured.StructuredConfig(ratio=0.5, criterion="activation"))
    pruned_g, report_g = structured.run(model, structured.StructuredConfig(ratio=0.5, scope="global", round_to=4))
    kept = sum(g["kept"] for g in report_g.extra["groups"])
    total = sum(g["channels"] for g in report_g.extra["groups"])
    assert abs(kept / total - 0.5) < 0.1
    feed = feed_for(model)
    assert outputs(pruned_g, feed)[0].shape == (4, 10)


# --- unstructured / N:M --------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mask", "coo"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_sparsity_storage_round_trips(storage, scope, tmp_path):
    model = export(Residual(), (1, 3, 16, 16))
    pruned_w, report = prune.sparsify(model, prune.PruneConfig(ratio=0.9, scope=scope))
    total = sum(w.size for w in pruned_w.values())
    zeros = sum(w.size - np.count_nonzero(w) for w in pruned_w.values())
    assert abs(zeros / total - 0.9) < 0.01
    if scope == "layer":
        for w in pruned_w.values():
            assert abs(1 - np.count_nonzero(w) / w.size - 0.9) < 0.02
    out, rep = prune.run(model, prune.PruneConfig(ratio=0.9, scope=scope, storage=storage))
    assert rep.size_after < 0.45 * rep.size_before  # 90% zeros: mask ≈ 0.53 B/weight, coo 1.2 B/weight of 4
    dense = sparse_format.densify(out)
    inits = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    for name, w in pruned_w.items():
        np.testing.assert_array_equal(inits[name], w)
    feed = feed_for(model)
    reference, _ = prune.store(model, pruned_w, "dense")
    np.testing.assert_allclose(outputs(out, feed)[0], outputs(reference, feed)[0], rtol=1e-5, atol=1e-6)
    if storage == "mask" and scope == "layer":
        onnx.save(out, tmp_path / "s.onnx")
        result = compile_onnx(tmp_path / "s.onnx", tmp_path / "art", "x86_64", quiet=True)
        assert result.validation is not None and result.validation.ok


def test_nm_every_group_obeys_and_indivisible_layers_stay_dense():
    model = export(Residual(), (1, 3, 16, 16))
    out, report = prune.run(model, prune.PruneConfig(nm=(2, 4)))
    assert report.extra["nm_checked"] is True
    notes = {l.name: l.note for l in report.layers}
    assert "divisible" in notes["/stem/stem.0/Conv"]  # 3 input channels
    dense = sparse_format.densify(out)
    inits = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    w = inits[next(n.input[1] for n in dense.graph.node if n.name == "/a1/a1.0/Conv")]
    assert prune.obeys_nm(w, 2, 4, 1) and not prune.obeys_nm(w, 1, 4, 1)
    assert np.count_nonzero(w) == w.size // 2
    with pytest.raises(EdgekitError, match="no layer"):
        prune.run(model, prune.PruneConfig(nm=(3, 7)))


def test_knee_of_a_curve():
    assert prune.knee([0, 0.2, 0.4, 0.6, 0.8, 0.9], [0, 0.01, 0.02, 0.05, 0.5, 1.0]) == 0.6
    assert prune.knee([0, 0.5, 1], [0, 0, 0]) is None


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_structured_then_int8_and_sweep(cli, tmp_path, digits_onnx):
    res = cli("compress", digits_onnx, "--prune", "0.5", "--structured", "--bits", "8", "--calib", "digits", "-o", tmp_path / "p.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["pass"] == "prune-structured+quantize"
    assert [p["pass"] for p in result["passes"]] == ["prune-structured", "quantize"]
    model = onnx.load(tmp_path / "p.onnx")
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert {p.key: p.value for p in model.metadata_props}["edgekit.passes"] == "prune-structured0.5,quantize8"
    res = cli("compress", digits_onnx, "--prune", "0.8", "--sweep", "--calib", "digits", "-o", tmp_path / "u.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    sweep = json.loads(res.stdout)["passes"][0]["sweep"]
    accs = [row["accuracy"] for row in sweep["levels"]]
    assert accs[0] > 0.95 and accs[-1] < accs[0] and sweep["knee"] is not None


@pytest.mark.parametrize("args,message", [
    (["--prune", "1.0"], "outside [0, 1)"),
    (["--prune", "-0.1", "--structured"], "outside [0, 1)"),
    (["--structured"], "needs --prune"),
    (["--nm", "4:2"], "bad --nm"),
    (["--nm", "2:4", "--structured", "--prune", "0.5"], "pattern of its own"),
    (["--nm", "3:7"], "no layer"),
    (["--prune", "0.5", "--bits", "1"], "cannot keep unstructured zeros"),
    (["--prune", "0.5", "--structured", "--prune-criterion", "taylor"], "unknown pruning criterion"),
])
def test_cli_bad_prune_options(cli, tmp_path, digits_onnx, args, message):
    res = cli("compress", digits_onnx, *args, "-o", tmp_path / "o.onnx")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2 and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("first", [["--bits", "8", "--calib", "random"], ["--bits", "1"], ["--prune", "0.9"]])
def test_cli_pruning_a_quantized_binarized_or_sparse_model_is_refused(cli, tmp_path, digits_onnx, first):
    assert cli("compress", digits_onnx, *first, "-o", tmp_path / "a.onnx").exit_code == 0
    follow = ["--bits", "8", "--calib", "random"] if first == ["--prune", "0.9"] else ["--prune", "0.5", "--structured"]
    res = cli("compress", tmp_path / "a.onnx", *follow, "-o", tmp_path / "b.onnx")
    assert res.exit_code == 2 and ("already quantized" in res.stderr or "sparsely" in res.stderr), res.stderr


# --- low-rank and depth -----------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.pw = nn.Conv2d(64, 64, 1, stride=2, padding=1)
        self.fc1, self.fc2 = nn.Linear(64 * 9 * 9, 96), nn.Linear(96, 10)

    def forward(self, x):
        x = torch.relu(self.pw(torch.relu(self.conv(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def _low_rank_weights(module: nn.Module, rank: int) -> nn.Module:
    """Weights of exact rank `rank`, so that factorizing at that rank must reproduce the model."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (module.pw, module.fc1):
            w = m.weight.view(m.weight.shape[0], -1)
            w.copy_(torch.randn(w.shape[0], rank, generator=g) @ torch.randn(rank, w.shape[1], generator=g) * 0.05)
    return module


def test_lowrank_at_the_true_rank_is_exact_and_energy_picks_ranks(tmp_path):
    from edgekit.passes import lowrank

    model = export(_low_rank_weights(Mlp(), 8), (1, 3, 16, 16))
    feed = feed_for(model)
    out, report = lowrank.run(model, lowrank.LowRankConfig(rank=8, skip=("*fc2*",)))  # fc2 is full rank
    notes = {l.name: l.note for l in report.layers}
    assert any("rank 8 of 64" in n for n in notes.values()) and any("rank 8 of 96" in n for n in notes.values())
    np.testing.assert_allclose(outputs(out, feed)[0], outputs(model, feed)[0], rtol=1e-4, atol=1e-4)
    assert report.weight_bytes_after < 0.5 * report.weight_bytes_before
    _, report_e = lowrank.run(model, lowrank.LowRankConfig(energy=0.999))
    ranks = {l.name: l.note for l in report_e.layers}
    assert sum("rank 8 of" in n for n in ranks.values()) == 2, ranks
    onnx.save(out, tmp_path / "lr.onnx")
    result = compile_onnx(tmp_path / "lr.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok
    with pytest.raises(EdgekitError, match="one of --rank"):
        lowrank.run(model, lowrank.LowRankConfig())
    with pytest.raises(EdgekitError, match="outside"):
        lowrank.run(model, lowrank.LowRankConfig(energy=1.5))


class Deep(nn.Module):
    """Four identity-shortcut blocks; block 2's branch is scaled down so that it changes its input least."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.blocks = nn.ModuleList([nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, 1, 1)) for _ in range(4)])
        with torch.no_grad():
            self.blocks[2][1].weight.mul_(0.01)
            self.blocks[2][1].bias.mul_(0.01)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x)


def test_depth_replaces_the_least_changing_block_by_a_fitted_map(tmp_path):
    from edgekit.passes import depth

    model = export(Deep(), (2, 3, 12, 12))
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (2, 3, 12, 12)).astype(np.float32)} for _ in range(6)]
    out, report = depth.run(model, depth.DepthConfig(blocks=1, calibration=calib))
    assert len(report.extra["candidates"]) == 4
    (replaced,) = report.layers
    assert "blocks.2" in replaced.name or report.extra["candidates"][0]["exit"] == replaced.name.split(" -> ")[1]
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 + 3 * 2 + 1 + 1  # stem, three blocks, the fitted 1×1 map, head
    err = np.mean([np.abs(outputs(out, f)[0] - outputs(model, f)[0]).mean() / np.abs(outputs(model, f)[0]).mean() for f in calib])
    assert err < 0.05, err
    with pytest.raises(EdgekitError, match="replaceable residual block"):
        depth.run(model, depth.DepthConfig(blocks=5, calibration=calib))
    with pytest.raises(EdgekitError, match="needs calibration"):
        depth.run(model, depth.DepthConfig(blocks=1))


# --- pruning-aware training (digits) ---------------------------------------------------------------------


def test_cubic_schedule():
    from edgekit.training.pruning import cubic_sparsity

    assert cubic_sparsity(0, 0.9, 0, 100) == 0.0 and cubic_sparsity(100, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    values = [cubic_sparsity(t, 0.9, 0, 100) for t in range(0, 101, 10)]
    assert all(b >= a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("args,floor_pt", [(["--prune", "0.9"], 1.0), (["--prune", "0.5", "--structured"], 2.0),
                                           (["--prune", "0.8", "--lottery", "--rounds", "2"], 1.0)])
def test_finetune_prune_reaches_the_accuracy_goals(cli, tmp_path, args, floor_pt):
    """The README figures: 90% gradual and an 80% lottery ticket within 1 pt of fp32, structured 50% within 2 pt;
    the ONNX written holds the pruning (sparse storage, or fewer channels) and reproduces the torch model."""
    res = cli("finetune", "digits_cnn", *args, "--epochs", "20", "-o", tmp_path / "p.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    acc = result["accuracy"]
    assert acc["drop_pt"] <= floor_pt, acc
    assert acc["training_free_onnxruntime"] < acc["onnxruntime"]
    model = onnx.load(tmp_path / "p.onnx")
    if "--structured" in args:
        assert result["macs_after"] < 0.5 * result["macs_before"]
    else:
        assert any(n.name.startswith("sparse/") for n in model.graph.node)
    if "--lottery" in args:
        t = result["lottery"]
        assert t["ticket_accuracy"] >= t["dense_accuracy"] - 0.01 and 0 < t["random_reinit_accuracy"] <= 1


def test_cli_depth_and_lowrank(cli, tmp_path):
    model = export(Deep(), (1, 3, 12, 12))
    onnx.save(model, tmp_path / "deep.onnx")
    res = cli("compress", tmp_path / "deep.onnx", "--depth", "1", "--calib", "random", "-o", tmp_path / "d.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["pass"] == "depth"
    res = cli("compress", tmp_path / "deep.onnx", "--rank", "2", "-o", tmp_path / "r.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["pass"] == "lowrank"
    res = cli("compress", tmp_path / "deep.onnx", "--depth", "1", "-o", tmp_path / "e.onnx")
    assert res.exit_code == 2 and "needs calibration" in res.stderr
