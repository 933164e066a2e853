"""Fused inverted-residual blocks: the kernel (edgekit.kernels.mbconv) against a NumPy reference, and the Relax
rewrite (edgekit.compiler.relax_passes.inverted_residual) end to end against onnxruntime."""

import json
import shutil

import numpy as np
import onnx
import pytest
import tvm
from conftest import X86_TARGETS, skip_unless_host_runs
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.relax_passes import inverted_residual
from edgekit.kernels import mbconv
from edgekit.kernels.sparse import BLOCK

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

TARGETS = {"avx512": (X86_TARGETS["avx512"], 16, 24), "avx2": (X86_TARGETS["avx2"], 8, 12)}


def _weights(spec: mbconv.MBConvSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    cm, ci, co = spec.mid_channels, spec.in_channels, spec.out_channels
    w_e = (rng.standard_normal((1, 1, ci, cm)) / np.sqrt(ci)).astype(np.float32) if spec.expand_channels else None
    return (
        w_e,
        (rng.standard_normal(cm) * 0.5).astype(np.float32),
        (rng.standard_normal((3, 3, 1, cm)) / 2).astype(np.float32),
        (rng.standard_normal(cm) * 0.5).astype(np.float32),
        (rng.standard_normal((1, 1, cm, co)) / np.sqrt(cm)).astype(np.float32),
        rng.standard_normal(co).astype(np.float32),
    )


def _block_prune(w: np.ndarray | None, keep: float, seed: int) -> np.ndarray | None:
    """Zero all but ~keep of W's 1 x BLOCK output-channel blocks (at least one block per group stays)."""
    if w is None:
        return None
    k, n = w.shape[-2:]
    kept = np.random.default_rng(seed).random((k, n // BLOCK)) < keep
    kept[0] = True
    return (w.reshape(k, n // BLOCK, BLOCK) * kept[:, :, None]).reshape(w.shape).astype(np.float32)


def _run_kernel(spec, bands, isa, sparse=(False, False)):
    target, lanes, acc = TARGETS[isa]
    w_e, b_e, w_d, b_d, w_p, b_p = _weights(spec)
    if any(sparse):
        w_e = _block_prune(w_e, 0.3, 1) if sparse[0] else w_e
        w_p = _block_prune(w_p, 0.3, 2) if sparse[1] else w_p
    x = (
        np.random.default_rng(1)
        .standard_normal((spec.batch, spec.height, spec.width, spec.in_channels))
        .astype(np.float32)
    )
    want = mbconv.mbconv_reference(spec, x, w_e, b_e, w_d, b_d, w_p, b_p)
    pe, wd, pp = mbconv.pack_weights(spec, w_e, w_d, w_p, lanes, acc, sparse=sparse)
    func = mbconv.mbconv_func(spec, lanes, acc, bands, kept=(pe.kept, pp.kept)).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))
    skip_unless_host_runs(target)
    b_e = b_e if w_e is not None else np.zeros(spec.mid_channels, np.float32)
    consts = (x, *pe.arrays(), b_e, wd, b_d, *pp.arrays(), b_p)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in consts]
    out = tvm.runtime.tensor(np.full(want.shape, np.nan, np.float32))
    lib["main"](*args, out)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", sorted(TARGETS))
@pytest.mark.parametrize(
    "spec,bands",
    [
        (mbconv.MBConvSpec(1, 16, 16, 8, 32, 8, 1, True), 2),  # residual, stride 1
        (mbconv.MBConvSpec(1, 15, 13, 8, 48, 24, 2, False), 2),  # odd sizes, stride 2, 24 output channels
        (mbconv.MBConvSpec(2, 9, 7, 32, 0, 24, 1, False), 3),  # no expansion, batch 2, 3 bands
        (mbconv.MBConvSpec(1, 7, 5, 4, 24, 40, 2, False), 1),  # width below the register tile, 1 band
        (
            mbconv.MBConvSpec(1, 6, 6, 16, 64, 16, 1, True, (0.0, np.inf), (0.0, np.inf)),
            4,
        ),  # ReLU; more bands than rows/2
    ],
)
def test_kernel_matches_reference(spec, bands, isa):
    _run_kernel(spec, bands, isa)


@pytest.mark.parametrize("isa", sorted(TARGETS))
@pytest.mark.parametrize(
    "spec,sparse",
    [
        (mbconv.MBConvSpec(1, 16, 16, 16, 48, 16, 1, True), (True, True)),  # residual, both 1x1 convs sparse
        (mbconv.MBConvSpec(1, 15, 13, 8, 48, 24, 2, False), (True, False)),  # sparse expansion, dense projection
        (mbconv.MBConvSpec(2, 9, 7, 32, 0, 24, 1, False), (False, True)),  # no expansion, sparse projection
    ],
)
def test_block_sparse_kernel_matches_reference(spec, sparse, isa):
    _run_kernel(spec, 2, isa, sparse)


def test_spec_rejects_what_the_kernel_cannot_do():
    with pytest.raises(ValueError, match="stride"):
        mbconv.MBConvSpec(1, 8, 8, 8, 16, 8, 3, False)
    with pytest.raises(ValueError, match="residual"):
        mbconv.MBConvSpec(1, 8, 8, 8, 16, 12, 1, True)


def _block_model(
    path,
    n=1,
    c=16,
    expand=64,
    out=16,
    h=12,
    w=12,
    stride=1,
    residual=True,
    act="Clip",
    dw_kernel=3,
    dilation=1,
    expanded_is_output=False,
    seed=0,
):
    """[Conv1x1 -> act] -> depthwise Conv -> act -> Conv1x1 [-> Add(x)], in ONNX; `expand=0`: no expansion."""
    rng = np.random.default_rng(seed)
    cm = expand or c
    inits, nodes = [], []

    def conv(name, inp, w, group=1, **attrs):
        inits.extend(
            [
                numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
                numpy_helper.from_array((rng.standard_normal(w.shape[0]) * 0.3).astype(np.float32), f"{name}_b"),
            ]
        )
        nodes.append(helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [name], group=group, **attrs))
        return name

    def activation(inp):
        name = inp + "_act"
        if act == "Clip":
            nodes.append(helper.make_node("Clip", [inp, "lo", "hi"], [name]))
        else:
            nodes.append(helper.make_node("Relu", [inp], [name]))
        return name

    inits += [
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]
    e = activation(conv("expand", "x", rng.standard_normal((cm, c, 1, 1)) / np.sqrt(c))) if expand else "x"
    pad = dilation * (dw_kernel // 2)
    d = activation(
        conv(
            "dw",
            e,
            rng.standard_normal((cm, 1, dw_kernel, dw_kernel)) / 2,
            group=cm,
            strides=[stride] * 2,
            pads=[pad] * 4,
            dilations=[dilation] * 2,
        )
    )
    y = conv("project", d, rng.standard_normal((out, cm, 1, 1)) / np.sqrt(cm))
    if residual:
        nodes.append(helper.make_node("Add", [y, "x"], ["y"]))
        y = "y"
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    outputs = [helper.make_tensor_value_info(y, TensorProto.FLOAT, [n, out, oh, ow])]
    if expanded_is_output:
        outputs.append(helper.make_tensor_value_info(e, TensorProto.FLOAT, [n, cm, h, w]))
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])], outputs, inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def any_size(monkeypatch):
    """Fuse blocks of any size (the default threshold wants an expanded tensor of 512 KB)."""
    monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES", 0)


