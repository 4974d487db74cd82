"""Self-consistency of joint (unconditional) samples: do a sample's video events match its own audio's?

Unconditional samples have no reference clip, so sync is scored within each sample: the impacts
detected in its frames (:func:`cmmd.eval.sync.video.detect_video_events`) against the impacts
heard in its audio (:func:`cmmd.eval.sync.audio.detect_audio_events`), by event F1 at
``tolerance`` seconds; the chance level pairs each sample's video with another sample's audio
(a fixed derangement). Real clips score near 1 and their shuffled pairs near chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.data.media import read_media
from cmmd.errors import CmmdError
from cmmd.eval.stats import bootstrap_ci
from cmmd.eval.sync.audio import detect_audio_events
from cmmd.eval.sync.score import derangement, event_sync_metrics
from cmmd.eval.sync.video import detect_video_events


def self_consistency(frames: Sequence[np.ndarray], waves: Sequence[np.ndarray], fps: float, sample_rate: int,
                     tolerance: float = 0.1) -> dict[str, Any]:
    """Event F1 of each sample's video (uint8 ``(T, H, W, 3)``) against its own audio (``(S,)``),
    and against another sample's (``shuffled``), each as mean with bootstrap 95 % CI, plus the
    mean events per sample and the per-sample F1s (``own_per_sample``). Needs 2 or more samples."""
    if len(frames) != len(waves) or len(frames) < 2:
        raise CmmdError(f"self-consistency needs 2 or more samples with both streams, got {len(frames)} videos "
                        f"and {len(waves)} audios")
    video = [detect_video_events(f, fps) for f in frames]
    audio = [detect_audio_events(w, sample_rate) for w in waves]
    perm = derangement(len(frames), 0)
    own = [event_sync_metrics(v, a, tolerance)["f1"] for v, a in zip(video, audio)]
    other = [event_sync_metrics(video[i], audio[perm[i]], tolerance)["f1"] for i in range(len(frames))]
    ci, base = bootstrap_ci(np.asarray(own)), bootstrap_ci(np.asarray(other))
    return {"own": {"mean": ci.point, "lo": ci.lo, "hi": ci.hi},
            "shuffled": {"mean": base.point, "lo": base.lo, "hi": base.hi},
            "video_events_per_sample": float(np.mean([len(v) for v in video])),
            "audio_events_per_sample": float(np.mean([len(a) for a in audio])),
            "own_per_sample": [float(x) for x in own], "n": len(frames)}


def folder_self_consistency(folder: Path, tolerance: float = 0.1) -> dict[str, Any]:
    """:func:`self_consistency` of the joint samples ``folder/*.mp4`` (as ``cmmd generate --mode
    joint`` writes them), at their own frame and sample rates."""
    media = [read_media(f) for f in sorted(Path(folder).glob("*.mp4"))]
    if not media:
        raise CmmdError(f"{folder}: no joint samples (*.mp4) to score")
    return self_consistency([m.frames for m in media], [m.audio for m in media], media[0].fps,
                            media[0].sample_rate, tolerance)
