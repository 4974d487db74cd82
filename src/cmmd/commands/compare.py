"""``cmmd compare RUN_A RUN_B``: two evaluation runs side by side with CIs and paired tests.

Each run is a metrics.json or the folder holding one (``cmmd evaluate --out``). For every
metric both runs report, the table shows A and B with their 95 % bootstrap CIs and, for
per-item metrics, the Wilcoxon signed-rank test on the items both runs share (paired by
condition name; pairs with a NaN are dropped) with its Holm-adjusted p-value over all tested
metrics. Set metrics (FVD, KVD, per-set FAD) have no per-item values: compare their CIs.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.evaluate import load_metrics
from cmmd.eval.report import format_ci
from cmmd.eval.stats import holm_correction, paired_wilcoxon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd compare``."""
    parser.add_argument("run_a", metavar="RUN_A", help="metrics.json of run A, or its folder")
    parser.add_argument("run_b", metavar="RUN_B", help="metrics.json of run B, or its folder")


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric in both runs: ``metric, a, b, kind, p, n_pairs`` (p NaN when untested)."""
    rows = []
    for name in [m for m in a["metrics"] if m in b["metrics"]]:
        ea, eb = a["metrics"][name], b["metrics"][name]
        row = {"metric": name, "a": format_ci(ea), "b": format_ci(eb), "kind": ea["kind"], "p": float("nan"),
               "n_pairs": 0, "why": ""}
        if ea["kind"] == "item" and eb["kind"] == "item":
            shared = sorted(set(ea["per_item"]) & set(eb["per_item"]))
            va = np.array([_number(ea["per_item"][n]) for n in shared])
            vb = np.array([_number(eb["per_item"][n]) for n in shared])
            try:
                test = paired_wilcoxon(va, vb)
                row.update(p=test["p_value"], n_pairs=int(test["n"]))
            except CmmdError as exc:
                row["why"] = str(exc).split(": ", 1)[-1]
        else:
            row["why"] = "set metric: compare the CIs"
        rows.append(row)
    tested = [i for i, r in enumerate(rows) if math.isfinite(r["p"])]
    adjusted = holm_correction([rows[i]["p"] for i in tested]) if tested else []
    for i, p_adj in zip(tested, adjusted):
        rows[i]["p_holm"] = float(p_adj)
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the comparison table."""
    a, b = load_metrics(args.run_a), load_metrics(args.run_b)
    rows = compare_runs(a, b)
    if not rows:
        raise CmmdError(f"{args.run_a} and {args.run_b} share no metric (different embedders or --metrics?)")
    only = sorted(set(a["metrics"]) ^ set(b["metrics"]))
    width = max(len(r["metric"]) for r in rows)
    print(f"A: {a['generated']}\nB: {b['generated']}\n")
    print(f"{'metric':{width}s}  {'A [95% CI]':34s} {'B [95% CI]':34s} {'Wilcoxon p':>10s} {'Holm p':>8s} pairs")
    for r in rows:
        p = f"{r['p']:.3g}" if math.isfinite(r["p"]) else "-"
        holm = f"{r['p_holm']:.3g}" if "p_holm" in r else "-"
        tail = f"{r['n_pairs']}" if r["n_pairs"] else r["why"]
        print(f"{r['metric']:{width}s}  {r['a']:34s} {r['b']:34s} {p:>10s} {holm:>8s} {tail}")
    if only:
        print(f"\nin one run only (not compared): {', '.join(only)}")
    return 0
