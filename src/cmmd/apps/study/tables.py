"""Study statistics and tables: per-run metrics, seeds pooled, paired tests with their power,
eta and lambda sweeps, validation curves.

A *row* is a plain dict per run (or per lambda) holding the evaluation results of its v2a and
a2v outputs (``metrics[mode]``: the ``metrics`` of ``cmmd.eval.evaluate``), steps reached,
training minutes and sampling seconds per clip. A *pooled* row (:func:`pool_seeds`) has the same
``metrics`` shape for the primary metrics, each clip's value the mean over the system's seeds.
Tables are markdown (printed and written to ``study.md``); the same numbers go to ``study.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from cmmd.eval.stats import bootstrap_ci, holm_correction, paired_wilcoxon

MIN_PAIRS = 6  # paired_wilcoxon's default: with 5 or fewer pairs no two-sided p can fall below 0.05
ALPHA, POWER = 0.05, 0.8


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
                           "sd_diff": float(np.std(d, ddof=1)) if d.size >= 2 else math.nan,
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


def min_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean paired difference a two-sided test at level ``alpha`` detects with
    probability ``power``, from the SD ``sd`` of the paired differences and ``n`` pairs:
    ``(z_{1-alpha/2} + z_power) * sd / sqrt(n)`` (normal approximation of the paired t / z
    test; for the Wilcoxon signed-rank test an approximation, its efficiency relative to the
    t test being 0.955 for normal differences). NaN for ``n < 2`` or a non-finite ``sd``."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / math.sqrt(n)


DEFAULT_KEYS = {"v2a": "sync_v2a_f1", "a2v": "sync_a2v_f1"}


def paired_tests(rows: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], n_boot: int = 2000,
                 seed: int = 0, keys: Mapping[str, str | None] = DEFAULT_KEYS,
                 alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Per-clip ``keys[mode]`` (default: sync F1) of each pair ``(a, b)`` in v2a and a2v, with
    Holm-adjusted p-values over all tests that have one (``p_holm``; NaN where the test is
    undefined) and each test's power: the SD of its paired differences (``sd_diff``) and the
    smallest mean difference detectable with 80 % power at the Holm family's strictest level,
    ``alpha`` / (number of tests) (``mde``, ``alpha_level``)."""
    tests = []
    for a, b in pairs:
        for mode in ("v2a", "a2v"):
            key = keys.get(mode)
            ea, eb = (metric(rows[a], mode, key), metric(rows[b], mode, key)) if key else (None, None)
            if ea is None or eb is None:
                continue
            tests.append({"a": a, "b": b, "mode": mode, "metric": key,
                          **paired_test(ea["per_item"], eb["per_item"], n_boot, seed)})
    finite = [i for i, t in enumerate(tests) if _finite(t["p_value"])]
    adjusted = holm_correction([tests[i]["p_value"] for i in finite]) if finite else []
    level = alpha / max(1, len(tests))
    for t in tests:
        t["p_holm"] = math.nan
        t["alpha_level"] = level
        t["mde"] = min_detectable_difference(t["sd_diff"], t["n"], level)
    for i, p in zip(finite, adjusted):
        tests[i]["p_holm"] = float(p)
    return tests


def _signed(x: float, scale: float) -> str:
    return f"{scale * x:+.1f}" if _finite(x) else "n/a"


def tests_table(tests: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                units: Mapping[str, tuple[str, float, str]] | None = None) -> list[str]:
    """Markdown table of :func:`paired_tests`; ``units[mode]`` = (metric label, factor, unit) of
    the values (default: F1 in points)."""
    def p(x: float) -> str:
        return f"{x:.3g}" if _finite(x) else "n/a"

    rows = []
    for t in tests:
        name, scale, unit = (units or {}).get(t["mode"], ("F1", 100.0, "pts"))
        diff = (f"{_signed(t['mean_diff'], scale)} [{_signed(t['lo'], scale)}, {_signed(t['hi'], scale)}]"
                if _finite(t["mean_diff"]) else "n/a")
        mde = f"{scale * t['mde']:.1f}" if _finite(t.get("mde", math.nan)) else "n/a"
        rows.append((f"{labels[t['a']]} - {labels[t['b']]}", t["mode"], f"{name}, {unit}", str(t["n"]), diff,
                     _signed(t["median_diff"], scale), p(t["statistic"]), p(t["p_value"]), p(t["p_holm"]), mde,
                     t["reason"] or ""))
    return markdown_table(("comparison", "mode", "metric", "pairs", "mean diff [95% CI]", "median diff", "W",
                           "p (Wilcoxon)", "p (Holm)", "MDE (80% power)", "note"), rows)


