"""Fingerprint of what the compiler produces before code generation: for each model x target, the structural
hash of every scheduled PrimFunc and of the Relax main, plus the rule each fused function got.

    python bench/structure_fingerprint.py -o before.json      # on one commit
    python bench/structure_fingerprint.py -o after.json       # on another
    python bench/structure_fingerprint.py --compare before.json after.json

A refactor of the compiler that claims "behaviour unchanged" must leave these identical. Models: the zoo, the
detector stand-in, an int8 (QDQ) digits CNN and an XNOR digits CNN; targets x86_64, x86_64-avx512, aarch64-rpi4.
Scheduling only: nothing is compiled by LLVM, nothing runs, so any host can produce any target's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
MODELS = (
    "digits_cnn",
    "binary_digits",
    "resnet18",
    "mobilenetv2",
    "vit_tiny",
    "detector",
    "digits_int8",
    "digits_xnor",
)
TARGETS = ("x86_64", "x86_64-avx512", "aarch64-rpi4")


def _onnx_for(name: str, tmp: Path) -> Path:
    from edgekit.compress import CompressOptions, compress_file
    from edgekit.export import export_model

    path = tmp / f"{name}.onnx"
    if path.exists():  # --models-dir: the same ONNX files for both sides of a comparison
        return path
    if name == "detector":
        export_model(f"{HERE / 'models' / 'dbnet_like.py'}:make", path)
    elif name in ("digits_int8", "digits_xnor"):
        base = _onnx_for("digits_cnn", tmp)
        opts = (
            CompressOptions(bits=8, calib="digits")
            if name == "digits_int8"
            else CompressOptions(bits=1, binarize_mode="xnor")
        )
        compress_file(base, path, opts)
    else:
        export_model(name, path)
    return path


def fingerprint(onnx_path: Path, target: str) -> dict:
    import tvm_ffi

    mod, rules = _scheduled(onnx_path, target)
    funcs = {gv.name_hint: f"{tvm_ffi.structural_hash(f) & 0xFFFFFFFFFFFFFFFF:016x}" for gv, f in mod.functions.items()}
    return {"module": f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}", "functions": funcs, "rules": rules}


def _scheduled(onnx_path: Path, target: str):
    try:
        from edgekit.compiler.build import scheduled_module  # the compiler's entry point below relax.build
    except ImportError:  # commits before scheduled_module existed: the same steps through their APIs
        return _scheduled_legacy(onnx_path, target)
    return scheduled_module(onnx_path, target)


def _scheduled_legacy(onnx_path: Path, target: str):
    from edgekit.compiler.schedules.int8 import schedule_int8

    from edgekit.compiler.build import cpu_rewrites, has_binary_activations, lower_binary
    from edgekit.compiler.frontend import to_relax
    from edgekit.compiler.schedules import schedule_cpu
    from edgekit.onnxkit.graph import load_onnx, resolve_input_specs
    from edgekit.onnxkit.tools import simplify
    from edgekit.targets import load_target

    spec = load_target(target)
    model = load_onnx(onnx_path)
    specs = resolve_input_specs(model, {})
    simplified, _ = simplify(model, {s.name: list(s.shape) for s in specs})
    mod = to_relax(simplified, specs)
    if has_binary_activations(model):
        mod, _ = lower_binary(mod, spec)
    with cpu_rewrites(True, True):
        if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
            mod, rules, _ = schedule_int8(mod, spec.tvm_target(), 2)
        else:
            mod, rules = schedule_cpu(mod, spec.tvm_target(), threads_hint=2)
    return mod, rules


def compare(a_path: Path, b_path: Path) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    bad = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'after' if key not in a else 'before'}")
            bad += 1
        elif a[key]["module"] != b[key]["module"]:
            diff = sorted(
                k
                for k in set(a[key]["functions"]) | set(b[key]["functions"])
                if a[key]["functions"].get(k) != b[key]["functions"].get(k)
            )
            print(f"{key}: DIFFERENT ({len(diff)} functions: {', '.join(diff[:6])})")
            bad += 1
        else:
            print(f"{key}: identical ({len(a[key]['functions'])} functions)")
    print("all identical" if not bad else f"{bad} differ")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--models-dir", type=Path, help="keep the exported/compressed ONNX files here and reuse them")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir or Path(tmp)
        models_dir.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            path = _onnx_for(name, models_dir)
            for target in args.targets.split(","):
                result[f"{name}@{target}"] = fingerprint(path, target)
                print(f"{name}@{target}: {result[f'{name}@{target}']['module']}", file=sys.stderr)
    args.output.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
