"""Non-overlapping ConvTranspose (detector upsampling heads) as a 1x1 conv + depth-to-space."""

from __future__ import annotations

import tvm
from tvm import relax


@relax.expr_functor.mutator
class ConvTransposeAsConv(relax.PyExprMutator):
    """Non-overlapping conv2d_transpose (stride = kernel, no padding; detector upsampling heads) ->
    1x1 conv2d to Cout*k*k channels + depth-to-space. Each input pixel writes its own k x k output patch:

        y[n, co, h*k+i, w*k+j] = sum_ci x[n, ci, h, w] * W[ci, co, i, j]

    so the heavy part runs on the fast NHWC conv rule instead of a naive transposed-conv loop."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv2d_transpose")):
            return call
        a, (x, w) = call.attrs, call.args
        if (
            not isinstance(w, tvm.ir.expr.Constant)
            or a.data_layout != "NCHW"
            or a.kernel_layout != "IOHW"
            or int(a.groups) != 1
        ):
            return call
        weight = w.value.numpy()  # [Cin, Cout, kh, kw]
        cin, cout, kh, kw = weight.shape
        if (
            [int(v) for v in a.strides] != [kh, kw]
            or any(int(v) for v in a.padding)
            or any(int(v) for v in a.output_padding)
            or any(int(v) != 1 for v in a.dilation)
        ):
            return call
        n, _, h, wd = (int(d) for d in x.ty.shape)
        w1x1 = weight.transpose(1, 2, 3, 0).reshape(cout * kh * kw, cin, 1, 1)  # rows ordered (co, i, j)
        z = relax.op.nn.conv2d(x, relax.const(w1x1.astype(weight.dtype)))
        z = relax.op.reshape(z, (n, cout, kh, kw, h, wd))
        z = relax.op.permute_dims(z, [0, 1, 4, 2, 5, 3])  # (n, co, h, i, w, j)
        return relax.op.reshape(z, (n, cout, h * kh, wd * kw))
