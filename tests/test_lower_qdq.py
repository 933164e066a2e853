"""QDQ int8 -> integer Relax ops (lower_qdq) and the int8 VNNI build: bit-exact against onnxruntime's
integer kernels (same uint8 x int8 -> int32 accumulation and fp32 requantization), integer convs in the IR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from conftest import X86_TARGETS, best_host_x86, skip_unless_host_runs, third_party_cnn
from tvm import relax

from edgekit.compiler.build import build_module, schedule_module
from edgekit.compiler.frontend import to_relax
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.relax_passes.qdq import lower_qdq
from edgekit.compress import calibration_samples
from edgekit.export import export_model
from edgekit.onnxkit.graph import random_inputs, resolve_input_specs
from edgekit.onnxkit.tools import ort_session
from edgekit.passes.quantize import QuantizeConfig, run
from edgekit.targets import TargetSpec, load_target

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

AVX512_VNNI = X86_TARGETS["avx512"]  # the vpdpbusd rule
X86_V3 = X86_TARGETS["avx2"]  # no VNNI: the plain vectorized rule (runs on any AVX2 host)


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    path = tmp_path_factory.mktemp("digits_q") / "digits_cnn.onnx"
    export_model("digits_cnn", path)
    model = onnx.load(str(path))
    specs = resolve_input_specs(model, {})
    q, _ = run(model, QuantizeConfig(bits=8, calibration=calibration_samples("digits", specs, 64)))
    return q, calibration_samples("digits", specs, 96)[64:]  # held-out images for the comparison


def _without_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """third_party_cnn ending at the Gemm (its Softmax is quantized separately: see the softmax test)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    softmax = next(n for n in out.graph.node if n.op_type == "Softmax")
    out.graph.node.remove(softmax)
    del out.graph.output[:]
    out.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, [2, 10]))
    return out


def _quantize_cnn(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    specs = resolve_input_specs(model, {})
    q, _ = run(model, QuantizeConfig(bits=8, calibration=[random_inputs(specs, seed=i) for i in range(8)]))
    return q, [random_inputs(specs, seed=100 + i) for i in range(8)]


@pytest.fixture(scope="module")
def cnn_int8() -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    return _quantize_cnn(_without_softmax(third_party_cnn(batch=2)))


def _import(model: onnx.ModelProto) -> tvm.IRModule:
    return to_relax(model, resolve_input_specs(model, {}))


def _run_both(
    model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], target: dict
) -> tuple[np.ndarray, np.ndarray, dict]:
    built = build_module(_import(model), TargetSpec.for_tvm(target), BuildOptions(threads=2), int8=True)
    ex, rules = built.executable, {name: r.rule for name, r in built.rules.items()}
    vm = relax.VirtualMachine(ex, tvm.cpu())
    session = ort_session(model)
    ours = np.stack([vm["main"](*[tvm.runtime.tensor(v) for v in s.values()]).numpy() for s in samples])
    ref = np.stack([session.run(None, s)[0] for s in samples])
    return ours, ref, rules


def _ops(func: relax.Function) -> list[relax.Call]:
    calls: list[relax.Call] = []
    relax.analysis.post_order_visit(
        func, lambda e: calls.append(e) if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None
    )
    return calls


def test_digits_layers_lowered_to_integer_ops(digits_int8):
    mod, report = lower_qdq(_import(digits_int8[0]))
    assert [r["status"] for r in report] == ["lowered"] * 5, report
    assert sorted(r["op"] for r in report) == ["conv2d", "conv2d", "conv2d", "dense", "max_pool2d"]
    convs = [c for c in _ops(mod["main"]) if c.op.name in ("relax.nn.conv2d", "relax.matmul")]
    assert len(convs) == 4
    for c in convs:  # uint8 x int8 -> int32: no float conv/matmul left
        assert (str(c.args[0].ty.dtype), str(c.args[1].ty.dtype), str(c.ty.dtype)) == ("uint8", "int8", "int32")


