"""Command-line flags that are shortcuts for dotted config overrides (``--steps 2`` is ``steps=2``).

``cmmd vae train`` and ``cmmd vocoder train`` read a YAML config, these flags and ``key=value``
pairs all through :func:`cmmd.config.load_config`: a flag only adds its override, so values are
parsed and checked once, by the config's field types, and errors name the config key.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shortcut:
    """``flag VALUE`` stands for the override ``key=VALUE``."""

    flag: str
    key: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def add_config_arguments(parser: argparse.ArgumentParser, shortcuts: tuple[Shortcut, ...], defaults: Any) -> None:
    """``--config YAML``, ``KEY=VALUE ...`` and the shortcut flags, whose help shows their key and
    its default in ``defaults`` (a config instance)."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides (YAML values), e.g. steps=500 lr=1e-4; put them before the flags")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="YAML config (configs/); flags and KEY=VALUE override it (default: the built-in defaults)")
    for shortcut in shortcuts:
        default = defaults
        for part in shortcut.key.split("."):
            default = getattr(default, part)
        parser.add_argument(shortcut.flag, dest=shortcut.dest, default=None, metavar=shortcut.key.split(".")[-1].upper(),
                            help=f"{shortcut.help} (= {shortcut.key}=VALUE; default: {default})")


def shortcut_overrides(args: argparse.Namespace, shortcuts: tuple[Shortcut, ...]) -> list[str]:
    """The overrides of the shortcut flags given on the command line, then the ``KEY=VALUE`` pairs."""
    given = [f"{s.key}={getattr(args, s.dest)}" for s in shortcuts if getattr(args, s.dest) is not None]
    return given + list(args.overrides)
