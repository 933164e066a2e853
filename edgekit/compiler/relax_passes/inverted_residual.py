"""Relax rewrite: MobileNetV2-style inverted residual blocks -> one call of edgekit/kernels/mbconv.py.

Matches, on NHWC/HWIO convs with constant weights (after ConvertLayout):

    e = act(conv1x1(x) + be)        optional expansion (absent in MobileNetV2's first block)
    d = act(dwconv3x3/s(e) + bd)    depthwise, stride 1 or 2, padding 1
    y = conv1x1(d) + bp [+ x]       linear projection, optional residual

with act = Clip (ReLU6) or ReLU and every intermediate used once. Applied only where the expanded tensor is
big enough to leave the caches (MIN_EXPANDED_BYTES): there the three separate ops are memory-bound, while
for small late-stage maps the kernel's per-band recompute of 2 expanded rows would cost more than it saves.

With a sparse report (builds with sparse kernels on), a block-pruned expansion or projection is asked the
sparse layers' rule (relax_passes/sparse.choose) and, where it pays, runs block-sparse inside the fused kernel;
every pruned 1x1 conv of a fused block is reported there, marked "fused": "mbconv". This rewrite runs before
the sparse layers pass: a block whose 1x1 convs went sparse on their own would no longer match.
"""

import dataclasses
import math

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import prim_float, static_shape, use_counts
from edgekit.compiler.relax_passes import sparse as sparse_rule
from edgekit.kernels import mbconv

# The expanded tensor (H x W x CM fp32) at which fusion pays. MobileNetV2: 112x112x96 (4.8 MB) through
# 28x28x192 (600 KB) measured faster fused (333 vs 385 us, 102 vs 111 us per block on 2 Zen 4 cores); at
# 14x14 the band recompute would add 14 % to the expansion.
MIN_EXPANDED_BYTES = 512 << 10
# With its expansion block-sparse the recompute is a tenth as dear and fusion pays on MobileNetV2's 14x14 and 7x7
# blocks too (90 % 1x8 blocks pruned, 2 Zen 5 cores: 0.96 -> 0.77-0.81 ms with every block fused)
MIN_EXPANDED_BYTES_SPARSE = 64 << 10
OPAQUE = 8  # relax OpPatternKind: FuseOps fuses nothing into the kernel


def _call_of(expr: relax.Expr, var2val, name: str) -> relax.Call | None:
    value = var2val.get(expr) if isinstance(expr, relax.Var) else expr
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name:
        return value
    return None


def _conv(expr, var2val, kernel: int, depthwise: bool) -> relax.Call | None:
    """A float32 NHWC/HWIO conv2d with constant weights: 1x1 stride 1 unpadded, or 3x3 depthwise padding 1."""
    call = _call_of(expr, var2val, "relax.nn.conv2d")
    if call is None or not isinstance(call.args[1], tvm.ir.expr.Constant) or call.ty.dtype != "float32":
        return None
    a = call.attrs
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or any(
        int(d) != 1 for d in a.dilation
    ):
        return None
    w = static_shape(call.args[1])
    if w is None or w[:2] != (kernel, kernel) or static_shape(call.args[0]) is None:
        return None
    strides, padding = [int(s) for s in a.strides], [int(p) for p in a.padding]
    if depthwise:
        ok = w[2] == 1 and int(a.groups) == w[3] and strides[0] == strides[1] in (1, 2) and padding == [1] * 4
    else:
        ok = int(a.groups) == 1 and strides == [1, 1] and padding == [0] * 4
    return call if ok else None


def _plus_bias(expr, var2val, channels: int) -> tuple[relax.Expr, np.ndarray] | None:
    """expr = add(y, constant broadcast over the last axis): (y, bias[channels])."""
    call = _call_of(expr, var2val, "relax.add")
    if call is None:
        return None
    for y, b in (call.args, call.args[::-1]):
        shape = static_shape(b) if isinstance(b, tvm.ir.expr.Constant) else None
        if shape and shape[-1] == channels and math.prod(shape) == channels and b.ty.dtype == "float32":
            return y, b.value.numpy().reshape(channels)
    return None


