"""What every `edgekit` command shares: the consoles, the option types, JSON output, and the one error boundary.

Exit codes (README "Errors"): 0 ok, 1 validation failed, 2 user error (`error:` + `hint:`), 3 internal error
(a bug: the traceback is saved to a file whose path is printed), 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError, first_line
from edgekit.core.interrupts import Terminated

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output (only one edgekit wrote).")]
FreezeOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--freeze",
        help="NAME=VALUE: bind an input to a constant (a number, a comma "
        "list or an .npy), so that If and shape arithmetic on it fold (repeatable).",
    ),
]
ShapeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input-shape", help="Fix input shapes: 1,3,224,224 or NAME=1,3,224,224 (repeatable)."),
]
MaxElementsOpt = Annotated[
    int,
    typer.Option(
        "--max-elements",
        help="Refuse inputs with more elements than this (guards against shapes that would allocate hundreds of GiB).",
    ),
]
RpcOpt = Annotated[Optional[str], typer.Option("--rpc", help="Run on a board: TVM RPC server HOST:PORT.")]
TrackerOpt = Annotated[Optional[str], typer.Option("--tracker", help="TVM RPC tracker HOST:PORT (with --key).")]
KeyOpt = Annotated[Optional[str], typer.Option("--key", help="Device key registered with the tracker.")]

EXIT_USER, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM = 2, 3, 130, 143
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "not a directory",
}


@contextlib.contextmanager
def frozen_model(model_path: Path, freeze: list[str] | None) -> Iterator[Path]:
    """model_path itself, or (with --freeze) a temporary copy of the same name with those inputs bound: for the
    commands that read an .onnx but do not compile it themselves (tune)."""
    if not freeze:
        yield model_path
        return
    import onnx

    from edgekit.onnxkit.graph import load_onnx
    from edgekit.passes.freeze import freeze_inputs, parse_freeze

    model = load_onnx(model_path)
    with tempfile.TemporaryDirectory(prefix="edgekit-frozen-") as tmp:
        path = Path(tmp) / Path(model_path).name  # the same name: the tuning database is named after the model
        onnx.save(freeze_inputs(model, parse_freeze(freeze, model)), path)
        yield path


def one_line(text: str) -> str:
    """Names from a file (node, tensor, path) may hold newlines or control bytes: show them escaped, so an error
    stays one line that a script can parse."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def user_error(message: str, hint: str | None = None, code: int = EXIT_USER) -> None:
    message, hint = one_line(message), one_line(hint) if hint else hint
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    err.print(
        f"[dim]hint: {escape(hint or f'see `edgekit {command} --help` for the options and an example')}[/]",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code)


def _os_error(exc: OSError) -> None:
    what = _OS_ERRORS.get(exc.errno or -1, exc.strerror or type(exc).__name__)
    where = exc.filename or "?"
    user_error(f"{where}: {what}", "free space, fix permissions or choose another output path (-o)")


