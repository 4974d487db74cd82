"""Tensor and signal conventions shared by every stage of cmmd (METHOD.md section 1).

Stated once, here:

* video tensors are ``(B, T, C, H, W)`` float in ``[-1, 1]`` (pixels) or codec latents;
  decoded media frames are numpy ``uint8`` arrays ``(T, H, W, 3)``.
* waveforms are float32 mono in ``[-1, 1]``: numpy ``(S,)`` or torch ``(B, S)``.
* mels are ``(B, N_MELS, L)`` natural-log magnitude mels, ``L = S // HOP`` (librosa-style
  centred frames with the last one dropped, so 1.8 s -> 112 frames and frame ``l`` is
  centred on sample ``l * HOP``).
* the two time axes meet through time in seconds, never by assuming divisibility:
  one video frame is ``SAMPLE_RATE / FPS / HOP = 6.25`` mel frames at the defaults. Lengths
  convert through the functions below (``frames_to_samples``, ``samples_to_mel_frames``, ...),
  never through literal 1600, 256 or 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FPS = 10
SAMPLE_RATE = 16_000
N_MELS = 80
N_FFT = 512
HOP = 256
WIN = 512
F_MIN = 0.0
F_MAX = 8_000.0
LOG_FLOOR = 1e-5


# Length conversions: the one place where video frames, audio samples and mel frames meet.


def frames_to_samples(num_frames: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Audio samples spanned by ``num_frames`` video frames: ``S = round(T * sample_rate / fps)``.

    Exact at 10 fps / 16 kHz (1600 samples a frame); at other rates the nearest sample, and the
    same rounding gives a clip's first sample (``frames_to_samples(f0)``) and its length.
    """
    return round(num_frames * sample_rate / fps)


def samples_to_frames(num_samples: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Whole video frames whose audio fits in ``num_samples``: the largest ``T`` with
    ``frames_to_samples(T) <= num_samples`` (``floor(S * fps / sample_rate)`` up to its rounding)."""
    frames = math.floor(num_samples * fps / sample_rate)
    # The float quotient can land one frame off either side of the rounded inverse.
    while frames > 0 and frames_to_samples(frames, fps, sample_rate) > num_samples:
        frames -= 1
    while frames_to_samples(frames + 1, fps, sample_rate) <= num_samples:
        frames += 1
    return frames


def samples_to_mel_frames(num_samples: int, hop: int = HOP) -> int:
    """Mel frames of ``num_samples`` audio samples under our framing: ``L = S // hop``."""
    return num_samples // hop


def mel_frames_to_samples(num_mel_frames: int, hop: int = HOP) -> int:
    """Samples a vocoder returns for ``num_mel_frames`` mel frames: ``S = L * hop``."""
    return num_mel_frames * hop


def frames_to_mel_frames(
    num_frames: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE, hop: int = HOP
) -> int:
    """Mel frames of the audio of ``num_frames`` video frames:
    ``samples_to_mel_frames(frames_to_samples(T))`` (18 frames -> 28800 samples -> 112 mel frames)."""
    return samples_to_mel_frames(frames_to_samples(num_frames, fps, sample_rate), hop)


def seconds_to_frames(seconds: float, fps: float = FPS) -> int:
    """Video frames in ``seconds``: ``T = round(seconds * fps)``."""
    return round(seconds * fps)


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Audio samples in ``seconds``: ``S = round(seconds * sample_rate)``."""
    return round(seconds * sample_rate)


def mel_rate(sample_rate: int = SAMPLE_RATE, hop: int = HOP) -> float:
    """Mel frames per second, ``sample_rate / hop`` (62.5 at the defaults)."""
    return sample_rate / hop


def samples_per_frame(fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> float:
    """Audio samples spanned by one video frame, ``sample_rate / fps`` (1600 at the defaults)."""
    return sample_rate / fps


def mel_frames_per_video_frame(fps: float = FPS, sample_rate: int = SAMPLE_RATE, hop: int = HOP) -> float:
    """Mel frames spanned by one video frame, ``sample_rate / fps / hop`` (6.25 at the defaults)."""
    return sample_rate / fps / hop


@dataclass(frozen=True)
class ImpactClass:
    """One object class of the synthetic *impacts* scene: its colour and the pitch it sounds."""

    name: str
    rgb: tuple[int, int, int]
    pitch_hz: float


# Colours far apart in RGB and pitches far apart in mel bins (each at least 4 mel bins from
# its neighbours at 80 bins / 8 kHz), so class accuracy measures sync models, not the detector.
IMPACT_CLASSES: tuple[ImpactClass, ...] = (
    ImpactClass("red", (230, 40, 40), 392.0),
    ImpactClass("green", (40, 220, 60), 784.0),
    ImpactClass("blue", (50, 90, 240), 1568.0),
    ImpactClass("yellow", (240, 220, 40), 3136.0),
)
