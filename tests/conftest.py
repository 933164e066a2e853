from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekit.cli import app

# One TVM target per x86 ISA edgekit has code paths for. Tests run each one the host CPU can execute and
# skip (with the missing features named) the others: never a hard-coded CPU model.
X86_TARGETS = {
    "avx512": {
        "kind": "llvm",
        "mtriple": "x86_64-linux-gnu",
        "mcpu": "x86-64-v4",
        "mattr": ["+avx512vnni", "+avx512vpopcntdq"],
    },
    "avx2": {
        "kind": "llvm",
        "mtriple": "x86_64-linux-gnu",
        "mcpu": "x86-64-v3",
    },  # AVX2 + FMA, no VNNI, no vector popcount
}


def host_lacks(target: dict) -> list[str]:
    """Features `target`'s code uses that this CPU does not have ([] = it can run it)."""
    import tvm

    from edgekit.targets import TargetCaps

    return TargetCaps.host().missing(TargetCaps.from_tvm(tvm.target.Target(target)))


def skip_unless_host_runs(target: dict) -> None:
    missing = host_lacks(target)
    if missing:
        pytest.skip(f"host CPU lacks {', '.join(missing)}")


def best_host_x86() -> dict:
    """The widest x86 ISA target this host executes (AVX-512 where present, else AVX2)."""
    return next(t for t in X86_TARGETS.values() if not host_lacks(t))


class Cli:
    """Run `edgekit ...` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory) -> Path:
    from edgekit.export import export_model

    path = tmp_path_factory.mktemp("digits") / "digits_cnn.onnx"
    export_model("digits_cnn", path)
    return path


@pytest.fixture(scope="session")
def digits_artifact(digits_onnx, tmp_path_factory) -> Path:
    from edgekit.compiler.build import compile_onnx

    out = tmp_path_factory.mktemp("digits_art") / "art"
    result = compile_onnx(digits_onnx, out, "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok
    return out


@pytest.fixture(scope="session")
def resnet18_rpi4(tmp_path_factory) -> Path:
    """ResNet-18 compiled for the Raspberry Pi 4 and validated under qemu (shared by the ARM and package tests)."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.export import export_model

    tmp = tmp_path_factory.mktemp("resnet18_rpi4")
    export_model("resnet18", tmp / "resnet18.onnx")
    compile_onnx(tmp / "resnet18.onnx", tmp / "art", "rpi4", quiet=True)
    return tmp / "art"


def third_party_cnn(batch: int | str = "N", size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """A CNN written directly in ONNX (not by torch): Conv/Relu/MaxPool/Conv(groups)/Add/GAP/Flatten/Gemm/Softmax."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("w1", (16, 3, 3, 3)),
        init("b1", (16,)),
        init("w2", (16, 4, 3, 3)),
        init("b2", (16,)),  # grouped conv, 4 groups
        init("w3", (16, 1, 3, 3)),
        init("b3", (16,)),  # depthwise
        init("wf", (10, 16)),
        init("bf", (10,)),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2_grouped", pads=[1, 1, 1, 1], group=4),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], name="conv3_dw", pads=[1, 1, 1, 1], group=16),
        helper.make_node("Add", ["c3", "p1"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["fc"], name="fc", transB=1),
        helper.make_node("Softmax", ["fc"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "third_party_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hand-written")
    onnx.checker.check_model(model, full_check=True)
    return model
