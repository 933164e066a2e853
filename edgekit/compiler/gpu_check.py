"""Numerical check of GPU-scheduled kernels on a machine without a GPU.

A GPU schedule (thread bindings, shared-memory tiles, cross-thread reductions) is a TIR program; TVM can emit
the same scheduled TIR as OpenCL C. This module runs that OpenCL on whatever OpenCL implementation the host
has (Debian's PoCL runs it on the CPU, through pyopencl) and compares every output with the *unscheduled*
PrimFunc built for LLVM on the same random inputs. A wrong split, a missing barrier visible to the CPU
implementation, or a bad bound shows up as a mismatch.

What it proves: the schedule computes the right values when its threads run as OpenCL work-items.
What it does not: CUDA code generation itself (PTX, warp shuffles that LowerThreadAllreduce emits only for
CUDA, tensor-core intrinsics, vector loads: vectorized loops run scalar here) and races that PoCL's work-item
serialization hides; those need a real GPU.

Why hand-written: TVM 0.27's wheel has no OpenCL runtime (`tvm.opencl(0).exist` is False), so its host code
cannot launch the kernels; the launch extents are read here from the host function's call_ffi_kernel calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi

OPENCL = {"kind": "opencl", "host": {"kind": "llvm"}}


@dataclass(frozen=True)
class KernelCheck:
    """One PrimFunc's result: the OpenCL kernels it lowered to and its largest error relative to the output scale."""

    name: str
    kernels: int
    max_rel_error: float

    def to_json(self) -> dict:
        return {"name": self.name, "kernels": self.kernels, "max_rel_error": self.max_rel_error}


def opencl_context():
    """An OpenCL context, or None where pyopencl or an OpenCL platform (PoCL) is missing."""
    try:
        import pyopencl as cl

        return cl.create_some_context(interactive=False)
    except Exception:  # noqa: BLE001 - no platform / no ICD loader: the caller says what to install
        return None


