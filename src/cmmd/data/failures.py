"""``failures.jsonl``: the inputs a folder command skipped, one JSON object a line with ``source``,
``kind`` (machine-readable: ``MediaError.kind`` or the command's own) and ``reason`` (for people).

``cmmd prepare``, ``cmmd evaluate``, ``cmmd vocoder train`` and ``cmmd generate`` write it with
:func:`write_failures`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Skipped:
    """One input that was left out, and why (``source``: its path or name)."""

    source: str | Path
    kind: str
    reason: str

    def line(self) -> str:
        """``source: [kind] reason``, as the commands print it."""
        return f"{self.source}: [{self.kind}] {self.reason}"


def failures_text(failures: Iterable[Skipped]) -> str:
    """The content of a failures.jsonl."""
    return "".join(json.dumps({"source": str(f.source), "kind": f.kind, "reason": f.reason}) + "\n" for f in failures)


def write_failures(failures: Iterable[Skipped], path: Path) -> Path:
    """Write ``path`` (its folder created), replacing the previous run's list; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(failures_text(failures))
    tmp.replace(path)
    return path
