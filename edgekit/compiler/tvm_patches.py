"""Every change edgekit makes to TVM's global state, in one place, each with the TVM 0.27 gap it works around.
`apply()` is idempotent and called by the compiler pipeline before any pass runs."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tvm
from tvm.s_tir import Schedule


def register_clip_layout() -> None:
    """Give relax.clip the layout rule of the unary elementwise ops (it is elementwise; its bounds are scalars).
    TVM 0.27 registers none, so ConvertLayout put every clip of an NHWC network back in NCHW between two full
    transposes: ReLU6 (edgekit used to cancel those pairs with a rewrite) and Hardswish x * clip(x + 3, 0, 6)
    / 6, whose transposes took ~1.8 ms of the 640x640 detector (now fused into the conv epilogues)."""
    clip = tvm.ir.Op.get("relax.clip")
    if clip.get_attr("FRelaxInferLayout") is None:
        clip.set_attr("FRelaxInferLayout", tvm.ir.Op.get("relax.nn.relu").get_attr("FRelaxInferLayout"))


def apply() -> None:
    register_clip_layout()


@contextlib.contextmanager
def schedules_without_parallel() -> Iterator[None]:
    """Run a TVM schedule rule with Schedule.parallel a no-op: dlight's CPU Reduction rule always parallelizes
    its rows and has no switch for it, but for small rows a thread-pool barrier costs more than the work.
    Scoped to the `with` block (the class attribute is restored on exit)."""
    parallel = Schedule.parallel
    Schedule.parallel = lambda self, loop: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Schedule.parallel = parallel  # type: ignore[method-assign]
