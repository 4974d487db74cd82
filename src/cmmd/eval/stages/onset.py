"""Onset F1 of the generated audio against its reference audio (:mod:`cmmd.eval.onsets`, one
detector for both sides), for any reference folder (no sidecar), next to the shuffled-pairs
chance level: each generated file scored against another condition's reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmmd.eval.cache import cached
from cmmd.eval.entries import item_metric, shuffled_comparison
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, with_file
from cmmd.eval.onsets import DETECTOR, detect_onsets
from cmmd.eval.pairing import Pairing
from cmmd.eval.stages.shuffled import own_and_shuffled
from cmmd.eval.sync.score import event_sync_metrics

ONSET_KEYS = ("f1", "precision", "recall")


def onset_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache, show: bool) -> dict[str, dict[str, Any]]:
    """``onset_{f1,precision,recall}``: onsets in each generated file's audio matched one-to-one
    to the onsets in its reference file's audio within ``+-sync_tolerance`` s
    (:func:`cmmd.eval.sync.score.event_sync_metrics`; both empty counts as F1 1, one empty as 0).
    With two conditions or more each carries the shuffled-pairs ``baseline`` and
    ``vs_baseline`` (own minus shuffled per condition: mean, 95 % CI, Wilcoxon p)."""
    s = files.settings
    config = {"sample_rate": s.sample_rate, "detector": DETECTOR}

    def onsets(path: Path) -> np.ndarray:
        def compute() -> dict[str, np.ndarray]:
            media = files.read(path, "onset F1", video=False, audio=True)
            assert media.audio is not None
            return {"times": with_file(path, lambda: detect_onsets(media.audio, s.sample_rate))}

        return cached(cache, "onsets", files.digest(path), config, compute)["times"]

    names = list(pairing.names)
    tol = s.sync_tolerance
    _, own, shuffled = own_and_shuffled(pairing, onsets, lambda g, r: event_sync_metrics(g, r, tol), s.seed,
                                        "onset detection", show)
    out = {}
    for key in ONSET_KEYS:
        values = {n: [r[key] for r in rows] for n, rows in own.items()}
        extra = (shuffled_comparison(values, {n: [r[key] for r in rows] for n, rows in shuffled.items()}, names, s)
                 if shuffled else {})
        out[f"onset_{key}"] = item_metric(
            values, names, s, f"onset {key} of the generated audio vs the onsets of its reference audio "
            f"(+-{tol * 1000:g} ms)", False, **extra)
    return out
