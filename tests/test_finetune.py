"""Binarization-aware training: quantizer values and gradients, binary layers, torch == ORT after packing.
Pruning-aware training (edgekit/training/pruning.py): the cubic schedule and the accuracy goals of
`finetune --prune`."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch

from edgekit.core.paths import MODELS_DIR
from edgekit.datasets import load_digits_split
from edgekit.finetune import (
    BinaryConv2d,
    binarize_module,
    evaluate,
    export_binarized,
    finetune,
    fold_binary,
    get_binarizer,
)
from edgekit.onnxkit.tools import ort_session
from edgekit.zoo import load_model

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


def _grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.sum().backward()
    return y.detach(), x.grad


def test_ste_sign_values_and_clipped_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 1.5])
    y, g = _grad(get_binarizer("ste_sign"), x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # sign(0) = +1
    assert g.tolist() == [0, 1, 1, 1, 1, 1, 0]  # straight through inside |x| <= 1


def test_biper_square_wave_forward_sine_gradient():
    omega = 20.0
    x = torch.linspace(-0.5, 0.5, 101)
    y, g = _grad(get_binarizer("biper", omega=omega), x)
    s = torch.sin(omega * x)
    assert torch.equal(y, torch.where(s >= 0, 1.0, -1.0))
    torch.testing.assert_close(g, omega * torch.cos(omega * x))
    assert y[50] == 1 and y[torch.argmin((x - 0.2).abs())] == -1  # 0.2 > π/20: periodic flip, not sign(x)


def test_get_binarizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown binarizer 'sgn'"):
        get_binarizer("sgn")


def _digits_cnn() -> torch.nn.Module:
    return load_model("digits_cnn").module


@pytest.mark.parametrize("binarizer", ["ste_sign", "biper"])
def test_binarize_module_keeps_first_last_and_state_dict(binarizer):
    src = _digits_cnn()
    model = binarize_module(src, mode="xnor", binarizer=binarizer)
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert kinds == ["Conv2d", "BinaryConv2d", "BinaryConv2d", "Linear"]
    assert model.state_dict().keys() == src.state_dict().keys()  # checkpoints stay interchangeable
    conv = model.features[1][0]
    wb = conv.binary_weight().detach()
    alpha = conv.weight.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(wb.abs(), alpha.expand_as(wb), rtol=0, atol=0)  # every row is exactly ±α_o
    # warm start: biper's first forward keeps the pretrained signs (ste_sign trivially does)
    assert torch.equal(wb >= 0, src.features[1][0].weight >= 0)


def test_xnor_layer_binarizes_its_input():
    conv = binarize_module(
        torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 1, 1)), mode="xnor"
    )[1].eval()
    assert isinstance(conv, BinaryConv2d) and conv.binarize_input
    x = torch.randn(1, 3, 4, 4)
    ref = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), conv.binary_weight(), conv.bias)
    torch.testing.assert_close(conv(x), ref)


def _load_zoo_file(name: str):
    spec = importlib.util.spec_from_file_location(f"test_{name}", MODELS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode,binarizer", [("weights", "ste_sign"), ("xnor", "biper")])
def test_torch_binary_model_equals_ort_of_packed_onnx(mode, binarizer):
    if mode == "weights":  # BWN of the trained digits CNN (a BN after each binary conv gets folded in)
        teacher = _digits_cnn()
        student = binarize_module(teacher, mode="weights", binarizer=binarizer)
    else:
        teacher, student = None, _load_zoo_file("binary_digits").create_trainable(binarizer, mode)
    result = finetune(student, teacher, epochs=2, seed=0)
    onnx_model, report = export_binarized(result.model)
    assert [l.bits for l in report.layers] == [None] + [1] * (len(report.layers) - 2) + [None]
    assert all(l.note.startswith("lossless") for l in report.layers if l.bits == 1)
    x = load_digits_split().x_test[:16]
    session = ort_session(onnx_model)
    got = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        ref = result.model(torch.from_numpy(x)).numpy()
        folded = fold_binary(result.model).eval()(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    np.testing.assert_array_equal(folded, ref)


def test_finetune_is_seeded():
    model = binarize_module(_digits_cnn(), mode="weights")
    a = finetune(binarize_module(_digits_cnn(), mode="weights"), epochs=1, seed=3)
    b = finetune(model, epochs=1, seed=3)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.test_accuracy == b.test_accuracy


def test_shipped_binary_digits_model():
    mod = _load_zoo_file("binary_digits")
    assert mod.MODE == "xnor" and mod.BINARIZER in ("ste_sign", "biper")
    model = mod.create()
    model.load_state_dict(torch.load(MODELS_DIR / mod.WEIGHTS, map_location="cpu", weights_only=True))
    split = load_digits_split()
    assert evaluate(model, split.x_test, split.y_test) >= 0.9911 - 0.06  # within 6 pt of the fp32 CNN
    binary = [m for m in model.modules() if type(m).__name__ == "SignInputConv2d"]
    assert len(binary) == 3
    for conv in binary:  # shipped folded: each output channel is ±α_o
        w = conv.weight.detach().flatten(1)
        assert torch.equal(w.abs(), w.abs()[:, :1].expand_as(w))
    assert (MODELS_DIR / mod.WEIGHTS).stat().st_size < 1_000_000


# --- pruning-aware training (digits) ---------------------------------------------------------------------


def test_cubic_schedule():
    from edgekit.training.pruning import cubic_sparsity

    assert cubic_sparsity(0, 0.9, 0, 100) == 0.0 and cubic_sparsity(100, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5**3))
    values = [cubic_sparsity(t, 0.9, 0, 100) for t in range(0, 101, 10)]
    assert all(b >= a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize(
    "args,floor_pt",
    [
        (["--prune", "0.9"], 1.0),
        (["--prune", "0.5", "--structured"], 2.0),
        (["--prune", "0.8", "--lottery", "--rounds", "2"], 1.0),
        (["--prune", "0.9", "--prune-block", "8"], 2.0),  # 1x8 blocks (what the sparse kernels skip): 97.8 %
    ],
)
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
    if "--prune-block" in args:
        assert result["mode"] == "1x8 blocks 90% (layer)" and result["block"] == 8, result
    if "--lottery" in args:
        t = result["lottery"]
        assert t["ticket_accuracy"] >= t["dense_accuracy"] - 0.01 and 0 < t["random_reinit_accuracy"] <= 1


def test_block_masks_zero_whole_output_channel_blocks_and_leave_depthwise_dense():
    from torch import nn

    from edgekit.training.pruning import WeightMasks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3, groups=16), nn.Linear(16, 10), nn.Linear(10, 8))
    masks = WeightMasks(model, block=8)
    masks.prune_to(0.75)
    assert sorted(masks.layers) == ["0", "3"]  # depthwise and 10 output channels: dense
    for name in ("0", "3"):
        w = masks.layers[name].weight.detach()
        blocks = w.reshape(w.shape[0] // 8, 8, -1)
        zero = (blocks == 0).all(dim=1)
        assert torch.equal(zero, (blocks == 0).any(dim=1))  # a block is all zero or all kept
        assert int(zero.sum()) == round(0.75 * zero.numel())  # the ONNX pass's count: it finds exactly these
