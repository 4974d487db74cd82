"""What a queued job does: sample each variation and write its mp4 and spectrogram, as
``cmmd generate`` does for one input (same trimming, same spectrogram panels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.apps.genapp.inputs import GenRequest
from cmmd.audio.mel import recorded_mel
from cmmd.audio.vocoders import load_vocoder
from cmmd.checkpoint import read_info
from cmmd.conventions import HOP
from cmmd.data.media import write_media
from cmmd.errors import CmmdError
from cmmd.eval.plots import save_spectrograms
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
    """Generate ``request.variations`` clips (seeds ``seed``, ``seed + 1``, ...) into ``folder``."""
    results = []
    for k in range(request.variations):
        settings = replace(request.settings, seed=request.settings.seed + k)
        gen = pipe.generate(
            request.mode, settings,
            frames=request.frames[None] if request.mode == "v2a" else None,
            wave=request.wave[None] if request.mode == "a2v" else None,
            num_frames=request.num_frames,
            callback=lambda step, k=k: progress(k, step["step"] + 1, step["steps"]),
        )
        panels = [("generated", gen.mel[0])]
        if request.mode == "v2a":
            frames, wave = request.frames, gen.wave[0]
            if request.wave is not None:
                panels.insert(0, ("input soundtrack", pipe.log_mel(request.wave[None])[0].cpu().numpy()))
        elif request.mode == "a2v":
            frames, wave = gen.frames[0], request.wave[: gen.frames.shape[1] * int(pipe.sample_rate / pipe.fps)]
            panels.insert(0, ("condition", pipe.log_mel(wave[None])[0].cpu().numpy()))
        else:
            frames, wave = gen.frames[0], gen.wave[0]
        assert frames is not None and wave is not None
        n = min(len(wave), int(round(len(frames) * pipe.sample_rate / pipe.fps)))
        video, spectrogram = f"v{k}.mp4", f"v{k}_spec.png"
        write_media(folder / video, frames, np.asarray(wave[:n], dtype=np.float32), pipe.fps, pipe.sample_rate)
        save_spectrograms(panels, folder / spectrogram, pipe.sample_rate / HOP)
        results.append(Result(video, spectrogram, {**info, **gen.settings, "source": request.source or None,
                                                   "seconds": round(len(frames) / pipe.fps, 3)}))
    return results
