"""Block sparsity that runs sparse: compress --prune-block 8 (passes/prune.py), the block-sparse kernel
(kernels/sparse.py) and the per-layer choice in the build (compiler/relax_passes/sparse.py), validated against
onnxruntime. Speed is bench/prune.py's (README's pruning table), not a test's."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from edgekit.kernels.sparse import BLOCK, Epilogue, block_density, spmm_func, to_block_sparse
from edgekit.passes.prune import PruneConfig, sparsify
from edgekit.passes.weights import weight_layers

RNG = np.random.default_rng(0)


def _block_pruned(k: int, n: int, keep: float) -> np.ndarray:
    w = RNG.standard_normal((k, n)).astype(np.float32)
    return w * np.repeat(RNG.random((k, n // BLOCK)) < keep, BLOCK, axis=1)


@pytest.mark.parametrize(
    "lead, k, n, keep, bias",
    [
        ((1, 7, 7), 24, 32, 0.2, True),  # 49 rows: the last row tile overlaps its neighbour
        ((3,), 40, 16, 0.5, False),  # fewer rows than a tile
        ((2, 5, 9), 8, 24, 0.0, True),  # an all-zero weight: bias only
    ],
)
def test_kernel_matches_numpy(lead, k, n, keep, bias):
    w = _block_pruned(k, n, keep)
    sparse = to_block_sparse(w)
    b = RNG.standard_normal(n).astype(np.float32)
    x = RNG.standard_normal((*lead, k)).astype(np.float32)
    lib = tvm.compile(tvm.IRModule({"main": spmm_func(lead, sparse, bias)}), target=tvm.target.Target({"kind": "llvm"}))
    dev = tvm.cpu()
    out = tvm.runtime.empty((*lead, n), "float32", dev)
    lib["main"](*[tvm.runtime.tensor(a, dev) for a in (x, sparse.values, sparse.indices, sparse.indptr, b)], out)
    np.testing.assert_allclose(out.numpy(), x @ w + (b if bias else 0), rtol=1e-5, atol=1e-5)
    assert sparse.nbytes < w.nbytes * (keep + 0.2) + 64


@pytest.mark.parametrize(
    "epilogue",
    [Epilogue(clip=(0.0, 6.0)), Epilogue(residual=True), Epilogue((0.0, np.inf), True, add_first=True)],
    ids=["relu6", "residual", "relu_of_sum"],
)
def test_kernel_epilogues_match_numpy(epilogue):
    lead, k, n = (1, 5, 7), 16, 24
    w = _block_pruned(k, n, 0.3)
    sparse = to_block_sparse(w)
    b, x, res = (RNG.standard_normal(s).astype(np.float32) * 4 for s in (n, (*lead, k), (*lead, n)))
    func = spmm_func(lead, sparse, True, epilogue)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target({"kind": "llvm"}))
    dev = tvm.cpu()
    out = tvm.runtime.empty((*lead, n), "float32", dev)
    args = (x, sparse.values, sparse.indices, sparse.indptr, b, *((res,) if epilogue.residual else ()))
    lib["main"](*[tvm.runtime.tensor(a, dev) for a in args], out)
    y = x @ w + b
    lo, hi = epilogue.clip or (-np.inf, np.inf)
    want = np.clip(y + res, lo, hi) if epilogue.add_first else np.clip(y, lo, hi) + (res if epilogue.residual else 0)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)


def _model(out_channels: int = 64) -> onnx.ModelProto:
    """1x1 conv, depthwise 3x3, 3x3 conv, 1x1 conv, Gemm: what MobileNet / ResNet heads are made of."""

    def t(name, *shape):
        return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="pw1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d"], group=out_channels, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Conv", ["d", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw2"),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "pw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [
            t("w1", out_channels, 16, 1, 1),
            t("b1", out_channels),
            t("wd", out_channels, 1, 3, 3),
            t("w2", 48, out_channels, 3, 3),
            t("w3", 40, 48, 1, 1),
            t("b3", 40),
            t("wg", 16, 40),
            t("bg", 16),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_prune_block_zeroes_whole_output_channel_blocks():
    model = _model()
    pruned, report = sparsify(model, PruneConfig(ratio=0.75, block=BLOCK))
    by_init = {l.init_name: l for l in weight_layers(model)}
    assert "wd" not in pruned  # depthwise: a block would cut whole filters
    for name, w in pruned.items():
        moved = np.moveaxis(w, by_init[name].axis, 0)
        blocks = moved.reshape(moved.shape[0] // BLOCK, BLOCK, -1)
        nonzero = np.any(blocks != 0, axis=1)
        assert np.all(np.all(blocks != 0, axis=1) == nonzero), name  # a block is all zero or all kept
        assert abs(1 - nonzero.mean() - 0.75) < 0.02, (name, nonzero.mean())
    assert report.extra["mode"].startswith("1x8 blocks")


@pytest.mark.parametrize("ratio, sparse_kernels", [(0.9, 3), (0.5, 0)])
def test_block_pruned_layers_run_sparse_above_break_even_only(ratio, sparse_kernels, cli, tmp_path, monkeypatch):
    from edgekit.compiler.relax_passes import sparse as rule

    monkeypatch.setattr(rule, "MIN_DENSE_MACS", 0)  # the test model's layers are small: judge on density alone
    onnx.save(_model(), tmp_path / "m.onnx")
    res = cli("compress", tmp_path / "m.onnx", "--prune", str(ratio), "--prune-block", "8", "-o", tmp_path / "p.onnx")
    assert res.exit_code == 0, res.stderr
    res = cli("compile", tmp_path / "p.onnx", "-o", tmp_path / "art", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["validation"]["ok"]
    layers = json.loads((tmp_path / "art" / "meta.json").read_text())["build"]["sparse_layers"]
    kinds = {(l["op"], tuple(l["shape"])): l for l in layers}
    assert sum(l["kernel"] == "sparse" for l in layers) == sparse_kernels, layers
    assert kinds[("conv2d", (3, 3, 64, 48))]["kernel"] == "dense" and "3x3" in kinds[("conv2d", (3, 3, 64, 48))]["why"]
    for l in layers:
        if l["kernel"] == "sparse":
            assert l["weight_bytes"] <= 0.3 * l["dense_weight_bytes"], l
        elif "block_density" in l:
            assert "dense is faster" in l["why"], l


def test_small_layers_stay_dense_for_their_fused_epilogues(cli, tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    assert (
        cli(
            "compress", tmp_path / "m.onnx", "--prune", "0.9", "--prune-block", "8", "-o", tmp_path / "p.onnx"
        ).exit_code
        == 0
    )
    res = cli("compile", tmp_path / "p.onnx", "-o", tmp_path / "art")
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())  # rich wraps the console at 80 columns
    assert "0 of 4 block-sparse" in text and text.count("too small for a sparse call") == 3, res.stdout


def test_no_sparse_builds_the_same_model_dense(cli, tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    assert (
        cli(
            "compress", tmp_path / "m.onnx", "--prune", "0.9", "--prune-block", "8", "-o", tmp_path / "p.onnx"
        ).exit_code
        == 0
    )
    res = cli("compile", tmp_path / "p.onnx", "-o", tmp_path / "art", "--no-sparse", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["validation"]["ok"], res.stderr
    meta = json.loads((tmp_path / "art" / "meta.json").read_text())["build"]
    assert meta["sparse_layers"] == [] and "block-sparse kernel" not in meta["rules"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prune-block", "8"], "--prune-block needs unstructured --prune"),
        (["--prune", "0.5", "--structured", "--prune-block", "8"], "--prune-block needs unstructured --prune"),
        (["--prune", "0.5", "--prune-block", "0"], "bad --prune-block 0"),
    ],
)
def test_bad_prune_block(args, message, cli, tmp_path):
    from test_errors import assert_one_line_error

    onnx.save(_model(), tmp_path / "m.onnx")
    assert_one_line_error(cli("compress", tmp_path / "m.onnx", *args, "-o", tmp_path / "p.onnx"), message)


def test_block_density():
    assert block_density(np.zeros((4, 12))) is None  # 12 output channels: not whole blocks
    assert block_density(_block_pruned(64, 32, 1.0)) == 1.0
