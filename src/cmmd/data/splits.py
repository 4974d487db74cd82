"""The frozen synthetic splits: which benchmark seeds train, validate and test, for the whole project.

A synthetic clip set is ``write_benchmark(out, scene, n, seed=S)``: clip ``i`` is rendered from
``clip_seed(S, i)`` (:mod:`cmmd.data.synth`). Each split owns a disjoint range of set seeds ``S``
and names one of them as its default; every script, app and test that makes clips for a
purpose takes the seed from here:

* :data:`TRAIN`, set seeds ``[0, 1_000_000)``, default 0: training data (``cmmd demo --train``,
  the study's ``data.seed``, the shipped checkpoints).
* :data:`VALIDATION`, ``[2_000_000, 3_000_000)``, default 2_000_003: every *choice* is made on
  it: recipes, checkpoints, sampler settings, guidance scales, detector thresholds
  (``benchmarks/v2a_sync.py`` scores these clips).
* :data:`TEST`, ``[1_000_000, 2_000_000)``, default 1_000_003: the held-out clips of
  ``cmmd demo`` (its clips keep the seed they always had) and of the study's test set. TEST is
  never used for any choice (recipe, checkpoint, threshold): its figures are reported, not
  optimised, or they stop measuring generalisation.

Disjoint set seeds give disjoint clips: ``clip_seed`` hashes ``(S, i)`` to 32 bits, so two
clips of different splits share a rendering seed with probability ~1e-9 per pair
(``tests/test_splits.py`` checks the default sets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.data.media import read_media
from cmmd.data.synth import Scene, clip_name, clip_seed, write_benchmark
from cmmd.errors import CmmdError


@dataclass(frozen=True)
class Split:
    """A named range of benchmark set seeds, its default ``seed`` and what it is for."""

    name: str
    set_seeds: range
    seed: int
    purpose: str

    def __post_init__(self) -> None:
        if self.seed not in self.set_seeds:
            raise CmmdError(f"split {self.name}: default seed {self.seed} is outside {self.set_seeds}")

    def check(self, seed: int, what: str) -> None:
        """Raise a :class:`CmmdError` naming ``what`` unless set seed ``seed`` is in this split."""
        if seed in self.set_seeds:
            return
        owner = next((s for s in SPLITS if seed in s.set_seeds), None)
        where = f"a {owner.name} seed ({owner.purpose})" if owner else "in no split"
        raise CmmdError(f"{what}: seed {seed} is {where}, not a {self.name} seed "
                        f"({self.set_seeds.start}..{self.set_seeds.stop - 1}, default {self.seed}; cmmd.data.splits)")

    def clip_seeds(self, n: int, seed: int | None = None) -> list[int]:
        """Rendering seeds of clips ``0 .. n-1`` of the set seeded ``seed`` (default: :attr:`seed`)."""
        s = self.seed if seed is None else seed
        self.check(s, f"{self.name} clips")
        return [clip_seed(s, i) for i in range(n)]


TRAIN = Split("train", range(0, 1_000_000), 0, "training data")
TEST = Split("test", range(1_000_000, 2_000_000), 1_000_003,
             "reported figures only, never for a choice of recipe, checkpoint or threshold")
VALIDATION = Split("validation", range(2_000_000, 3_000_000), 2_000_003,
                   "choosing recipes, checkpoints, sampler settings and thresholds")
SPLITS = (TRAIN, VALIDATION, TEST)


def split_of(seed: int) -> Split:
    """The split that owns set seed ``seed``; a :class:`CmmdError` when none does."""
    for split in SPLITS:
        if seed in split.set_seeds:
            return split
    raise CmmdError(f"seed {seed} belongs to no split of cmmd.data.splits "
                    f"({', '.join(f'{s.name} {s.set_seeds.start}..{s.set_seeds.stop - 1}' for s in SPLITS)})")


def write_split_clips(split: Split, out_dir: Path, n: int, seconds: float, size: int,
                      scene: Scene = "impacts") -> list[str]:
    """Render clips ``0 .. n-1`` of ``split`` (its default seed) as mp4 + JSON sidecar under
    ``out_dir``, replacing clips made with other settings; returns their names."""
    write_benchmark(out_dir, scene, n, seed=split.seed, duration=seconds, size=size, overwrite=True)
    return [clip_name(scene, i) for i in range(n)]


@dataclass(frozen=True)
class Clips:
    """Decoded clips with their ground truth: ``frames (N, T, H, W, 3)`` uint8, ``waves (N, S)``
    float32, one sidecar dict per clip (docs/CONTRACTS.md)."""

    names: list[str]
    frames: np.ndarray
    waves: np.ndarray
    metas: list[dict[str, Any]]


def read_clips(folder: Path, names: list[str], fps: float, sample_rate: int, size: int) -> Clips:
    """Decode ``<folder>/<name>.mp4`` and read ``<name>.json`` of each name, frames resized to ``size``."""
    metas = [json.loads((folder / f"{n}.json").read_text()) for n in names]
    media = [read_media(folder / f"{n}.mp4", fps=fps, sample_rate=sample_rate, size=size) for n in names]
    return Clips(list(names), np.stack([m.frames for m in media]), np.stack([m.audio for m in media]), metas)
