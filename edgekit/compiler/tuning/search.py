"""`edgekit tune`: a fast search over the knobs of edgekit's own CPU schedule rules, per fused PrimFunc.

Not MetaSchedule (35-60 s per task per iteration here): each task is one fused conv / depthwise / dense
PrimFunc of the model, scheduled by edgekit.compiler.schedules.cpu with a handful of knob settings
(register tile rows and lanes, reduction unroll, parallel loop, loop order). Every candidate is built on
its own, checked against the default schedule's output, and timed with TVM's time_evaluator in interleaved
rounds (default and candidates alternate, medians), so machine load hits all of them alike. A setting is
kept only when it beats the default by `min_gain` in the timing rounds *and* in a confirmation run; the
whole tuned model is then benchmarked against the default build side by side (each in its own process)
and tuned entries are dropped if the model did not get faster: a tuned model is never slower than the
default schedules (within measurement noise).

The database format is in tuning/db.py.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

import edgekit.core.interrupts as interrupts
from edgekit.compiler.tuning.db import (
    FORMAT,
    VERSION,
    database_path,
    read_db,
    target_string,
    write_db,
)
from edgekit.compiler.tuning.device import RemoteDevice, build_one
from edgekit.compiler.tuning.end_to_end import verify_end_to_end
from edgekit.core.errors import EdgekitError

MIN_GAIN = 0.03  # a tuned setting must beat the default by 3% (per task and end to end)


# ----------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------


def extract_tasks(onnx_path: Path, spec, input_shapes=None):
    """(prepared Relax module, [task dicts]) for the tunable fused PrimFuncs of the model, biggest first."""
    import tvm

    from edgekit.compiler.build import prepare_module
    from edgekit.compiler.frontend import to_relax
    from edgekit.compiler.options import BuildOptions
    from edgekit.compiler.schedules.analysis import call_counts, task_key
    from edgekit.onnxkit.graph import load_onnx, resolve_input_specs
    from edgekit.onnxkit.tools import simplify

    model = load_onnx(onnx_path)
    in_specs = resolve_input_specs(model, input_shapes or {})
    simplified, _ = simplify(model, {s.name: list(s.shape) for s in in_specs})
    mod = to_relax(simplified, in_specs)
    target = spec.tvm_target()
    mod = prepare_module(mod, spec, BuildOptions(threads=1))
    calls = call_counts(mod)
    tasks: dict[str, dict] = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            key = task_key(func, target)
            n = max(1, calls.get(gv.name_hint, 1))
            if key in tasks:
                tasks[key]["count"] += n
            else:
                tasks[key] = {"key": key, "name": gv.name_hint, "func": func, "count": n}
    return mod, list(tasks.values())


def _candidates(default: dict, space: dict[str, list], n: int, seed: str) -> list[dict]:
    """Up to n knob settings other than the default: every single-knob change first (nearest the heuristic),
    then random combinations. Deterministic per task."""
    rng = random.Random(seed)
    single = [dict(default, **{k: v}) for k, vals in space.items() for v in vals if v != default[k]]
    rng.shuffle(single)
    out: list[dict] = []
    seen = {json.dumps(default, sort_keys=True)}
    for c in single:
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    # random combinations fill in beyond the first n//2 single changes
    out = out[: max(n // 2, n - 64)] if len(out) > n else out
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        c = {k: rng.choice(vals) for k, vals in space.items()}
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out[:n]


def _random_args(func) -> list:
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    args = []
    for info in ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        args.append(
            tvm.runtime.tensor(
                rng.standard_normal(shape).astype(info.dtype) if "float" in info.dtype else np.zeros(shape, info.dtype)
            )
        )
    return args


COLD_BYTES = 64 << 20  # argument sets rotated through while timing here: twice this machine's 32 MB L3


class _Timer:
    """Interleaved timing of several compiled PrimFuncs on the same arguments (here, or on a board).

    Here, calls rotate through copies of the arguments totalling COLD_BYTES, so each call finds its
    weights and inputs out of cache, as every layer does in a whole-model run. Timed hot, a conv with
    2.4 MB of weights preferred a loop order that re-streams them per output row: 4 % faster alone,
    slower inside ResNet-18. (Over RPC the board's time_evaluator times one argument set.)"""

    def __init__(self, func, target_seconds: float = 2e-3, device: RemoteDevice | None = None) -> None:
        import tvm

        self._tvm = tvm
        self.dev = device.dev if device else tvm.cpu()
        self.args = (
            [tvm.runtime.tensor(a.numpy(), self.dev) for a in _random_args(func)] if device else _random_args(func)
        )
        self.sets = [self.args]
        if device is None:
            nbytes = sum(a.numpy().nbytes for a in self.args)
            copies = min(16, max(1, -(-COLD_BYTES // max(nbytes, 1))))
            self.sets += [[tvm.runtime.tensor(a.numpy()) for a in self.args] for _ in range(copies - 1)]
        self._next = 0
        self.target_seconds = target_seconds
        self.number = 1

    def calibrate(self, mod) -> float:
        ev = mod.time_evaluator("main", self.dev, number=3, repeat=3)
        t = float(np.median(ev(*self.args).results))
        self.number = int(min(2000, max(1, self.target_seconds / max(t, 1e-7))))
        return t

    def once(self, mod) -> float:
        if len(self.sets) == 1:
            ev = mod.time_evaluator("main", self.dev, number=self.number, repeat=1)
            return float(ev(*self.args).mean)
        main, sets = mod["main"], self.sets
        start = time.perf_counter()
        for _ in range(self.number):
            main(*sets[self._next])
            self._next = (self._next + 1) % len(sets)
        return (time.perf_counter() - start) / self.number

    def outputs(self, mod) -> list[np.ndarray]:
        mod["main"](*self.args)
        return [a.numpy().copy() for a in self.args]


def _time_rounds(
    timer: _Timer, mods: dict[int, object], rounds: int, samples: dict[int, list[float]], rng: random.Random
) -> None:
    for _ in range(rounds):
        order = list(mods)
        rng.shuffle(order)
        for i in order:
            samples[i].append(timer.once(mods[i]))


def tune_task(
    task: dict,
    spec,
    threads: int,
    trials: int,
    deadline: float | None,
    min_gain: float = MIN_GAIN,
    on_step=None,
    device: RemoteDevice | None = None,
) -> dict:
    """Time the default and up to `trials` knob settings of one task. Returns its database entry."""
    from edgekit.compiler.schedules.base import RuleContext
    from edgekit.compiler.schedules.dispatch import schedule_prim_func, tunable_space

    target = spec.tvm_target()
    # candidates share one argument set in the original weight layout, and a lone PrimFunc would re-layout
    # its weights on every call: time them without the compile-time weight prepacking
    ctx = RuleContext.for_target(target, threads, prepack=False)
    kind, default, space, dims = tunable_space(task["func"], ctx)  # the defaults depend on the target's vector width
    entry = {
        "name": task["name"],
        "rule": kind,
        "count": task["count"],
        "macs": dims["macs"],
        "threads": threads,
        "default": default,
        "knobs": None,
        "default_us": None,
        "best_us": None,
        "gain": 0.0,
        "trials": 0,
        "candidates": [],
    }
    cands = [default] + _candidates(default, space, trials, task["key"])
    mods: dict[int, object] = {}
    knobs_of: dict[int, dict] = {}
    timer = _Timer(task["func"], device=device)
    ref = None
    for i, knobs in enumerate(cands):
        if deadline is not None and i > 0 and time.monotonic() > deadline:
            break
        try:
            sched, result = schedule_prim_func(task["func"], ctx, None if i == 0 else knobs)
            if i > 0 and result.knobs is None:
                continue  # these knobs failed and the rule fell back to its defaults: nothing new to time
            mod = device.build(sched, target) if device else build_one(sched, target)
            outs = timer.outputs(mod)
        except Exception:  # noqa: BLE001 - an invalid setting is skipped, not fatal
            interrupts.check()
            continue
        if i == 0:
            ref = outs
            timer.calibrate(mod)
        elif not all(np.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(outs, ref)):
            continue  # must compute the same thing as the default schedule
        mods[i], knobs_of[i] = mod, knobs
        if on_step:
            on_step()
    if not mods or 0 not in mods:
        return entry
    rng = random.Random(task["key"])
    samples: dict[int, list[float]] = {i: [] for i in mods}
    _time_rounds(timer, mods, 5, samples, rng)
    med = {i: float(np.median(v)) for i, v in samples.items()}
    best = min(med, key=med.get)
    if best != 0 and med[best] < med[0] * (1 - min_gain):
        # confirm: default and the winner alone, more rounds (a lucky sample under load is not a win)
        _time_rounds(timer, {0: mods[0], best: mods[best]}, 7, samples, rng)
        med[0], med[best] = float(np.median(samples[0])), float(np.median(samples[best]))
    entry["default_us"] = round(med[0] * 1e6, 3)
    entry["trials"] = len(mods) - 1
    entry["candidates"] = [[knobs_of[i], round(med[i] * 1e6, 3)] for i in sorted(mods, key=med.get)][:8]
    if best != 0 and med[best] < med[0] * (1 - min_gain):
        entry.update(knobs=knobs_of[best], best_us=round(med[best] * 1e6, 3), gain=round(1 - med[best] / med[0], 4))
    else:
        entry["best_us"] = entry["default_us"]
    return entry


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


def _tunable_tasks(onnx_path: Path, spec, target, threads: int, input_shapes) -> tuple[list[dict], int]:
    """The model's tasks whose rule has knobs, biggest share of the work first, and the threads schedule_cpu will
    plan them for (1 for small models)."""
    from edgekit.compiler.schedules.analysis import effective_threads
    from edgekit.compiler.schedules.base import RuleContext
    from edgekit.compiler.schedules.dispatch import tunable_space

    prepared, all_tasks = extract_tasks(onnx_path, spec, input_shapes)
    sched_threads = effective_threads(prepared, threads)
    tunable = []
    for task in all_tasks:
        space = tunable_space(task["func"], RuleContext.for_target(target, sched_threads))
        if space is not None:
            task["macs"] = space[3]["macs"]
            tunable.append(task)
    tunable.sort(key=lambda t: -t["macs"] * t["count"])
    return tunable, sched_threads


def _open_db(db_path: Path, onnx_path: Path, spec, target, threads: int) -> dict:
    """The database to resume, or a new one if there is none for this exact target and model file."""
    from edgekit.core.fileio import sha256_of

    sha = sha256_of(onnx_path)
    db = read_db(db_path)
    if db is not None and (db.get("target") != target_string(target) or db.get("model_sha256") != sha):
        db = None  # another target or another model under the same name: start over
    if db is None:
        db = {
            "format": FORMAT,
            "version": VERSION,
            "target": target_string(target),
            "target_name": spec.name,
            "threads": threads,
            "model": onnx_path.name,
            "model_sha256": sha,
            "tasks": {},
            "end_to_end": None,
        }
    return db


def _timing_device(spec, device: dict | None) -> RemoteDevice | None:
    """The board candidates are timed on over TVM RPC (--rpc / --tracker --key), or None for this machine,
    which must then run the target natively."""
    if device:
        from edgekit.runners.rpc import connect

        return RemoteDevice(connect(**device), spec)
    if spec.tvm.get("kind") != "llvm" or spec.runnable_here != "native":
        raise EdgekitError(
            f"target {spec.name} does not run on this machine ({spec.why_not_runnable or 'not native'}), "
            "so its candidates cannot be timed here",
            "tune on the board over RPC: edgekit tune ... --tracker HOST:PORT --key KEY (or --rpc HOST:PORT)",
        )
    return None


def _progress_bar(progress: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgekit.core.progress import stderr

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=stderr, disable=not progress, transient=False)


def tune_model(
    onnx_path: Path | str,
    target_name: str = "x86_64",
    out_dir: Path | str = Path("tuning"),
    trials_per_task: int = 16,
    threads: int = 0,
    budget_s: float | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: bool = True,
    verify: bool = True,
    min_gain: float = MIN_GAIN,
    device: dict | None = None,
) -> dict:
    """Tune the conv / depthwise / dense tasks of a model; write <out_dir>/<target>/<model>.json after every
    task (resumable: tasks already in the database are not re-timed). Returns a report dict."""
    from edgekit.runtime import cpu_count, set_threads
    from edgekit.targets import load_target

    t_start = time.monotonic()
    deadline = t_start + budget_s if budget_s else None
    onnx_path = Path(onnx_path)
    spec = load_target(target_name)
    remote = _timing_device(spec, device)
    if trials_per_task < 0:
        raise EdgekitError("--trials must be >= 0", "e.g. --trials 16")
    threads = threads or spec.threads or cpu_count()
    set_threads(threads)  # this process times the candidates: TVM's thread pool reads it at its first parallel call
    db_path = database_path(Path(out_dir), spec.name, onnx_path)
    target = spec.tvm_target()
    db = _open_db(db_path, onnx_path, spec, target, threads)
    tunable, sched_threads = _tunable_tasks(onnx_path, spec, target, threads, input_shapes)
    todo = [t for t in tunable if t["key"] not in db["tasks"]]
    resumed = len(tunable) - len(todo)
    report = {
        "model": str(onnx_path),
        "database": str(db_path),
        "target": spec.name,
        "threads": threads,
        "schedule_threads": sched_threads,
        "tasks": len(tunable),
        "resumed": resumed,
        "timed": 0,
        "tuned": 0,
        "budget_exhausted": False,
    }

    with _progress_bar(progress) as bar:
        overall = bar.add_task(
            f"tuning {onnx_path.name}", total=len(tunable), completed=resumed, status=f"[dim]{resumed} resumed[/]"
        )
        for task in todo:
            if deadline is not None and time.monotonic() > deadline:
                report["budget_exhausted"] = True
                break
            sub = bar.add_task(f"  {task['name'][:40]}", total=trials_per_task + 1, status="")
            entry = tune_task(
                task,
                spec,
                sched_threads,
                trials_per_task,
                deadline,
                min_gain,
                on_step=lambda s=sub: bar.advance(s),
                device=remote,
            )
            bar.remove_task(sub)
            db["tasks"][task["key"]] = entry
            db["end_to_end"] = None  # the set of tuned tasks changed: re-verify
            write_db(db_path, db)
            report["timed"] += 1
            gain = f"[green]-{entry['gain'] * 100:.0f}%[/]" if entry["knobs"] else "[dim]default kept[/]"
            bar.update(overall, advance=1, status=f"{task['name'][:28]} {gain}")
        tuned = {k: v["knobs"] for k, v in db["tasks"].items() if v.get("knobs")}
        if verify and tuned and db.get("end_to_end") is None:
            bar.update(overall, status="verifying end to end (default vs tuned)…")
            db["end_to_end"] = verify_end_to_end(onnx_path, spec.name, db, threads, input_shapes, min_gain, remote)
            write_db(db_path, db)
    report["tuned"] = sum(1 for v in db["tasks"].values() if v.get("knobs"))
    report["end_to_end"] = db.get("end_to_end")
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["task_gains"] = {v["name"]: v["gain"] for v in db["tasks"].values() if v.get("knobs")}
    return report
