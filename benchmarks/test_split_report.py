"""Headline figures of a checkpoint on the frozen TEST split, through the commands a user runs.

For impacts clips of the TEST split of :mod:`cmmd.data.splits` (never used for any choice) with
1 object and, as the harder binding scene, 2 and 4 objects: ``cmmd synth`` renders them,
``cmmd generate`` writes the user's outputs (v->a: the clip's own video with vocoded generated
sound, muxed; a->v: generated frames with the clip's own sound), and ``cmmd evaluate`` scores
event sync against the sidecars beside the shuffled-pairs chance level, with bootstrap CIs, and
FVD (our I3D) for a->v. Also the a->v frames' Laplacian energy against the ground truth's
(:func:`cmmd.eval.sharpness.laplacian_ratio`), and joint samples' self-consistency: the video
events of each unconditional sample scored against the same sample's audio events, beside
another sample's (shuffled). Writes ``OUT/report.md`` and ``OUT/report.json``::

    python benchmarks/test_split_report.py src/cmmd/assets/demo-tiny.safetensors --out outputs/test-split
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cmmd.data.media import read_media
from cmmd.data.splits import TEST
from cmmd.eval.sharpness import laplacian_ratio
from cmmd.eval.sync.joint import folder_self_consistency


def cmmd(*args: str) -> None:
    """Run one ``cmmd`` verb as a user would; stop on failure."""
    subprocess.run([sys.executable, "-m", "cmmd.cli", *args], check=True, env={**os.environ, "TQDM_DISABLE": "1"})


def sync_rows(metrics_file: Path, mode: str) -> dict[str, dict[str, float]]:
    """``{key: {mean, lo, hi, chance}}`` of ``cmmd evaluate``'s sync entries for ``mode``."""
    entries = json.loads(metrics_file.read_text())["metrics"]
    out = {}
    for key in ("f1", "precision", "recall", "class_accuracy"):
        e = entries[f"sync_{mode}_{key}"]
        out[key] = {"mean": e["point"], "lo": e["lo"], "hi": e["hi"],
                    "chance": e.get("baseline", {}).get("point", float("nan"))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--objects", default="1,2,4", help="object counts to test (1 is the headline scene)")
    parser.add_argument("--joint", type=int, default=12, help="unconditional joint samples (0: none)")
    parser.add_argument("--joint-order", default="together", help="cmmd generate --joint-order of the joint samples")
    parser.add_argument("--joint-redraws", type=int, default=1, help="cmmd generate --joint-redraws (sequential orders)")
    parser.add_argument("--joint-only", action="store_true", help="only the joint samples' self-consistency")
    args = parser.parse_args()
    report: dict[str, object] = {"checkpoint": args.checkpoint, "clips": args.clips, "seconds": args.seconds,
                                 "steps": args.steps, "split": "test"}
    lines = [f"# TEST split: `{args.checkpoint}`, {args.clips} clips of {args.seconds} s, DDIM {args.steps}",
             "", "| objects | task | event F1 [95 % CI] | precision / recall | class acc. | shuffled F1 |",
             "|---|---|---|---|---|---|"]
    for k in () if args.joint_only else (int(x) for x in args.objects.split(",")):
        seed = TEST.seed if k == 1 else TEST.seed + k  # one clip set per object count, all in TEST
        TEST.check(seed, "clip seed")
        clips = args.out / f"clips_{k}obj"
        cmmd("synth", str(clips), "--scene", "impacts", "--n", str(args.clips), "--seed", str(seed),
             "--duration", str(args.seconds), "--size", "32", "--objects", str(k))
        for mode in ("v2a", "a2v"):
            gen = args.out / f"{mode}_{k}obj"
            cmmd("generate", args.checkpoint, str(clips), "--mode", mode, "--out", str(gen), "--steps",
                 str(args.steps), "--overwrite")
            metrics = "sync,fvd" if mode == "a2v" and k == 1 else "sync"
            cmmd("evaluate", str(gen), str(clips), "--metrics", metrics, "--quiet")
            rows = sync_rows(gen / "evaluation" / "metrics.json", mode)
            report[f"{mode}_{k}obj"] = rows
            f1 = rows["f1"]
            lines.append(f"| {k} | {mode} | {f1['mean']:.3f} [{f1['lo']:.3f}, {f1['hi']:.3f}] | "
                         f"{rows['precision']['mean']:.3f} / {rows['recall']['mean']:.3f} | "
                         f"{rows['class_accuracy']['mean']:.3f} | {f1['chance']:.3f} |")
            if mode == "a2v" and k == 1:
                entries = json.loads((gen / "evaluation" / "metrics.json").read_text())["metrics"]
                fvd = next(v for key, v in entries.items() if key.startswith("fvd"))
                names = sorted(p.stem for p in gen.glob("*.mp4"))
                made = np.concatenate([read_media(gen / f"{n}.mp4").frames for n in names])
                real = np.concatenate([read_media(clips / f"{n}.mp4").frames for n in names])
                report["a2v_fvd"] = {"value": fvd["point"], "ci": [fvd["lo"], fvd["hi"]]}
                report["a2v_laplacian_ratio"] = laplacian_ratio(made, real)
    lines += [] if args.joint_only else ["", f"a->v FVD (our I3D, logits, vs the {args.clips} ground-truth clips): "
              f"{report['a2v_fvd']['value']:.1f} [{report['a2v_fvd']['ci'][0]:.1f}, {report['a2v_fvd']['ci'][1]:.1f}]",
              f"a->v frames' Laplacian energy / ground truth's: {report['a2v_laplacian_ratio']:.2f}"]
    if args.joint:
        joint = args.out / "joint"
        order = ["--joint-order", args.joint_order] + (
            ["--joint-redraws", str(args.joint_redraws)] if args.joint_order != "together" else [])
        cmmd("generate", args.checkpoint, "--mode", "joint", "--num", str(args.joint), "--seconds",
             str(args.seconds), "--seed", str(TEST.seed), *order, "--out", str(joint), "--steps", str(args.steps),
             "--overwrite")
        sc = folder_self_consistency(joint)
        report["joint"] = {**sc, "order": args.joint_order, "redraws": args.joint_redraws, "seed": TEST.seed}
        lines.append(f"joint self-consistency ({args.joint} samples, seeds {TEST.seed}.., --joint-order "
                     f"{' '.join(order[1::2])}): video events vs the same sample's audio "
                     f"events F1 {sc['own']['mean']:.3f} [{sc['own']['lo']:.3f}, {sc['own']['hi']:.3f}], "
                     f"shuffled {sc['shuffled']['mean']:.3f}; events per clip: video "
                     f"{sc['video_events_per_sample']:.1f}, audio {sc['audio_events_per_sample']:.1f}")
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
