"""XNOR-popcount kernels (edgekit.kernels.binary) and their Relax lowering (edgekit.compiler.relax_passes.binary).

Kernels are checked bit-exact against a numpy integer reference (the fp32 conv of ±1 values is exact in
integers); the lowering against onnxruntime on an ONNX model in edgekit's binarized representation.
"""

from __future__ import annotations

import functools
import json
import re
import shutil

import numpy as np
import onnx
import pytest
import tvm
from conftest import X86_TARGETS, skip_unless_host_runs
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from edgekit.compiler.relax_passes.binary import binary_alpha, lower_binary_layers
from edgekit.kernels import binary as kb
from edgekit.kernels import binary_flat as kf

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

X86_V3 = X86_TARGETS["avx2"]  # AVX2, no vector popcount instruction
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

needs_aarch64 = pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
    reason="needs g++-aarch64-linux-gnu and qemu-user",
)


@functools.lru_cache(maxsize=None)
def _target(kind: str) -> tvm.target.Target:
    return tvm.target.Target({"avx512": X86_TARGETS["avx512"], "avx2": X86_V3, "v3": X86_V3, "aarch64": AARCH64}[kind])


def _compile(funcs: dict[str, tvm.tirx.PrimFunc], target: str):
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    return tvm.compile(mod, target=_target(target))


def _t(arr: np.ndarray):
    return tvm.runtime.tensor(np.ascontiguousarray(arr))


def _float_epilogue(rng: np.random.Generator, channels: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.25, 2.0, channels).astype(np.float32), rng.standard_normal(channels).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Conv kernels
# ----------------------------------------------------------------------------------------------------------


