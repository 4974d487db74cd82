"""Event sync of generated *impacts* clips against their sidecar events (:mod:`cmmd.eval.sync`):
``v2a`` rows score the events detected in the generated audio, ``a2v`` rows those in the
generated frames, each next to the shuffled-ground-truth chance level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmmd.eval.cache import cached
from cmmd.eval.entries import item_metric, shuffled_comparison
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, progress_bar, with_file
from cmmd.eval.pairing import Pairing, is_audio_only
from cmmd.eval.sync.audio import detect_audio_events
from cmmd.eval.sync.score import derangement, event_sync_metrics
from cmmd.eval.sync.video import detect_video_events

SYNC_KEYS = ("f1", "precision", "recall", "class_accuracy", "median_offset_ms")


def _detect(path: Path, files: MediaFiles) -> dict[str, Any]:
    """Times and classes of the events in a file's audio (``v2a_*``) and frames (``a2v_*``)."""
    s = files.settings
    has_video = not is_audio_only(path)
    media = files.read(path, "sync", video=has_video, audio=True)
    assert media.audio is not None
    audio_events = with_file(path, lambda: detect_audio_events(media.audio, s.sample_rate))
    video_events = (with_file(path, lambda: detect_video_events(media.frames, s.fps))
                    if media.frames is not None else [])
    return {"v2a_time": [e.time for e in audio_events], "v2a_class": [e.class_index for e in audio_events],
            "a2v_time": [e.time for e in video_events], "a2v_class": [e.class_index for e in video_events],
            "has_video": has_video}


def sync_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache,
                 show: bool) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``sync_{v2a,a2v}_{f1,precision,recall,class_accuracy,median_offset_ms}`` of the conditions
    with an impacts sidecar (``a2v`` only when every generated file has frames), or no entries
    and the reason."""
    s = files.settings
    names = [n for n in pairing.names if pairing.sidecars.get(n, {}).get("scene") == "impacts"]
    if not names:
        return {}, "no impacts sidecars (<name>.json with events) in the reference folder"
    config = {"fps": s.fps, "sample_rate": s.sample_rate}
    detected: dict[str, list[dict[str, np.ndarray]]] = {}
    for name in progress_bar(names, "sync event detection", show):
        for path in pairing.generated[name]:
            detected.setdefault(name, []).append(
                cached(cache, "sync-events", files.digest(path), config, lambda path=path: _detect(path, files)))
    gt = {n: pairing.sidecars[n]["events"] for n in names}
    perm = derangement(len(names), s.seed) if len(names) >= 2 else None
    out = {}
    for mode, label in (("v2a", "events detected in the generated audio"),
                        ("a2v", "events detected in the generated frames")):
        if mode == "a2v" and not all(bool(d["has_video"]) for rows in detected.values() for d in rows):
            continue
        own: dict[str, list[dict[str, float]]] = {}
        chance: dict[str, list[dict[str, float]]] = {}
        for i, name in enumerate(names):
            for d in detected[name]:
                pred = [{"time": float(t), "class_index": int(c)}
                        for t, c in zip(d[f"{mode}_time"], d[f"{mode}_class"])]
                own.setdefault(name, []).append(event_sync_metrics(pred, gt[name], s.sync_tolerance))
                if perm is not None:
                    chance.setdefault(name, []).append(event_sync_metrics(pred, gt[names[perm[i]]], s.sync_tolerance))
        for key in SYNC_KEYS:
            scores = {n: [r[key] for r in rows] for n, rows in own.items()}
            extra = (shuffled_comparison(scores, {n: [r[key] for r in rows] for n, rows in chance.items()}, names, s)
                     if chance else {})
            out[f"sync_{mode}_{key}"] = item_metric(
                scores, names, s,
                f"{key.replace('_', ' ')} of {label} vs the sidecar events (+-{s.sync_tolerance * 1000:g} ms)",
                None if key == "median_offset_ms" else False, **extra)
    return out, None
