"""Event-sync scores of a model on a set of held-out *impacts* clips, both directions.

Given the model's outputs for every clip (log-mels generated from the clip's video, frames
generated from the clip's audio), :func:`score_heldout` scores each clip against its own
sidecar (:func:`cmmd.eval.sync.score.clip_sync_scores`) and against a deranged one
(:func:`cmmd.eval.sync.score.shuffled_baseline`, the chance level), and summarises each score
as the mean with a 95 % bootstrap CI. ``cmmd demo`` and ``benchmarks/v2a_sync.py`` report it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.stats import bootstrap_ci
from cmmd.eval.sync.score import clip_sync_scores, shuffled_baseline

TABLE_KEYS = ("f1", "precision", "recall", "class_accuracy", "median_offset_ms")


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean of ``values`` with its 95 % bootstrap CI (seed 0) and n (NaNs dropped)."""
    ci = bootstrap_ci(np.asarray(values, dtype=float), seed=0)
    return {"mean": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n}


def score_heldout(names: Sequence[str], metas: Sequence[Mapping[str, Any]], v2a_mels: np.ndarray,
                  a2v_frames: np.ndarray, tolerance: float = 0.1) -> dict[str, Any]:
    """Scores of generated outputs for held-out clips against their sidecars ``metas``.

    ``v2a_mels (N, N_MELS, L)``: log-mels generated from each clip's video (scored without a
    vocoder); ``a2v_frames (N, T, H, W, 3)``: frames generated from each clip's audio. Returns
    ``per_clip`` (``name``, ``v2a`` and ``a2v`` score dicts) and ``table``: for ``v2a``, ``a2v``,
    ``v2a_shuffled`` and ``a2v_shuffled``, each of :data:`TABLE_KEYS` as :func:`summary`.
    Needs N >= 2 (the shuffled baseline pairs each clip with another).
    """
    n = len(names)
    if not len(metas) == len(v2a_mels) == len(a2v_frames) == n:
        raise CmmdError(f"score_heldout: {n} names, {len(metas)} sidecars, {len(v2a_mels)} mels and "
                        f"{len(a2v_frames)} frame sets differ")
    per_clip = [{"name": name,
                 "v2a": clip_sync_scores(v2a_mels[i], None, meta, "v2a", tolerance),
                 "a2v": clip_sync_scores(None, a2v_frames[i], meta, "a2v", tolerance)}
                for i, (name, meta) in enumerate(zip(names, metas))]
    base_v2a = shuffled_baseline(list(v2a_mels), [None] * n, metas, "v2a", tolerance)
    base_a2v = shuffled_baseline([None] * n, list(a2v_frames), metas, "a2v", tolerance)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for mode, base in (("v2a", base_v2a), ("a2v", base_a2v)):
        for key in TABLE_KEYS:
            table.setdefault(mode, {})[key] = summary([r[mode][key] for r in per_clip])
            table.setdefault(f"{mode}_shuffled", {})[key] = summary([b[key] for b in base])
    return {"table": table, "per_clip": per_clip}