def run_conv(
    spec: kb.ConvSpec, target: str, seed: int = 0, flat: bool = False, data: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(kernel output, expected) for random float inputs/weights (exact zeros included in x), or `data` = (x, w);
    `flat` runs the stride-1 flat-plane kernel (binary_flat) instead of the row kernel."""
    rng = np.random.default_rng(seed)
    isa = kb.isa_for_target(_target(target))
    if flat:
        ex = _compile({"pack": kf.shifted_pack_func(spec, isa), "conv": kf.conv_func(spec, isa)}, target)
    else:
        ex = _compile({"pack": kb.conv_pack_func(spec), "conv": kb.conv_func(spec, isa)}, target)
    x = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width)).astype(np.float32)
    x[x < -1.5] = 0.0  # sign(0) must be +1 (x >= 0)
    w = rng.standard_normal((spec.out_channels, spec.in_channels, spec.kernel, spec.kernel)).astype(np.float32)
    if data is not None:
        x, w = data
    bits, base = kb.conv_weights(w, spec)
    if flat:
        base, bits = kf.epilogue_terms(base), kf.kernel_weights(bits, isa)
    shape = kf.shifted_shape(spec, isa) if flat else spec.packed_shape
    packed = _t(np.full(shape, 0xDEADBEEF, dtype=np.uint64))  # garbage: pack must overwrite all
    out = _t(np.zeros(spec.out_shape, spec.epilogue))
    ex.mod["pack"](_t(x), packed)
    ref = kb.conv_reference(x, w, spec.stride, spec.pad)
    if spec.epilogue == "int32":
        ex.mod["conv"](packed, _t(bits), _t(base), out)
        return out.numpy(), ref.astype(np.int32)
    alpha, bias = _float_epilogue(rng, spec.out_channels)
    ex.mod["conv"](packed, _t(bits), _t(base), _t(alpha), _t(bias), out)
    return out.numpy(), (ref * alpha[None, :, None, None] + bias[None, :, None, None]).astype(np.float32)


# Every channel count (a partial word, one word, a partial second word, four words) with every stride, padding
# and kernel; the output-channel counts (under one tile, whole tiles, a remainder tile) rotate through those rows,
# so each meets every channel count too. The full product took 3x the compiles and found nothing more.
CONV_GRID = [
    (c, (8, 64, 96)[i % 3], s, p, k)
    for i, (c, s, p, k) in enumerate(
        (c, s, p, k) for c in (3, 64, 100, 256) for s in (1, 2) for p in (0, 1) for k in (1, 3)
    )
]


@pytest.mark.parametrize("isa", sorted(X86_TARGETS))
@pytest.mark.parametrize("c,o,stride,pad,k", CONV_GRID)
def test_conv_int32_bit_exact(c, o, stride, pad, k, isa):
    skip_unless_host_runs(X86_TARGETS[isa])
    spec = kb.ConvSpec(1, c, 9, 7, o, k, stride, pad, "int32")
    got, ref = run_conv(spec, isa, seed=c * 7 + o)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("isa", sorted(X86_TARGETS))
@pytest.mark.parametrize(
    "c,o,pad,k,h,w",
    [
        (c, (8, 96)[(i + i // 2) % 2], p, k, h, w)
        for i, (c, p, k, h, w) in enumerate(
            (c, p, k, h, w) for c in (3, 100, 256) for p in (0, 1) for k in (1, 3) for h, w in ((9, 7), (14, 14))
        )
    ],
)  # o rotates (against h, w and k too), as above
def test_flat_conv_int32_bit_exact(c, o, pad, k, h, w, isa):
    skip_unless_host_runs(X86_TARGETS[isa])
    spec = kb.ConvSpec(1, c, h, w, o, k, 1, pad, "int32")
    got, ref = run_conv(spec, isa, seed=c + o + h, flat=True)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(
    "spec",
    [
        kb.ConvSpec(2, 70, 14, 14, 40, 3, 1, 1, "int32"),  # batch 2
        kb.ConvSpec(1, 64, 2, 5, 8, 3, 1, 1, "int32"),  # two output rows: every lane is in the first or last row
        kb.ConvSpec(1, 130, 5, 6, 24, 1, 1, 1, "int32"),  # 1x1 pad 1: the whole output border is zero
        kb.ConvSpec(1, 64, 28, 28, 16, 3, 1, 1, "float32"),  # float epilogue, plane a multiple of the tile
    ],
)
def test_flat_conv_edge_shapes_x86_v3(spec):
    got, ref = run_conv(spec, "v3", flat=True)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)


def test_flat_kernel_is_chosen_where_rows_waste_lanes():
    lanes = kb.AVX512.lanes
    assert kf.applies(kb.ConvSpec(1, 256, 14, 14, 256, 3, 1, 1), lanes)  # 14-wide rows: 16 lanes for 14
    assert not kf.applies(kb.ConvSpec(1, 64, 56, 56, 64, 3, 1, 1), lanes)  # 56 = 7 x 8: no waste
    assert not kf.applies(kb.ConvSpec(1, 64, 28, 28, 64, 3, 2, 1), lanes)  # stride 2
    assert not kf.applies(kb.ConvSpec(1, 64, 2, 2, 64, 3, 1, 1), lanes)  # plane smaller than a tile


def test_flat_epilogue_terms_rebuild_the_border_table():
    """Summing the additive terms for a lane's (first/last row, first/last col) flags gives base[o, rc, cc]."""
    spec = kb.ConvSpec(1, 5, 4, 4, 3, 3, 1, 1, "int32")
    _, base = kb.conv_weights(np.random.default_rng(2).standard_normal((3, 5, 3, 3)), spec)
    t = kf.epilogue_terms(base).astype(np.int64)
    for rc in (0, 1, 2):
        for cc in (0, 1, 2):
            fr, lr, fc, lc = rc == 1, rc == 2, cc == 1, cc == 2
            value = (
                t[:, 0]
                + fr * t[:, 1]
                + lr * t[:, 2]
                + fc * t[:, 3]
                + lc * t[:, 4]
                + fr * fc * t[:, 5]
                + fr * lc * t[:, 6]
                + lr * fc * t[:, 7]
                + lr * lc * t[:, 8]
            )
            np.testing.assert_array_equal(value, base[:, rc, cc])


@pytest.mark.parametrize("k,pad,epilogue", [(5, 1, "int32"), (7, 0, "int32"), (7, 1, "float32")])
def test_flat_conv_nibble_counters_flush_before_a_byte_overflows(k, pad, epilogue):
    """AVX2's flat kernel counts in bytes (8 per tap at most): 5x5 taps of one input word fit a byte, 7x7 do
    not and flush per kernel row. +1 activations against -1 weights make every tap count 8 in every byte."""
    spec = kb.ConvSpec(1, 64, 12, 12, 16, k, 1, pad, epilogue)
    got, ref = run_conv(spec, "v3", seed=k, flat=True)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)
    worst = (np.ones((1, 64, 12, 12), np.float32), -np.ones((16, 64, k, k), np.float32))
    got, ref = run_conv(spec, "v3", flat=True, data=worst)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        kb.ConvSpec(2, 100, 14, 14, 96, 3, 1, 1, "int32"),  # batch 2, width 14: two overlapping column tiles
        kb.ConvSpec(1, 64, 20, 33, 8, 3, 2, 1, "int32"),  # wide rows, stride 2
        kb.ConvSpec(1, 3, 1, 1, 8, 3, 1, 1, "int32"),  # one pixel: every tap but the centre on the border
        kb.ConvSpec(1, 130, 5, 6, 24, 1, 1, 1, "int32"),  # 1x1 pad 1: the whole output border is zero
    ],
)
def test_conv_edge_shapes_x86_v3(spec):
    """The AVX2 fallback (no vpopcntq) on shapes that exercise tiling edges; runs on any x86-64-v3 host."""
    got, ref = run_conv(spec, "v3")
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
def test_conv_float_epilogue(stride, pad, k):
    spec = kb.ConvSpec(1, 100, 10, 12, 40, k, stride, pad, "float32")
    got, ref = run_conv(spec, "v3", seed=5)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)


