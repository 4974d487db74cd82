"""Event sync of one or more checkpoints on the same validation clips, side by side.

The demo scores 8 clips; this scores more, from a clip seed disjoint from training (seeds from 0)
and from the demo's test clips (1,000,003), so that recipes can be compared without tuning on
the demo's clips. Scoring is the demo's own (:func:`cmmd.apps.demo.evaluate_sync`): per checkpoint and
sampler setting, mean event F1 @ +-100 ms for video -> audio with precision, recall and class
accuracy, the shuffled-pairs chance level, and audio -> video F1. The README's validation figures
come from

    python benchmarks/v2a_sync.py src/cmmd/assets/demo-tiny.safetensors --clips 24 [--seconds 1.8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cmmd.data.synth import write_benchmark
from cmmd.apps.demo import DemoSettings, evaluate_sync
from cmmd.pipeline import Pipeline

VALIDATION_SEED = 2_000_003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="run dirs, checkpoint dirs or exported .safetensors")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED, help="clip seed of the validation set")
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--sampler", action="append", default=None, metavar="METHOD:STEPS",
                        help="sampler settings to compare, e.g. ddim:50 (repeatable; default ddim:50)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in args.checkpoints:
            pipe = Pipeline.from_checkpoint(ckpt)
            clips = Path(tmp) / f"{pipe.size}px"  # one clip set per frame size, shared by checkpoints
            if not clips.is_dir():
                write_benchmark(clips, "impacts", args.clips, seed=args.seed, duration=args.seconds, size=pipe.size)
            names = sorted(p.stem for p in clips.glob("impacts_*.mp4"))
            for spec in args.sampler or ["ddim:50"]:
                method, steps = spec.split(":")
                t0 = time.perf_counter()
                settings = DemoSettings(clips=len(names), seconds=args.seconds, method=method, steps=int(steps))
                table = evaluate_sync(pipe, clips, names, settings)["table"]
                v2a = {k: table["v2a"][k]["mean"] for k in ("f1", "precision", "recall", "class_accuracy")}
                print(f"{ckpt} (step {pipe.step}) {spec}, {len(names)} clips of {args.seconds} s: "
                      f"v->a F1 {v2a['f1']:.3f} (chance {table['v2a_shuffled']['f1']['mean']:.3f}), "
                      f"precision {v2a['precision']:.3f}, recall {v2a['recall']:.3f}, "
                      f"class accuracy {v2a['class_accuracy']:.3f}; a->v F1 {table['a2v']['f1']['mean']:.3f} "
                      f"(chance {table['a2v_shuffled']['f1']['mean']:.3f}) [{time.perf_counter() - t0:.0f} s]",
                      flush=True)


if __name__ == "__main__":
    main()
