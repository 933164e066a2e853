"""edgekit tune: a small real tuning run on the digits CNN, resume, and compile with the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.tuning.db import FORMAT, load_database
from edgekit.compiler.tuning.search import tune_model
from edgekit.core.errors import EdgekitError

TRIALS = 3


@pytest.fixture(scope="module")
def tuned(digits_onnx, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tuning")
    report = tune_model(digits_onnx, "x86_64", out, trials_per_task=TRIALS, threads=2, progress=False, verify=False)
    return out, report


def test_tuning_writes_a_database(tuned, digits_onnx):
    out, report = tuned
    db_path = out / "x86_64" / "digits_cnn.json"
    assert Path(report["database"]) == db_path and db_path.exists()
    db = json.loads(db_path.read_text())
    assert db["format"] == FORMAT and db["target_name"] == "x86_64" and db["threads"] == 2
    # the 3 convs are tunable; the classifier (a GEMV, memory-bound) and everything else keep their rules
    assert report["tasks"] == 3 and report["timed"] == 3 and report["resumed"] == 0
    assert set(db["tasks"]) and all(len(k) == 16 for k in db["tasks"])
    for task in db["tasks"].values():
        assert task["rule"] in ("conv", "depthwise") and "matmul" not in task["name"]
        assert task["default_us"] > 0 and 1 <= task["trials"] <= TRIALS
        assert set(task["default"]) == {"vec", "row", "red", "par", "order"}
        if task["knobs"]:
            assert task["best_us"] < task["default_us"]


def test_second_run_resumes_without_retiming(tuned, digits_onnx, monkeypatch):
    out, _ = tuned
    import edgekit.compiler.tuning.search as tune

    def boom(*_a, **_k):
        raise AssertionError("a task already in the database was timed again")

    monkeypatch.setattr(tune, "tune_task", boom)
    report = tune_model(digits_onnx, "x86_64", out, trials_per_task=TRIALS, threads=2, progress=False, verify=False)
    assert report["resumed"] == 3 and report["timed"] == 0


def test_compile_applies_the_database(tuned, digits_onnx, tmp_path):
    out, _ = tuned
    db = json.loads((out / "x86_64" / "digits_cnn.json").read_text())
    db_knobs = load_database(out)
    # force one task tuned (a deterministic check, whatever this machine's timings picked)
    key, task = next(iter(db["tasks"].items()))
    forced = dict(task["default"], red=1, par="none")
    knobs = dict(db_knobs, **{key: forced})
    result = compile_onnx(digits_onnx, tmp_path / "art", "x86_64", BuildOptions(threads=2, tuning=knobs), quiet=True)
    assert result.validation is not None and result.validation.ok
    tuned_rules = [r["knobs"] for r in result.meta["build"]["rule_details"].values() if r["knobs"]]
    assert len(tuned_rules) == len(knobs)
    assert any(k["par"] == "none" and k["red"] == 1 for k in tuned_rules)
    # a directory database loads the same way (compile --tuning DIR)
    from edgekit.targets import load_target

    from_dir = load_database(out, load_target("x86_64").tvm_target())
    assert from_dir == db_knobs
    again = compile_onnx(digits_onnx, tmp_path / "art2", "x86_64", BuildOptions(threads=2, tuning=from_dir), quiet=True)
    assert again.validation.ok
    assert sum(bool(r["knobs"]) for r in again.meta["build"]["rule_details"].values()) == len(db_knobs)


def test_stale_or_foreign_database_is_harmless(tuned, digits_onnx, tmp_path):
    out, _ = tuned
    key = next(iter(json.loads((out / "x86_64" / "digits_cnn.json").read_text())["tasks"]))
    bad = {key: {"vec": 7, "row": 3, "red": 1, "par": "none", "order": "col"}}  # does not divide the loops
    result = compile_onnx(digits_onnx, tmp_path / "art", "x86_64", BuildOptions(tuning=bad), quiet=True)
    assert result.validation.ok
    assert any("tuned knobs failed" in r["fallback_reason"] for r in result.meta["build"]["rule_details"].values())
    # a database for another target is ignored
    import tvm

    assert load_database(out, tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})) == {}
    with pytest.raises(EdgekitError):
        load_database(tmp_path / "missing")


def test_register_tile_fits_the_target_registers():
    import math

    import tvm

    from edgekit.compiler.schedules.tiles import pick_tile
    from edgekit.targets import TargetCaps

    shapes = [(112, 64), (56, 64), (28, 128), (14, 256), (7, 512), (56, 144), (7, 960)]
    avx2 = TargetCaps.from_tvm(
        tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})
    )  # 16 ymm
    for w, c in shapes:
        vec, row = pick_tile("conv", {"row_n": w, "col_n": c}, avx2)
        assert c % vec == 0 and w % row == 0 and row * math.ceil(vec / 8) <= 12
    avx512 = TargetCaps.from_tvm(
        tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v4"})
    )
    assert pick_tile("conv", {"row_n": 56, "col_n": 64}, avx512) == (32, 8)


def test_small_models_are_scheduled_single_threaded(digits_onnx):
    from edgekit.compiler.schedules.analysis import effective_threads, model_macs
    from edgekit.compiler.tuning.search import extract_tasks
    from edgekit.targets import load_target

    mod, tasks = extract_tasks(digits_onnx, load_target("x86_64"))
    assert 0 < model_macs(mod) < 30_000_000
    assert effective_threads(mod, 2) == 1 and effective_threads(mod, 1) == 1


def test_tasks_are_timed_with_cold_argument_sets(digits_onnx):
    """Each timed call uses the next of several argument copies (> L3 in total), like a layer in a whole model."""
    from edgekit.compiler.tuning.device import build_one
    from edgekit.compiler.tuning.search import COLD_BYTES, _Timer, extract_tasks
    from edgekit.targets import load_target

    spec = load_target("x86_64")
    _, tasks = extract_tasks(digits_onnx, spec)
    func = tasks[0]["func"]
    timer = _Timer(func)
    nbytes = sum(a.numpy().nbytes for a in timer.args)
    assert len(timer.sets) == min(16, -(-COLD_BYTES // nbytes)) > 1
    assert len({id(a) for s in timer.sets for a in s}) == len(timer.sets) * len(timer.args)  # distinct buffers
    mod = build_one(func, spec.tvm_target())
    timer.calibrate(mod)
    timer.number = 3
    assert timer.once(mod) > 0 and timer._next == 3  # three calls, three argument sets


def test_default_loop_order_follows_weight_size():
    from edgekit.compiler.schedules.tiles import COL_ORDER_MIN_WEIGHT_BYTES, default_knobs
    from edgekit.targets import load_target

    caps = load_target("x86_64-avx512").caps()
    dims = {"row_n": 14, "col_n": 256, "red_n": 256, "macs": 10**8, "outer": 2}
    assert default_knobs("conv", dict(dims, weight_bytes=COL_ORDER_MIN_WEIGHT_BYTES + 4), 2, caps)["order"] == "col"
    assert default_knobs("conv", dict(dims, weight_bytes=64 * 1024), 2, caps)["order"] == "outer"
    assert default_knobs("depthwise", dict(dims, weight_bytes=1 << 30), 2, caps)["order"] == "outer"


def test_conv_weights_are_prepacked_once_at_compile_time(digits_onnx):
    """Each conv reads its weights as [O/V, kh, kw, I, V] constants: the re-layout ran at compile time
    (no call left in main whose inputs are all constants), and the scheduled model still matches ORT."""
    import tvm
    from tvm import relax

    from edgekit.compiler.build import schedule_module
    from edgekit.compiler.frontend import to_relax
    from edgekit.onnxkit.graph import load_onnx, resolve_input_specs
    from edgekit.targets import load_target

    model = load_onnx(digits_onnx)
    mod, report, _ = schedule_module(
        to_relax(model, resolve_input_specs(model, {})), load_target("x86_64"), BuildOptions(threads=2)
    )
    convs = [name for name, r in report.items() if r.rule == "conv2d-nhwc-regblock"]
    assert convs
    calls: list[relax.Call] = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) and e.op.name == "relax.call_tir" else None
    )

    def const_ndim(expr) -> int | None:  # TVM 0.27 folds constants to GenericConst(.value)
        value = getattr(expr, "value", None) if "Const" in type(expr).__name__ else None
        return value.numpy().ndim if value is not None else None

    packed = [c for c in calls if any(const_ndim(a) == 5 for a in c.args[1].fields)]
    assert len(packed) == len(convs)
    assert not any(c.args[1].fields and all(const_ndim(a) is not None for a in c.args[1].fields) for c in calls)
    left = [
        gv.name_hint
        for gv, f in mod.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and "meta_schedule.layout_rewrite_preproc" in str(f)
    ]
    assert not left, (left, report)


def test_constant_matmul_weights_are_prepacked_and_activations_are_not(tmp_path):
    """Gemm with constant weights reads them as [N/V, K, V] (re-laid out at compile time); a MatMul of two
    activations (attention's Q x K^T) must not be re-laid out, or the copy would run on every call."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 96)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),  # [8, 96] @ W^T -> [8, 64]
        helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0]),
        helper.make_node("MatMul", ["h", "ht"], ["y"]),
    ]  # activations only
    graph = helper.make_graph(
        nodes,
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
        [w],
    )
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4

    from edgekit.compiler.build import prepare_module, schedule_module
    from edgekit.compiler.frontend import to_relax
    from edgekit.compiler.schedules.analysis import constant_params
    from edgekit.onnxkit.graph import load_onnx, resolve_input_specs
    from edgekit.targets import load_target

    model = load_onnx(path)
    mod = prepare_module(
        to_relax(model, resolve_input_specs(model, {})), load_target("x86_64"), BuildOptions(threads=2)
    )
    constants = {name: idx for name, idx in constant_params(mod).items() if "matmul" in name}
    assert sorted(map(sorted, constants.values())) == [[], [1]], constants  # the Gemm's weights, nothing of the MatMul
    scheduled, _, _ = schedule_module(
        to_relax(model, resolve_input_specs(model, {})), load_target("x86_64"), BuildOptions(threads=2)
    )
    matmuls = [gv.name_hint for gv in scheduled.functions if "matmul" in gv.name_hint]
    assert sum(name.endswith("_prepacked") for name in matmuls) == 1, matmuls


