"""``cmmd study CONFIG.yaml [key=value ...] [--out DIR] [--resume] [--lambda-sweep 0,1,3,10,30]``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cmmd.errors import CmmdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study YAML (configs/study_sync_cpu.yaml, study_sync_gpu.yaml, study_cpu.yaml, "
                             "study_eta_sweep_cpu.yaml, study_gpu.yaml; docs/STUDY.md)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. budget.minutes=2 test.clips=4 "
                             "systems.cmmd.train.diffusion.loss.eta=1e-3")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the config's `out`); completed runs in it are reused")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted trainings (and runs whose minutes budget was raised)")
    parser.add_argument("--lambda-sweep", default=None, metavar="VALUES",
                        help="comma-separated guidance strengths to re-sample lambda_sweep.system with "
                             "(default system: cmmd), e.g. 0,1,3,10,30")


def _lambdas(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CmmdError(f"--lambda-sweep: expected comma-separated numbers such as 0,0.5,1,2, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from cmmd.apps.study import load_study_config, run_study

    overrides = list(args.overrides)
    if args.lambda_sweep is not None:
        overrides.append(f"lambda_sweep.values=[{', '.join(repr(v) for v in _lambdas(args.lambda_sweep))}]")
    cfg = load_study_config(args.config, overrides)
    out = args.out if args.out is not None else Path(cfg.out)
    command = shlex.join(["cmmd", "study", str(args.config), *args.overrides,
                          *(["--out", str(args.out)] if args.out is not None else []),
                          *(["--resume"] if args.resume else []),
                          *(["--lambda-sweep", args.lambda_sweep] if args.lambda_sweep is not None else [])])
    run_study(cfg, out, resume=args.resume, command=command)
    return 0
