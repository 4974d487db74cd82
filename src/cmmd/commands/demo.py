"""``cmmd demo [--train]``: the README's main command."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cmmd.assets import DEMO_CHECKPOINT

    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (index.html)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"model to demo (default: the shipped {DEMO_CHECKPOINT.name}, or the fresh "
                             "one with --train)")
    parser.add_argument("--train", action="store_true", help="train the tiny model from scratch first")
    parser.add_argument("--minutes", type=float, default=9.0,
                        help="training budget for --train (wall clock; data, latents and the demo itself take "
                             "about a minute more, so the whole command fits in 10 minutes)")
    parser.add_argument("--clips", type=int, default=8, help="held-out clips to generate")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps")
    parser.add_argument("--method", choices=("ddim", "dpmpp2m"), default="ddim")
    parser.add_argument("--guidance", type=float, default=0.0, help="reconstruction guidance lambda (Eq. 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse arguments that cannot work, before any training or sampling, with one line naming the flag."""
    from cmmd.errors import CmmdError

    if args.clips < 1:
        raise CmmdError(f"--clips must be >= 1, got {args.clips}")
    if args.steps < 1:
        raise CmmdError(f"--steps must be >= 1, got {args.steps}")
    if not args.minutes > 0:
        raise CmmdError(f"--minutes must be > 0, got {args.minutes}")
    if not args.guidance >= 0:
        raise CmmdError(f"--guidance must be >= 0, got {args.guidance}")
    if args.seed < 0:
        raise CmmdError(f"--seed must be >= 0, got {args.seed}")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise CmmdError(f"--checkpoint {args.checkpoint} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise CmmdError(f"--out {args.out} is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from cmmd.apps.demo import DemoSettings, print_metrics, run_demo, train_demo_model
    from cmmd.assets import DEMO_CHECKPOINT

    t0 = time.time()
    checkpoint = args.checkpoint or DEMO_CHECKPOINT
    if args.train:
        run_dir = train_demo_model(args.out, args.minutes)
        checkpoint = args.checkpoint or run_dir
    settings = DemoSettings(clips=args.clips, method=args.method, steps=args.steps, guidance_scale=args.guidance,
                            seed=args.seed)
    result = run_demo(args.out, checkpoint, settings, args.device)
    print_metrics(result)
    print(f"cmmd demo: wrote {args.out / 'index.html'} in {time.time() - t0:.0f} s")
    return 0