def test_conv_border_table_matches_mask_reference():
    """base[o, rc, cc] - K equals the sum of ±1 weights on taps that fall on padding (per border class)."""
    spec = kb.ConvSpec(1, 5, 4, 4, 3, 3, 1, 1, "int32")
    w = np.random.default_rng(1).standard_normal((3, 5, 3, 3))
    _, base = kb.conv_weights(w, spec)
    s = kb.sign_pm1(w).sum(axis=1)  # [o, kh, kw]
    assert np.array_equal(base[:, 0, 0], np.full(3, spec.reduction))  # interior: no correction
    assert np.array_equal(base[:, 1, 0] - spec.reduction, s[:, 0, :].sum(axis=1))  # top row: kh = 0 taps
    assert np.array_equal(base[:, 1, 1] - spec.reduction, s[:, 0, :].sum(axis=1) + s[:, 1:, 0].sum(axis=1))


def test_conv_rejects_unsupported_padding():
    with pytest.raises(ValueError, match="pad 0 or 1"):
        kb.ConvSpec(1, 8, 8, 8, 8, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------------
# Dense kernels
# ----------------------------------------------------------------------------------------------------------


def run_dense(spec: kb.DenseSpec, target: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    isa = kb.isa_for_target(_target(target))
    ex = _compile({"pack": kb.dense_pack_func(spec), "dense": kb.dense_func(spec, isa)}, target)
    x = rng.standard_normal((spec.batch, spec.in_features)).astype(np.float32)
    x[x < -1.5] = 0.0
    w = rng.standard_normal((spec.out_features, spec.in_features)).astype(np.float32)
    packed = _t(np.full((spec.batch, spec.kw), 0xDEADBEEF, dtype=np.uint64))
    out = _t(np.zeros((spec.batch, spec.out_features), spec.epilogue))
    ex.mod["pack"](_t(x), packed)
    ref = kb.dense_reference(x, w)
    if spec.epilogue == "int32":
        ex.mod["dense"](packed, _t(kb.dense_weights(w, spec)), out)
        return out.numpy(), ref.astype(np.int32)
    alpha, bias = _float_epilogue(rng, spec.out_features)
    ex.mod["dense"](packed, _t(kb.dense_weights(w, spec)), _t(alpha), _t(bias), out)
    return out.numpy(), (ref * alpha + bias).astype(np.float32)


DENSE_GRID = [
    ((1, 3, 6)[i % 3], k, o)
    for i, (k, o) in enumerate((k, o) for k in (3, 64, 100, 256, 1000) for o in (8, 33, 64, 96))
]  # batch rotates


@pytest.mark.parametrize("isa", sorted(X86_TARGETS))
@pytest.mark.parametrize("n,k,o", DENSE_GRID)
def test_dense_int32_bit_exact(n, k, o, isa):
    skip_unless_host_runs(X86_TARGETS[isa])
    got, ref = run_dense(kb.DenseSpec(n, k, o, "int32"), isa, seed=k + o)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n,k,o", [(1, 100, 33), (5, 4096, 40)])
def test_dense_x86_v3_and_float_epilogue(n, k, o):
    got, ref = run_dense(kb.DenseSpec(n, k, o, "int32"), "v3")
    np.testing.assert_array_equal(got, ref)
    got, ref = run_dense(kb.DenseSpec(n, k, o, "float32"), "v3", seed=2)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# aarch64: NEON code (cnt on v registers) and execution under qemu
# ----------------------------------------------------------------------------------------------------------


def test_aarch64_asm_uses_neon_cnt():
    spec_c = kb.ConvSpec(1, 64, 8, 8, 16, 3, 1, 1, "int32")
    spec_d = kb.DenseSpec(1, 256, 64, "int32")
    for name, func in {
        "conv": kb.conv_func(spec_c, kb.NEON),
        "flat_conv": kf.conv_func(spec_c, kb.NEON),
        "dense": kb.dense_func(spec_d, kb.NEON),
    }.items():
        asm = _compile({name: func}, "aarch64").mod.inspect_source("asm")
        assert re.search(r"\bcnt\s+v\d+\.16b", asm), f"no NEON popcount (cnt v.16b) in the aarch64 {name} code"


# ----------------------------------------------------------------------------------------------------------
# ONNX models in edgekit's binarized representation
# ----------------------------------------------------------------------------------------------------------


def _unpack_weight(prefix: str, weight: np.ndarray, nodes: list, inits: list) -> str:
    """edgekit's 1-bit weight encoding with standard ops: uint8 bits [O, ceil(K/8)] (LSB-first, 1 = +1),
    K = C*kh*kw in (C, kh, kw) order -> Unsqueeze(2) -> BitShift RIGHT [0..7] -> BitwiseAnd 1 -> Reshape
    [O, nb*8] -> Slice [:, :K] -> Cast float -> *2 -> -1 -> *alpha[O,1] -> Reshape to the weight's shape."""
    o = weight.shape[0]
    k = int(np.prod(weight.shape[1:]))
    nb = -(-k // 8)
    flat = weight.reshape(o, k)
    bits = np.zeros((o, nb * 8), np.uint8)
    bits[:, :k] = flat >= 0
    alpha = np.abs(flat).mean(axis=1, keepdims=True).astype(np.float32)

    def init(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), f"{prefix}_{name}"))
        return f"{prefix}_{name}"

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}_{out}"], **attrs))
        return f"{prefix}_{out}"

    t = node(
        "Unsqueeze",
        [init("bits", np.packbits(bits, axis=1, bitorder="little")), init("axis", np.array([2], np.int64))],
        "u",
    )
    t = node("BitShift", [t, init("shifts", np.arange(8, dtype=np.uint8).reshape(1, 1, 8))], "shr", direction="RIGHT")
    t = node("BitwiseAnd", [t, init("one_u8", np.array(1, np.uint8))], "and")
    t = node("Reshape", [t, init("shape_bits", np.array([o, nb * 8], np.int64))], "flat")
    t = node(
        "Slice",
        [
            t,
            init("s0", np.array([0], np.int64)),
            init("sk", np.array([k], np.int64)),
            init("s1", np.array([1], np.int64)),
        ],
        "sl",
    )
    t = node("Cast", [t], "f", to=TensorProto.FLOAT)
    t = node("Mul", [t, init("two", np.array(2.0, np.float32))], "x2")
    t = node("Sub", [t, init("one", np.array(1.0, np.float32))], "pm1")
    t = node("Mul", [t, init("alpha", alpha)], "scaled")
    return node("Reshape", [t, init("shape", np.array(weight.shape, np.int64))], "w")


