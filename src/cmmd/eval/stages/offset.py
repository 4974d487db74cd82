"""Audio-video offset of each generated clip (:func:`cmmd.eval.sync.offset.av_offset`), with the
reference clips' offsets as baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmmd.eval.cache import cached
from cmmd.eval.entries import baseline, item_metric
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, progress_bar, with_file
from cmmd.eval.pairing import Pairing
from cmmd.eval.sync.offset import av_offset


def offset_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache, show: bool) -> dict[str, dict[str, Any]]:
    """``av_offset_ms`` (signed, positive: audio late) and ``abs_av_offset_ms``."""
    s = files.settings
    config = {"fps": s.fps, "sample_rate": s.sample_rate}

    def offset(path: Path) -> float:
        def compute() -> dict[str, float]:
            media = files.read(path, "AV offset", video=True, audio=True)
            return {"ms": with_file(path, lambda: av_offset(media.audio, s.sample_rate, media.frames, s.fps))}
        return float(cached(cache, "av-offset", files.digest(path), config, compute)["ms"])

    gen = {n: [offset(p) for p in pairing.generated[n]] for n in progress_bar(list(pairing.names), "AV offset", show)}
    ref = [offset(pairing.reference[n]) for n in pairing.names]
    return {
        "av_offset_ms": item_metric(gen, pairing.names, s, "audio-video offset in ms (positive: audio late)", None,
                                    baseline=baseline(ref, s, "reference clips")),
        "abs_av_offset_ms": item_metric({n: [abs(v) for v in vals] for n, vals in gen.items()}, pairing.names, s,
                                        "absolute audio-video offset in ms", True,
                                        baseline=baseline([abs(v) for v in ref], s, "reference clips")),
    }
