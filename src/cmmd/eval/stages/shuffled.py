"""One feature per file, then each generated file scored against its own reference and against
a shuffled partner's: the pattern behind every shuffled-pairs baseline of the stages (onset F1,
beat hit rate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cmmd.eval.inputs import progress_bar
from cmmd.eval.pairing import Pairing
from cmmd.eval.sync.score import shuffled_partners

F = TypeVar("F")
Scores = dict[str, list[dict[str, Any]]]


def own_and_shuffled(pairing: Pairing, feature: Callable[[Path], F], score: Callable[[F, F], dict[str, Any]],
                     seed: int, desc: str, show: bool) -> tuple[dict[str, list[F]], Scores, Scores]:
    """``feature`` of every reference and generated file, then ``score(generated, reference)`` of
    each generation against its own condition's reference and against the reference of its
    :func:`~cmmd.eval.sync.score.shuffled_partners` partner. Returns the generated features, the
    own scores and the shuffled scores by condition (the latter empty below 2 conditions)."""
    names = list(pairing.names)
    ref: dict[str, F] = {}
    gen: dict[str, list[F]] = {}
    for name in progress_bar(names, desc, show):
        ref[name] = feature(pairing.reference[name])
        gen[name] = [feature(p) for p in pairing.generated[name]]
    partner = shuffled_partners(names, seed)
    own = {n: [score(g, ref[n]) for g in gen[n]] for n in names}
    shuffled = {n: [score(g, ref[partner[n]]) for g in gen[n]] for n in partner}
    return gen, own, shuffled
