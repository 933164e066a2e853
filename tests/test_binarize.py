"""The ONNX 1-bit pass: bit layout, unpack exactness, ORT vs an independent torch reference, sizes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import third_party_cnn
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.datasets import load_digits_split
from edgekit.export import export_model
from edgekit.onnxkit.tools import ort_session
from edgekit.passes import passes_applied
from edgekit.passes.binarize import BinarizeConfig, pack_signs, run, unpack_signs


def ref_binarize(w: np.ndarray) -> np.ndarray:
    """sign(w)·α per output row, sign(0) = +1, α = mean|w| (computed independently of the pass)."""
    w2d = w.reshape(w.shape[0], -1).astype(np.float64)
    alpha = np.abs(w2d).mean(axis=1, keepdims=True)
    return (np.where(w2d >= 0, 1.0, -1.0) * alpha).astype(np.float32).reshape(w.shape)


def test_bit_layout_lsb_first_sign_zero_is_plus_one_padding_zero():
    w = np.array([[1, -1, 0, -2, -3, 5, -0.5, 2, -1, 3, -1], [-1] * 11], np.float32)  # K = 11: 5 padding bits
    bits = pack_signs(w)
    assert bits.dtype == np.uint8 and bits.shape == (2, 2)
    # row 0 signs +,-,+,-,-,+,-,+ | -,+,-  -> bits 1,0,1,0,0,1,0,1 -> 0b10100101; then 0,1,0 -> 0b010
    assert bits.tolist() == [[0b10100101, 0b00000010], [0, 0]]
    np.testing.assert_array_equal(unpack_signs(bits, 11), np.where(w >= 0, 1, -1))


def _with_weight_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return m


def test_unpack_subgraph_gives_exactly_sign_times_alpha():
    src = third_party_cnn(batch=2)  # opset 17 (upgraded), grouped + depthwise conv, Gemm, all binarized
    out, report = run(src, BinarizeConfig(keep=()))
    assert report.extra["binarized_layers"] == 4
    weights = {i.name: numpy_helper.to_array(i) for i in src.graph.initializer if i.name.startswith("w")}
    session = ort_session(_with_weight_outputs(out, list(weights)))
    got = session.run(list(weights), {"image": np.zeros((2, 3, 32, 32), np.float32)})
    for (name, w), unpacked in zip(weights.items(), got):
        np.testing.assert_array_equal(unpacked, ref_binarize(w), err_msg=name)
    # only the packed form is stored: no float weight initializer left
    assert not {i.name for i in out.graph.initializer} & set(weights)
    assert all(i.data_type == TensorProto.UINT8 for i in out.graph.initializer if i.name.endswith(".bits"))


@pytest.fixture(scope="module")
def digits_dyn(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("bin") / "digits.onnx"
    export_model("digits_cnn", path, dynamic_batch=True)
    return onnx.load(str(path))


def _torch_reference(mode: str, scale: bool, x: np.ndarray) -> np.ndarray:
    """The zoo's torch digits CNN with BN folded and the middle convs binarized in torch, independently of ONNX."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from edgekit.zoo import load_model

    model = load_model("digits_cnn").module
    for i in (0, 1, 3):
        block = model.features[i]
        block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), torch.nn.Identity()
    for i in (1, 3):  # first conv and the classifier are kept float
        conv = model.features[i][0]
        wb = torch.from_numpy(ref_binarize(conv.weight.detach().numpy()))

        def forward(inp, conv=conv, wb=wb):
            y = F.conv2d(torch.where(inp >= 0, 1.0, -1.0) if mode == "xnor" else inp, wb, None, 1, 1)
            if scale:
                box = torch.full((1, 1, 3, 3), 1 / 9)
                y = y * F.conv2d(inp.abs().mean(1, keepdim=True), box, None, 1, 1)
            return y + conv.bias.view(1, -1, 1, 1)

        conv.forward = forward
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("mode,scale", [("weights", False), ("xnor", False), ("xnor", True)])
def test_ort_matches_torch_reference(digits_dyn, mode, scale):
    x = load_digits_split().x_test
    out, report = run(digits_dyn, BinarizeConfig(mode=mode, scale_activations=scale))
    onnx.checker.check_model(out, full_check=True)
    got = ort_session(out).run(None, {"input": x})[0]
    ref = _torch_reference(mode, scale, x)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-5, rel
    assert [l.bits for l in report.layers] == [None, 1, 1, None]  # first/last kept by default
    assert passes_applied(out)[-1] == "binarize"
    assert {p.key: p.value for p in out.metadata_props}["edgekit.binarize.mode"] == mode
    ops = [n.op_type for n in out.graph.node if n.name.startswith("binarize/")]
    assert "Sign" not in ops and ("Where" in ops) == (mode == "xnor")


