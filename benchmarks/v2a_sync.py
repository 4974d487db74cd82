"""Event sync of one or more checkpoints on the same validation clips, side by side.

The demo scores 8 clips of the TEST split; this scores more, from the VALIDATION split of
:mod:`cmmd.data.splits` (disjoint from training and from the demo's test clips), so that
recipes, checkpoints and sampler settings are chosen without looking at the test clips. Scoring
is :func:`cmmd.eval.sync.heldout.score_heldout`, the demo's: per checkpoint and sampler
setting, mean event F1 @ +-100 ms for video -> audio with precision, recall and class accuracy,
the shuffled-pairs chance level, and audio -> video F1. The README's validation figures come from

    python benchmarks/v2a_sync.py src/cmmd/assets/demo-tiny.safetensors --clips 24 [--seconds 1.8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cmmd.data.splits import VALIDATION, read_clips
from cmmd.data.synth import write_benchmark
from cmmd.eval.sync.heldout import score_heldout
from cmmd.pipeline import Pipeline, SamplingSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="run dirs, checkpoint dirs or exported .safetensors")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seed", type=int, default=VALIDATION.seed,
                        help=f"clip set seed, a VALIDATION seed (default {VALIDATION.seed})")
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--sampler", action="append", default=None, metavar="METHOD:STEPS",
                        help="sampler settings to compare, e.g. ddim:50 (repeatable; default ddim:50)")
    args = parser.parse_args()
    VALIDATION.check(args.seed, "--seed")

    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in args.checkpoints:
            pipe = Pipeline.from_checkpoint(ckpt)
            folder = Path(tmp) / f"{pipe.size}px"  # one clip set per frame size, shared by checkpoints
            if not folder.is_dir():
                write_benchmark(folder, "impacts", args.clips, seed=args.seed, duration=args.seconds, size=pipe.size)
            names = sorted(p.stem for p in folder.glob("impacts_*.mp4"))
            clips = read_clips(folder, names, pipe.fps, pipe.sample_rate, pipe.size)
            for spec in args.sampler or ["ddim:50"]:
                method, steps = spec.split(":")
                t0 = time.perf_counter()
                sampling = SamplingSettings(method, int(steps))  # type: ignore[arg-type]
                v2a = pipe.generate("v2a", sampling, frames=clips.frames)
                a2v = pipe.generate("a2v", sampling, wave=clips.waves)
                table = score_heldout(names, clips.metas, v2a.mel, a2v.frames)["table"]
                v2a_mean = {k: table["v2a"][k]["mean"] for k in ("f1", "precision", "recall", "class_accuracy")}
                print(f"{ckpt} (step {pipe.step}) {spec}, {len(names)} clips of {args.seconds} s: "
                      f"v->a F1 {v2a_mean['f1']:.3f} (chance {table['v2a_shuffled']['f1']['mean']:.3f}), "
                      f"precision {v2a_mean['precision']:.3f}, recall {v2a_mean['recall']:.3f}, "
                      f"class accuracy {v2a_mean['class_accuracy']:.3f}; a->v F1 {table['a2v']['f1']['mean']:.3f} "
                      f"(chance {table['a2v_shuffled']['f1']['mean']:.3f}) [{time.perf_counter() - t0:.0f} s]",
                      flush=True)


if __name__ == "__main__":
    main()