def _compile(tmp_path, path, target="x86_64", **kw):
    result = compile_onnx(path, tmp_path / "art", target, BuildOptions(threads=2, **kw), quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4, result.validation.to_json()
    return result.meta["build"]["rule_per_function"]


@pytest.mark.parametrize(
    "block",
    [
        dict(),  # MobileNetV2's stride-1 block with residual
        dict(stride=2, residual=False, out=24, h=13, w=11),  # stride 2, odd input
        dict(expand=0, residual=False, out=8, n=2),  # first block: depthwise -> projection, batch 2
        dict(act="Relu", c=8, out=8, expand=24),  # ReLU instead of ReLU6
    ],
)
def test_fused_blocks_match_onnxruntime(tmp_path, any_size, block):
    rules = _compile(tmp_path, _block_model(tmp_path / "block.onnx", **block))
    assert list(rules.values()).count("mbconv kernel") == 1, rules
    assert not any(r.startswith("conv2d") for r in rules.values()), rules  # no conv left outside the kernel


def test_big_blocks_fuse_by_default_and_can_be_switched_off(tmp_path, cli):
    path = _block_model(tmp_path / "block.onnx", c=24, expand=144, out=24, h=32, w=32)  # 32x32x144: 590 KB
    assert "mbconv kernel" in _compile(tmp_path, path).values()
    res = cli("compile", path, "-o", tmp_path / "art2", "--no-fuse-blocks", "--json")
    assert res.exit_code == 0, res.stderr
    build = json.loads(res.stdout)["build"]
    rules = build["rule_per_function"].values()
    assert build["fused_blocks"] is False and "mbconv kernel" not in rules and "conv2d-nhwc-depthwise" in rules, rules


def test_failed_validation_points_at_no_fuse_blocks(tmp_path, cli, monkeypatch):
    """With zero tolerance the fused build (summation order differs) fails validation: exit 1 and a hint."""
    import edgekit.compiler.build as build

    monkeypatch.setattr(build, "tolerances_for", lambda model, precision="fp32": (0.0, 0.0))
    path = _block_model(tmp_path / "block.onnx", c=24, expand=144, out=24, h=32, w=32)
    res = cli("compile", path, "-o", tmp_path / "art")
    assert res.exit_code == 1
    assert "--no-fuse-blocks" in res.stderr


def test_expansion_used_elsewhere_stays_a_conv(tmp_path, any_size):
    """The expanded tensor is also a model output: only depthwise -> projection fuse, reading it."""
    rules = _compile(tmp_path, _block_model(tmp_path / "block.onnx", expanded_is_output=True))
    assert list(rules.values()).count("mbconv kernel") == 1 and "conv2d-nhwc-regblock" in rules.values(), rules


@pytest.mark.parametrize(
    "why,block",
    [
        ("small map (fits the caches)", dict(h=8, w=8)),
        ("5x5 depthwise", dict(dw_kernel=5)),
        ("dilated depthwise", dict(dilation=2)),
    ],
)
def test_fusion_only_where_it_applies(tmp_path, monkeypatch, why, block):
    if why != "small map (fits the caches)":
        monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES", 0)
    rules = _compile(tmp_path, _block_model(tmp_path / "block.onnx", **block))
    assert "mbconv kernel" not in rules.values(), why


@pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
    reason="needs g++-aarch64-linux-gnu and qemu-user",
)
def test_fused_block_on_aarch64_matches_onnxruntime(tmp_path, any_size):
    rules = _compile(
        tmp_path, _block_model(tmp_path / "block.onnx", stride=2, residual=False, out=24, h=9, w=9), target="aarch64"
    )
    assert "mbconv kernel" in rules.values(), rules


@pytest.mark.parametrize("target", ["x86_64", "aarch64"])
def test_block_pruned_block_runs_sparse_inside_the_fused_kernel(target, tmp_path, any_size, monkeypatch):
    from edgekit.compiler.relax_passes import sparse
    from edgekit.compress import CompressOptions, compress_file

    if target == "aarch64" and not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user")

    monkeypatch.setattr(sparse, "MIN_DENSE_MACS", 0)  # a 12x12 block is far below the size floor of real layers
    monkeypatch.setattr(inverted_residual, "MIN_EXPANDED_BYTES_SPARSE", 0)
    dense = _block_model(tmp_path / "block.onnx", c=16, expand=64, out=16)
    pruned = tmp_path / "pruned.onnx"
    compress_file(dense, pruned, CompressOptions(bits=None, prune=0.9, prune_block=BLOCK))
    rules = _compile(tmp_path, pruned, target)  # validated against onnxruntime to 1e-4 (aarch64: under qemu)
    assert list(rules.values()).count("mbconv kernel") == 1, rules
    layers = json.loads((tmp_path / "art" / "meta.json").read_text())["build"]["sparse_layers"]
    assert [(l["kernel"], l.get("fused")) for l in layers] == [("sparse", "mbconv")] * 2, layers
