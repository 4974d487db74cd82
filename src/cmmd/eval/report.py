"""Human-readable evaluation reports: ``report.md`` and ``report.html`` with PNG plots.

Both show the table of every metric (value, 95 % bootstrap CI, n, baseline, and the paired
comparison with a shuffled-pairs baseline where there is one), the notes, the
settings and code version; the HTML adds the plots: per-item distributions of the headline per-item
metrics next to their baselines (the per-sample FAD panel is the paper's Fig. 4 view, with the
per-set FAD as a cross) and the per-round values of the set metrics (FVD, KVD, FAD).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, tuples -> lists, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _fmt(value: Any) -> str:
    """A number with 4 significant digits; NaN/None as n/a."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    v = float(value)
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def format_ci(entry: Mapping[str, Any]) -> str:
    """``point [lo, hi]`` of a metric entry."""
    return f"{_fmt(entry.get('point'))} [{_fmt(entry.get('lo'))}, {_fmt(entry.get('hi'))}]"


def format_vs_baseline(entry: Mapping[str, Any]) -> str:
    """``diff [lo, hi], Wilcoxon p=.., n=..`` of an entry's paired comparison with its baseline
    (``vs_baseline``: own minus baseline per condition), the reason when there is no p; empty
    without a comparison."""
    vs = entry.get("vs_baseline")
    if not vs:
        return ""
    p = vs.get("p")
    test = f"p={_fmt(p)}" if p is not None and math.isfinite(p) else f"p n/a ({vs.get('why', 'no test')})"
    return f"{_fmt(vs.get('diff'))} [{_fmt(vs.get('lo'))}, {_fmt(vs.get('hi'))}], Wilcoxon {test}, n={vs.get('n')}"


