"""``cmmd prepare SRC_DIR OUT_DIR [--codec SPEC]``: decode a folder of videos into training shards.

Resumable (items already in OUT_DIR are kept), parallel (``--workers``), and tolerant: bad files
are listed with their reason in the summary and in ``OUT_DIR/failures.jsonl``. SRC_DIR is only
read. The layout is described in ``cmmd.data.prepare``. With ``--codec`` a latent codec then
encodes every item's frames into ``items/<key>/latents.npy`` (:mod:`cmmd.video.latents`, the
same function as ``cmmd vae encode``), so training with ``data.video: latents`` never encodes.
"""

from __future__ import annotations

import argparse
import os

from cmmd.conventions import FPS, SAMPLE_RATE
from cmmd.data.prepare import PrepareSettings, prepare_dataset

HELP = "turn a folder of videos into training shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd prepare``; defaults are the paper's 64x64 comparison setting."""
    defaults = PrepareSettings()
    parser.epilog = ("A video that cannot be used (unreadable, truncated, no video or audio stream, silent, shorter "
                     "than one clip) is skipped and listed with its reason, here and in OUT_DIR/failures.jsonl; the "
                     "others are prepared. The exit status is non-zero only when no item is usable.")
    parser.add_argument("src_dir", metavar="SRC_DIR", help="folder searched recursively for video files (read only)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder for the shards (created; must not be "
                        "inside SRC_DIR)")
    parser.add_argument("--size", type=int, default=defaults.size, help="frames are centre-cropped to a square and "
                        f"resized to SIZE x SIZE (default: {defaults.size})")
    parser.add_argument("--fps", type=int, default=FPS, help=f"video frame rate (default: {FPS})")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help=f"mono audio rate in Hz "
                        f"(default: {SAMPLE_RATE})")
    parser.add_argument("--clip-seconds", type=float, default=defaults.clip_seconds, help="clip length of index.csv; "
                        f"shorter files are skipped (default: {defaults.clip_seconds})")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="parallel decoding "
                        "processes (default: number of CPU cores, at most 8)")
    parser.add_argument("--codec", default="pixel", metavar="SPEC", help="also precompute latents of this video "
                        "codec into the shards: cmmd-vae:<run> or sd-vae:<local path>; resumable, one codec per "
                        "OUT_DIR (default: pixel, frames only)")
    parser.add_argument("--device", default="cpu", help="device of the --codec network (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Prepare the shards (and latents with ``--codec``), print the summary; 0 when at least one
    item is usable."""
    settings = PrepareSettings(size=args.size, fps=args.fps, sample_rate=args.sample_rate,
                               clip_seconds=args.clip_seconds)
    codec = None
    if args.codec != "pixel":
        from cmmd.video.loading import load_video_codec
        from cmmd.video.latents import check_codec_record, encode_prepared_dataset

        # Refuse a codec that cannot take these frames, or another codec's directory, before decoding anything.
        codec = load_video_codec(args.codec, args.device)
        codec.latent_shape(args.size, args.size)
        check_codec_record(args.out_dir, codec)
    summary = prepare_dataset(args.src_dir, args.out_dir, settings, workers=args.workers,
                              progress=not args.no_progress)
    for line in summary.lines():
        print(f"cmmd prepare: {line}")
    if codec is not None:
        encoded = encode_prepared_dataset(args.out_dir, codec, progress=not args.no_progress)
        print(f"cmmd prepare: latents ({args.codec}): {encoded.line()} -> {args.out_dir}")
    return 0
