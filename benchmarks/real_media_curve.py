"""Learning curve of a run on real clips: v2a onset F1 and beat hit against shuffled pairs, per
checkpoint.

For every checkpoint of RUN (``RUN/checkpoints/step_*``, or those given with ``--steps``) it runs
what a user runs, ``cmmd generate CKPT CLIPS --mode v2a`` then ``cmmd evaluate OUT CLIPS --metrics
onset,beat``, and tabulates each checkpoint's onset F1 and beat hit rate (+-100 ms) on the
generated (vocoded) audio, the shuffled-pairs chance level, the paired difference with its 95 %
bootstrap CI and the Wilcoxon p, beside the run's training seconds at that step. CLIPS should be
a validation folder (``cmmd real-media cut data/real/validation CLIPS --seconds 6``): choices are
made there, the test split is scored once at the end. Usage::

    python benchmarks/real_media_curve.py RUN CLIPS OUT [--steps 500,2000] [--sampler ddim:50]
        [--window native] [--vocoder griffinlim]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

KEYS = ("onset_f1", "beat_hit_rate_100ms")


def checkpoints(run: Path, steps: list[int] | None) -> list[tuple[int, Path]]:
    """``(step, dir)`` of the run's checkpoints, oldest first (only ``steps`` when given)."""
    found = {int(p.name.split("_")[1]): p for p in (run / "checkpoints").glob("step_*") if p.is_dir()}
    if not found:
        raise SystemExit(f"{run}/checkpoints: no step_* checkpoints")
    if steps:
        missing = sorted(set(steps) - set(found))
        if missing:
            raise SystemExit(f"{run}: no checkpoint at step(s) {missing}; it has {sorted(found)}")
        return [(s, found[s]) for s in sorted(steps)]
    return sorted(found.items())


def train_seconds(run: Path) -> dict[int, float]:
    """Training seconds at each logged step (``RUN/log.csv``), summed over invocations: a resumed
    run's log restarts its clock, which is continued from the last row before the restart."""
    log = run / "log.csv"
    if not log.is_file():
        return {}
    out, offset, last = {}, 0.0, 0.0
    with log.open() as f:
        for r in csv.DictReader(f):
            seconds = float(r["seconds"])
            if seconds + offset < last:
                offset = last
            last = seconds + offset
            out[int(r["step"])] = last
    return out


def cmmd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cmmd.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("clips", type=Path, help="folder of real clips (video + audio)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", default="", help="comma-separated checkpoint steps (default: all)")
    parser.add_argument("--sampler", default="ddim:50", help="METHOD:STEPS")
    parser.add_argument("--window", default="", help="passed to cmmd generate --window (default: whole clip)")
    parser.add_argument("--vocoder", default="griffinlim")
    args = parser.parse_args()
    method, n_steps = args.sampler.split(":")
    seconds = train_seconds(args.run)
    rows = []
    for step, ckpt in checkpoints(args.run, [int(s) for s in args.steps.split(",") if s]):
        out = args.out / f"step_{step:08d}"
        metrics = out / "evaluation" / "metrics.json"
        if not metrics.is_file():
            extra = ["--window", args.window] if args.window else []
            cmmd("generate", str(ckpt), str(args.clips), "--mode", "v2a", "--out", str(out), "--method", method,
                 "--steps", n_steps, "--vocoder", args.vocoder, *extra)
            cmmd("evaluate", str(out), str(args.clips), "--metrics", "onset,beat", "--quiet")
        result = json.loads(metrics.read_text())["metrics"]
        row = {"step": step, "train_seconds": seconds.get(step)}
        for key in KEYS:
            m = result[key]
            row[key] = {"own": m["point"], "lo": m["lo"], "hi": m["hi"], "shuffled": m["baseline"]["point"],
                        **{f"diff_{k}": m["vs_baseline"][k] for k in ("diff", "lo", "hi", "p")}}
        rows.append(row)
    (args.out / "curve.json").write_text(json.dumps({"run": str(args.run), "clips": str(args.clips),
                                                      "sampler": args.sampler, "window": args.window,
                                                      "vocoder": args.vocoder, "rows": rows}, indent=1))
    print("| step | train s | onset F1 | shuffled | diff [95 % CI] | p | beat hit | shuffled | diff [95 % CI] | p |")
    print("|---:|---:|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for key in KEYS:
            m = r[key]
            cells += [f"{m['own']:.3f}", f"{m['shuffled']:.3f}",
                      f"{m['diff_diff']:+.3f} [{m['diff_lo']:+.3f}, {m['diff_hi']:+.3f}]", f"{m['diff_p']:.2g}"]
        secs = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        print(f"| {r['step']} | {secs} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
