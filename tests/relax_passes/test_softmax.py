"""softmax_pass: softmax over the last axis -> one call of edgekit/kernels/softmax.py; other axes and a few rows
stay TVM's op (the kernel is tested in tests/test_softmax.py)."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax

from edgekit.compiler.relax_passes.softmax import softmax_pass

from .ir import build


@pytest.mark.parametrize(
    "shape,axis,kernel",
    [((1, 4, 65, 65), -1, "softmax_1_4_65_65"), ((1, 4, 65, 65), 2, None), ((1, 10), -1, None)],
    ids=["last-axis", "other-axis", "one-row"],
)
def test_last_axis_softmax_becomes_the_kernel(shape, axis, kernel):
    before = build(lambda bb, x: relax.op.nn.softmax(x, axis=axis), x=(shape, "float32"))
    after = softmax_pass(lanes=16)(before)
    if kernel is None:
        tvm.ir.assert_structural_equal(after, before)
    else:
        (binding,) = after["main"].body.blocks[0].bindings
        assert binding.value.op.name == "relax.call_tir" and binding.value.args[0].name_hint == kernel