# ----------------------------------------------------------------------------- seeds


def _seed_means(table: np.ndarray) -> np.ndarray:
    """(seeds, clips) -> (clips,): each clip's mean over the seeds that have it (NaN where none do)."""
    counts = (~np.isnan(table)).sum(axis=0)
    return np.where(counts > 0, np.nansum(table, axis=0) / np.maximum(counts, 1), np.nan)


def shuffled_per_item(entry: Mapping[str, Any]) -> dict[str, float] | None:
    """Per clip, the entry's outputs scored against another clip's reference (its shuffled-pairs
    ``baseline``), or None where the entry has no baseline per clip (none, or one per generation
    in metrics written before sync baselines were kept per condition with several generations)."""
    values = (entry.get("baseline") or {}).get("values")
    if values is None or len(values) != len(entry["per_item"]):
        return None
    return {name: float(v) for name, v in zip(entry["per_item"], values)}


def pool_seeds(runs: Sequence[Mapping[str, Any]], keys: Mapping[str, str | None], n_boot: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """One system's runs (rows of one seed each) pooled: per clip, the mean over seeds of each
    primary metric ``keys[mode]`` (NaN where every seed is NaN), its mean over clips with a
    bootstrap CI over clips, and the per-seed means (the seed-level spread: their SD).
    Returns ``{"metrics": {mode: {key: entry}}, "seeds": [...], "per_seed": {mode: [...]},
    "seed_sd": {mode: sd}}``; an entry has ``point``, ``lo``, ``hi``, ``n``, ``per_item`` and, where
    every seed's entry has a shuffled-pairs baseline per clip, ``shuffled_per_item`` (pooled alike)."""
    metrics: dict[str, dict[str, Any]] = {}
    per_seed: dict[str, list[float]] = {}
    seed_sd: dict[str, float] = {}
    for mode, key in keys.items():
        entries = [metric(r, mode, key) for r in runs] if key else []
        if not entries or any(e is None for e in entries):
            continue
        names = sorted(set().union(*(e["per_item"] for e in entries)))
        table = np.array([[np.nan if e["per_item"].get(n) is None else float(e["per_item"][n]) for n in names]
                          for e in entries], dtype=float)  # (seeds, clips)
        clip_means = _seed_means(table)
        ci = bootstrap_ci(clip_means, n_boot=n_boot, seed=seed)
        metrics[mode] = {key: {"kind": "item", "point": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
                               "n_dropped": ci.n_dropped, "per_item": dict(zip(names, clip_means.tolist()))}}
        shuffled = [shuffled_per_item(e) for e in entries]
        if all(sh is not None for sh in shuffled):
            chance = np.array([[sh.get(n, np.nan) for n in names] for sh in shuffled], dtype=float)
            metrics[mode][key]["shuffled_per_item"] = dict(zip(names, _seed_means(chance).tolist()))
        per_seed[mode] = [float(e["point"]) for e in entries]
        finite = [v for v in per_seed[mode] if math.isfinite(v)]
        seed_sd[mode] = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    return {"metrics": metrics, "seeds": [r.get("seed") for r in runs], "per_seed": per_seed, "seed_sd": seed_sd}


def chance_tests(pooled: Mapping[str, Mapping[str, Any]], keys: Mapping[str, str | None], n_boot: int = 2000,
                 seed: int = 0, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Has each system learned sync at all? Its pooled per-clip score ``keys[mode]`` against the
    same outputs scored against shuffled pairs (``shuffled_per_item`` of :func:`pool_seeds`), as
    :func:`paired_tests` with ``b`` = ``"<system> shuffled"``: Wilcoxon, bootstrap CI, Holm over
    these tests (a family of their own), MDE."""
    rows: dict[str, Mapping[str, Any]] = {}
    pairs = []
    for name, row in pooled.items():
        chance = {mode: {key: {"per_item": entry["shuffled_per_item"]}} for mode, key in keys.items()
                  if key and (entry := metric(row, mode, key)) is not None and "shuffled_per_item" in entry}
        if chance:
            rows[name], rows[f"{name} shuffled"] = row, {"metrics": chance}
            pairs.append((name, f"{name} shuffled"))
    return paired_tests(rows, pairs, n_boot, seed, keys, alpha)


def seeds_table(pooled: Mapping[str, Mapping[str, Any]], keys: Mapping[str, str | None],
                units: Mapping[str, tuple[str, float, str]]) -> list[str]:
    """Per system and mode: the per-seed means, their mean and SD, and the pooled per-clip mean [CI]."""
    lines = []
    for row in pooled.values():
        for mode, key in keys.items():
            entry = metric(row, mode, key) if key else None
            if entry is None:
                continue
            _, scale, _ = units[mode]
            seeds = ", ".join(f"{scale * v:.1f}" if math.isfinite(v) else "n/a" for v in row["per_seed"][mode])
            finite = [v for v in row["per_seed"][mode] if math.isfinite(v)]
            mean = f"{scale * float(np.mean(finite)):.1f}" if finite else "n/a"
            sd = f"{scale * row['seed_sd'][mode]:.1f}" if _finite(row["seed_sd"][mode]) else "n/a"
            ci = (f"{scale * entry['point']:.1f} [{scale * entry['lo']:.1f}, {scale * entry['hi']:.1f}]"
                  if _finite(entry["point"]) else "n/a")
            lines.append((row["label"], mode, f"{units[mode][0]}, {units[mode][2]}", str(len(row["per_seed"][mode])),
                          seeds, mean, sd, ci))
    return markdown_table(("system", "mode", "metric", "seeds", "per-seed means", "mean of seeds", "SD over seeds",
                           "pooled per-clip mean [95% CI]"), lines)


# ----------------------------------------------------------------------------- validation curves


def curve_table(curves: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], mode: str,
                scale: float) -> list[str]:
    """Validation metric of ``mode`` against training steps: one column per system, the mean over
    its runs (seeds) with the SD over seeds where there are several. ``curves[system]`` maps a
    run name to its curve (``points``: step -> mode -> entry)."""
    systems = list(curves)
    steps = sorted({int(step) for runs in curves.values() for c in runs.values() for step in c["points"]})
    lines = []
    for step in steps:
        cells = [str(step)]
        for system in systems:
            values = [float(c["points"][str(step)][mode]["point"]) for c in curves[system].values()
                      if str(step) in c["points"] and mode in c["points"][str(step)]
                      and _finite(c["points"][str(step)][mode]["point"])]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{scale * values[0]:.1f}")
            else:
                cells.append(f"{scale * float(np.mean(values)):.1f} +- {scale * float(np.std(values, ddof=1)):.1f}")
        lines.append(cells)
    return markdown_table(("step", *(labels[s] for s in systems)), lines)


# ----------------------------------------------------------------------------- tables


def steps_cell(row: Mapping[str, Any]) -> str:
    """A row's training steps: ``800``, or for a fine-tune ``800 + 200 ft`` (the steps of the
    runs it starts from, then its own)."""
    init = row.get("init")
    return str(row["steps"]) if not init else f"{init['steps']} + {row['steps']} ft"


def minutes_cell(row: Mapping[str, Any]) -> str:
    """A row's training wall minutes: its run's, or for a fine-tune the sum with the runs it
    starts from, the parts in brackets (``12.0 (10.0 + 2.0)``)."""
    init = row.get("init")
    if not init:
        return f"{row['train_minutes']:.1f}"
    return (f"{init['train_minutes'] + row['train_minutes']:.1f} "
            f"({init['train_minutes']:.1f} + {row['train_minutes']:.1f})")


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
                      fmt(metric(row, "a2v", fvd), False), steps_cell(row), minutes_cell(row),
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
