"""Every change edgekit makes to TVM's global state, in one place, each with the TVM 0.27 gap it works around.
`apply()` is idempotent and called by the compiler pipeline before any pass runs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import tvm
from tvm import relax
from tvm.s_tir import Schedule


def register_clip_layout() -> None:
    """Give relax.clip the layout rule of the unary elementwise ops (it is elementwise; its bounds are scalars).
    TVM 0.27 registers none, so ConvertLayout put every clip of an NHWC network back in NCHW between two full
    transposes: ReLU6 (edgekit used to cancel those pairs with a rewrite) and Hardswish x * clip(x + 3, 0, 6)
    / 6, whose transposes took ~1.8 ms of the 640x640 detector (now fused into the conv epilogues)."""
    clip = tvm.ir.Op.get("relax.clip")
    if clip.get_attr("FRelaxInferLayout") is None:
        clip.set_attr("FRelaxInferLayout", tvm.ir.Op.get("relax.nn.relu").get_attr("FRelaxInferLayout"))


def vectorizable_nearbyint() -> None:
    """Mark tirx.nearbyint (the round-half-even of every QuantizeLinear) vectorizable, as tirx.round is.
    TVM 0.27 leaves the attribute off, so VectorizeLoop scalarized each int8 requantize epilogue and LLVM
    re-vectorized it across output rows instead of channels: a transpose and one byte store per value
    (the AVX2 7x7 stem of ResNet-18 spent ~1/4 of its time there). LLVM lowers the vector form to vroundps."""
    op = tvm.ir.Op.get("tirx.nearbyint")
    if op.get_attr("TVectorizable") is None:
        op.set_attr("TVectorizable", True)


def import_variadic_elementwise_pairwise() -> None:
    """Import ONNX Max / Min / Sum / Mean as a chain of broadcasting binary ops (maximum, minimum, add).
    TVM 0.27's importer emits broadcast_to + stack(axis=0) + max(axis=0) instead: a 5-D stack that ConvertLayout
    cannot carry NHWC through ("Invalid SLayout: can't find S in source layout ABCDE"), so any TF-converted
    model with a ReLU floor Max(x, -0.4) failed to build; the binary ops have layout rules and fuse. All-constant
    inputs still fold through the original converter."""
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    for cls in (frontend.Max, frontend.Min, frontend.Sum, frontend.Mean):
        if getattr(cls, "_edgekit_pairwise", False):
            continue
        original = cls._impl_v1.__func__

        def pairwise(klass, bb, inputs, attr, params, _original=original):
            if all(isinstance(i, tvm.ir.GenericConst) for i in inputs):
                return _original(klass, bb, inputs, attr, params)
            binary = relax.op.add if klass is frontend.Mean else klass.binary_op
            folded = functools.reduce(lambda a, b: bb.normalize(binary(a, b)), inputs)
            if klass is frontend.Mean and len(inputs) > 1:
                folded = relax.op.divide(folded, relax.const(len(inputs), folded.ty.dtype))
            return folded

        # every _impl_vN the converter may dispatch to (get_converter picks the highest N <= the model's opset)
        for name in [n for n in dir(cls) if n.startswith("_impl_v") and n[7:].isdigit()]:
            setattr(cls, name, classmethod(pairwise))
        cls._edgekit_pairwise = True


def import_edgekit_converters() -> None:
    """Teach TVM 0.27's ONNX importer edgekit's ai.edgekit::RecurrentSequence (what compiler/recurrent.py lowers
    LSTM / GRU / RNN to) and MaxPoolWithIndices (compiler/pool_indices.py), and replace its Upsample, Resize and opset
    1-9 Slice converters (compiler/legacy_ops.py says why): the importer looks converters up by op type in
    _get_convert_map(), rebuilt per call."""
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    from edgekit.compiler.legacy_ops import ResizeConverter, SliceConverter, UpsampleConverter
    from edgekit.compiler.pool_indices import POOL_INDICES_OP, MaxPoolIndicesConverter
    from edgekit.compiler.recurrent import SEQUENCE_OP, RecurrentSequenceConverter

    if getattr(frontend._get_convert_map, "_edgekit", False):
        return
    original = frontend._get_convert_map

    def convert_map() -> dict:
        return {
            **original(),
            SEQUENCE_OP: RecurrentSequenceConverter,
            POOL_INDICES_OP: MaxPoolIndicesConverter,
            "Upsample": UpsampleConverter,
            "Resize": ResizeConverter,
            "Slice": SliceConverter,
        }

    convert_map._edgekit = True
    frontend._get_convert_map = convert_map


def apply() -> None:
    register_clip_layout()
    vectorizable_nearbyint()
    import_variadic_elementwise_pairwise()
    import_edgekit_converters()


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