def _binarize(prefix: str, x: str, nodes: list, inits: list) -> str:
    """Where(GreaterOrEqual(x, 0), 1, -1)."""
    for name, v in (("zero", 0.0), ("pos", 1.0), ("neg", -1.0)):
        inits.append(numpy_helper.from_array(np.array(v, np.float32), f"{prefix}_{name}"))
    nodes.append(helper.make_node("GreaterOrEqual", [x, f"{prefix}_zero"], [f"{prefix}_ge"]))
    nodes.append(helper.make_node("Where", [f"{prefix}_ge", f"{prefix}_pos", f"{prefix}_neg"], [f"{prefix}_sign"]))
    return f"{prefix}_sign"


IN_SHAPE = (1, 20, 6, 6)


def binary_model(bwn_conv: bool = False, float_conv: bool = False) -> onnx.ModelProto:
    """x -> sign -> Conv 3x3 pad 1 (binary, bias) -> Reshape -> sign -> Gemm (binary, bias) [-> BWN conv input]."""
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = "x"
    if bwn_conv:  # binary weights on the float input: not XNOR-able
        w0 = _unpack_weight("bwn", rng.standard_normal((20, 20, 1, 1)).astype(np.float32), nodes, inits)
        nodes.append(helper.make_node("Conv", [x, w0], ["x0"], kernel_shape=[1, 1]))
        x = "x0"
    w1 = _unpack_weight("conv", rng.standard_normal((24, 20, 3, 3)).astype(np.float32), nodes, inits)
    if float_conv:  # binary activations, real-valued weights: not XNOR-able
        inits.append(numpy_helper.from_array(rng.standard_normal((24, 20, 3, 3)).astype(np.float32), "conv_float_w"))
        w1 = "conv_float_w"
    inits.append(numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "conv_bias"))
    nodes.append(
        helper.make_node(
            "Conv", [_binarize("a1", x, nodes, inits), w1, "conv_bias"], ["y1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        )
    )
    inits.append(numpy_helper.from_array(np.array([1, 24 * 36], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Reshape", ["y1", "flat_shape"], ["f1"]))
    w2 = _unpack_weight("fc", rng.standard_normal((10, 24 * 36)).astype(np.float32), nodes, inits)
    inits.append(numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_bias"))
    nodes.append(helper.make_node("Gemm", [_binarize("a2", "f1", nodes, inits), w2, "fc_bias"], ["y"], transB=1))
    graph = helper.make_graph(
        nodes,
        "bnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(IN_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def _import(model: onnx.ModelProto) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(model, shape_dict={"x": list(IN_SHAPE)}, keep_params_in_input=False)
    return relax.transform.FoldConstant()(mod)


def _ops(mod: tvm.IRModule) -> list[str]:
    text = mod["main"].script(show_meta=False)
    return re.findall(r"R\.(nn\.conv2d|matmul)\(", text) + re.findall(r"R\.call_tir\((xnor_\w+)", text)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _input(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(IN_SHAPE).astype(np.float32)


def test_unpack_subgraph_folds_to_binary_constants():
    bindings = [b for block in _import(binary_model())["main"].body.blocks for b in block.bindings]
    layers = [
        b.value
        for b in bindings
        if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") in ("relax.nn.conv2d", "relax.matmul")
    ]
    weights = [call.args[1] for call in layers]
    assert len(weights) == 2 and all(isinstance(w, tvm.ir.expr.Constant) for w in weights)
    for w in weights:
        value = (w.value if hasattr(w, "value") else w.data).numpy()
        assert binary_alpha(value, 0 if value.ndim == 4 else 1) is not None


def test_lowering_replaces_conv_and_gemm_and_matches_ort():
    model = binary_model()
    mod, report = lower_binary_layers(_import(model), _target("v3"))
    assert [r["status"] for r in report] == ["lowered", "lowered"], report
    ops = _ops(mod)
    assert "nn.conv2d" not in ops and "matmul" not in ops
    assert any(o.startswith("xnor_conv_") and "pack" not in o for o in ops)
    assert any(o.startswith("xnor_dense_") and "pack" not in o for o in ops)
    vm = relax.VirtualMachine(relax.build(mod, target=_target("v3")), tvm.cpu())
    for seed in (3, 4):
        x = _input(seed)
        got = vm["main"](_t(x)).numpy()
        ref = _ort(model, x)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_bwn_layer_is_reported_and_left_float():
    model = binary_model(bwn_conv=True)
    mod, report = lower_binary_layers(_import(model), _target("v3"))
    skipped = [r for r in report if r["status"] == "skipped"]
    assert len(skipped) == 1 and "BWN" in skipped[0]["reason"]
    assert _ops(mod).count("nn.conv2d") == 1  # the BWN conv stays float
    vm = relax.VirtualMachine(relax.build(mod, target=_target("v3")), tvm.cpu())
    np.testing.assert_allclose(vm["main"](_t(_input())).numpy(), _ort(model, _input()), rtol=1e-5, atol=1e-3)


def test_binary_activations_with_float_weights_are_skipped_with_reason():
    model = binary_model(float_conv=True)
    mod, report = lower_binary_layers(_import(model), _target("v3"))
    assert report[0]["status"] == "skipped" and "not ±alpha" in report[0]["reason"]
    assert report[1]["status"] == "lowered"  # the Gemm still is binary
    assert "nn.conv2d" in _ops(mod)


def test_binary_alpha_check():
    w = np.ones((4, 3, 3, 3), np.float32)
    assert np.allclose(binary_alpha(w * np.array([1, 2, 3, 4], np.float32)[:, None, None, None]), [1, 2, 3, 4])
    w[0, 0, 0, 0] = -1.0  # sign flips are fine
    assert binary_alpha(w) is not None
    w[0, 0, 0, 1] = 0.5
    assert binary_alpha(w) is None


@needs_aarch64
def test_lowered_model_runs_on_aarch64_under_qemu(tmp_path):
    from edgekit.runners.qemu import QemuRunner
    from edgekit.targets import load_target

    spec = load_target("aarch64-generic")
    model = binary_model()
    mod, report = lower_binary_layers(_import(model), spec.tvm_target())
    assert [r["status"] for r in report] == ["lowered", "lowered"]
    assert any(gv.name_hint.startswith("xnor_conv_flat") for gv in mod.functions)  # 6x6 plane: the flat NEON kernel
    ex = relax.build(mod, target=spec.tvm_target())
    ex.export_library(str(tmp_path / "model.so"), cc=spec.compiler())
    meta = {
        "target": spec.to_json(),
        "inputs": [{"name": "x", "shape": list(IN_SHAPE), "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32"}],
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    x = _input()
    from edgekit.runtime import read_meta

    got = QemuRunner(tmp_path, read_meta(tmp_path), threads=2).run({"x": x})["y"]
    np.testing.assert_allclose(got, _ort(model, x), rtol=1e-5, atol=1e-4)


def test_binary_digits_compiles_with_float_and_binary_layers(tmp_path):
    """The whole pipeline on one module holding edgekit's popcount kernels next to scheduled float convs whose
    weights are prepacked (the layout-rewrite split must leave the hand-written kernels alone)."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.compress import CompressOptions, compress_file
    from edgekit.export import export_model

    fp32, packed = tmp_path / "binary_digits.onnx", tmp_path / "binary_digits.1bit.onnx"
    export_model("binary_digits", fp32)
    compress_file(fp32, packed, CompressOptions(bits=1, binarize_mode="xnor"))
    result = compile_onnx(packed, tmp_path / "art", "x86_64", quiet=True)
    rules = list(result.meta["build"]["rule_per_function"].values())
    assert any(r == "xnor-popcount kernel" for r in rules), rules
    assert any(r.startswith("conv2d-nhwc-regblock") for r in rules), rules
    assert result.validation.ok and result.validation.max_abs <= 1e-4