def _lower_for_opencl(func: tvm.tirx.PrimFunc) -> tuple[tvm.IRModule, tvm.IRModule, str]:
    """(host module, device module, OpenCL source) of one scheduled PrimFunc, as tvm.tirx.build splits it."""
    from tvm.tirx.build import codegen_build, split_host_device_mods

    target = tvm.target.Target(OPENCL)
    mod = tvm.tirx.transform.BindTarget(target)(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
    pipeline, _finalize_host, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
    # vectorized loops run as scalar loops here: TVM's OpenCL C for a vector of booleans casts a comparison's
    # -1 (OpenCL's "true" lane) as if it were 1 and selects the wrong side; CUDA's codegen does not do that
    with tvm.transform.PassContext(config={"tirx.disable_vectorize": True}):
        host, devices = split_host_device_mods(pipeline(mod))
    if len(devices) != 1:
        raise ValueError("the scheduled function launches no GPU kernel (no loop is bound to a GPU thread)")
    ((device_target, device),) = devices.items()
    device = finalize_device()(device)
    return host, device, codegen_build(device, device_target).inspect_source()


def _kernel_launches(host: tvm.IRModule) -> list:
    """The host's kernel calls, in execution order: call_ffi_kernel(name, *kernel args, *launch extents)."""
    calls: list = []

    def visit(node) -> None:
        if getattr(node.op, "name", "") == "tirx.call_ffi_kernel":
            calls.append(node)

    for func in host.functions.values():
        tvm_ffi.structural_walk(func.body, (tvm.ir.Call, visit), order="pre")
    return calls


def _global_scratch(func: tvm.tirx.PrimFunc) -> list:
    """The global-memory buffers a scheduled PrimFunc allocates (the host allocates them between kernels)."""
    from tvm.s_tir import SBlock

    found: list = []
    tvm_ffi.structural_walk(
        func.body,
        (SBlock, lambda block: found.extend(b for b in block.alloc_buffers if b.scope() == "global")),
        order="pre",
    )
    return found


def _random_inputs(params, rng: np.random.Generator) -> list[np.ndarray]:
    """Random small integers, also for float tensors: conv / matmul sums of them are exact in fp32 in any
    order, so a schedule's different summation order cannot flip a sign activation (x >= 0) and the check
    compares exact values wherever the op is linear. Integer tensors get 0/1 (safe as gather indices)."""
    arrays = []
    for p in params:
        shape, dtype = [int(s) for s in p.shape], str(p.dtype)
        low = -3 if dtype.startswith("float") else 0
        arrays.append(rng.integers(low, 4 if low else 2, shape).astype(dtype))
    return arrays


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|, where NaN against NaN and inf against the same inf count as equal
    (log of a negative, x / 0: both sides compute them)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    finite = want[np.isfinite(want)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    return float(np.max(np.where(same, 0.0, np.abs(got - want)), initial=0.0)) / (scale or 1.0)


def check_kernel(
    name: str, scheduled: tvm.tirx.PrimFunc, reference: tvm.tirx.PrimFunc, context, seed: int = 0
) -> KernelCheck:
    """Run the scheduled PrimFunc as OpenCL and the unscheduled one on LLVM; the last parameter is the output
    (as Relax's call_tir writes PrimFuncs)."""
    import pyopencl as cl

    params = list(reference.params)
    # parameters of one name are one tensor passed twice (x * x): the kernel's buffers are matched by name
    first_of: dict[str, np.ndarray] = {}
    arrays = [
        first_of.setdefault(p.name, a) for p, a in zip(params, _random_inputs(params, np.random.default_rng(seed)))
    ]
    ref_mod = tvm.compile(tvm.IRModule({"main": reference.with_attr("global_symbol", "main")}), target="llvm")
    ref_args = [tvm.runtime.tensor(a) for a in arrays]
    ref_mod["main"](*ref_args)
    want = ref_args[-1].numpy()

    host, device, source = _lower_for_opencl(scheduled)
    program = cl.Program(context, source).build()
    queue = cl.CommandQueue(context)
    flags = cl.mem_flags
    buffers = {
        p.name: cl.Buffer(context, flags.READ_WRITE | flags.COPY_HOST_PTR, hostbuf=a) for p, a in zip(params, arrays)
    }
    for buffer in _global_scratch(scheduled):  # kernels of one PrimFunc that pass data through global memory
        size = int(np.prod([int(d) for d in buffer.shape])) * np.dtype(str(buffer.dtype)).itemsize
        buffers.setdefault(buffer.name, cl.Buffer(context, flags.READ_WRITE, size=max(size, 1)))
    launches = _kernel_launches(host)
    if not launches:
        raise ValueError(f"{name}: the scheduled function launches no GPU kernel")
    for call in launches:
        kernel_name = str(call.args[0].value)
        kernel_params = device[kernel_name].params
        args = []
        for arg, param in zip(call.args[1 : 1 + len(kernel_params)], kernel_params):
            if isinstance(param.ty, tvm.ir.PointerType):
                args.append(buffers[arg.args[0].name])  # buffer_data(Buffer): a parameter of the PrimFunc
            else:
                args.append(np.dtype(str(param.ty.dtype)).type(int(arg.value)))
        extents = [int(e.value) for e in call.args[1 + len(kernel_params) :]]
        grid, block = [1, 1, 1], [1, 1, 1]
        for tag, extent in zip(call.attrs.launch_params, extents):
            scope, axis = str(tag).split(".")
            (grid if scope == "blockIdx" else block)["xyz".index(axis)] = extent
        getattr(program, kernel_name)(queue, tuple(g * b for g, b in zip(grid, block)), tuple(block), *args)
    got = np.empty_like(want)
    cl.enqueue_copy(queue, got, buffers[params[-1].name])
    queue.finish()
    return KernelCheck(name, len(launches), relative_error(got, want))


def check_module(scheduled: tvm.IRModule, unscheduled: tvm.IRModule, context=None) -> list[KernelCheck]:
    """check_kernel for every PrimFunc of `scheduled` (the unscheduled twin is looked up by name)."""
    context = context or opencl_context()
    if context is None:
        raise RuntimeError("no OpenCL platform: install pyopencl and a CPU OpenCL (apt-get install pocl-opencl-icd)")
    originals = {gv.name_hint: f for gv, f in unscheduled.functions.items()}
    return [
        check_kernel(gv.name_hint, func, originals[gv.name_hint], context)
        for gv, func in scheduled.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc)
    ]


def check_model(
    onnx_path, target: str = "cuda", opts=None, context=None, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> list[KernelCheck]:
    """check_module over every PrimFunc of an ONNX model as compile schedules it for a GPU target: the PrimFuncs
    after the Relax passes (the reference) and the same after edgekit's GPU rules."""
    from edgekit.compiler.build import imported_module, prepare_module, schedule_prepared
    from edgekit.compiler.options import BuildOptions
    from edgekit.targets import load_target

    spec, opts = load_target(target), opts or BuildOptions()
    if not spec.is_gpu:
        raise ValueError(f"{spec.name} is not a GPU target")
    mod, int8, binary = imported_module(onnx_path, input_shapes)
    prepared = prepare_module(mod, spec, opts, int8=int8, binary=binary)
    unscheduled = tvm.IRModule({gv: f for gv, f in prepared.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})
    scheduled, _ = schedule_prepared(prepared, spec, opts, int8=int8)
    return check_module(scheduled, unscheduled, context)


CHECK_LIMIT = 1e-4  # of the output scale: what every GPU kernel of the zoo and corpus meets (tests/test_gpu_check.py)


def record_kernel_check(artifact, onnx_path, target: str, opts=None, input_shapes=None) -> dict:
    """`compile --check-kernels`: check_model for a GPU artifact's model, its summary added to meta.json."""
    import json
    from pathlib import Path

    from edgekit.core.errors import EdgekitError
    from edgekit.core.fileio import atomic_file
    from edgekit.targets import load_target

    if not load_target(target).is_gpu:
        raise EdgekitError(
            f"--check-kernels checks GPU schedules; {target} is a CPU target",
            "compile for a GPU target (edgekit targets)",
        )
    context = opencl_context()
    if context is None:
        raise EdgekitError(
            "--check-kernels runs the GPU kernels as OpenCL on this CPU and finds no OpenCL platform",
            "pip install pyopencl; apt-get install -y pocl-opencl-icd ocl-icd-libopencl1",
        )
    checks = check_model(onnx_path, target, opts, context, input_shapes)
    worst = max(checks, key=lambda c: c.max_rel_error)
    summary = {
        "how": "every GPU-scheduled kernel run as OpenCL (PoCL) vs the unscheduled kernel on LLVM",
        "kernels": len(checks),
        "max_rel_error": worst.max_rel_error,
        "worst": worst.name,
        "limit": CHECK_LIMIT,
        "ok": worst.max_rel_error <= CHECK_LIMIT,
    }
    meta_path = Path(artifact) / "meta.json"
    meta = json.loads(meta_path.read_text()) | {"kernel_check": summary}
    with atomic_file(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return summary
