"""The tuning database: format, load, save. A leaf module (the search is in tuning/search.py).

Database (JSON, one file per model: <out_dir>/<target name>/<model>.json), rewritten after every task:

    {"format": "edgekit-tuning", "version": 1, "target": "<tvm target JSON>", "target_name": "x86_64",
     "threads": 2, "model": "resnet18.onnx", "model_sha256": "...",
     "tasks": {"<structural hash>": {"name": "fused_conv2d_add_relu", "rule": "conv", "count": 2,
               "macs": 115605504, "default": {...knobs}, "default_us": 612.3,
               "knobs": {...} | null, "best_us": 540.1, "gain": 0.118, "trials": 16,
               "candidates": [[{...knobs}, us], ...]}},
     "end_to_end": {"default_ms": ..., "tuned_ms": ..., "speedup": ..., "accepted": true}}

`knobs: null` means "the default was best" (the task is done and is not re-timed on resume).
compile --tuning loads every *.json under a directory (or one file) whose "target" matches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.core.errors import EdgekitError

FORMAT = "edgekit-tuning"
VERSION = 1


def target_string(target) -> str:
    return str(target)


def load_database(path: str | Path, target=None) -> dict[str, dict]:
    """{task key: knobs} from one database file or every *.json under a directory (recursively).
    With `target`, only databases built for that exact TVM target are used. Entries without knobs
    (the default was best) are left out."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(
            f"tuning database {path} does not exist", "create it with `edgekit tune model.onnx -o tuning/`"
        )
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    want = target_string(target) if target is not None else None
    out: dict[str, dict] = {}
    for file in files:
        try:
            db = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            raise EdgekitError(f"tuning database {file} is not valid JSON", "re-run edgekit tune") from None
        if not isinstance(db, dict) or db.get("format") != FORMAT:
            continue
        if want is not None and db.get("target") != want:
            continue
        for key, task in db.get("tasks", {}).items():
            if task.get("knobs"):
                out[key] = dict(task["knobs"])
    return out


def read_db(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        db = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return db if isinstance(db, dict) and db.get("format") == FORMAT and db.get("version") == VERSION else None


def write_db(path: Path, db: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(db, indent=1, sort_keys=False))
    os.replace(tmp, path)  # atomic: an interrupted run leaves the last complete database


def database_path(out_dir: Path, target_name: str, model_path: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.suffix == ".json":
        return out_dir
    return out_dir / target_name / f"{Path(model_path).stem}.json"
