"""The structure the design promises: no import cycle in edgekit/ (imports inside functions count too), no
module over ~500 lines, the dispatcher picks up a new rule from its list, and the pass pipeline is one list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"
MAX_LINES = 500
# generated-kernel builders that do one thing (DESIGN.md: "except generated-kernel builders")
LONG_FILES_ALLOWED = {"kernels/binary.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_leaf_modules_stay_leaves():
    graph = import_graph()
    for leaf in (
        "edgekit.compiler.tuning.db",
        "edgekit.onnxkit.tools",
        "edgekit.core.errors",
        "edgekit.core.interrupts",
    ):
        assert graph[leaf] <= {"edgekit.core.errors", "edgekit.core.interrupts"}, (leaf, graph[leaf])
    assert graph["edgekit.core.interrupts"] == set()
    # the timing worker loads what it times (onnxruntime, the artifact runtime) and nothing of bench or the tuner
    assert graph["edgekit.measure"] <= {"edgekit.core.errors", "edgekit.onnxkit.tools", "edgekit.runtime"}, graph[
        "edgekit.measure"
    ]


def test_no_module_is_too_long():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(PACKAGE)) not in LONG_FILES_ALLOWED
    }
    assert not long, long


KERNEL_BUILDERS = {
    ("kernels/mbconv.py", "mbconv_func"),
    ("kernels/binary_flat.py", "conv_func"),
    ("kernels/mbconv.py", "mbconv"),  # the prim_func mbconv_func builds
}  # one generated kernel each


def _body_lines(node: ast.FunctionDef) -> int:
    """A function's length without its signature and docstring: ruff format puts a long typer signature one
    option per line, which says nothing about how much the function does."""
    body = node.body
    docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1
    return node.end_lineno - body[1 if docstring else 0].lineno + 1


def test_no_function_is_too_long():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _body_lines(node) > 80:
                if (str(path.relative_to(PACKAGE)), node.name) not in KERNEL_BUILDERS:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not long, long


def test_a_new_rule_is_picked_up_from_the_list(monkeypatch):
    """Adding a schedule rule = one class + one line in dispatch.CPU_RULES: a toy rule for the injective case wins
    over the built-in one once it is ahead of it in the list."""
    import tvm
    from tvm.script import tirx as T

    from edgekit.compiler.schedules import dispatch
    from edgekit.compiler.schedules.base import Rule, RuleContext
    from edgekit.compiler.schedules.tir import reduction_blocks

    class Toy(Rule):
        name = "toy"

        def applies(self, sch, ctx):
            return not reduction_blocks(sch)

        def apply(self, sch, ctx, knobs=None):
            (loop,) = sch.get_loops(sch.get_sblock("add"))
            sch.vectorize(loop)
            return self.name

    @T.prim_func(s_tir=True)
    def add_one(a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
        for i in range(16):
            with T.sblock("add"):
                vi = T.axis.spatial(16, i)
                b[vi] = a[vi] + T.float32(1)

    ctx = RuleContext.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}), threads=1)
    _, before = dispatch.schedule_prim_func(add_one, ctx)
    assert before.rule == "injective"
    monkeypatch.setattr(dispatch, "CPU_RULES", [Toy(), *dispatch.CPU_RULES])
    func, result = dispatch.schedule_prim_func(add_one, ctx, rules=dispatch.CPU_RULES)
    assert result.rule == "toy" and "T.vectorized" in func.script()


def test_a_failing_rule_is_reported_not_hidden():
    """A rule that raises is replaced by the fallback, and the RuleResult names the rule and the error."""
    import tvm
    from tvm.script import tirx as T

    from edgekit.compiler.schedules import dispatch
    from edgekit.compiler.schedules.base import Rule, RuleContext

    class Broken(Rule):
        name = "broken"

        def applies(self, sch, ctx):
            return True

        def apply(self, sch, ctx, knobs=None):
            raise ValueError("no such loop")

    @T.prim_func(s_tir=True)
    def copy(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("copy"):
                vi = T.axis.spatial(8, i)
                b[vi] = a[vi]

    ctx = RuleContext.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}), threads=1)
    _, result = dispatch.schedule_prim_func(copy, ctx, rules=[Broken()])
    assert result.rule == "fallback-parallel" and "Broken failed: no such loop" in result.fallback_reason


def test_pipeline_lists_every_rewrite_by_options():
    from edgekit.compiler.options import BuildOptions
    from edgekit.compiler.pipeline import cpu_fp32_passes
    from edgekit.targets import load_target

    caps = load_target("x86_64").caps()
    names = [p.info.name for p in cpu_fp32_passes(BuildOptions(), caps, 2)]
    for rewrite in (
        "ScalarMinMaxToClip",
        "ConvTransposeAsConv",
        "MeanBeforePermute",
        "FuseInvertedResiduals",
        "WinogradConv",
        "EdgekitFastMath",
    ):
        assert rewrite in names, names
    off = [p.info.name for p in cpu_fp32_passes(BuildOptions(winograd=False, fuse_blocks=False), caps, 2)]
    assert "WinogradConv" not in off and "FuseInvertedResiduals" not in off


def test_build_options_are_explicit():
    """No build switch in a context variable or os.environ anywhere in the compiler."""
    for path in (PACKAGE / "compiler").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # code only: docstrings may name them
            if isinstance(getattr(node, "body", None), list):
                node.body = [
                    n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                ] or [ast.Pass()]
        code = ast.unparse(tree)
        assert "import contextvars" not in code and "os.environ" not in code, path
    from edgekit.compiler.options import BuildOptions
    from edgekit.core.errors import EdgekitError

    with pytest.raises(EdgekitError):
        BuildOptions(schedules="fastest")


def test_runners_share_one_interface(digits_artifact):
    from edgekit.runners import Runner, open_runner
    from edgekit.runners.qemu import QemuRunner
    from edgekit.runners.rpc import RpcRunner

    assert isinstance(open_runner(digits_artifact), Runner)
    for cls in (QemuRunner, RpcRunner):
        assert callable(getattr(cls, "run", None)), cls


def test_every_pass_module_has_a_test_file_named_after_it():
    """tests/test_<module>.py for each passes/<module>.py; passes/__init__.py (edgekit.passes) is test_passes.py."""
    tests = PACKAGE.parent / "tests"
    missing = [
        p.name
        for p in (PACKAGE / "passes").glob("*.py")
        if not (tests / ("test_passes.py" if p.stem == "__init__" else f"test_{p.stem}.py")).exists()
    ]
    assert not missing, missing


def test_every_relax_rewrite_has_a_test_file_named_after_it():
    """tests/relax_passes/test_<module>.py (a before/expected IR test) for each compiler/relax_passes/<module>.py;
    their shared helpers (relax_passes/__init__.py) are test_init.py."""
    tests = PACKAGE.parent / "tests" / "relax_passes"
    missing = [
        p.name
        for p in (PACKAGE / "compiler" / "relax_passes").glob("*.py")
        if not (tests / ("test_init.py" if p.stem == "__init__" else f"test_{p.stem}.py")).exists()
    ]
    assert not missing, missing
