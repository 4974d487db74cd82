"""Video -> audio event sync of one or more checkpoints on the same validation clips, side by side.

The demo scores 8 clips; this scores more, from a clip seed disjoint from training (seeds from 0)
and from the demo's test clips (1,000,003), so that recipes can be compared without tuning on
the demo's clips. Prints mean event F1 @ +-100 ms, precision, recall and class accuracy per
checkpoint and sampler setting, with the shuffled-pairs chance level. The README's validation
figures come from

    python benchmarks/v2a_sync.py checkpoints/demo-tiny.safetensors --clips 24 [--seconds 1.8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cmmd.data.media import read_media
from cmmd.data.synth import write_benchmark
from cmmd.eval.sync import clip_sync_scores, shuffled_baseline
from cmmd.pipeline import Pipeline, SamplingSettings

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
    samplers = args.sampler or ["ddim:50"]

    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp)
        for ckpt in args.checkpoints:
            pipe = Pipeline.from_checkpoint(ckpt)
            if not any(clips.iterdir()):
                write_benchmark(clips, "impacts", args.clips, seed=args.seed, duration=args.seconds, size=pipe.size)
            names = sorted(p.stem for p in clips.glob("impacts_*.mp4"))
            metas = [json.loads((clips / f"{n}.json").read_text()) for n in names]
            frames = np.stack([read_media(clips / f"{n}.mp4", fps=pipe.fps, sample_rate=pipe.sample_rate,
                                          size=pipe.size).frames for n in names])
            for spec in samplers:
                method, steps = spec.split(":")
                t0 = time.perf_counter()
                mels = pipe.generate("v2a", SamplingSettings(method, int(steps)), frames=frames).mel
                rows = [clip_sync_scores(m, None, meta, "v2a", 0.1) for m, meta in zip(mels, metas)]
                chance = shuffled_baseline(list(mels), [None] * len(names), metas, "v2a", 0.1)
                mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("f1", "precision", "recall",
                                                                               "class_accuracy")}
                print(f"{ckpt} (step {pipe.step}) {spec}, {len(names)} clips of {args.seconds} s: "
                      f"F1 {mean['f1']:.3f} (chance {np.mean([c['f1'] for c in chance]):.3f}), "
                      f"precision {mean['precision']:.3f}, recall {mean['recall']:.3f}, "
                      f"class accuracy {mean['class_accuracy']:.3f} [{time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
