"""Analysis of a MOS study: summary statistics, paired tests, box plots, reports, raw CSV.

Per system and question: n, mean with a percentile-bootstrap 95% CI, median, IQR, min and max.
Systems are compared pairwise per question with the Wilcoxon signed-rank test on ratings paired
by (rater, clip) (``cmmd.eval.stats.paired_wilcoxon``); the p-values of one question form one
family for the Holm or Bonferroni correction. Box plots follow the paper's Fig. 5: one panel per
question, systems side by side, median bars, IQR boxes, min/max whiskers.
"""

from __future__ import annotations

import base64
import csv
import itertools
import math
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmmd.errors import CmmdError  # noqa: E402
from cmmd.eval.stats import bonferroni, bootstrap_ci, holm_correction, paired_wilcoxon  # noqa: E402
from cmmd.apps.mos import db  # noqa: E402
from cmmd.apps.mos.study import ATTENTION_FAIL_SCORE, AttentionResult, Study, attention_results, load_study  # noqa: E402

CORRECTIONS = ("holm", "bonferroni", "none")
ALPHA = 0.05
# paired_wilcoxon's floor: with 5 or fewer pairs no two-sided p-value can fall below 0.05.
MIN_PAIRS = 6
ATTENTION_LABEL = "(attention check)"


@dataclass(frozen=True)
class RatingRow:
    """One stored score joined with what the item is (one line of ratings.csv)."""

    rater_id: str
    anonymous: bool
    item_id: str
    clip: str
    system: str
    audio_clip: str
    question: str
    score: int
    submitted_at: float
    rater_failed_attention: bool


@dataclass(frozen=True)
class SystemStats:
    """Summary of one system's scores on one question; NaN fields when ``n == 0``."""

    question: str
    system: str
    n: int
    mean: float
    ci_lo: float
    ci_hi: float
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float

    @property
    def iqr(self) -> float:
        """Inter-quartile range ``q3 - q1``."""
        return self.q3 - self.q1


@dataclass(frozen=True)
class PairTest:
    """Wilcoxon signed-rank test of ``system_a`` against ``system_b`` on one question.

    ``mean_diff``/``median_diff`` are of ``a - b`` over the paired (rater, clip) ratings;
    ``p_value``/``p_adjusted`` are NaN when fewer than ``MIN_PAIRS`` pairs exist (``note`` says so).
    """

    question: str
    system_a: str
    system_b: str
    n: int
    mean_diff: float
    median_diff: float
    statistic: float
    p_value: float
    p_adjusted: float
    note: str = ""

    @property
    def significant(self) -> bool:
        """Whether the corrected p-value is below ``ALPHA``."""
        return bool(self.p_adjusted < ALPHA)


@dataclass
class Analysis:
    """Everything ``cmmd mos analyze`` reports."""

    study: Study
    correction: str
    excluded_raters: list[str]
    attention: dict[str, AttentionResult]
    rows: list[RatingRow]
    stats: list[SystemStats] = field(default_factory=list)
    tests: list[PairTest] = field(default_factory=list)

    @property
    def included_raters(self) -> list[str]:
        """Raters whose ratings enter the statistics, in order of first rating."""
        seen = dict.fromkeys(r.rater_id for r in self.rows if r.rater_id not in self.excluded_raters)
        return list(seen)

    def scores(self, question: str, system: str) -> dict[tuple[str, str], int]:
        """``{(rater, clip): score}`` of included raters for one question and system."""
        return {(r.rater_id, r.clip): r.score for r in self.rows
                if r.question == question and r.system == system and r.rater_id not in self.excluded_raters}


