"""The GPU kernel check (compiler/gpu_check.py): GPU-scheduled TIR run as OpenCL on PoCL vs the unscheduled
PrimFunc on LLVM. CI installs PoCL (.ci/run), so these run on every machine."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from edgekit.compiler.gpu_check import check_kernel, check_module, opencl_context

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


@pytest.fixture(scope="module")
def context():
    ctx = opencl_context()
    assert ctx is not None, "no OpenCL platform: apt-get install pocl-opencl-icd (see .ci/run)"
    return ctx


def _dlight(mod: tvm.IRModule) -> tvm.IRModule:
    import tvm.s_tir.dlight as dl

    with tvm.target.Target({"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm"}}):
        return dl.ApplyDefaultSchedule(
            dl.gpu.Matmul(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
        )(mod)


def test_dlight_kernels_match_llvm(context):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 12, 12), "float32"))
    rng = np.random.default_rng(0)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(rng.random((16, 16, 3, 3), "float32")), padding=1))
            )
            y = bb.emit(relax.op.nn.softmax(y, axis=1))
            out = bb.emit_output(relax.op.mean(y, axis=[2, 3]))
        bb.emit_func_output(out)
    mod = relax.get_pipeline("zero")(bb.get())
    unscheduled = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})
    checks = check_module(_dlight(mod), unscheduled, context)
    assert {c.name for c in checks} == {gv.name_hint for gv in unscheduled.functions}
    assert all(c.kernels >= 1 and c.max_rel_error < 1e-5 for c in checks), checks


@T.prim_func(check_well_formed=False)  # s_tir blocks: TVMScript's TIR verifier refuses them
def _double(A: T.Buffer((64,), "float32"), B: T.Buffer((64,), "float32")):
    for i in range(64):
        with T.sblock("B"):
            v = T.axis.spatial(64, i)
            B[v] = A[v] * T.float32(2)


@T.prim_func(check_well_formed=False)  # s_tir blocks: TVMScript's TIR verifier refuses them
def _double_half_threads(A: T.Buffer((64,), "float32"), B: T.Buffer((64,), "float32")):
    # a wrong schedule: 32 threads for 64 elements, the upper half never written
    for i in T.thread_binding(32, thread="threadIdx.x"):
        with T.sblock("B"):
            v = T.axis.spatial(64, i)
            B[v] = A[v] * T.float32(2)


def test_a_wrong_schedule_is_caught(context):
    assert check_kernel("double", _double_half_threads, _double, context).max_rel_error > 0.1


def test_an_unbound_kernel_is_refused(context):
    with pytest.raises(ValueError, match="launches no GPU kernel|thread"):
        check_kernel("double", _double, _double, context)


# --- every GPU kernel of the zoo and of the third-party corpus, as compile schedules them ------------------


@pytest.fixture(scope="module")
def zoo_model(tmp_path_factory):
    from pathlib import Path

    from edgekit.compress import CompressOptions, compress_file
    from edgekit.export import export_model

    root = tmp_path_factory.mktemp("gpu_check_zoo")

    def get(name: str) -> Path:
        path = root / f"{name}.onnx"
        if path.exists():
            return path
        if name == "detector":  # DBNet-like: hardswish, depthwise, upsampling (bench/models/dbnet_like.py)
            export_model(f"{Path(__file__).parent.parent / 'bench' / 'models' / 'dbnet_like.py'}:make", path)
        elif name in ("digits_int8", "digits_xnor"):
            opts = (
                CompressOptions(bits=8, calib="digits")
                if name == "digits_int8"
                else CompressOptions(bits=1, binarize_mode="xnor")
            )
            compress_file(get("digits_cnn"), path, opts)
        else:
            export_model(name, path)
        return path

    return get


def _assert_all_match(checks, limit: float = 1e-4) -> None:
    assert checks and all(c.kernels >= 1 for c in checks), checks
    worst = max(checks, key=lambda c: c.max_rel_error)
    assert worst.max_rel_error <= limit, worst


@pytest.mark.parametrize(
    "name",
    ["digits_cnn", "binary_digits", "digits_int8", "digits_xnor", "resnet18", "mobilenetv2", "vit_tiny", "detector"],
)
def test_every_gpu_kernel_of_the_zoo_matches_llvm(name, zoo_model, context):
    from edgekit.compiler.gpu_check import check_model

    _assert_all_match(check_model(zoo_model(name), "cuda", context=context))


@pytest.mark.parametrize(
    "name", ["tf_classifier", "yolo_like", "ocr_detector", "crnn", "audio_cnn", "token_model", "gru_kws"]
)
def test_every_gpu_kernel_of_the_corpus_matches_llvm(name, tmp_path, context):
    import onnx
    from realworld import build

    from edgekit.compiler.gpu_check import check_model
    from edgekit.onnxkit.graph import fixed_shapes

    model = build(name)
    onnx.save(model, tmp_path / "m.onnx")
    _assert_all_match(check_model(tmp_path / "m.onnx", "cuda", context=context, input_shapes=fixed_shapes(model)))


@pytest.mark.parametrize(
    "kind,steps,batch,hidden,reverse,lbr",
    [
        ("LSTM", 5, 2, 16, (False, True), False),
        ("GRU", 4, 1, 12, (True,), False),
        ("GRU", 4, 2, 8, (False, True), True),
        ("RNN", 6, 1, 10, (False,), False),
        ("LSTM", 3, 1, 300, (False,), False),
    ],
)
def test_the_gpu_recurrence_kernels_match_the_cpu_ones(kind, steps, batch, hidden, reverse, lbr, context):
    from edgekit.kernels.recurrent import RecurrentSpec, sequence_func
    from edgekit.kernels.recurrent_gpu import gpu_sequence_func

    spec = RecurrentSpec(kind, steps, batch, hidden, reverse, lbr)
    check = check_kernel(f"recurrent_{kind}", gpu_sequence_func(spec), sequence_func(spec), context)
    assert check.kernels == 1 and check.max_rel_error < 1e-5, check


def test_same_named_params_are_one_tensor(context):
    """x * x: Relax passes one tensor twice; the check must feed both parameters the same values."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.multiply(x, x))
        bb.emit_func_output(out)
    mod = relax.get_pipeline("zero")(bb.get())
    unscheduled = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})
    assert max(c.max_rel_error for c in check_module(_dlight(mod), unscheduled, context)) == 0.0
