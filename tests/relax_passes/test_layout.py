"""nhwc_layout: TVM's ConvertLayout to NHWC / HWIO convs; where it raises, the per-conv fallback (logged)."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from edgekit.compiler.relax_passes.layout import FALLBACK, nhwc_layout

X, W3, W1 = R.Tensor((1, 4, 8, 8), "float32"), R.Tensor((8, 4, 3, 3), "float32"), R.Tensor((8, 8, 1, 1), "float32")
Y = R.Tensor((1, 8, 8, 8), "float32")


@I.ir_module
class ConvReluConv:
    @R.function
    def main(x: X, w: W3, w2: W1) -> Y:
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=1)
            r = R.nn.relu(y)
            z = R.nn.conv2d(r, w2)
            R.output(z)
        return z


def test_convert_layout_carries_nhwc_through_the_graph() -> None:
    # ConvertLayout is TVM's pass, but on three ops its result is small and stable enough to spell out
    @I.ir_module
    class Expected:
        @R.function
        def main(x: X, w: W3, w2: W1) -> Y:
            with R.dataflow():
                xt = R.permute_dims(x, [0, 2, 3, 1])
                wt = R.permute_dims(w, [2, 3, 1, 0])
                y = R.nn.conv2d(xt, wt, padding=1, data_layout="NHWC", kernel_layout="HWIO")
                r = R.nn.relu(y)  # stays NHWC: no transposes between the convs
                w2t = R.permute_dims(w2, [2, 3, 1, 0])
                zt = R.nn.conv2d(r, w2t, data_layout="NHWC", kernel_layout="HWIO")
                z = R.permute_dims(zt, [0, 3, 1, 2])
                R.output(z)
            return z

    tvm.ir.assert_structural_equal(nhwc_layout(None)(ConvReluConv), Expected)


@pytest.fixture
def broken_convert_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """ConvertLayout raising as it did on the importer's 5-D stack of Max/Min."""

    def broken(_layouts: dict) -> tvm.transform.Pass:
        raise RuntimeError("Invalid SLayout: can't find S in source layout ABCDE")

    monkeypatch.setattr(relax.transform, "ConvertLayout", broken)


@pytest.mark.usefixtures("broken_convert_layout")
def test_fallback_transposes_each_conv_and_cancels_back_to_back_pairs() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: X, w: W3, w2: W1) -> Y:
            with R.dataflow():
                y = R.nn.conv2d(x, w, padding=1)
                z = R.nn.conv2d(y, w2)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: X, w: W3, w2: W1) -> Y:
            with R.dataflow():
                xt = R.permute_dims(x, [0, 2, 3, 1])
                wt = R.permute_dims(w, [2, 3, 1, 0])
                yt = R.nn.conv2d(xt, wt, padding=1, data_layout="NHWC", kernel_layout="HWIO")
                y = R.permute_dims(yt, [0, 3, 1, 2])  # noqa: F841 - dead: the next conv reads yt
                w2t = R.permute_dims(w2, [2, 3, 1, 0])
                zt = R.nn.conv2d(yt, w2t, data_layout="NHWC", kernel_layout="HWIO")
                z = R.permute_dims(zt, [0, 3, 1, 2])
                R.output(z)
            return z

    log: list[dict] = []
    tvm.ir.assert_structural_equal(nhwc_layout(log)(Before), Expected)
    assert log == [
        {
            "pass": "ConvertLayout",
            "skipped": "Invalid SLayout: can't find S in source layout ABCDE",
            "fallback": FALLBACK,
        }
    ]


@pytest.mark.usefixtures("broken_convert_layout")
def test_fallback_raises_without_a_log() -> None:
    with pytest.raises(RuntimeError, match="Invalid SLayout"):
        nhwc_layout(None)(ConvReluConv)
