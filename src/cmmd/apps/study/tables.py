"""Study statistics and tables: per-system metrics, paired tests, eta and lambda sweeps.

A *row* is a plain dict per system (or per lambda) holding the evaluation results of its v2a and
a2v outputs (``metrics[mode]``: the ``metrics`` of ``cmmd.eval.evaluate``), steps reached,
training minutes and sampling seconds per clip. Tables are markdown (printed and written to
``study.md``); the same numbers go to ``study.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cmmd.eval.stats import bootstrap_ci, holm_correction, paired_wilcoxon

MIN_PAIRS = 6  # paired_wilcoxon's default: with 5 or fewer pairs no two-sided p can fall below 0.05


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def metric(row: Mapping[str, Any], mode: str, key: str) -> dict[str, Any] | None:
    """The evaluation entry ``key`` of ``row``'s ``mode`` outputs; ``key`` may end in ``[`` to
    match a metric with any feature network (``"fad["`` finds ``fad[crepe-tiny]``)."""
    entries = row.get("metrics", {}).get(mode) or {}
    if key.endswith("["):
        key = next((k for k in entries if k.startswith(key)), "")
    return entries.get(key)


def metric_key(rows: Sequence[Mapping[str, Any]], mode: str, prefix: str) -> str | None:
    """The full name of the first metric starting with ``prefix`` in any row (``fad[crepe-tiny]``)."""
    for row in rows:
        for key in (row.get("metrics", {}).get(mode) or {}):
            if key.startswith(prefix):
                return key
    return None


def fmt(entry: Mapping[str, Any] | None, pct: bool, ci: bool = True) -> str:
    """``69.3 [59.8, 80.7]`` (percent) or ``12.3 [10.1, 15.2]`` (3 significant digits); ``n/a``."""
    if entry is None or not _finite(entry.get("point")):
        return "n/a"
    k = 100.0 if pct else 1.0

    def num(x: float) -> str:
        if pct:
            return f"{x * k:.1f}"
        return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"

    text = num(entry["point"])
    if ci and _finite(entry.get("lo")) and _finite(entry.get("hi")):
        text += f" [{num(entry['lo'])}, {num(entry['hi'])}]"
    return text


def chance(entry: Mapping[str, Any] | None) -> str:
    """The shuffled-pairs chance level of a sync entry, in percent."""
    base = (entry or {}).get("baseline")
    return fmt(base, pct=True, ci=False) if base else "n/a"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (header, separator, rows)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


# ----------------------------------------------------------------------------- paired tests


def paired_test(a: Mapping[str, float], b: Mapping[str, float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Wilcoxon signed-rank test of per-clip scores ``a`` vs ``b`` (paired by clip name) and the
    mean paired difference ``a - b`` with its bootstrap 95 % CI.

    Pairs with a NaN (or None) on either side are dropped. With fewer than ``MIN_PAIRS`` pairs,
    or when every pair ties, the test is undefined: ``p_value`` is NaN and ``reason`` says why
    (the difference and its CI are still given where there are pairs).
    """
    names = sorted(set(a) & set(b))
    xa = np.array([np.nan if a[n] is None else float(a[n]) for n in names], dtype=float)
    xb = np.array([np.nan if b[n] is None else float(b[n]) for n in names], dtype=float)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    d = xa[keep] - xb[keep]
    ci = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n": int(d.size), "n_dropped": int((~keep).sum()), "unpaired": len(set(a) ^ set(b)),
                           "mean_diff": ci.point, "lo": ci.lo, "hi": ci.hi,
                           "median_diff": float(np.median(d)) if d.size else math.nan,
                           "statistic": math.nan, "p_value": math.nan, "reason": ""}
    if d.size < MIN_PAIRS:
        out["reason"] = (f"{d.size} complete pair(s); the Wilcoxon test needs at least {MIN_PAIRS} (with 5 or fewer "
                         "no two-sided p-value can fall below 0.05)")
    elif np.all(d == 0):
        out["reason"] = f"all {d.size} pairs tie (zero difference): the test is undefined, no evidence of a difference"
    else:
        res = paired_wilcoxon(xa, xb, min_pairs=MIN_PAIRS)
        out.update(statistic=res["statistic"], p_value=res["p_value"], n_zero=int(res["n_zero"]))
    return out


def paired_tests(rows: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], n_boot: int = 2000,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Per-clip sync F1 of each pair ``(a, b)`` in v2a and a2v, with Holm-adjusted p-values over
    all tests that have one (``p_holm``; NaN where the test is undefined)."""
    tests = []
    for a, b in pairs:
        for mode in ("v2a", "a2v"):
            key = f"sync_{mode}_f1"
            ea, eb = metric(rows[a], mode, key), metric(rows[b], mode, key)
            if ea is None or eb is None:
                continue
            tests.append({"a": a, "b": b, "mode": mode, "metric": key,
                          **paired_test(ea["per_item"], eb["per_item"], n_boot, seed)})
    finite = [i for i, t in enumerate(tests) if _finite(t["p_value"])]
    adjusted = holm_correction([tests[i]["p_value"] for i in finite]) if finite else []
    for t in tests:
        t["p_holm"] = math.nan
    for i, p in zip(finite, adjusted):
        tests[i]["p_holm"] = float(p)
    return tests


def tests_table(tests: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Markdown table of :func:`paired_tests`."""
    def p(x: float) -> str:
        return f"{x:.3g}" if _finite(x) else "n/a"

    rows = [(f"{labels[t['a']]} - {labels[t['b']]}", t["mode"], str(t["n"]),
             f"{100 * t['mean_diff']:+.1f} [{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}]" if _finite(t["mean_diff"])
             else "n/a", f"{100 * t['median_diff']:+.1f}" if _finite(t["median_diff"]) else "n/a",
             p(t["statistic"]), p(t["p_value"]), p(t["p_holm"]), t["reason"] or "") for t in tests]
    return markdown_table(("comparison", "mode", "pairs", "mean diff F1, pts [95% CI]", "median diff", "W",
                           "p (Wilcoxon)", "p (Holm)", "note"), rows)