def _gemm_matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1, w2 = rng.standard_normal((12, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc_transB0"),  # x[N,12] @ w1[12,5]
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("mode", ["weights", "xnor"])
def test_gemm_transB0_and_matmul_are_packed_as_out_by_k(mode):
    model = _gemm_matmul_model()
    w1, w2 = (numpy_helper.to_array(i) for i in model.graph.initializer)
    x = np.random.default_rng(2).standard_normal((4, 12)).astype(np.float32)
    out, report = run(model, BinarizeConfig(mode=mode, keep=()))
    sign = (lambda a: np.where(a >= 0, 1.0, -1.0).astype(np.float32)) if mode == "xnor" else (lambda a: a)
    ref = sign(sign(x) @ ref_binarize(w1.T).T) @ ref_binarize(w2.T).T  # α over each output column
    got = ort_session(out).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    bits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer if i.name.endswith(".bits")}
    assert bits["w1.bits"].shape == (5, 2) and bits["w2.bits"].shape == (3, 1)  # [O, ceil(K/8)]
    np.testing.assert_array_equal(unpack_signs(bits["w1.bits"], 12), np.where(w1.T >= 0, 1, -1))


def test_resnet18_weights_31x_and_file_25x(tmp_path):
    path = tmp_path / "r18.onnx"
    export_model("resnet18", path)
    src = onnx.load(str(path))
    size = path.stat().st_size
    ratios = {}
    for keep in [(), ("first", "last")]:
        out, report = run(src, BinarizeConfig(keep=keep))
        packed = tmp_path / f"r18_bin_{len(keep)}.onnx"
        onnx.save(out, str(packed))
        ratios[keep] = (report.extra["binarized_weight_ratio"], size / packed.stat().st_size)
    assert ratios[()][0] >= 31 and ratios[()][1] >= 25, ratios  # all 21 layers 1-bit: ~31.5x / ~30x
    # default keep: conv1 and the 512x1000 fc (2 MB) stay fp32, so the file shrinks only ~13x
    assert ratios[("first", "last")][0] >= 31 and 10 <= ratios[("first", "last")][1] < 25, ratios


def test_keep_by_pattern_and_shared_weight():
    model = third_party_cnn()
    out, report = run(model, BinarizeConfig(keep=("conv2_*", "wf")))
    assert {l.name: l.bits for l in report.layers} == {"conv1": 1, "conv2_grouped": None, "conv3_dw": 1, "fc": None}
    shared = _gemm_matmul_model()  # a tied weight: binarizing it for one reader would change the other
    shared.graph.node.append(helper.make_node("Gemm", ["x", "w1"], ["h2"], name="fc_twin"))
    _, report = run(shared, BinarizeConfig(keep=()))
    notes = {l.name: l.note for l in report.layers}
    assert notes["fc_twin"] == notes["fc_transB0"] == "kept float (shared weight)" and notes["mm"] == ""


@pytest.mark.parametrize(
    "cfg,msg",
    [
        (BinarizeConfig(mode="ternary"), "unknown binarize mode"),
        (BinarizeConfig(scale_activations=True), "scale_activations needs binary activations"),
        (BinarizeConfig(keep=("nope*",)), "matches no Conv/Gemm/MatMul"),
    ],
)
def test_bad_config_messages(cfg, msg):
    with pytest.raises(EdgekitError, match=msg):
        run(third_party_cnn(), cfg)
