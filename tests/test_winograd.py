"""Winograd F(4x4, 3x3): the transform matrices, when the rewrite applies, and compiled convs vs onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.relax_passes import winograd


def test_transforms_reproduce_a_direct_correlation():
    """Y = A^T [(G g G^T) * (B^T d B)] A equals the 4x4 'valid' correlation of a 6x6 tile with a 3x3 kernel."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    b_t, a_t = np.asarray(winograd.B_T, float), np.asarray(winograd.A_T, float)
    u = winograd.transform_weights(g.reshape(3, 3, 1, 1)).reshape(6, 6)
    y = a_t @ (u * (b_t @ d @ b_t.T)) @ a_t.T
    direct = np.array([[(d[i : i + 3, j : j + 3] * g).sum() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-12)


def _conv_model(
    path,
    n=1,
    c=16,
    k=24,
    h=20,
    w=20,
    pads=(1, 1, 1, 1),
    strides=(1, 1),
    dilations=(1, 1),
    group=1,
    kernel=3,
    residual=False,
    seed=0,
):
    """Conv(+bias) -> Relu (-> Conv -> Add(residual) -> Relu), written directly in ONNX."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((k, c // group, kernel, kernel)) * 0.2).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b1"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w1", "b1"],
            ["c1"],
            pads=list(pads),
            strides=list(strides),
            dilations=list(dilations),
            group=group,
        ),
        helper.make_node("Relu", ["c1"], ["y"]),
    ]
    out_h = (h + pads[0] + pads[2] - dilations[0] * (kernel - 1) - 1) // strides[0] + 1
    out_w = (w + pads[1] + pads[3] - dilations[1] * (kernel - 1) - 1) // strides[1] + 1
    if residual:  # a second 3x3 conv whose output transform carries bias + residual add + ReLU
        inits.append(numpy_helper.from_array((rng.standard_normal((k, k, 3, 3)) * 0.1).astype(np.float32), "w2"))
        nodes[-1] = helper.make_node("Relu", ["c1"], ["r1"])
        nodes += [
            helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c2", "r1"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, k, out_h, out_w])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    "shape",
    [
        dict(h=20, w=20),  # 25 tiles: padded to 30 GEMM rows
        dict(h=15, w=13, c=32, k=16),  # output not a multiple of the 4x4 tile
        dict(h=18, w=18, pads=(0, 0, 0, 0)),  # 'valid' conv: 16x16 output
        dict(h=17, w=22, pads=(2, 1, 0, 1)),  # asymmetric padding
        dict(n=2, h=12, w=12, residual=True),  # batch 2; the second conv fuses bias + residual + ReLU
    ],
)
def test_winograd_convs_match_onnxruntime(tmp_path, shape):
    path = _conv_model(tmp_path / "conv.onnx", **shape)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    rules = result.meta["build"]["rule_per_function"]
    assert result.validation.ok and result.validation.max_abs <= 1e-4, result.validation.to_json()
    assert "winograd-input" in rules.values() and "winograd-output" in rules.values(), rules
    # the epilogue (bias, ReLU, residual) runs inside the output transform, not as a separate pass
    outputs = [name for name, rule in rules.items() if rule == "winograd-output"]
    assert all("relu" in name for name in outputs), outputs
    assert not any(rule.startswith("conv2d") for rule in rules.values()), rules


@pytest.mark.parametrize(
    "why,shape",
    [
        ("stride 2", dict(strides=(2, 2), h=40, w=40)),
        ("dilated", dict(dilations=(2, 2), pads=(2, 2, 2, 2))),
        ("grouped", dict(group=4)),
        ("1x1", dict(kernel=1, pads=(0, 0, 0, 0))),
        ("too few tiles", dict(h=8, w=8)),
        ("too few channels", dict(c=3)),
    ],
)
def test_winograd_only_where_it_applies(tmp_path, why, shape):
    path = _conv_model(tmp_path / "conv.onnx", **shape)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    assert result.validation.ok, why
    assert not any("winograd" in rule for rule in result.meta["build"]["rule_per_function"].values()), why


def test_winograd_can_be_turned_off(tmp_path, cli):
    """`compile --no-winograd`: the direct conv rule (smaller model.so: U holds 36 values per 9 weights)."""
    path = _conv_model(tmp_path / "conv.onnx")
    res = cli("compile", path, "-o", tmp_path / "art", "--no-winograd", "--json")
    assert res.exit_code == 0, res.stderr
    build = json.loads(res.stdout)["build"]
    rules = build["rule_per_function"].values()
    assert build["winograd"] is False and "conv2d-nhwc-regblock" in rules and not any("winograd" in r for r in rules)


def test_failed_validation_points_at_no_winograd(tmp_path, cli, monkeypatch):
    """With zero tolerance the Winograd build (not bit-exact) fails validation: exit 1 and a hint to compare."""
    import edgekit.compiler.build as build

    monkeypatch.setattr(build, "tolerances_for", lambda model, precision="fp32": (0.0, 0.0))
    res = cli("compile", _conv_model(tmp_path / "conv.onnx"), "-o", tmp_path / "art")
    assert res.exit_code == 1
    assert "--no-winograd" in res.stderr
