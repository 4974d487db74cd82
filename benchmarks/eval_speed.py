"""Time ``cmmd evaluate`` per metric on synthetic clips and extrapolate to a 500-clip test set.

Writes N reference and N "generated" impacts clips (3.6 s, 64 px, 10 fps, 16 kHz; the generated
ones are other seeds under the same names), evaluates them with every metric and the default
settings into a fresh feature cache (cold: every feature computed), then again (warm: every
feature from the cache), and prints the seconds per stage, per clip, and extrapolated linearly
to 500 reference + 500 generated clips and to the paper's pairwise protocol (500 + 5 x 500).
Set statistics (bootstraps) scale with the number of conditions, not of generations x K, and
are extrapolated linearly in N, which overestimates the FVD/KVD part (dominated by D = 400
eigendecompositions).

Needs the fetched weights (``cmmd fetch-weights``). Usage, from the repository root:

    .venv/bin/python benchmarks/eval_speed.py [--n 50] [--workdir /tmp/cmmd-eval-speed]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from cmmd.data.synth import write_benchmark
from cmmd.eval.evaluate import EvalSettings, evaluate
from cmmd.weights import cache_dir, i3d_weights_path

PER_CLIP = ("i3d_features", "fad_embeddings", "beat", "sync", "offset", "hashing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="clips per side (default: 50)")
    parser.add_argument("--workdir", default=None, help="where clips and the feature cache go (default: a temp dir)")
    args = parser.parse_args()
    weights = i3d_weights_path().parent
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cmmd-eval-speed-"))
    shutil.rmtree(work / "cache", ignore_errors=True)
    (work / "cache").mkdir(parents=True)
    (work / "cache" / "weights").symlink_to(weights)
    os.environ["CMMD_CACHE"] = str(work / "cache")
    write_benchmark(work / "ref", "impacts", args.n, seed=0)
    write_benchmark(work / "gen", "impacts", args.n, seed=1)
    gen = work / "gen"
    for path in gen.glob("*.json"):
        path.unlink()  # generated clips have no sidecars; the reference's are used

    settings = EvalSettings()
    print(f"{args.n} reference + {args.n} generated clips, 3.6 s, 64 px; torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; cache {cache_dir()}")
    runs = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        result = evaluate(gen, work / "ref", settings, progress=False)
        runs[label] = (time.perf_counter() - start, result["timings_s"])
    cold_total, cold = runs["cold"]
    warm_total, warm = runs["warm"]
    clips = 2 * args.n
    print(f"\n{'stage':18s} {'cold s':>8s} {'s/clip':>8s} {'warm s':>8s} {'500+500 min':>12s} {'500+5x500 min':>14s}")
    for stage, (cold_s, warm_s) in split_stages(cold, warm).items():
        if stage in PER_CLIP:
            per_clip = cold_s / clips
            print(f"{stage:18s} {cold_s:8.1f} {per_clip:8.3f} {warm_s:8.1f} {per_clip * 1000 / 60:12.1f} "
                  f"{per_clip * 3000 / 60:14.1f}")
        else:
            scaled = cold_s * 500 / args.n / 60
            print(f"{stage:18s} {cold_s:8.1f} {'':8s} {warm_s:8.1f} {scaled:12.1f} {scaled:14.1f}")
    print(f"{'total':18s} {cold_total:8.1f} {'':8s} {warm_total:8.1f}")
    print(f"\nstatistics = bootstrap CIs ({settings.set_boot} resamples of the conditions) of the set metrics and "
          "per-sample FADs; beat/sync/offset include decoding; s/clip divides by all clips (reference + generated).")


def split_stages(cold: dict[str, float], warm: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per-stage seconds with the set statistics separated from their feature extraction."""
    out = {}
    for stage in ("hashing", "i3d_features", "fad_embeddings", "beat", "sync", "offset"):
        out[stage] = (cold.get(stage, 0.0), warm.get(stage, 0.0))
    out["fvd_kvd_statistics"] = (cold["fvd_kvd"] - cold["i3d_features"], warm["fvd_kvd"] - warm["i3d_features"])
    out["fad_statistics"] = (cold["fad"] - cold["fad_embeddings"], warm["fad"] - warm["fad_embeddings"])
    return out

if __name__ == "__main__":
    main()