def test_digits_prepared_module_runs_packed_int_convs(digits_int8):
    from edgekit.compiler.build import prepare_module

    mod = prepare_module(_import(digits_int8[0]), load_target("x86_64-avx512"), BuildOptions(threads=2), int8=True)
    text = mod.script()
    assert (
        text.count('sblock("conv2d_nhwc_u8s') == 3
    )  # three distinct conv shapes, each a packed u8s8 (or 7-bit u8s7) kernel
    assert "conv2d_nhwc(" not in text and '"float32") * T.Cast("float32"' not in text


@pytest.mark.parametrize("target,rule", [(AVX512_VNNI, "conv2d-u8s8-vnni"), (X86_V3, "avx2")])
def test_digits_bit_exact_vs_onnxruntime(digits_int8, target, rule):
    skip_unless_host_runs(target)
    if (
        rule == "avx2"
    ):  # 7-bit weights (reduce_range, chosen on hosts without VNNI) take vpmaddubsw; full-range ones cannot
        seven_bit = {p.key: p.value for p in digits_int8[0].metadata_props}.get("edgekit.int8.format") == "u8s7"
        rule = "conv2d-u8s7-avx2" if seven_bit else "conv2d-u8s8-vec"
    ours, ref, rules = _run_both(*digits_int8, target)
    assert sum(r == rule for r in rules.values()) == 3, rules
    np.testing.assert_array_equal(ours, ref)  # outputs are dequantized uint8: any one-step slip would show


def test_third_party_cnn_grouped_depthwise_residual(cnn_int8):
    """Dense, grouped and depthwise convs, max pool, a residual add, global average pool and a Gemm:
    grouped convs take the generic schedules (integer, not VNNI); the add takes QLinearAdd's arithmetic, the
    mean stays float between DQ and Q; exact vs onnxruntime."""
    _, report = lower_qdq(_import(cnn_int8[0]))
    assert [r["status"] for r in report] == ["lowered"] * 6, report
    assert [r["op"] for r in report].count("add") == 1
    assert sorted(r["detail"].split(" in ")[0] for r in report if r["op"] == "conv2d") == [
        "conv2d 3x3 s1 g16 16->16",
        "conv2d 3x3 s1 g4 16->16",
        "conv2d 3x3 s2 g1 3->16",
    ]
    ours, ref, _ = _run_both(*cnn_int8, best_host_x86())
    np.testing.assert_array_equal(ours, ref)


def test_quantized_softmax_is_exact():
    """ORT runs DQ -> Softmax -> Q as QLinearSoftmax (a uint8 lookup table, floor(1/s_y)); qlinear_softmax.py
    computes the same. Before it, ~12 % of this CNN's probabilities were one output step (1/255) off."""
    q, samples = _quantize_cnn(third_party_cnn(batch=2))
    ours, ref, _ = _run_both(q, samples, best_host_x86())
    np.testing.assert_array_equal(ours, ref)


