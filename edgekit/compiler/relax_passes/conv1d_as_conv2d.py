"""Conv1d (audio front ends, STFT-as-conv, TCNs, CRNN heads) as a conv2d over a height-1 image."""

from __future__ import annotations

import tvm
from tvm import relax


@relax.expr_functor.mutator
class Conv1dAsConv2d(relax.PyExprMutator):
    """conv1d(x[N, C, W], w[O, C/g, K]) -> reshape to [N, C, 1, W] / [O, C/g, 1, K], conv2d with stride, padding
    and dilation (1, s), (0, l, 0, r), (1, d), reshape back. TVM has no conv1d schedule of its own here (a
    strided 128-tap STFT conv ran 1.1 ms for 2 M MACs); as a conv2d it gets the NHWC layout and the register-
    tiled conv rule of every other conv. The weight reshape folds to a constant."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv1d")):
            return call
        a, (x, w) = call.attrs, call.args
        if a.data_layout != "NCW" or a.kernel_layout != "OIW" or a.out_layout != "NCW":
            return call
        x_shape, w_shape = x.ty.shape, w.ty.shape
        if x_shape is None or w_shape is None:
            return call
        n, c, width = x_shape.values
        o, cg, k = w_shape.values
        left, right = (int(v) for v in a.padding)
        y = relax.op.nn.conv2d(
            relax.op.reshape(x, (n, c, 1, width)),
            relax.op.reshape(w, (o, cg, 1, k)),
            strides=(1, int(a.strides[0])),
            padding=(0, left, 0, right),
            dilation=(1, int(a.dilation[0])),
            groups=int(a.groups),
            out_dtype=a.out_dtype,
        )
        out_width = call.ty.shape.values[2]
        return relax.op.reshape(y, (n, o, out_width))
