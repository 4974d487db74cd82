"""``cmmd evaluate GENERATED REFERENCE``: FVD/KVD, FAD, beat hit rate, onset F1, sync and AV offset with CIs.

Writes ``metrics.json`` (every aggregated metric with its bootstrap 95 % CI, per-item values,
embedder names, settings, code version) and ``report.md`` / ``report.html`` with plots into
``--out`` (default ``GENERATED/evaluation``). See ``cmmd.eval.evaluate`` and docs/EVALUATION.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmmd.data.failures import Skipped, write_failures
from cmmd.errors import CmmdError
from cmmd.eval.embedders import DEFAULT_CREPE_HOP
from cmmd.eval.evaluate import METRICS, EvalSettings, evaluate, write_metrics
from cmmd.eval.i3d import FVD_FRAMES
from cmmd.eval.report import metric_rows, write_report
from cmmd.weights import CACHE_ENV

EPILOG = """Metrics that need no sidecar, for real media: beat (beat hit rate, beats tracked in the generated
vs the reference audio) and onset (onset F1/precision/recall, onsets detected in the generated vs
the reference audio with one librosa detector, matched one-to-one within --sync-tolerance). Both
come with the shuffled-pairs chance level as baseline (each generated file scored against another
condition's reference) and a paired comparison per condition: own - baseline, mean with 95 %
bootstrap CI and the two-sided Wilcoxon signed-rank p (needs at least 6 conditions).

Files that cannot be used (unreadable, truncated, junk bytes, no video stream where a video
metric needs one, no audio where an audio metric needs it) are skipped with their condition,
on either side: listed by name and reason here and in OUT/failures.jsonl; the other conditions
are evaluated. The exit status is non-zero only when no condition is left to evaluate."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd evaluate``; defaults are ``EvalSettings``'s."""
    d = EvalSettings()
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("generated", metavar="GENERATED", help="folder of generated clips: <name>.mp4 or "
                        "<name>__g<k>.mp4 (k-th generation of condition <name>); mp4/mkv/mov/webm/avi/wav/flac/...")
    parser.add_argument("reference", metavar="REFERENCE", help="folder of reference clips <name>.<ext>, optionally "
                        "with synthetic-benchmark sidecars <name>.json")
    parser.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRICS)} "
                        "(default: all that apply; video metrics are skipped for audio-only files)")
    parser.add_argument("--out", default=None, help="output folder (default: GENERATED/evaluation)")
    parser.add_argument("--pairwise", type=int, default=None, metavar="K", help="require exactly K generations per "
                        "condition (the paper uses 5); default: whatever the folder holds, the same for every "
                        "condition")
    parser.add_argument("--fad-embedder", default=d.fad_embedder, help="crepe-tiny, crepe-full (offline, after "
                        "`cmmd fetch-weights crepe`), clap-laion-audio=PATH, clap-laion-music=PATH or clap-2023=PATH "
                        f"(default: {d.fad_embedder})")
    parser.add_argument("--crepe-hop", type=float, default=DEFAULT_CREPE_HOP, help="CREPE frame hop in seconds "
                        f"(default: {DEFAULT_CREPE_HOP})")
    parser.add_argument("--fvd-frames", type=int, default=FVD_FRAMES,
                        help=f"frames per clip for I3D (default: {FVD_FRAMES})")
    parser.add_argument("--fvd-features", choices=("logits", "pool"), default=d.fvd_features, help="I3D features: the "
                        "400 logits of the reference FVD, or the 1024-d pool (default: logits)")
    parser.add_argument("--fps", type=float, default=d.fps, help=f"frame rate clips are read at (default: {d.fps:g})")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate, help=f"audio rate (default: {d.sample_rate})")
    parser.add_argument("--sync-tolerance", type=float, default=d.sync_tolerance, help="event match tolerance in s, "
                        f"sync and onset (default: {d.sync_tolerance})")
    parser.add_argument("--boot", type=int, default=d.n_boot,
                        help=f"bootstrap resamples of per-item metrics (default: {d.n_boot})")
    parser.add_argument("--set-boot", type=int, default=d.set_boot, help="bootstrap resamples of set metrics "
                        f"(FVD/KVD/FAD recomputed per resample; default: {d.set_boot})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the bootstraps and of the shuffled pairs "
                        f"(default: {d.seed})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"I3D batch size (default: {d.batch_size})")
    parser.add_argument("--cache", default=None, help=f"cache folder for weights and features (default: ${CACHE_ENV} "
                        "or ~/.cache/cmmd)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every feature, store none")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse flags no evaluation could use, before any file is read, with one line naming the flag."""
    positive = {"--fps": args.fps, "--sample-rate": args.sample_rate, "--crepe-hop": args.crepe_hop,
                "--sync-tolerance": args.sync_tolerance, "--batch-size": args.batch_size}
    for flag, value in positive.items():
        if not value > 0:
            raise CmmdError(f"{flag} must be > 0, got {value}")
    if args.seed < 0:
        raise CmmdError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise CmmdError(f"--out {out} is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write metrics.json, failures.jsonl and the reports, print the table."""
    check_arguments(args)
    explicit = args.metrics is not None
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if explicit else METRICS
    settings = EvalSettings(
        metrics=metrics, fps=args.fps, sample_rate=args.sample_rate, fvd_frames=args.fvd_frames,
        fvd_features=args.fvd_features, fad_embedder=args.fad_embedder, crepe_hop=args.crepe_hop,
        sync_tolerance=args.sync_tolerance, n_boot=args.boot, set_boot=args.set_boot, seed=args.seed,
        batch_size=args.batch_size, pairwise=args.pairwise, cache=args.cache, use_cache=not args.no_cache,
    )
    result = evaluate(args.generated, args.reference, settings, explicit_metrics=explicit, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(args.generated) / "evaluation"
    skipped = [Skipped(**row) for row in result["skipped"]]
    try:
        metrics_path = write_metrics(result, out / "metrics.json")
        listing = write_failures(skipped, out / "failures.jsonl")
        md, html = write_report(result, out)
    except OSError as exc:
        raise CmmdError(f"cannot write the results to {out} ({exc}); choose another folder with --out") from None
    width = max(len(r[0]) for r in metric_rows(result)) if result["metrics"] else 10
    for name, value, n, baseline, vs_baseline, _, _ in metric_rows(result):
        paired = f"; own - baseline {vs_baseline}" if vs_baseline else ""
        print(f"{name:{width}s}  {value:36s} n={n:8s} {baseline}{paired}")
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for failure in skipped:
        print(f"cmmd evaluate: skipped {failure.line()}", file=sys.stderr)
    print(f"cmmd evaluate: {len(result['items']['names'])} condition(s) evaluated, {len(skipped)} file(s) skipped"
          + (f" (listed in {listing})" if skipped else ""))
    print(f"cmmd evaluate: {metrics_path}, {md.name}, {html.name} in {out} "
          f"(cache hits {result['cache']['hits']}, misses {result['cache']['misses']})")
    return 0
