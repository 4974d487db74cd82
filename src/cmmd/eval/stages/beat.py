"""Beat hit rate of the generated audio (:mod:`cmmd.eval.beats`): against the beats tracked in
the reference audio and, for *dance* sidecars, against the sidecar's exact beat times."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.beats import MIN_SECONDS, beat_hit_rate_from_times, track_beats
from cmmd.eval.cache import cached
from cmmd.eval.entries import item_metric
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, progress_bar, with_file
from cmmd.eval.pairing import Pairing


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
    ``[sidecar]`` twin when dance sidecars give exact beat times."""
    s = files.settings
    config = {"sample_rate": s.sample_rate, "onset": "flux"}

    def hit_rates(path: Path, audio: _LazyAudio, gt_times: np.ndarray, key: tuple[str, ...], extractor: str,
                  settings: Mapping[str, object]) -> dict[str, float]:
        def compute() -> dict[str, float]:
            return with_file(path, lambda: beat_hit_rate_from_times(audio(), gt_times, s.sample_rate))

        return {k: float(v) for k, v in cached(cache, extractor, key, settings, compute).items()}

    pairs: dict[str, list[dict[str, float]]] = {}
    sidecar_pairs: dict[str, list[dict[str, float]]] = {}
    for name in progress_bar(list(pairing.names), "beat tracking", show):
        ref_path = pairing.reference[name]
        ref_audio = _LazyAudio(files, ref_path, "beat hit rate")

        def track(ref_path: Path = ref_path, ref_audio: _LazyAudio = ref_audio) -> dict[str, object]:
            return with_file(ref_path, lambda: dict(zip(("times", "tempo"), track_beats(ref_audio(), s.sample_rate))))

        ref_times = cached(cache, "beats", files.digest(ref_path), config, track)["times"]
        meta = pairing.sidecars.get(name)
        is_dance = meta is not None and meta.get("scene") == "dance"
        sidecar_times = np.array([float(e["time"]) for e in meta["events"]]) if is_dance else None
        for path in pairing.generated[name]:
            audio = _LazyAudio(files, path, "beat hit rate")
            key = (files.digest(path), files.digest(ref_path))
            pairs.setdefault(name, []).append(hit_rates(path, audio, ref_times, key, "beat-hit-rate", config))
            if sidecar_times is not None:
                sidecar_pairs.setdefault(name, []).append(hit_rates(
                    path, audio, sidecar_times, (files.digest(path),), "beat-hit-rate-sidecar",
                    {**config, "gt": sidecar_times.tolist()}))
    out = {}
    for suffix, source, label in (("", pairs, "vs beats tracked in the reference audio"),
                                  ("[sidecar]", sidecar_pairs, "vs the sidecar's exact beat times")):
        if not source:
            continue
        for ms in ("100ms", "500ms"):
            matched = sum(r[f"n_matched_{ms}"] for rows in source.values() for r in rows)
            total = sum(r["n_gt"] for rows in source.values() for r in rows)
            out[f"beat_hit_rate_{ms}{suffix}"] = item_metric(
                {n: [r[f"hit_rate_{ms}"] for r in rows] for n, rows in source.items()}, pairing.names, s,
                f"fraction of reference beats matched within +-{ms[:-2]} ms, {label}", False,
                pooled=matched / total if total else float("nan"))
        out[f"beat_gen_precision_100ms{suffix}"] = item_metric(
            {n: [r["gen_precision_100ms"] for r in rows] for n, rows in source.items()}, pairing.names, s,
            f"fraction of generated beats within +-100 ms of a reference beat, {label}", False)
    return out