# ----------------------------------------------------------------------------- tables


def main_table(rows: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Any] | None) -> list[str]:
    """One row per system (and the real clips as the detector's ceiling)."""
    all_rows = list(rows.values())
    fad = metric_key(all_rows, "v2a", "fad[") or "FAD"
    fvd = metric_key(all_rows, "a2v", "fvd[") or "FVD"
    header = ("system", "v2a sync F1 [95% CI]", "chance", "class acc.", "beat hit @100ms", fad,
              "a2v sync F1 [95% CI]", "chance", fvd, "steps", "train min", "sampling s/clip v2a / a2v")
    lines = []
    for row in all_rows:
        f1_v, f1_a = metric(row, "v2a", "sync_v2a_f1"), metric(row, "a2v", "sync_a2v_f1")
        lines.append((row["label"], fmt(f1_v, True), chance(f1_v),
                      fmt(metric(row, "v2a", "sync_v2a_class_accuracy"), True, ci=False),
                      fmt(metric(row, "v2a", "beat_hit_rate_100ms"), True, ci=False),
                      fmt(metric(row, "v2a", fad), False), fmt(f1_a, True), chance(f1_a),
                      fmt(metric(row, "a2v", fvd), False), str(row["steps"]), f"{row['train_minutes']:.1f}",
                      f"{row['sampling_seconds']['v2a']:.2f} / {row['sampling_seconds']['a2v']:.2f}"))
    if reference is not None:
        f1_v, f1_a = metric(reference, "v2a", "sync_v2a_f1"), metric(reference, "a2v", "sync_a2v_f1")
        lines.append(("real clips (detector ceiling)", fmt(f1_v, True), chance(f1_v),
                      fmt(metric(reference, "v2a", "sync_v2a_class_accuracy"), True, ci=False), "", "",
                      fmt(f1_a, True), chance(f1_a), "", "", "", ""))
    return markdown_table(header, lines)


def eta_table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Systems that differ only in the contrastive weight, sorted by eta."""
    ordered = sorted(rows.values(), key=lambda r: r["eta"])
    fad = metric_key(ordered, "v2a", "fad[") or "FAD"
    fvd = metric_key(ordered, "a2v", "fvd[") or "FVD"
    lines = [(f"{r['eta']:g}", r["contrastive"], r["label"], fmt(metric(r, "v2a", "sync_v2a_f1"), True),
              fmt(metric(r, "v2a", "sync_v2a_class_accuracy"), True, ci=False), fmt(metric(r, "v2a", fad), False),
              fmt(metric(r, "a2v", "sync_a2v_f1"), True), fmt(metric(r, "a2v", fvd), False), str(r["steps"]))
             for r in ordered]
    return markdown_table(("eta", "form", "system", "v2a sync F1 [95% CI]", "class acc.", fad,
                           "a2v sync F1 [95% CI]", fvd, "steps"), lines)


def lambda_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per guidance strength lambda."""
    fad = metric_key(rows, "v2a", "fad[") or "FAD"
    fvd = metric_key(rows, "a2v", "fvd[") or "FVD"
    lines = []
    for r in rows:
        f1_v, f1_a = metric(r, "v2a", "sync_v2a_f1"), metric(r, "a2v", "sync_a2v_f1")
        lines.append((f"{r['lambda']:g}", fmt(f1_v, True), chance(f1_v),
                      fmt(metric(r, "v2a", "sync_v2a_class_accuracy"), True, ci=False),
                      fmt(metric(r, "v2a", fad), False), fmt(f1_a, True), chance(f1_a),
                      fmt(metric(r, "a2v", fvd), False),
                      f"{r['sampling_seconds']['v2a']:.2f} / {r['sampling_seconds']['a2v']:.2f}"))
    return markdown_table(("lambda", "v2a sync F1 [95% CI]", "chance", "class acc.", fad, "a2v sync F1 [95% CI]",
                           "chance", fvd, "sampling s/clip v2a / a2v"), lines)


def summary_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation entry without its per-item values (for study.json), baseline point included."""
    out = {k: entry[k] for k in ("point", "lo", "hi", "n", "n_dropped", "kind") if k in entry}
    if "baseline" in entry:
        out["baseline"] = {k: entry["baseline"][k] for k in ("label", "point", "lo", "hi") if k in entry["baseline"]}
    return out