def _softmaxes(cases: list[tuple[float, int, float, int, list[int], int, int]]) -> onnx.ModelProto:
    """Per (s_x, z_x, s_y, z_y, shape, axis, opset): an input x<i> -> DQ -> Softmax -> Q -> output q<i>."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, ins, outs = [], [], [], []
    for i, (sx, zx, sy, zy, shape, axis, _) in enumerate(cases):
        for name, value in (("sx", np.float32(sx)), ("zx", np.uint8(zx)), ("sy", np.float32(sy)), ("zy", np.uint8(zy))):
            inits.append(numpy_helper.from_array(np.array(value), f"{name}{i}"))
        nodes += [
            helper.make_node("DequantizeLinear", [f"x{i}", f"sx{i}", f"zx{i}"], [f"f{i}"]),
            helper.make_node("Softmax", [f"f{i}"], [f"p{i}"], axis=axis),
            helper.make_node("QuantizeLinear", [f"p{i}", f"sy{i}", f"zy{i}"], [f"q{i}"]),
        ]
        ins.append(helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, shape))
        outs.append(helper.make_tensor_value_info(f"q{i}", TensorProto.UINT8, shape))
    graph = helper.make_graph(nodes, "softmaxes", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", cases[0][6])])


def _lowered_and_onnxruntime(model, op: str, input_shapes: list, rng) -> tuple[dict, list, list]:
    """Every case of `model` lowered as `op`, built for the host, run on random uint8 inputs beside onnxruntime."""
    _, report = lower_qdq(_import(model))
    assert [r["op"] for r in report if r["status"] == "lowered"] == [op] * len(input_shapes), report
    feeds = {f"x{i}": rng.integers(0, 256, shape, dtype=np.uint8) for i, shape in enumerate(input_shapes)}
    ex = build_module(
        _import(model), TargetSpec.for_tvm(best_host_x86()), BuildOptions(threads=2), int8=True
    ).executable
    ours = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
    return feeds, ours, ort_session(model).run(None, feeds)


@pytest.mark.parametrize("opset", [13, 11])
def test_softmax_rounds_like_onnxruntimes_qlinear_softmax(opset):
    """Random uint8 rows, 12 random parameter sets over last, inner and (opset 11) flattened axes: bit-exact vs
    onnxruntime. The float softmax quantized afterwards (onnxruntime without its fusions) differs on this data,
    so the equality is not vacuous."""
    rng = np.random.default_rng(opset)
    shapes = [([256, 10], -1), ([64, 37, 3], 1), ([8, 3, 20, 20], -1), ([128, 2], 1)]
    cases = [
        (float(rng.uniform(0.01, 0.4)), int(rng.integers(0, 256)), float(sy), int(zy), shape, axis, opset)
        for (shape, axis), sy, zy in zip(
            shapes * 3, [1 / 256] * 6 + list(rng.uniform(0.002, 0.01, 6)), [0] * 9 + [3] * 3
        )
    ]
    model = _softmaxes(cases)
    feeds, ours, refs = _lowered_and_onnxruntime(model, "softmax", [c[4] for c in cases], rng)
    import onnxruntime as ort

    unfused = ort.SessionOptions()
    unfused.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    floats = ort.InferenceSession(model.SerializeToString(), unfused, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    for got, ref in zip(ours, refs):
        np.testing.assert_array_equal(got.numpy(), ref)
    assert sum(int((f != r).sum()) for f, r in zip(floats, refs)) > 0


def test_skipped_layers_are_reported(digits_int8):
    """A float model has no QDQ pattern: every conv/dense is reported as skipped, with the reason."""
    path_model = third_party_cnn(batch=1)
    _, report = lower_qdq(_import(path_model))
    assert report and all(r["status"] == "skipped" for r in report)
    assert all("DequantizeLinear" in r["reason"] for r in report)


def test_float_layers_of_a_quantized_model_fold_their_weight_relayout(tmp_path):
    """A conv kept in float inside an int8 model gets the fp32 conv rule, whose weight re-layout must be folded
    at compile time (SplitLayoutRewritePreproc + FoldConstant), not run on every call."""
    from onnxruntime import quantization

    from edgekit.compiler.build import compile_onnx

    path, qpath = tmp_path / "digits_cnn.onnx", tmp_path / "mixed.onnx"
    export_model("digits_cnn", path)
    samples = iter(calibration_samples("digits", resolve_input_specs(onnx.load(str(path)), {}), 32))

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(samples, None)

    from edgekit.passes.quantize import needs_reduce_range
    from edgekit.targets import TargetCaps

    # 7-bit weights where this host's onnxruntime (the reference) would saturate full-range ones
    quantization.quantize_static(
        str(path),
        str(qpath),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        reduce_range=needs_reduce_range(TargetCaps.host()),
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=["node_Conv_55"],
    )
    q = onnx.load(str(qpath))
    result = compile_onnx(qpath, tmp_path / "art", "x86_64", quiet=True)
    rules = result.meta["build"]["rules"]
    assert rules.get("conv2d-nhwc-regblock") == 1 and sum(r.startswith("conv2d-u8s") for r in rules) == 1, rules
    # within one int8 output step: the float conv's sums round differently from ORT's near a requantization
    # boundary (measured 1.2 % of the output scale, one step; the default int8 tolerance is 1 %)
    assert result.validation.outputs[0].max_rel <= 0.02, result.validation.to_json()

    from edgekit.compiler.frontend import to_relax

    mod, _, _ = schedule_module(
        to_relax(q, resolve_input_specs(q, {})),
        TargetSpec.for_tvm({"kind": "llvm", "mcpu": "x86-64-v3"}),
        BuildOptions(threads=2),
        int8=True,
    )
    left = [
        gv.name_hint
        for gv, f in mod.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and "layout_rewrite_preproc" in f.script()
    ]
    assert not left, left


def test_seven_bit_weights_take_the_avx2_dot_product(tmp_path):
    """reduce_range (7-bit) weights on AVX2 without VNNI: the conv kernels are tensorized with vpmaddubsw +
    vpmaddwd (exact for |w| <= 64) and match onnxruntime bit for bit; full-range weights never take this path."""
    path = tmp_path / "digits_cnn.onnx"
    export_model("digits_cnn", path)
    model = onnx.load(str(path))
    specs = resolve_input_specs(model, {})
    q, _ = run(model, QuantizeConfig(bits=8, calibration=calibration_samples("digits", specs, 64), reduce_range=True))
    assert {p.key: p.value for p in q.metadata_props}["edgekit.int8.format"] == "u8s7"
    samples = calibration_samples("digits", specs, 96)[64:]
    skip_unless_host_runs(X86_V3)
    ours, ref, rules = _run_both(q, samples, X86_V3)
    assert sum(r == "conv2d-u8s7-avx2" for r in rules.values()) == 3, rules
    np.testing.assert_array_equal(ours, ref)
    mod, _, _ = schedule_module(_import(q), TargetSpec.for_tvm(X86_V3), BuildOptions(threads=1), int8=True)
    convs = {
        gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
        for gv, f in mod.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and "conv2d_u8s8" in gv.name_hint
    }
    asm = tvm.compile(tvm.IRModule(convs), target=tvm.target.Target(X86_V3)).mod.inspect_source("asm")
    assert "vpmaddubsw" in asm and "vpmaddwd" in asm
    full, _ = run(
        model, QuantizeConfig(bits=8, calibration=calibration_samples("digits", specs, 64), reduce_range=False)
    )
    _, full_rules, _ = schedule_module(_import(full), TargetSpec.for_tvm(X86_V3), BuildOptions(threads=1), int8=True)
    assert not any(r.rule == "conv2d-u8s7-avx2" for r in full_rules.values())


def _conv_model(cin: int, cout: int, size: int, kernel: int, stride: int, pad: int) -> onnx.ModelProto:
    """Conv + Relu + 1x1 Conv written directly in ONNX, with a given geometry (odd widths, strides, channel
    counts) for the first conv, whose output stays uint8 (requantized in its epilogue)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(cin * 100 + size)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=[pad] * 4
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [init("w", (cout, cin, kernel, kernel), 0.3), init("b", (cout,), 0.1), init("w2", (16, cout, 1, 1), 0.3)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "cin,cout,size,kernel,stride,pad",
    [
        (3, 64, 32, 7, 2, 3),  # a stem: 3 channels padded to 4, 16 output columns (row tile 8)
        (5, 32, 13, 3, 1, 1),  # prime width (row tile 1), two 16-channel blocks, channels padded to 8
        (16, 16, 24, 1, 1, 0),  # 1x1, 24 columns: the full 12-row tile
    ],
)
def test_avx2_dot_product_tiles_are_exact_on_any_geometry(cin, cout, size, kernel, stride, pad):
    """The AVX2 rule runs each 16-channel weight block as two 8-lane register tiles of up to 12 rows: bit-exact
    vs onnxruntime for widths with and without a full tile, and the requantize epilogue stores whole vectors
    (before tirx.nearbyint was marked vectorizable, LLVM transposed it into one byte store per value)."""
    model = _conv_model(cin, cout, size, kernel, stride, pad)
    specs = resolve_input_specs(model, {})
    q, _ = run(
        model, QuantizeConfig(bits=8, calibration=[random_inputs(specs, seed=i) for i in range(8)], reduce_range=True)
    )
    skip_unless_host_runs(X86_V3)
    ours, ref, rules = _run_both(q, [random_inputs(specs, seed=50 + i) for i in range(3)], X86_V3)
    assert list(rules.values()).count("conv2d-u8s7-avx2") == 2, rules
    np.testing.assert_array_equal(ours, ref)
    mod, _, _ = schedule_module(_import(q), TargetSpec.for_tvm(X86_V3), BuildOptions(threads=1), int8=True)
    first = min((gv.name_hint for gv in mod.functions if gv.name_hint.startswith("fused_conv2d_u8s8")), key=len)
    conv = mod[first].with_attr("global_symbol", "conv")
    asm = tvm.compile(tvm.IRModule({"conv": conv}), target=tvm.target.Target(X86_V3)).mod.inspect_source("asm")
    assert "vpmaddubsw" in asm and "vpextrb" not in asm


