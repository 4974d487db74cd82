"""``cmmd synth OUT_DIR``: write the synthetic audio-visual benchmark (METHOD.md section 7).

Each clip is ``<scene>_<index:05d>.mp4`` (H.264 + AAC) with a ``.json`` sidecar of its event
times and classes. Rerunning with the same flags resumes: complete clips are kept.
"""

from __future__ import annotations

import argparse

from cmmd.conventions import FPS, SAMPLE_RATE
from cmmd.data.synth import MAX_OBJECTS, SCENES, write_benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd synth``; defaults match ``cmmd.data.synth.write_benchmark``."""
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory for the mp4 + json pairs (created if missing)")
    parser.add_argument("--scene", choices=SCENES, default="impacts", help="impacts: bouncing discs with pitched "
                        "tones at random times; dance: a figure switching pose on the beat (default: impacts)")
    parser.add_argument("--n", type=int, default=100, help="number of clips (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed; clip i uses a seed derived from "
                        "(seed, i), so any subset is reproducible (default: 0)")
    parser.add_argument("--duration", type=float, default=3.6, help="clip length in seconds (default: 3.6)")
    parser.add_argument("--size", type=int, default=64, help="frame width = height in pixels, even (default: 64)")
    parser.add_argument("--fps", type=int, default=FPS, help=f"video frame rate (default: {FPS})")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help=f"audio rate in Hz (default: {SAMPLE_RATE})")
    parser.add_argument("--objects", type=int, default=1, help=f"impacts: bouncing objects per clip, 1-{MAX_OBJECTS} "
                        "(default: 1)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate clips that already exist instead of "
                        "resuming (needed when OUT_DIR holds clips made with other settings)")


def run(args: argparse.Namespace) -> int:
    """Write the benchmark and print what was written, what was kept and how fast."""
    summary = write_benchmark(
        args.out_dir, args.scene, args.n, seed=args.seed, duration=args.duration, size=args.size, fps=args.fps,
        sample_rate=args.sample_rate, n_objects=args.objects, workers=args.workers, overwrite=args.overwrite,
    )
    kept = f", kept {summary.skipped} complete clip(s) from an earlier run" if summary.skipped else ""
    print(
        f"cmmd synth: wrote {summary.written} {args.scene} clip(s){kept} in {summary.seconds:.1f} s "
        f"({summary.clips_per_second:.1f} clips/s) -> {summary.out_dir}"
    )
    return 0
