"""Pair generated with reference media files by name.

The rule: a reference item ``<name>.<ext>`` pairs with the generated ``<name>.<ext>`` (one
generation per condition) or with ``<name>__g<k>.<ext>`` (the k-th of K generations, as written
by ``cmmd generate``, ordered by ``k``). Extensions need not agree (``.mp4`` against ``.wav`` is
fine); only the stem counts. Every condition needs the same K (``pairwise`` fixes it), a folder
may not hold both ``<name>`` and ``<name>__g<k>``, and every name on one side must exist on
the other, except a reference item that ``cmmd generate`` skipped (listed in the generated
folder's ``failures.jsonl``): it is left out and reported. A reference ``<name>.json`` with an ``events`` list is the synthetic benchmark's
sidecar (docs/CONTRACTS.md) and comes along for the model-free metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmmd.data.media import AUDIO_SUFFIXES, MEDIA_SUFFIXES
from cmmd.errors import CmmdError

AUDIO_ONLY_SUFFIXES = AUDIO_SUFFIXES  # an .ogg is taken as audio only: its video metrics are skipped
GENERATION_PATTERN = re.compile(r"^(?P<name>.+)__g(?P<k>\d+)$")
FAILURES_FILE = "failures.jsonl"  # written by cmmd generate beside its outputs (cmmd.data.failures)
MAX_LISTED = 20  # names listed in a pairing error before "... and N more"


@dataclass(frozen=True)
class Pairing:
    """Conditions (sorted names), their reference file, their K generated files and sidecar."""

    names: tuple[str, ...]
    reference: dict[str, Path]
    generated: dict[str, tuple[Path, ...]]
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: tuple[dict[str, str], ...] = ()  # reference files left out: ``source, kind, reason``

    @property
    def generations(self) -> int:
        """K, the number of generations per condition."""
        return len(self.generated[self.names[0]])

    def paths(self) -> list[Path]:
        """Every file, condition by condition: the reference, then its generations."""
        return [p for n in self.names for p in self.files_of(n)]

    def files_of(self, name: str) -> tuple[Path, ...]:
        """The reference file of condition ``name``, then its generations."""
        return (self.reference[name], *self.generated[name])

    def only(self, names: Iterable[str]) -> Pairing:
        """The same pairing restricted to ``names`` (conditions left out when a file is unusable)."""
        keep = tuple(n for n in self.names if n in set(names))
        return Pairing(keep, {n: self.reference[n] for n in keep}, {n: self.generated[n] for n in keep},
                       {n: m for n, m in self.sidecars.items() if n in keep}, self.skipped)


def is_audio_only(path: Path) -> bool:
    """Whether ``path`` is an audio file (no frames to read)."""
    return path.suffix.lower() in AUDIO_ONLY_SUFFIXES


def _media_files(folder: Path, role: str) -> dict[str, Path]:
    """``stem -> path`` of the media files directly in ``folder``."""
    if not folder.is_dir():
        raise CmmdError(f"{role} folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES:
            if path.stem in files:
                raise CmmdError(f"{role} folder {folder} has two files named {path.stem!r} "
                                f"({files[path.stem].name}, {path.name}); keep one")
            files[path.stem] = path
    if not files:
        raise CmmdError(f"{role} folder {folder} holds no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
    return files


def _listing(names: Iterable[str]) -> str:
    items = sorted(names)
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _load_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's content if it is a synthetic-benchmark sidecar (has an ``events`` list)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CmmdError(f"{path}: not a readable JSON sidecar ({exc})") from None
    return meta if isinstance(meta, dict) and isinstance(meta.get("events"), list) else None


def _not_generated(gen_dir: Path, ref: dict[str, Path], generated: set[str]) -> list[dict[str, str]]:
    """Reference items without a generated file that ``cmmd generate`` listed in the generated
    folder's failures.jsonl (an input it skipped), with its reason; they are left out, not missing."""
    listing = gen_dir / FAILURES_FILE
    if not listing.is_file():
        return []
    try:
        rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CmmdError(f"{listing}: not a readable failures list ({exc})") from None
    skipped = []
    for row in rows:
        name = Path(str(row.get("source", ""))).stem
        if name in ref and name not in generated:
            skipped.append({"source": str(ref[name]), "kind": "not_generated",
                            "reason": f"cmmd generate skipped it ({row.get('reason', 'no reason given')})"})
    return skipped


def pair_folders(generated: str | Path, reference: str | Path, pairwise: int | None = None) -> Pairing:
    """Pair generated with reference items by name (module docstring); a :class:`CmmdError`
    lists what is missing on each side, or which conditions have the wrong number of generations."""
    gen_dir, ref_dir = Path(generated), Path(reference)
    ref = _media_files(ref_dir, "reference")
    plain: dict[str, Path] = {}
    numbered: dict[str, dict[int, Path]] = {}
    for stem, path in _media_files(gen_dir, "generated").items():
        match = GENERATION_PATTERN.match(stem)
        if match:
            numbered.setdefault(match["name"], {})[int(match["k"])] = path
        else:
            plain[stem] = path
    both = set(plain) & set(numbered)
    if both:
        raise CmmdError(f"generated folder {gen_dir} has both <name> and <name>__g<k> files for: {_listing(both)}")
    gen = {**{n: (p,) for n, p in plain.items()}, **{n: tuple(g[k] for k in sorted(g)) for n, g in numbered.items()}}
    skipped = _not_generated(gen_dir, ref, set(gen))
    ref = {n: p for n, p in ref.items() if n not in {Path(row["source"]).stem for row in skipped}}
    missing_gen, missing_ref = set(ref) - set(gen), set(gen) - set(ref)
    if missing_gen or missing_ref:
        lines = [f"generated folder {gen_dir} and reference folder {ref_dir} do not pair up by name:"]
        if missing_gen:
            lines.append(f"  no generated clip for {len(missing_gen)} reference item(s): {_listing(missing_gen)}")
        if missing_ref:
            lines.append(f"  no reference clip for {len(missing_ref)} generated item(s): {_listing(missing_ref)}")
        raise CmmdError("\n".join(lines))
    counts = {n: len(p) for n, p in gen.items()}
    expected = pairwise if pairwise is not None else max(counts.values())
    wrong = {n for n, c in counts.items() if c != expected}
    if wrong:
        detail = ", ".join(f"{n} ({counts[n]})" for n in sorted(wrong)[:MAX_LISTED])
        raise CmmdError(f"every condition needs {expected} generation(s) (<name>__g<k> files"
                        f"{'' if pairwise is None else ', --pairwise'}); these have another number: {detail}")
    sidecars = {}
    for name in ref:
        path = ref[name].with_suffix(".json")
        if path.is_file() and (meta := _load_sidecar(path)) is not None:
            sidecars[name] = meta
    names = tuple(sorted(ref))
    return Pairing(names, ref, {n: gen[n] for n in names}, sidecars, tuple(skipped))
