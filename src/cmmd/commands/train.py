"""``cmmd train CONFIG.yaml [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse

from cmmd.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. steps=2000 optim.lr=1e-4 data.root=data/prepared")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in out_dir from its latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")


def run(args: argparse.Namespace) -> int:
    from cmmd.apps.preview import write_preview
    from cmmd.train.config import TrainConfig
    from cmmd.train.loop import train

    cfg = load_config(TrainConfig, args.config, args.overrides)
    train(cfg, resume=args.resume, progress=not args.no_progress, preview=write_preview)
    return 0