def analyze_study(
    study_dir: str | os.PathLike,
    correction: str = "holm",
    exclude_failed_attention: bool = False,
    n_boot: int = 2000,
) -> Analysis:
    """Load the study and its ratings and compute every statistic (see module docstring)."""
    if correction not in CORRECTIONS:
        raise CmmdError(f"--correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    study = load_study(study_dir)
    conn = db.connect(study.db_path)
    try:
        raters = {r.rater_id: r for r in db.raters(conn)}
        ratings = db.ratings(conn)
    finally:
        conn.close()
    if not ratings:
        raise CmmdError(f"{study.db_path}: no ratings yet; serve the study with `cmmd mos serve` first")
    attention = attention_results(study, ratings)
    failed = sorted(rid for rid, res in attention.items() if res.failed)
    items = study.items_by_id
    rows = []
    for r in ratings:
        item = items[r.item_id]
        rows.append(RatingRow(
            r.rater_id, raters[r.rater_id].anonymous, r.item_id, item.clip, item.system or ATTENTION_LABEL,
            item.audio_clip or "", r.question, r.score, r.submitted_at, r.rater_id in failed,
        ))
    analysis = Analysis(study, correction, failed if exclude_failed_attention else [], attention, rows)
    for question in study.questions:
        for system in study.systems:
            analysis.stats.append(_system_stats(question.id, system, analysis.scores(question.id, system),
                                                n_boot, study.seed))
        analysis.tests.extend(_pair_tests(analysis, question.id))
    return analysis


def _system_stats(question: str, system: str, scores: dict[tuple[str, str], int], n_boot: int,
                  seed: int) -> SystemStats:
    """n, mean with bootstrap CI, quartiles and range of one system's scores."""
    values = np.array(list(scores.values()), dtype=np.float64)
    if values.size == 0:
        nan = math.nan
        return SystemStats(question, system, 0, nan, nan, nan, nan, nan, nan, nan, nan)
    ci = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return SystemStats(question, system, int(values.size), ci.point, ci.lo, ci.hi, float(median), float(q1),
                       float(q3), float(values.min()), float(values.max()))


def _pair_tests(analysis: Analysis, question: str) -> list[PairTest]:
    """Every pair of systems on ``question``, with p-values corrected as one family."""
    raw = []
    for a, b in itertools.combinations(analysis.study.systems, 2):
        sa, sb = analysis.scores(question, a), analysis.scores(question, b)
        keys = sorted(sa.keys() & sb.keys())
        xa = np.array([sa[k] for k in keys], dtype=np.float64)
        xb = np.array([sb[k] for k in keys], dtype=np.float64)
        diff = xa - xb
        mean_diff = float(diff.mean()) if keys else math.nan
        if len(keys) < MIN_PAIRS:
            median_diff = float(np.median(diff)) if keys else math.nan
            raw.append((a, b, len(keys), mean_diff, median_diff, math.nan, math.nan,
                        f"fewer than {MIN_PAIRS} paired ratings: no test"))
            continue
        res = paired_wilcoxon(xa, xb, min_pairs=MIN_PAIRS)
        raw.append((a, b, len(keys), mean_diff, res["median_diff"], res["statistic"], res["p_value"], ""))
    tested = [i for i, t in enumerate(raw) if not math.isnan(t[6])]
    adjusted = np.full(len(raw), math.nan)
    if tested:
        p = np.array([raw[i][6] for i in tested])
        if analysis.correction == "holm":
            p = holm_correction(p)
        elif analysis.correction == "bonferroni":
            p = bonferroni(p)
        adjusted[tested] = p
    return [PairTest(question, a, b, n, md, med, stat, pv, float(adjusted[i]), note)
            for i, (a, b, n, md, med, stat, pv, note) in enumerate(raw)]


def save_boxplots(analysis: Analysis, path: Path) -> Path:
    """Fig.-5-style box plots: one panel per question, systems side by side; black median bars,
    IQR boxes, whiskers at the minimum and maximum."""
    study = analysis.study
    n_q = len(study.questions)
    width = max(3.2, 0.75 * len(study.systems) + 1.2)
    fig, axes = plt.subplots(1, n_q, figsize=(width * n_q, 3.6), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, question in zip(axes[0], study.questions, strict=True):
        data, positions = [], []
        for k, system in enumerate(study.systems):
            values = list(analysis.scores(question.id, system).values())
            if values:
                data.append(values)
                positions.append(k + 1)
        if data:
            boxes = ax.boxplot(data, positions=positions, whis=(0, 100), widths=0.6, patch_artist=True,
                               showfliers=False, medianprops={"color": "black", "linewidth": 2.0})
            for patch, pos in zip(boxes["boxes"], positions, strict=True):
                patch.set_facecolor(colours[(pos - 1) % len(colours)])
                patch.set_alpha(0.75)
        ax.set_xticks(range(1, len(study.systems) + 1))
        ax.set_xticklabels(study.systems, rotation=30, ha="right")
        ax.set_title(question.label, fontsize=10)
        ax.set_ylim(0.6, 5.4)
        ax.set_yticks(range(1, 6))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("MOS")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_ratings_csv(analysis: Analysis, path: Path) -> Path:
    """Every stored score, one per line, with its clip and system (the raw export)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rater_id", "anonymous", "item_id", "clip", "system", "audio_clip", "question", "score",
                         "submitted_at", "rater_failed_attention"])
        for r in analysis.rows:
            writer.writerow([r.rater_id, int(r.anonymous), r.item_id, r.clip, r.system, r.audio_clip, r.question,
                             r.score, f"{r.submitted_at:.3f}", int(r.rater_failed_attention)])
    return path


def write_stats_csv(analysis: Analysis, path: Path) -> Path:
    """The per-system, per-question summary table as CSV."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "system", "n", "mean", "ci95_lo", "ci95_hi", "median", "q1", "q3", "iqr",
                         "min", "max"])
        for s in analysis.stats:
            writer.writerow([s.question, s.system, s.n, *(f"{v:.4f}" for v in (
                s.mean, s.ci_lo, s.ci_hi, s.median, s.q1, s.q3, s.iqr, s.minimum, s.maximum))])
    return path


