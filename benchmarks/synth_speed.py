"""Throughput of the synthetic benchmark on one core: render + encode N clips, workers=1.

Prints clips/s and the extrapolated seconds per 1,000 clips per core (target: under 60 s at the
defaults, 3.6 s clips at 64x64), with the split between rendering and encoding so a regression
points at its stage. "Per core" is measured as this process's CPU time, which other jobs on a
shared machine inflate far less than wall time; wall-clock figures are printed too. Run with one
thread per library so that one process is one core:

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py --n 200
"""

from __future__ import annotations

import argparse
import tempfile
import time

from cmmd.data.synth import SCENES, render_clip, write_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="clips to generate (default: 200)")
    parser.add_argument("--scene", choices=SCENES, default="impacts")
    parser.add_argument("--duration", type=float, default=3.6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--objects", type=int, default=1)
    args = parser.parse_args()

    cpu, wall = time.process_time(), time.perf_counter()
    for seed in range(args.n):
        render_clip(args.scene, seed, args.duration, args.size, n_objects=args.objects)
    render_cpu = (time.process_time() - cpu) / args.n
    render_wall = (time.perf_counter() - wall) / args.n

    with tempfile.TemporaryDirectory() as out_dir:
        cpu = time.process_time()
        summary = write_benchmark(
            out_dir, args.scene, args.n, duration=args.duration, size=args.size, n_objects=args.objects, workers=1
        )
        clip_cpu = (time.process_time() - cpu) / summary.written
    clip_wall = summary.seconds / summary.written
    print(
        f"{args.scene}, {args.duration} s clips, {args.size}x{args.size}, {args.objects} object(s), "
        f"{summary.written} clips, 1 worker"
    )
    print(f"  wall: {summary.clips_per_second:.1f} clips/s, {1000 * clip_wall:.1f} ms per clip "
          f"(render {1000 * render_wall:.1f} ms, encode + write {1000 * (clip_wall - render_wall):.1f} ms)")
    print(f"  CPU:  {1 / clip_cpu:.1f} clips/s, {1000 * clip_cpu:.1f} ms per clip "
          f"(render {1000 * render_cpu:.1f} ms, encode + write {1000 * (clip_cpu - render_cpu):.1f} ms)")
    print(f"  {1000 * clip_cpu:.1f} s per 1,000 clips per core (CPU time; {1000 * clip_wall:.1f} s wall here); "
          "target < 60 s")


if __name__ == "__main__":
    main()