def test_global_average_pool_reduces_nhwc_without_transposing_the_map(tmp_path):
    """Conv -> Clip (ReLU6) -> GlobalAveragePool: the mean runs on the NHWC map (channels as lanes), the clip
    fuses into the conv, and only the pooled 1x1xC result is transposed (not the whole map)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((32, 8, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gap",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        inits,
    )
    path = tmp_path / "gap.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-5, result.validation.to_json()
    rules = result.meta["build"]["rule_per_function"]
    assert rules.get("mean") == "reduction-vec", rules
    assert any(name.startswith("fused_conv2d") and "clip" in name for name in rules), rules  # ReLU6 in the conv


@pytest.mark.parametrize("activation", ["HardSwish", "Clip"])
def test_clip_activations_stay_nhwc_between_convs(tmp_path, activation):
    """Conv -> HardSwish / ReLU6 -> Conv: the activation fuses into the first conv's epilogue in NHWC; no
    NCHW<->NHWC transpose pair around it (TVM has no layout rule for clip; edgekit registers one)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]
    act = (
        helper.make_node("HardSwish", ["a"], ["h"])
        if activation == "HardSwish"
        else helper.make_node("Clip", ["a", "lo", "hi"], ["h"])
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        act,
        helper.make_node("Conv", ["h", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "act",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    path = tmp_path / "act.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4, result.validation.to_json()
    names = list(result.meta["build"]["rule_per_function"])
    assert sum("transpose" in name for name in names) == 2, names  # the input's and the output's only
    assert any(name.startswith("fused_conv2d") and "clip" in name for name in names), names
