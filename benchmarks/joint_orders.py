"""Joint samples' self-consistency under each ``--joint-order``, through ``cmmd generate --mode joint``.

For each order, ``NUM`` unconditional samples of ``SECONDS`` with seeds from ``--split``'s seed
(VALIDATION by default: this is where the sampling choice is made; the TEST split's figure comes
from ``benchmarks/test_split_report.py``), scored by :func:`cmmd.eval.sync.joint.self_consistency`
(video events vs the same sample's audio events, beside another sample's), with the time taken.

    python benchmarks/joint_orders.py src/cmmd/assets/demo-tiny.safetensors --out outputs/joint-orders
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cmmd.data.splits import TEST, VALIDATION
from cmmd.eval.sync.joint import folder_self_consistency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--orders",
                        default="together,audio-first:1,video-first:1,audio-first:2,video-first:2,audio-first:3",
                        help="comma-separated --joint-order values, each with :REDRAWS for the sequential ones")
    args = parser.parse_args()
    split = VALIDATION if args.split == "validation" else TEST
    lines = [f"# Joint self-consistency: `{args.checkpoint}`, {args.num} samples of {args.seconds} s, DDIM "
             f"{args.steps}, seeds {split.seed}.. ({args.split})", "",
             "| joint order:redraws | F1 own audio [95 % CI] | F1 shuffled | video / audio events per sample | s per sample |",
             "|---|---|---|---|---|"]
    report = {}
    for spec in args.orders.split(","):
        order, _, redraws = spec.partition(":")
        flags = ["--joint-order", order] + (["--joint-redraws", redraws] if redraws else [])
        folder = args.out / spec.replace(":", "_")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cmmd.cli", "generate", args.checkpoint, "--mode", "joint", "--num",
                        str(args.num), "--seconds", str(args.seconds), "--seed", str(split.seed), *flags,
                        "--steps", str(args.steps), "--out", str(folder), "--overwrite"], check=True,
                       env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
        seconds = (time.perf_counter() - start) / args.num
        sc = folder_self_consistency(folder)
        report[spec] = {**sc, "seconds_per_sample": seconds}
        lines.append(f"| {spec} | {sc['own']['mean']:.3f} [{sc['own']['lo']:.3f}, {sc['own']['hi']:.3f}] | "
                     f"{sc['shuffled']['mean']:.3f} | {sc['video_events_per_sample']:.1f} / "
                     f"{sc['audio_events_per_sample']:.1f} | {seconds:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
