"""Beat hit rate of the generated audio (:mod:`cmmd.eval.beats`): against the beats tracked in
the reference audio, next to the shuffled-pairs chance level, and, for *dance* sidecars, against
the sidecar's exact beat times. Beats are tracked once per file (cached by content); the
scores are one-to-one matches of beat times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.beats import MIN_SECONDS, hit_rates, track_beats
from cmmd.eval.cache import cached
from cmmd.eval.entries import item_metric, shuffled_comparison
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, with_file
from cmmd.eval.pairing import Pairing
from cmmd.eval.stages.shuffled import own_and_shuffled


class _LazyAudio:
    """The audio ``(S,)`` of a file, decoded on first call (cache hits never decode), at least
    ``MIN_SECONDS`` long (beat tracking's minimum)."""

    def __init__(self, files: MediaFiles, path: Path, purpose: str) -> None:
        self.files, self.path, self.purpose = files, path, purpose
        self.audio: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self.audio is None:
            media = self.files.read(self.path, self.purpose, video=False, audio=True)
            assert media.audio is not None
            sample_rate = self.files.settings.sample_rate
            if media.audio.size < MIN_SECONDS * sample_rate:
                raise CmmdError(f"{self.path}: {media.audio.size / sample_rate:.2f} s of audio; "
                                f"{self.purpose} needs at least {MIN_SECONDS:g} s")
            self.audio = media.audio
        return self.audio


def beat_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache, show: bool) -> dict[str, dict[str, Any]]:
    """``beat_hit_rate_{100,500}ms`` and ``beat_gen_precision_100ms``, each also with a
    ``[sidecar]`` twin when dance sidecars give exact beat times. With two conditions or more
    the hit rates against the reference audio carry the shuffled-pairs ``baseline`` (each
    generated file against another condition's reference beats) and ``vs_baseline`` (own minus
    shuffled per condition: mean, 95 % CI, Wilcoxon p)."""
    s = files.settings
    config = {"sample_rate": s.sample_rate, "onset": "flux"}

    def beats(path: Path) -> np.ndarray:
        """Beat times ``(K,)`` tracked in the file's audio, cached by content."""
        audio = _LazyAudio(files, path, "beat hit rate")

        def track() -> dict[str, object]:
            return with_file(path, lambda: dict(zip(("times", "tempo"), track_beats(audio(), s.sample_rate))))

        return cached(cache, "beats", files.digest(path), config, track)["times"]

    names = list(pairing.names)
    gen, pairs, shuffled = own_and_shuffled(pairing, beats, hit_rates, s.seed, "beat tracking", show)
    sidecar_pairs = {}
    for name in names:
        meta = pairing.sidecars.get(name)
        if meta is not None and meta.get("scene") == "dance":
            times = np.array([float(e["time"]) for e in meta["events"]])
            sidecar_pairs[name] = [hit_rates(g, times) for g in gen[name]]
    out = {}
    for suffix, source, label in (("", pairs, "vs beats tracked in the reference audio"),
                                  ("[sidecar]", sidecar_pairs, "vs the sidecar's exact beat times")):
        if not source:
            continue
        for ms in ("100ms", "500ms"):
            matched = sum(r[f"n_matched_{ms}"] for rows in source.values() for r in rows)
            total = sum(r["n_gt"] for rows in source.values() for r in rows)
            values = {n: [r[f"hit_rate_{ms}"] for r in rows] for n, rows in source.items()}
            chance = {n: [r[f"hit_rate_{ms}"] for r in rows] for n, rows in shuffled.items()}
            extra = shuffled_comparison(values, chance, names, s) if suffix == "" and chance else {}
            out[f"beat_hit_rate_{ms}{suffix}"] = item_metric(
                values, pairing.names, s, f"fraction of reference beats matched within +-{ms[:-2]} ms, {label}", False,
                pooled=matched / total if total else float("nan"), **extra)
        out[f"beat_gen_precision_100ms{suffix}"] = item_metric(
            {n: [r["gen_precision_100ms"] for r in rows] for n, rows in source.items()}, pairing.names, s,
            f"fraction of generated beats within +-100 ms of a reference beat, {label}", False)
    return out