def _residual_adds(params: list[tuple[float, int, float, int, float, int]]) -> onnx.ModelProto:
    """Inputs a, b (uint8 256 x 256) and, per (s_a, z_a, s_b, z_b, s_c, z_c), DQ(a) + DQ(b) -> Q: an output each."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [], [], []
    for i, (sa, za, sb, zb, sc, zc) in enumerate(params):
        for name, value in (
            ("sa", np.float32(sa)),
            ("za", np.uint8(za)),
            ("sb", np.float32(sb)),
            ("zb", np.uint8(zb)),
            ("sc", np.float32(sc)),
            ("zc", np.uint8(zc)),
        ):
            inits.append(numpy_helper.from_array(np.array(value), f"{name}{i}"))
        nodes += [
            helper.make_node("DequantizeLinear", ["a", f"sa{i}", f"za{i}"], [f"fa{i}"]),
            helper.make_node("DequantizeLinear", ["b", f"sb{i}", f"zb{i}"], [f"fb{i}"]),
            helper.make_node("Add", [f"fa{i}", f"fb{i}"], [f"sum{i}"]),
            helper.make_node("QuantizeLinear", [f"sum{i}", f"sc{i}", f"zc{i}"], [f"c{i}"]),
        ]
        outs.append(helper.make_tensor_value_info(f"c{i}", TensorProto.UINT8, [256, 256]))
    graph = helper.make_graph(
        nodes, "adds", [helper.make_tensor_value_info(x, TensorProto.UINT8, [256, 256]) for x in "ab"], outs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_residual_adds_round_like_onnxruntimes_qlinear_add():
    """Every (a, b) uint8 pair, for 40 random quantization parameter sets: bit-exact vs onnxruntime's QLinearAdd.
    The dequantize-add-quantize TVM built before rounds some near-ties the other way (ResNet-18's logits were one
    step off in 66 of 1000 on some inputs): the check below that it differs here keeps this test from passing
    on data without such ties."""
    rng = np.random.default_rng(7)
    scales, zeros = rng.uniform(0.005, 0.1, (40, 3)), rng.integers(0, 256, (40, 3))
    params = [(float(s[0]), int(z[0]), float(s[1]), int(z[1]), float(s[2]), int(z[2])) for s, z in zip(scales, zeros)]
    model = _residual_adds(params)
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    _, report = lower_qdq(_import(model))
    assert [r["op"] for r in report] == ["add"] * 40, report
    ex = build_module(
        _import(model), TargetSpec.for_tvm(best_host_x86()), BuildOptions(threads=2), int8=True
    ).executable
    ours = [
        t.numpy() for t in relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b))
    ]
    refs = ort_session(model).run(None, {"a": a, "b": b})
    naive_differs = 0
    for (sa, za, sb, zb, sc, zc), got, ref in zip(params, ours, refs):
        np.testing.assert_array_equal(got, ref)
        f32 = np.float32
        naive = np.clip(
            np.round(
                ((a.astype(np.int32) - za).astype(f32) * f32(sa) + (b.astype(np.int32) - zb).astype(f32) * f32(sb))
                / f32(sc)
            )
            + zc,
            0,
            255,
        )
        naive_differs += int((naive != ref).sum())
    assert naive_differs > 0


def _resizes(cases: list[tuple[float, int, float, int, list[int], list[int], str]]) -> onnx.ModelProto:
    """Per (s_x, z_x, s_y, z_y, in shape, out sizes, coordinate mode): x<i> -> DQ -> Resize(linear) -> Q -> q<i>."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, ins, outs = [], [], [], []
    for i, (sx, zx, sy, zy, shape, sizes, mode) in enumerate(cases):
        for name, value in (("sx", np.float32(sx)), ("zx", np.uint8(zx)), ("sy", np.float32(sy)), ("zy", np.uint8(zy))):
            inits.append(numpy_helper.from_array(np.array(value), f"{name}{i}"))
        inits.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), f"sizes{i}"))
        nodes += [
            helper.make_node("DequantizeLinear", [f"x{i}", f"sx{i}", f"zx{i}"], [f"f{i}"]),
            helper.make_node(
                "Resize", [f"f{i}", "", "", f"sizes{i}"], [f"r{i}"], mode="linear", coordinate_transformation_mode=mode
            ),
            helper.make_node("QuantizeLinear", [f"r{i}", f"sy{i}", f"zy{i}"], [f"q{i}"]),
        ]
        ins.append(helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, shape))
        outs.append(helper.make_tensor_value_info(f"q{i}", TensorProto.UINT8, sizes))
    return helper.make_model(
        helper.make_graph(nodes, "resizes", ins, outs, inits), opset_imports=[helper.make_opsetid("", 13)]
    )


