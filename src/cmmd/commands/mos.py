"""``cmmd mos create|serve|analyze``: listening and viewing tests (MOS studies, paper section 3.3).

* ``create STUDY_DIR --systems NAME=DIR ... --questions PRESET|FILE.yaml``: pair clips by file
  stem across the systems' folders, check them all, and write the study (see docs/MOS.md).
* ``serve STUDY_DIR``: the rating web app on 127.0.0.1 (``--host`` to open it to a LAN).
* ``analyze STUDY_DIR``: statistics, Wilcoxon tests, box plots, markdown/HTML reports, raw CSV.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from cmmd.errors import CmmdError
from cmmd.apps.mos.questions import PRESETS, load_questions
from cmmd.apps.mos.study import create_study, load_study, parse_systems
from cmmd.apps.serve import exposure_warning, url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-verbs ``create``, ``serve`` and ``analyze`` with their flags."""
    sub = parser.add_subparsers(dest="mos_command", metavar="SUBCOMMAND", required=True)

    create = sub.add_parser("create", help="build a study from one folder of clips per system")
    create.add_argument("study_dir", metavar="STUDY_DIR", help="new folder for the study (must not exist or be empty)")
    create.add_argument("--systems", nargs="+", required=True, metavar="NAME=DIR",
                        help="one folder of clips per system (ground truth and baselines included); clips are "
                             "paired by file stem")
    create.add_argument("--questions", required=True, metavar="PRESET|FILE",
                        help=f"question preset ({', '.join(PRESETS)}) or a YAML file of custom questions")
    create.add_argument("--attention-checks", type=int, default=0, metavar="N",
                        help="add N attention checks: ground-truth video muxed with another clip's audio (default: 0)")
    create.add_argument("--ground-truth", metavar="NAME",
                        help="the ground-truth system, source of attention checks (default: the system named gt)")
    create.add_argument("--clips-per-rater", type=int, metavar="K",
                        help="each rater rates K clips (every system of each) instead of all clips")
    create.add_argument("--seed", type=int, default=0,
                        help="seed of the attention checks and rater orders (default: 0)")

    serve = sub.add_parser("serve", help="run the rating web app")
    serve.add_argument("study_dir", metavar="STUDY_DIR")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    serve.add_argument("--admin-token", metavar="TOKEN",
                       help="token of the /admin progress view, at least 8 characters (default: a random one, "
                            "printed once)")

    analyze = sub.add_parser("analyze", help="statistics, tests, box plots and reports of the ratings")
    analyze.add_argument("study_dir", metavar="STUDY_DIR")
    analyze.add_argument("--correction", choices=("holm", "bonferroni", "none"), default="holm",
                         help="multiple-comparison correction over each question's system pairs (default: holm)")
    analyze.add_argument("--exclude-failed-attention", action="store_true",
                         help="leave raters who failed an attention check out of the statistics")
    analyze.add_argument("--out", metavar="DIR", help="output folder (default: STUDY_DIR/analysis)")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the sub-verb."""
    return {"create": _create, "serve": _serve, "analyze": _analyze}[args.mos_command](args)


def _create(args: argparse.Namespace) -> int:
    if args.attention_checks < 0:
        raise CmmdError(f"--attention-checks must be >= 0, got {args.attention_checks}")
    if args.clips_per_rater is not None and args.clips_per_rater < 1:
        raise CmmdError(f"--clips-per-rater must be >= 1, got {args.clips_per_rater}")
    if args.seed < 0:
        raise CmmdError(f"--seed must be >= 0, got {args.seed}")
    study = create_study(
        args.study_dir, parse_systems(args.systems), load_questions(args.questions),
        attention_checks=args.attention_checks, seed=args.seed, ground_truth=args.ground_truth,
        clips_per_rater=args.clips_per_rater,
    )
    n_checks = sum(item.is_attention for item in study.items)
    print(f"cmmd mos create: {len(study.clips)} clip(s) x {len(study.systems)} system(s) + {n_checks} attention "
          f"check(s), {len(study.questions)} question(s) -> {study.root}")
    print(f"serve it with: cmmd mos serve {study.root}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CmmdError(f"--port must be 1-65535, got {args.port}")
    if args.admin_token is not None and len(args.admin_token) < 8:
        raise CmmdError("--admin-token must be at least 8 characters")
    try:
        import uvicorn

        from cmmd.apps.mos.app import create_app
    except ImportError as exc:
        raise CmmdError(f"serving needs the 'mos' extra ({exc.name} is missing): pip install -e '.[mos]'") from None
    load_study(args.study_dir)
    token = args.admin_token or secrets.token_urlsafe(16)
    app = create_app(Path(args.study_dir), token)
    print(f"cmmd mos serve: raters open {url(args.host, args.port)}")
    print(f"cmmd mos serve: admin view (token shown only now): {url(args.host, args.port, f'/admin?token={token}')}",
          flush=True)
    if warning := exposure_warning("cmmd mos serve", args.host, "open the study"):
        print(warning, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from cmmd.apps.mos.analyze import analyze_study, write_reports

    analysis = analyze_study(args.study_dir, correction=args.correction,
                             exclude_failed_attention=args.exclude_failed_attention)
    out = Path(args.out) if args.out else Path(args.study_dir) / "analysis"
    written = write_reports(analysis, out)
    significant = [t for t in analysis.tests if t.significant]
    print(f"cmmd mos analyze: {len(analysis.rows)} score(s) from {len(analysis.included_raters)} rater(s) in the "
          f"statistics; {len(significant)} of {len(analysis.tests)} pairwise test(s) significant "
          f"({args.correction} correction)")
    if analysis.attention:
        failed = sorted(rid for rid, res in analysis.attention.items() if res.failed)
        print(f"cmmd mos analyze: raters failing attention checks: {', '.join(failed) if failed else 'none'}"
              f"{' (excluded)' if analysis.excluded_raters else ''}")
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0
