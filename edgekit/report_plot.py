"""The report's outputs: report.json, report.md (the table) and two plots (quality vs latency, quality vs size),
each point labelled with its variant and the Pareto front drawn (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.core.fileio import atomic_file


def pareto(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (x: lower is better; y: as given)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and (y2 >= y if higher_is_better else y2 <= y)) and (x2, y2) != (x, y) for x2, y2 in points
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _quality_label(result: dict) -> tuple[str, bool]:
    if result["quality"] == "accuracy":
        return f"accuracy ({result['eval']}, onnxruntime)", True
    return "relative output error vs fp32 (onnxruntime; lower is better)", False


def plot(result: dict, x_key: str, x_label: str, path: Path, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok" and r.get(x_key) is not None and r["quality"] is not None]
    y_label, higher = _quality_label(result)
    fig, ax = plt.subplots(figsize=(8, 5))
    points = [(float(r[x_key]), float(r["quality"])) for r in rows]
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    front = pareto(points, higher)
    if front:
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "--",
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        ax.scatter(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            s=90,
            facecolors="none",
            edgecolors="tab:red",
            zorder=4,
        )
    if log_x:
        ax.set_xscale("log")
    _place_labels(fig, ax, points, [r["variant"] for r in rows])
    if x_key == "tvm_ms" and any(r["latency_note"] for r in rows):
        x_label += " (emulated: not a speed figure)"
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{Path(str(result['model'])).name} on {result['target']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _place_labels(fig, ax, points: list[tuple[float, float]], labels: list[str], size: int = 8) -> None:
    """Greedy label placement (written here: matplotlib has none, adjustText is one more dependency): each label
    takes the first of 16 positions around its point, nearest first, whose box overlaps no placed label and no point."""
    fig.canvas.draw()  # the transforms are final once the axes limits are
    scale = fig.dpi / 72.0
    pixel = [tuple(ax.transData.transform(p)) for p in points]
    placed = [(x - 4, y - 4, x + 4, y + 4) for x, y in pixel]  # the markers themselves
    candidates = [
        (r * dx, r * dy) for r in (8, 16, 26) for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0))
    ]

    def overlaps(box) -> int:
        return sum(not (box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1]) for b in placed)

    for (x, y), label in sorted(zip(pixel, labels)):
        w, h = len(label) * size * 0.62 * scale, size * 1.3 * scale
        best = None
        for dx, dy in candidates:
            left = x + dx * scale if dx >= 0 else x + dx * scale - w
            box = (left, y + dy * scale - h / 2, left + w, y + dy * scale + h / 2)
            score = overlaps(box)
            if best is None or score < best[0]:
                best = (score, dx, dy, box)
            if score == 0:
                break
        _, dx, dy, box = best
        placed.append(box)
        ax.annotate(
            label,
            ax.transData.inverted().transform((x, y)),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=size,
            ha="left" if dx >= 0 else "right",
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5},
        )


def markdown(result: dict) -> str:
    y_label, _ = _quality_label(result)
    host = result["host"]
    features = ", ".join(
        f for f in host["features"] if f.startswith(("avx2", "avx512f", "avx512vnni", "neon", "dotprod"))
    )
    lines = [
        f"# edgekit report: {result['model']} on {result['target']}",
        "",
        f"Host: {host['cpu']} ({host['cores']} cores; {features}). "
        f"Quality: {y_label}, on {result['eval']}. Latency: p50, 2 threads, each runtime in its own process. "
        f"{result['seconds']:.0f} s.",
        "",
        "![quality vs latency](quality_vs_latency.png) ![quality vs size](quality_vs_size.png)",
        "",
        "| variant | status | file kB | weights kB | quality ORT | quality TVM | ORT ms | TVM ms | "
        "validated (max abs) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = (lambda v: f"{v:.2%}") if result["quality"] == "accuracy" else (lambda v: f"{v:.4f}")
    for r in result["rows"]:

        def num(key, scale=1.0, digits=1, r=r):
            return "–" if r.get(key) is None else f"{r[key] / scale:.{digits}f}"

        valid = (
            "–"
            if r["validated"] is None
            else ("yes" if r["validated"] else "NO")
            + ("" if r["max_abs_vs_ort"] is None else f" ({r['max_abs_vs_ort']:.1e})")
        )
        notes = "; ".join(r["notes"] + ([r["latency_note"]] if r["latency_note"] else []))
        lines.append(
            f"| {r['variant']} | {r['status']} | {num('file_bytes', 1e3)} | {num('weight_bytes', 1e3)} | "
            f"{'–' if r['quality'] is None else fmt(r['quality'])} | "
            f"{'–' if r['quality_tvm'] is None else fmt(r['quality_tvm'])} | "
            f"{num('ort_ms', 1, 3)} | {num('tvm_ms', 1, 3)} | {valid} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: Path) -> dict[str, str]:
    files = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "latency_plot": out / "quality_vs_latency.png",
        "size_plot": out / "quality_vs_size.png",
    }
    plot(result, "tvm_ms", "latency in edgekit's TVM build, p50 ms", files["latency_plot"])
    plot(result, "file_bytes", "file size, bytes (log)", files["size_plot"], log_x=True)
    with atomic_file(files["markdown"]) as tmp:
        tmp.write_text(markdown(result))
    named = {k: str(v) for k, v in files.items()}
    with atomic_file(files["json"]) as tmp:
        tmp.write_text(json.dumps(result | {"files": named}, indent=2, default=str))
    return named