def _internal_error(exc: BaseException) -> None:
    """A bug, not a user mistake: one line naming the exception and a file with the whole traceback."""
    fd, path = tempfile.mkstemp(prefix=f"edgekit-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"edgekit {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(exc, file=fh)
    name = type(exc).__name__
    first = one_line(first_line(str(exc), 200, ""))
    err.print(f"[bold red]internal error:[/] {escape(name)}: {escape(first)}", highlight=False, soft_wrap=True)
    err.print(
        f"[dim]hint: this is a bug in edgekit; the traceback is in {path} (please attach it to a report)[/]",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_INTERNAL)


def handle_errors(fn):
    """The one error boundary of every command: user mistakes are one line + hint and exit 2; OSErrors name the
    path (exit 2); interrupts exit 130/143 after `finally` blocks removed partial outputs; anything else is a
    bug: exit 3 with the traceback saved to a file."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with interrupts.handled():
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the boundary: every exception is mapped to an exit code
                _report(exc)

    return wrapper


def _report(exc: BaseException) -> None:
    # a signal first: whatever TVM (or an error path after it) made of the interrupt, it is an interrupt
    interrupted = interrupts.pending_exit_code() or interrupt_behind(exc)
    if interrupted is not None:
        err.print("terminated" if interrupted == EXIT_SIGTERM else "interrupted")
        raise typer.Exit(interrupted) from None
    if isinstance(exc, EdgekitError):
        user_error(exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, OSError):
        _os_error(exc)
    if isinstance(exc, MemoryError):
        user_error("out of memory", "use smaller input shapes (--input-shape) or a machine with more memory")
    if not isinstance(exc, Exception):
        raise exc  # GeneratorExit and the like: not ours to map
    _internal_error(exc)


def interrupt_behind(exc: BaseException) -> int | None:
    """TVM turns a KeyboardInterrupt raised inside its callbacks into a RuntimeError: find it in the chain or
    the message (exit 130), so Ctrl-C is never reported as a build failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Terminated):
            return EXIT_SIGTERM
        if isinstance(seen, KeyboardInterrupt):
            return EXIT_SIGINT
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "KeyboardInterrupt" in text:
        return EXIT_SIGINT
    return EXIT_SIGTERM if "Terminated" in text else None


def parse_keep(text: str) -> tuple[str, ...]:
    """--keep first,last,GLOB (or 'none') -> the layer selectors kept at higher precision."""
    return tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def print_validation(report, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("output", "max abs", "max rel", "ok"):
        table.add_column(col)
    for o in report.outputs:
        table.add_row(o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", "[green]yes[/]" if o.ok else "[red]NO[/]")
    out.print(table)


def print_bench(report) -> None:
    from rich.table import Table

    table = Table(title="edgekit bench (p50/p90/p99 over all rounds; each runtime in its own process)")
    for col in (
        "model",
        "runtime",
        "target",
        "thr",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "vs ort",
        "RSS MB",
        "plan MB",
        "size MB",
    ):
        table.add_column(col, justify="right")
    ort_p50 = {r.model: r.p50_ms for r in report.runs if r.runtime == "ort"}
    for r in report.runs:
        ratio = r.p50_ms / ort_p50[r.model] if r.model in ort_p50 else None
        table.add_row(
            r.model,
            r.runtime,
            r.target,
            str(r.threads),
            f"{r.p50_ms:.3f}",
            f"{r.p90_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{ratio:.2f}×" if ratio else "-",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
            "-" if r.planned_mb is None else f"{r.planned_mb:.1f}",
            f"{r.size_bytes / 1e6:.2f}",
        )
    out.print(table)


def print_compress_result(output, result: dict) -> None:
    from rich.table import Table

    ratio = f", weights {result['weight_ratio']:.2f}× smaller" if result.get("weight_ratio") else ""
    out.print(
        f"wrote {output}: {result['mode']}; file {result['file_bytes_before'] / 1e6:.2f} → "
        f"{result['file_bytes_after'] / 1e6:.2f} MB ({result['file_ratio']:.2f}×){ratio}"
    )
    for p in result["passes"]:
        if p.get("opset"):
            out.print(f"[dim]converted: {p['opset']}[/]")
        table = Table(title=f"per layer: {p.get('mode', p['pass'])}")
        for col in ("layer", "op", "bits", "weight kB before", "after", "SQNR dB", "note"):
            table.add_column(col)
        for l in p["layers"]:
            sq = l["sqnr_db"]
            table.add_row(
                l["name"],
                l["op"],
                str(l["bits"] or "float"),
                f"{l['weight_bytes_before'] / 1e3:.1f}",
                f"{l['weight_bytes_after'] / 1e3:.1f}",
                "-" if sq is None else f"{sq:.1f}",
                l.get("note", ""),
            )
        out.print(table)
        if p.get("macs_before") and p.get("macs_after"):
            out.print(
                f"MACs {p['macs_before'] / 1e6:.1f} M → {p['macs_after'] / 1e6:.1f} M "
                f"({p['macs_before'] / p['macs_after']:.2f}× fewer)"
            )
        for reason in p.get("left_dense", []):
            out.print(f"[yellow]left dense[/]: {escape(reason)}")
        if "sparsity" in p:
            runs = (
                (
                    "edgekit compile runs the block-pruned 1x1 convs and MatMuls as block-sparse kernels; onnxruntime "
                    "densifies them"
                )
                if p.get("mode", "").startswith("1x")
                else (
                    "onnxruntime and TVM densify it at load: the file "
                    "shrinks, dense latency does not change; with --prune-block 8 TVM skips the pruned blocks"
                )
            )
            out.print(f"sparsity {p['sparsity']:.1%}, stored as {p['storage']} ({runs})")
        if "sweep" in p:
            sweep = p["sweep"]
            table = Table(title=f"one-shot sparsity sweep (knee on {sweep['knee_on']}: {sweep['knee']})")
            for col in ("sparsity", "rel. output error", "accuracy"):
                table.add_column(col, justify="right")
            for row in sweep["levels"]:
                acc = row.get("accuracy")
                table.add_row(
                    f"{row['sparsity']:.0%}", f"{row['rel_output_error']:.4f}", "-" if acc is None else f"{acc:.2%}"
                )
            out.print(table)
    if "accuracy" in result:
        a = result["accuracy"]
        out.print(
            f"digits accuracy ({a['samples']} test images): fp32 ORT {a['fp32_ort']:.2%} | "
            f"compressed ORT {a['compressed_ort']:.2%} | "
            f"compressed TVM {a['compressed_tvm']:.2%}  (drop {a['drop_pt']:.2f} pt)"
        )


def print_prune_finetune(output, result: dict, method: str) -> None:
    a = result["accuracy"]
    out.print(f"wrote {output}: {result['mode']} after {method} training; file {result['ratio']:.2f}× smaller")
    out.print(
        f"digits accuracy: torch fp32 {a['torch_fp32']:.2%} | training-free {a['training_free_onnxruntime']:.2%} | "
        f"finetuned, ONNX in onnxruntime {a['onnxruntime']:.2%} (drop {a['drop_pt']:.2f} pt)"
    )
    if "lottery" in result:
        t = result["lottery"]
        out.print(
            f"lottery ticket: dense from scratch {t['dense_accuracy']:.2%} | "
            f"ticket (rewound to epoch {t['rewind_epoch']}) "
            f"{t['ticket_accuracy']:.2%} | same mask, random re-init {t['random_reinit_accuracy']:.2%}"
        )


def print_package(output, result: dict) -> None:
    from rich.table import Table

    out.print(f"wrote {output} for {result['target']} ({result['arch']})")
    table = Table(title="bundle size")
    table.add_column("part")
    table.add_column("kB", justify="right")
    for part, size in result["sizes"]["parts"].items():
        table.add_row(part, f"{size / 1e3:.0f}")
    table.add_row(
        "[bold]runtime (all but model.so and samples)[/]", f"[bold]{result['sizes']['runtime_bytes'] / 1e3:.0f}[/]"
    )
    out.print(table)
    run_cmd = (
        "bin/edgekit_example ."
        if result["arch"] == "x86_64"
        else "qemu-aarch64 -L /usr/aarch64-linux-gnu bin/edgekit_example .  (on the board: bin/edgekit_example .)"
    )
    out.print(f"try it: cd {output} && {run_cmd}")