def _activation(expr, var2val) -> tuple[relax.Expr, tuple[float, float]] | None:
    """clip(y, lo, hi) or relu(y): (y, (lo, hi))."""
    if (relu := _call_of(expr, var2val, "relax.nn.relu")) is not None:
        return relu.args[0], (0.0, math.inf)
    clip = _call_of(expr, var2val, "relax.clip")
    if clip is None:
        return None
    lo, hi = (prim_float(v) for v in clip.args[1:])
    return clip.args[0], (lo, hi)


class _Block:
    """One matched block: the kernel's spec, its input and HWIO weights / biases."""

    def __init__(self, x, spec, w_expand, b_expand, w_dw, b_dw, w_project, b_project) -> None:
        self.x, self.spec = x, spec
        self.weights = (w_expand, b_expand, w_dw, b_dw, w_project, b_project)


def match_block(projection_add: relax.Expr, var2val, uses, sparse: bool = False) -> _Block | None:
    """The block whose projection (+ bias) is `projection_add`, if every intermediate is used once. `sparse`:
    sparse kernels are on (a block whose expansion runs sparse fuses from MIN_EXPANDED_BYTES_SPARSE)."""

    def once(expr) -> bool:
        return isinstance(expr, relax.Var) and uses.get(expr, 0) == 1

    call = projection_add
    for arg in call.args:
        conv_p = _conv(arg, var2val, 1, depthwise=False)
        if conv_p is not None:
            break
    else:
        return None
    w_p = conv_p.args[1].value.numpy()
    cm, co = w_p.shape[2:]
    found = _plus_bias(call, var2val, co)
    if found is None or not once(found[0]) or not once(conv_p.args[0]):
        return None
    d = _activation(conv_p.args[0], var2val)
    bias_d = _plus_bias(d[0], var2val, cm) if d is not None and once(d[0]) else None
    conv_d = _conv(bias_d[0], var2val, 3, depthwise=True) if bias_d is not None and once(bias_d[0]) else None
    if conv_d is None:
        return None
    e_expr = conv_d.args[0]
    e = _activation(e_expr, var2val) if once(e_expr) else None
    bias_e = _plus_bias(e[0], var2val, cm) if e is not None and once(e[0]) else None
    conv_e = _conv(bias_e[0], var2val, 1, depthwise=False) if bias_e is not None and once(bias_e[0]) else None
    if conv_e is not None:
        x, w_e, b_e, clip_e = conv_e.args[0], conv_e.args[1].value.numpy(), bias_e[1], e[1]
    else:  # depthwise straight on the block input
        x, w_e, b_e, clip_e = e_expr, None, None, (0.0, 6.0)
    n, h, w, ci = static_shape(x)
    if w_e is None and ci != cm:
        return None
    spec = mbconv.MBConvSpec(
        n, h, w, ci, cm if w_e is not None else 0, co, int(conv_d.attrs.strides[0]), False, clip_e, d[1]
    )
    expansion_sparse = sparse and w_e is not None and sparse_rule.choose(w_e.reshape(ci, cm), n * h * w * ci * cm)[0]
    if h * w * cm * 4 < (MIN_EXPANDED_BYTES_SPARSE if expansion_sparse else MIN_EXPANDED_BYTES):
        return None
    return _Block(x, spec, w_e, b_e, conv_d.args[1].value.numpy(), bias_d[1], w_p, found[1])