def test_bilinear_resize_between_qdq_rounds_like_onnxruntime():
    """Up (x2, as FPN / text-detector necks do), odd and down sizes in every coordinate mode, random
    quantization parameters: bit-exact vs onnxruntime's float Resize quantized. Interpolating in lerp order
    instead (what TVM's resize2d and newer onnxruntime kernels do) differs on this data: the ties are real."""
    rng = np.random.default_rng(11)
    geometry = [
        ([1, 4, 16, 16], [1, 4, 32, 32]),
        ([1, 2, 7, 5], [1, 2, 13, 11]),
        ([2, 3, 10, 12], [2, 3, 5, 7]),
        ([1, 2, 1, 6], [1, 2, 3, 12]),
    ]
    modes = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
    cases = []
    for k, mode in enumerate(modes):
        for j, (shape, sizes) in enumerate(geometry):
            sx = float(rng.uniform(0.01, 0.2))
            sy = sx if (j + k) % 2 else float(sx * rng.uniform(0.9, 1.1))  # equal scales: ties on every 1/16 grid point
            cases.append((sx, int(rng.integers(0, 256)), sy, int(rng.integers(0, 256)), shape, sizes, mode))
    model = _resizes(cases)
    feeds, ours, refs = _lowered_and_onnxruntime(model, "resize", [c[4] for c in cases], rng)
    from edgekit.compiler.relax_passes.bilinear_resize import axis_taps

    lerp_differs = 0
    for (sx, zx, sy, zy, shape, sizes, mode), x, got, ref in zip(cases, feeds.values(), ours, refs):
        np.testing.assert_array_equal(got.numpy(), ref)
        y1, y2, dy1, dy2 = axis_taps(shape[2], sizes[2], mode)
        x1, x2, dx1, dx2 = axis_taps(shape[3], sizes[3], mode)
        f = (x.astype(np.float32) - zx) * np.float32(sx)
        rows = [f[:, :, y1], f[:, :, y2]]
        top, bottom = [r[..., x1] + dx1 * (r[..., x2] - r[..., x1]) for r in rows]
        lerp = top + dy1[:, None] * (bottom - top)
        lerp_differs += int((np.clip(np.round(lerp / np.float32(sy)) + zy, 0, 255) != ref).sum())
    assert lerp_differs > 0


def test_residual_adds_with_a_data_dependent_shape_stay_as_imported():
    from edgekit.compiler.relax_passes import static_shape

    n = tvm.tirx.Var("n", "int64")
    assert static_shape(relax.Var("x", relax.TensorType([2, 3], "uint8"))) == (2, 3)
    assert static_shape(relax.Var("y", relax.TensorType([n, 3], "uint8"))) is None
    assert static_shape(relax.Var("z", relax.TensorType(None, "uint8", ndim=2))) is None
