"""What a queued job does: sample each variation and write its mp4 and spectrogram through
:mod:`cmmd.generation`, the path ``cmmd generate`` takes (same trimming, same panels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


from cmmd.apps.genapp.inputs import GenRequest
from cmmd.audio.mel import recorded_mel
from cmmd.audio.vocoders import load_vocoder
from cmmd.checkpoint import read_info
from cmmd.errors import CmmdError
from cmmd.generation import generate_sample, write_sample, write_spectrograms
from cmmd.pipeline import Pipeline

NO_VOCODER = "none"
# (variation index from 0, step from 1, steps)
Progress = Callable[[int, int, int], None]


@dataclass
class Result:
    """One variation's files (names inside the job folder) and its settings."""

    video: str
    spectrogram: str
    settings: dict[str, Any]


def load_pipelines(checkpoint: Path, vocoders: list[str], device: str) -> dict[str, Pipeline]:
    """One pipeline per vocoder spec, all sharing the model loaded once (``{"none": pipe}`` for a
    waveform model, which takes no vocoder)."""
    pipe = Pipeline.from_checkpoint(checkpoint, device=device)
    if pipe.audio_is_wave:
        if vocoders:
            raise CmmdError(f"{checkpoint}: the model generates waveforms ({pipe.config.model.preset}); it takes no "
                            "vocoder")
        return {NO_VOCODER: pipe}
    mel = recorded_mel(read_info(checkpoint).extra)
    pipelines = {}
    for spec in dict.fromkeys(["griffinlim", *vocoders]):
        vocoder = load_vocoder(spec, device, sample_rate=pipe.sample_rate)
        try:
            vocoder.check_compatible(mel)
        except CmmdError as exc:
            raise CmmdError(f"{checkpoint}: {exc}") from None
        pipelines[spec] = Pipeline(pipe.model, pipe.config, pipe.mel_stats, pipe.fps, pipe.size, pipe.sample_rate,
                                   device, pipe.step, pipe.version, pipe.codec, vocoder)
    return pipelines


def render(pipe: Pipeline, request: GenRequest, folder: Path, info: dict[str, Any], progress: Progress) -> list[Result]:
    """Generate ``request.variations`` clips (seeds ``seed``, ``seed + 1``, ...) into ``folder``
    as ``cmmd generate`` does (:mod:`cmmd.generation`), each written at the model's size and rates."""
    results = []
    for k in range(request.variations):
        settings = replace(request.settings, seed=request.settings.seed + k)
        sample = generate_sample(pipe, request.mode, settings, f"v{k}", request.condition, request.panels,
                                 num_frames=request.num_frames,
                                 callback=lambda step, k=k: progress(k, step["step"] + 1, step["steps"]))
        video = write_sample(sample, pipe, folder, details=False)["output"]
        spectrogram = write_spectrograms(sample, pipe, folder)
        shown = {**info, **sample.settings, "source": request.source or None,
                 "seconds": round(len(sample.frames) / pipe.fps, 3)}
        results.append(Result(video.name, spectrogram.name, shown))
    return results
