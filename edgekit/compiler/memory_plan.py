"""What TVM's static memory plan gives an artifact: activation memory planned vs the naive sum of every
intermediate tensor, and the weight (constant) bytes. Read from the Relax module after the default build
pipeline (StaticPlanBlockMemory, then LowerAllocTensor and LowerRuntimeBuiltin): every `R.vm.alloc_storage` is
one planned buffer that several tensors share in turn; every `R.vm.alloc_tensor` is one tensor placed in one.

References:
    Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net Inference", 2020 (shared buffers vs the
    naive one-buffer-per-tensor sum).
"""

from __future__ import annotations

import numpy as np


def _bytes(shape, dtype) -> int | None:
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):  # a symbolic dimension: not statically planned
        return None
    return int(np.prod(dims, dtype=np.int64)) * max(1, int(dtype.bits) * int(dtype.lanes) // 8)


def analyze(mod) -> dict:
    """{"planned_activation_bytes", "naive_activation_bytes", "weight_bytes", "buffers", "tensors"} of `main`."""
    import tvm
    from tvm import relax

    stats = {
        "planned_activation_bytes": 0,
        "naive_activation_bytes": 0,
        "weight_bytes": 0,
        "buffers": 0,
        "tensors": 0,
        "dynamic": 0,
    }
    seen_constants: set = set()  # TVM objects hash and compare by identity

    @relax.expr_functor.visitor
    class _Visitor(relax.PyExprVisitor):
        def visit_call_(self, call) -> None:
            op = call.op
            if isinstance(op, tvm.ir.Op) and op.name == "relax.vm.alloc_storage":
                size = _bytes(call.args[0].values, tvm.DataType("uint8"))
                stats["buffers"] += 1
                stats["planned_activation_bytes" if size is not None else "dynamic"] += size or 1
            elif isinstance(op, tvm.ir.Op) and op.name == "relax.vm.alloc_tensor":
                shape, dtype = call.args[2], call.args[3]
                size = _bytes(shape.values, tvm.DataType(str(dtype.value))) if hasattr(shape, "values") else None
                stats["tensors"] += 1
                stats["naive_activation_bytes"] += size or 0
            for arg in call.args:  # the weights: constants passed to the kernels
                value = getattr(arg, "value", None) if isinstance(arg, tvm.ir.expr.GenericConst) else None
                if (
                    hasattr(value, "shape") and hasattr(value, "dtype") and arg not in seen_constants
                ):  # a tensor, not a dtype/int
                    seen_constants.add(arg)
                    stats["weight_bytes"] += _bytes(value.shape, tvm.DataType(str(value.dtype))) or 0
            super().visit_call_(call)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Visitor().visit_expr(func)
    return stats


def recording_pipeline(plan: dict):
    """TVM's default Relax build pipeline followed by a pass that stores analyze(mod) into `plan`."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="EdgekitRecordMemoryPlan")
    def record(mod, _ctx):
        try:
            plan.update(analyze(mod))
        except Exception as exc:  # noqa: BLE001 - a report, never a reason to fail the build
            import edgekit.core.interrupts as interrupts

            interrupts.check()
            plan["unavailable"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        return mod

    return tvm.transform.Sequential([relax.get_pipeline("default"), record])
