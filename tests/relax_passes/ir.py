"""Small builders shared by the Relax rewrite tests: a one-function module from a body, typed constants."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tvm
from tvm import relax

Body = Callable[..., relax.Expr]  # body(bb, *params) -> the function's result (emitted as its output)


def build(body: Body, **params: tuple[Sequence[int], str]) -> tvm.IRModule:
    """IRModule with main(**params) = body(bb, *param_vars) in one dataflow block. Intermediate values the body
    bb.emit()s become bindings, as the importer's and the rewrites' do; Before and Expected built with the same
    helper differ only where the rewrite changed something."""
    bb = relax.BlockBuilder()
    args = [relax.Var(name, relax.TensorType(shape, dtype)) for name, (shape, dtype) in params.items()]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *args))
        bb.emit_func_output(out)
    return bb.get()


def const(value, dtype: str) -> relax.Constant:
    """A Relax constant of exactly `dtype` (relax.const infers int64 / float64 from Python lists)."""
    return relax.const(np.asarray(value, dtype), dtype)


def calls(mod: tvm.IRModule) -> list[str]:
    """The ops and kernels (call_tir callees by name) main's dataflow block calls, in order."""
    names = []
    for binding in mod["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Call):
            names.append(value.args[0].name_hint if value.op.name == "relax.call_tir" else value.op.name)
    return names