def metric_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``metric, value [CI], n (dropped), baseline, own - baseline, better, description``."""
    rows = []
    for name, e in result["metrics"].items():
        base = e.get("baseline")
        baseline = f"{format_ci(base)} ({base['label']})" if base else ""
        better = {True: "lower", False: "higher", None: ""}[e.get("lower_is_better")]
        dropped = f" ({e['n_dropped']} NaN)" if e.get("n_dropped") else ""
        rows.append([name, format_ci(e), f"{e.get('n')}{dropped}", baseline, format_vs_baseline(e), better,
                     e.get("description", "")])
    return rows


def _finite(values: Any) -> np.ndarray:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


# Per-item metrics that get a panel (the headline of each family; the table has the rest).
PLOTTED = re.compile(r"^(fad_per_sample\[.*\]|beat_hit_rate_100ms(\[sidecar\])?|onset_f1|sync_(v2a|a2v)_f1"
                     r"|abs_av_offset_ms)$")


def plot_item_metrics(result: Mapping[str, Any], path: Path) -> Path | None:
    """Box plus points of the headline per-item metrics (``PLOTTED``), baseline beside each;
    per-set FAD as a cross on the per-sample FAD panel."""
    entries = [(n, e) for n, e in result["metrics"].items() if e["kind"] == "item" and PLOTTED.match(n)]
    if not entries:
        return None
    cols = min(3, len(entries))
    rows = math.ceil(len(entries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (name, e) in zip(axes.ravel(), entries):
        groups = [("generated", _finite(e["per_item"].values()))]
        if e.get("baseline"):
            groups.append((e["baseline"]["label"].split(" (")[0], _finite(e["baseline"]["values"])))
        data = [g if g.size else np.array([np.nan]) for _, g in groups]
        ax.boxplot(data, widths=0.5, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=8, alpha=0.6, color=f"C{i - 1}")
        if name.startswith("fad_per_sample"):
            per_set = result["metrics"].get(name.replace("fad_per_sample", "fad"))
            if per_set is not None:
                ax.scatter([1], [per_set["point"]], marker="x", s=60, color="black", label="per-set FAD", zorder=3)
                ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(1, len(groups) + 1), [g for g, _ in groups], fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(entries):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_set_metrics(result: Mapping[str, Any], path: Path) -> Path | None:
    """Per-round values of each set metric with the bootstrap CI as a band."""
    entries = [(n, e) for n, e in result["metrics"].items() if e["kind"] == "set"]
    if not entries:
        return None
    fig, axes = plt.subplots(1, len(entries), figsize=(3.6 * len(entries), 2.8), squeeze=False)
    for ax, (name, e) in zip(axes[0], entries):
        rounds = np.arange(1, len(e["per_round"]) + 1)
        ax.plot(rounds, [np.nan if v is None else v for v in e["per_round"]], "o", label="per round")
        if all(isinstance(e.get(k), (int, float)) and math.isfinite(e[k]) for k in ("lo", "hi")):
            ax.axhspan(e["lo"], e["hi"], alpha=0.2, color="C1", label="95% CI of the mean")
        ax.axhline(e["point"], color="C1")
        ax.set_xticks(rounds)
        ax.set_xlabel("generation round")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _header(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = result["items"]
    return [
        ("generated", result["generated"]),
        ("reference", result["reference"]),
        ("items", f"{items['conditions']} conditions x {items['generations_per_condition']} generation(s), "
                  f"{items['sidecars']} synthetic sidecars"),
        ("feature networks", f"video: {result['embedders']['video'] or '-'}; "
                             f"audio (FAD): {result['embedders']['audio'] or '-'}"),
        ("cmmd", result["code"]["version"]),
        ("created", result["created"]),
    ]


def write_markdown(result: Mapping[str, Any], path: Path) -> Path:
    """``report.md``: header, metric table, notes, timings, settings."""
    lines = ["# cmmd evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in _header(result)]
    lines += ["", "| metric | value [95% CI] | n | baseline [95% CI] | own - baseline [95% CI], paired test | better "
              "| what |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in metric_rows(result)]
    set_rows = [(n, e) for n, e in result["metrics"].items() if e["kind"] == "set"]
    if set_rows:
        lines += ["", "Per generation round (pairwise protocol):", ""]
        lines += [f"- {n}: " + ", ".join(_fmt(v) for v in e["per_round"]) for n, e in set_rows]
    warnings = sorted({e["warning"] for e in result["metrics"].values() if e.get("warning")})
    if result["notes"] or warnings:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in [*result["notes"], *warnings]]
    lines += ["", "## Time (s)", ""] + [f"- {k}: {v}" for k, v in result["timings_s"].items()]
    lines += ["", "## Settings", "", "```json", json.dumps(result["settings"], indent=2), "```", ""]
    path.write_text("\n".join(lines))
    return path


def write_html(result: Mapping[str, Any], path: Path, plots: list[Path]) -> Path:
    """``report.html``: the markdown report's content plus the plots (relative links)."""
    esc = html.escape
    head = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in _header(result))
    table = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in metric_rows(result))
    notes = [*result["notes"], *sorted({e["warning"] for e in result["metrics"].values() if e.get("warning")})]
    images = "".join(f'<p><img src="{esc(p.relative_to(path.parent).as_posix())}" alt="{esc(p.stem)}"></p>'
                     for p in plots)
    timings = ", ".join(f"{esc(k)} {v} s" for k, v in result["timings_s"].items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cmmd evaluation</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style></head>
<body><h1>cmmd evaluation</h1><ul>{head}</ul>
<table><tr><th>metric</th><th>value [95% CI]</th><th>n</th><th>baseline [95% CI]</th>
<th>own - baseline [95% CI], paired test</th><th>better</th><th>what</th></tr>
{table}</table>
{"<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else ""}
<h2>Plots</h2>{images or "<p>none</p>"}
<h2>Time</h2><p>{timings}</p>
<h2>Settings</h2><pre>{esc(json.dumps(result["settings"], indent=2))}</pre>
</body></html>
"""
    path.write_text(page)
    return path


def write_report(result: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = [p for p in (plot_item_metrics(result, out / "plots" / "per_item.png"),
                         plot_set_metrics(result, out / "plots" / "set_metrics.png")) if p is not None]
    return write_markdown(result, out / "report.md"), write_html(result, out / "report.html", plots)