def _num(value: float, digits: int = 2) -> str:
    """A number for a table cell; '-' for NaN."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    """A p-value for a table cell: three decimals, '<0.001' below, '-' for NaN."""
    if math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _tables(analysis: Analysis) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as ``(heading, header, rows)``, shared by the markdown and HTML reports."""
    study = analysis.study
    labels = {q.id: q.label for q in study.questions}
    tables = []
    for question in study.questions:
        rows = [[s.system, str(s.n), _num(s.mean), f"[{_num(s.ci_lo)}, {_num(s.ci_hi)}]", _num(s.median, 1),
                 f"{_num(s.q1, 2)}-{_num(s.q3, 2)}", _num(s.iqr), f"{_num(s.minimum, 0)}-{_num(s.maximum, 0)}"]
                for s in analysis.stats if s.question == question.id]
        tables.append((f"{question.label}: scores per system",
                       ["system", "n", "mean", "95% CI (bootstrap)", "median", "Q1-Q3", "IQR", "min-max"], rows))
        tests = [t for t in analysis.tests if t.question == question.id]
        if tests:
            rows = [[f"{t.system_a} vs {t.system_b}", str(t.n), _num(t.mean_diff), _num(t.median_diff, 1),
                     _num(t.statistic, 1), _p(t.p_value), _p(t.p_adjusted), "yes" if t.significant else "no",
                     t.note] for t in tests]
            tables.append((f"{labels[question.id]}: Wilcoxon signed-rank tests ({analysis.correction} correction)",
                           ["comparison", "pairs", "mean diff", "median diff", "W", "p", "p adjusted",
                            f"p adj. < {ALPHA}", "note"], rows))
    rated: dict[str, set[str]] = {}
    for r in analysis.rows:
        rated.setdefault(r.rater_id, set()).add(r.item_id)
    rater_rows = []
    for rater_id, item_ids in rated.items():
        res = analysis.attention.get(rater_id)
        rater_rows.append([rater_id, str(len(item_ids)), "-" if res is None else f"{res.failed} of {res.checks}",
                           "excluded" if rater_id in analysis.excluded_raters else "included"])
    tables.append(("Raters", ["rater", "items rated", "attention checks failed", "in statistics"], rater_rows))
    return tables


def _summary_lines(analysis: Analysis) -> list[str]:
    """The report's opening facts, as plain sentences."""
    study = analysis.study
    failed = [rid for rid, res in analysis.attention.items() if res.failed]
    n_checks = sum(item.is_attention for item in study.items)
    lines = [
        f"Systems: {', '.join(study.systems)}. Clips: {len(study.clips)}. Questions: "
        f"{', '.join(q.label for q in study.questions)} (1-5).",
        f"Raters: {len(set(r.rater_id for r in analysis.rows))} with ratings, {len(analysis.included_raters)} in "
        f"the statistics. Stored item scores: {len(analysis.rows)}.",
        f"Pairwise tests: Wilcoxon signed-rank, paired by (rater, clip), {analysis.correction} correction over "
        f"the system pairs of each question, significance at adjusted p < {ALPHA}.",
    ]
    if n_checks:
        lines.append(f"Attention checks: {n_checks} (ground-truth video with another clip's audio); a check is "
                     f"failed at a score of {ATTENTION_FAIL_SCORE} or more on the attention question. Raters failing "
                     f"at least one: {', '.join(failed) if failed else 'none'}"
                     f"{' (excluded)' if analysis.excluded_raters else ''}.")
    return lines


def write_markdown(analysis: Analysis, path: Path, plot_name: str) -> Path:
    """The report as markdown, linking the box-plot PNG next to it."""
    out = [f"# MOS study report: {analysis.study.root.name}", ""]
    out += [f"- {line}" for line in _summary_lines(analysis)]
    out += ["", f"![Box plots]({plot_name})", ""]
    for heading, header, rows in _tables(analysis):
        out += [f"## {heading}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def write_html(analysis: Analysis, path: Path, plot: Path) -> Path:
    """The report as one self-contained HTML file (the box plots embedded as a data URI)."""
    image = base64.b64encode(plot.read_bytes()).decode("ascii")
    parts = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>MOS study report</title>"
             "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;}table{border-collapse:collapse;"
             "margin-bottom:1.2rem;}th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;}</style></head><body>",
             f"<h1>MOS study report: {escape(analysis.study.root.name)}</h1><ul>"]
    parts += [f"<li>{escape(line)}</li>" for line in _summary_lines(analysis)]
    parts.append(f'</ul><img alt="box plots" src="data:image/png;base64,{image}">')
    for heading, header, rows in _tables(analysis):
        parts.append(f"<h2>{escape(heading)}</h2><table><tr>{''.join(f'<th>{escape(h)}</th>' for h in header)}</tr>")
        parts += [f"<tr>{''.join(f'<td>{escape(c)}</td>' for c in row)}</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


def write_reports(analysis: Analysis, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ratings.csv, stats.csv, boxplots.png, report.md and report.html into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = save_boxplots(analysis, out / "boxplots.png")
    return {
        "ratings_csv": write_ratings_csv(analysis, out / "ratings.csv"),
        "stats_csv": write_stats_csv(analysis, out / "stats.csv"),
        "boxplots": plot,
        "markdown": write_markdown(analysis, out / "report.md", plot.name),
        "html": write_html(analysis, out / "report.html", plot),
    }