@relax.expr_functor.mutator
class InvertedResidualFusion(relax.PyExprMutator):
    """add(conv1x1(act(dw(act(conv1x1(x))))), bias) [+ x] -> call_tir(mbconv kernel)."""

    def __init__(
        self, mod: tvm.IRModule, lanes: int, acc_regs: int, bands: int, sparse_report: list[dict] | None = None
    ) -> None:
        """lanes / acc_regs: the target's fp32 vector width and accumulator budget (schedules.tiles.simd);
        bands: row bands of the kernel, one per thread the build is planned for; sparse_report: where block-pruned
        1x1 convs may run sparse (None: always dense), and what was chosen for each."""
        super().__init__(mod)
        self._lanes, self._acc_regs, self._bands = lanes, acc_regs, bands
        self._sparse_report = sparse_report
        self._var2val: dict = {}
        self._uses: dict = {}
        self._residual_blocks: dict = {}  # residual add (the Call) -> its block, matched once per function
        self._fused_into_residual: set = set()  # projection adds those residual adds replace

    def visit_function_(self, func: relax.Function) -> relax.Expr:  # noqa: D102
        self._var2val = dict(relax.analysis.get_var2val(func))
        self._uses = use_counts(func)
        self._residual_blocks, self._fused_into_residual = {}, set()
        for value in self._var2val.values():
            found = self._match_residual(value)
            if found is not None:
                projection_add, block = found
                self._residual_blocks[value] = block
                self._fused_into_residual.add(projection_add)
        return super().visit_function_(func)

    def _match_residual(self, call) -> tuple[relax.Call, _Block] | None:
        """add(projection, x) where projection's block reads x: (the projection add, its block marked residual)."""
        if _call_of(call, {}, "relax.add") is None:
            return None
        for p, other in (call.args, call.args[::-1]):
            inner = _call_of(p, self._var2val, "relax.add")
            if inner is None or self._uses.get(p, 0) != 1:
                continue
            block = match_block(inner, self._var2val, self._uses, self._sparse_report is not None)
            s = block.spec if block is not None else None
            if block is not None and block.x.same_as(other) and s.stride == 1 and s.in_channels == s.out_channels:
                block.spec = dataclasses.replace(s, residual=True)
                return inner, block
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        if _call_of(call, {}, "relax.add") is None:
            return self.visit_expr_post_order(call)
        block = self._residual_blocks.get(call)  # Calls hash by identity: the bindings' own nodes
        if block is None and call not in self._fused_into_residual:
            block = match_block(call, self._var2val, self._uses, self._sparse_report is not None)
        if block is not None:
            return self._kernel_call(block)
        return self.visit_expr_post_order(call)

    def _sparse_entries(self, block: _Block) -> tuple[dict | None, dict | None]:
        """The report entries of the block's pruned expansion / projection (None: not pruned, or sparse off),
        each with the sparse layers' choice for it ("kernel": "sparse" or "dense")."""
        if self._sparse_report is None:
            return None, None
        spec, (w_e, _, _, _, w_p, _) = block.spec, block.weights
        pixels = (spec.batch * spec.height * spec.width, spec.batch * spec.out_h * spec.out_w)
        entries = []
        for w, rows in ((w_e, pixels[0]), (w_p, pixels[1])):
            entry = None if w is None else sparse_rule.pruned_entry("conv2d", w)
            if entry is not None:
                w2 = w.reshape(w.shape[-2:])
                entry |= sparse_rule.choose(w2, rows * w2.size)[1] | {"fused": "mbconv"}
            entries.append(entry)
        return entries[0], entries[1]

    def _kernel_call(self, block: _Block) -> relax.Call:
        spec = block.spec
        lanes, acc_regs = self._lanes, self._acc_regs
        w_e, b_e, w_d, b_d, w_p, b_p = block.weights
        entries = self._sparse_entries(block)
        sparse = tuple(e is not None and e["kernel"] == "sparse" for e in entries)
        pe, wd, pp = mbconv.pack_weights(spec, w_e, w_d, w_p, lanes, acc_regs, sparse=sparse)
        for entry, packed, w in zip(entries, (pe, pp), (w_e, w_p)):
            if entry is None:
                continue
            if packed.sparse:  # the kept blocks as packed, against the dense weight
                entry |= {"weight_bytes": sum(a.nbytes for a in packed.arrays()), "dense_weight_bytes": int(w.nbytes)}
            self._sparse_report.append(entry)
        # private (no global_symbol): TVMScript names every PrimFunc "mbconv", and relax.build needs unique symbols
        func = (
            mbconv.mbconv_func(spec, lanes, acc_regs, self._bands, kept=(pe.kept, pp.kept))
            .without_attr("global_symbol")
            .with_attr("op_pattern", OPAQUE)
        )
        b_e = np.zeros(spec.mid_channels, np.float32) if b_e is None else b_e
        gv = self.builder_.add_func(func, "fused_mbconv")
        args = [
            self.visit_expr(block.x),
            *(relax.const(np.ascontiguousarray(a)) for a in (*pe.arrays(), b_e, wd, b_d, *pp.arrays(), b_p)),
        ]
        out = relax.TensorType((spec.batch, spec.out_h, spec.out_w, spec.out_channels), "float32")
        return relax.call_tir(gv, args, out)
