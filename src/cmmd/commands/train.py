"""``cmmd train CONFIG.yaml [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cmmd.config import load_config

if TYPE_CHECKING:
    from cmmd.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. steps=2000 optim.lr=1e-4 data.root=data/prepared")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in out_dir from its latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the YAML file, then the dotted overrides."""
    from cmmd.train.config import TrainConfig

    return load_config(TrainConfig, args.config, args.overrides)


def run(args: argparse.Namespace) -> int:
    from cmmd.apps.preview import write_preview
    from cmmd.train.loop import train

    cfg = config_from_args(args)
    train(cfg, resume=args.resume, progress=not args.no_progress, preview=write_preview)
    return 0
