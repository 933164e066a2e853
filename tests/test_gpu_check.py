"""The GPU kernel check (compiler/gpu_check.py): GPU-scheduled TIR run as OpenCL on PoCL vs the unscheduled
PrimFunc on LLVM. CI installs PoCL (.ci/run), so these run on every machine."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from edgekit.compiler.gpu_check import check_kernel, check_module, opencl_context


@pytest.fixture(scope="module")
def context():
    ctx = opencl_context()
    assert ctx is not None, "no OpenCL platform: apt-get install pocl-opencl-icd (see .ci/run)"
    return ctx


def _dlight(mod: tvm.IRModule) -> tvm.IRModule:
    import tvm.s_tir.dlight as dl

    with tvm.target.Target({"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm"}}):
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)


def test_dlight_kernels_match_llvm(context):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 12, 12), "float32"))
    rng = np.random.default_rng(0)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(rng.random((16, 16, 3, 3), "float32")), padding=1)))
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
