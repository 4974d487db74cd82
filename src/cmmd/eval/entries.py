"""Metric entries of metrics.json: per-item and per-set values with 95 % bootstrap CIs.

An item entry holds the mean over each condition's K generations (``per_item``, what ``cmmd
compare`` tests pairwise) and a CI over conditions; a set entry averages a statistic over the K
generation rounds and its CI resamples the conditions. NaN per-item values are dropped from the
CI and counted as ``n_dropped`` (:func:`cmmd.eval.stats.bootstrap_ci`). An item entry may carry
a ``baseline`` (the same statistic for reference clips or at chance level) and, for the shuffled-
pairs chance level, ``vs_baseline``: the paired comparison of each condition against its own
chance level (:func:`shuffled_comparison`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # installed with librosa (via scikit-learn)

from cmmd.eval.settings import EvalSettings
from cmmd.eval.stats import bootstrap_ci, paired_wilcoxon

SHUFFLED_LABEL = "shuffled pairs (chance level)"
MIN_PAIRS = 6  # paired_wilcoxon's minimum: with 5 pairs no two-sided p falls below 0.05

# Frechet distances here run in bootstrap loops: the eigendecomposition route, equal to sqrtm's
# value and several times faster (cmmd.eval.distances.frechet_distance).
FRECHET_METHOD = "eigh"


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float("nan") if np.all(np.isnan(arr)) else float(np.nanmean(arr))


def item_metric(per_generation: Mapping[str, Sequence[float]], names: Sequence[str], settings: EvalSettings,
                description: str, lower_is_better: bool | None, **extra: Any) -> dict[str, Any]:
    """A per-item metric: mean over each condition's generations, bootstrap CI over conditions."""
    per_item = {n: _nanmean(per_generation[n]) for n in names if n in per_generation}
    ci = bootstrap_ci(list(per_item.values()), n_boot=settings.n_boot, seed=settings.seed)
    entry: dict[str, Any] = {"kind": "item", "point": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
                             "n_dropped": ci.n_dropped, "lower_is_better": lower_is_better,
                             "description": description, "per_item": per_item}
    if any(len(v) > 1 for v in per_generation.values()):
        entry["per_generation"] = {n: [float(x) for x in per_generation[n]] for n in per_item}
    entry.update(extra)
    return entry


def baseline(values: Sequence[float], settings: EvalSettings, label: str) -> dict[str, Any]:
    """The same statistic for a reference (reference clips, chance level): mean, CI, values."""
    ci = bootstrap_ci(values, n_boot=settings.n_boot, seed=settings.seed)
    return {"label": label, "point": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
            "values": [float(v) for v in values]}


def paired_difference(own: Sequence[float], other: Sequence[float], settings: EvalSettings) -> dict[str, Any]:
    """Own minus other, paired by condition: ``diff`` (mean difference) with its 95 % bootstrap
    CI ``lo``, ``hi``, the two-sided Wilcoxon signed-rank ``p`` (:func:`cmmd.eval.stats.paired_wilcoxon`)
    and ``n`` (pairs without a NaN). Below ``MIN_PAIRS`` pairs ``p`` is NaN and ``why`` says so."""
    a, b = np.asarray(own, dtype=np.float64), np.asarray(other, dtype=np.float64)
    ci = bootstrap_ci(a - b, n_boot=settings.n_boot, seed=settings.seed)
    out: dict[str, Any] = {"diff": ci.point, "lo": ci.lo, "hi": ci.hi, "p": float("nan"), "n": ci.n,
                           "test": "two-sided Wilcoxon signed-rank (Pratt zeros), own vs baseline per condition"}
    if ci.n < MIN_PAIRS:
        out["why"] = f"{ci.n} complete pair(s); the signed-rank test needs at least {MIN_PAIRS}"
    else:
        out["p"] = paired_wilcoxon(a, b, min_pairs=MIN_PAIRS)["p_value"]
    return out


def shuffled_comparison(own: Mapping[str, Sequence[float]], shuffled: Mapping[str, Sequence[float]],
                        names: Sequence[str], settings: EvalSettings) -> dict[str, Any]:
    """``baseline`` and ``vs_baseline`` of an item entry: ``own[name]`` are a condition's values
    per generation against its own reference, ``shuffled[name]`` the same generations against
    another condition's reference (a derangement); both are averaged per condition as in
    :func:`item_metric` and compared pair by pair (:func:`paired_difference`)."""
    a = [_nanmean(own[n]) for n in names]
    b = [_nanmean(shuffled[n]) for n in names]
    return {"baseline": baseline(b, settings, SHUFFLED_LABEL), "vs_baseline": paired_difference(a, b, settings)}


def set_metric(round_value: Callable[[int, np.ndarray], float], n_items: int, rounds: int,
               settings: EvalSettings, description: str, **extra: Any) -> dict[str, Any]:
    """A set-level metric: ``round_value(k, item_indices)`` averaged over the K rounds; the CI
    resamples the conditions (with replacement) and recomputes the average."""
    all_items = np.arange(n_items)

    def statistic(idx: np.ndarray) -> float:
        chosen = np.asarray(idx, dtype=np.int64)
        return float(np.mean([round_value(k, chosen) for k in range(rounds)]))

    # Hundreds of small (D <= 2048) eigendecompositions: one BLAS thread each is several times
    # faster than a thread pool, and much faster on a shared machine.
    with threadpool_limits(limits=1, user_api="blas"):
        per_round = [round_value(k, all_items) for k in range(rounds)]
        ci = bootstrap_ci(all_items, n_boot=settings.set_boot, seed=settings.seed, statistic=statistic)
    return {"kind": "set", "point": float(np.mean(per_round)), "lo": ci.lo, "hi": ci.hi, "n": n_items,
            "n_dropped": 0, "lower_is_better": True, "description": description, "per_round": per_round, **extra}
