"""Tensor and signal conventions shared by every stage of cmmd (METHOD.md section 1).

Stated once, here:

* video tensors are ``(B, T, C, H, W)`` float in ``[-1, 1]`` (pixels) or codec latents;
  decoded media frames are numpy ``uint8`` arrays ``(T, H, W, 3)``.
* waveforms are float32 mono in ``[-1, 1]``: numpy ``(S,)`` or torch ``(B, S)``.
* mels are ``(B, N_MELS, L)`` natural-log magnitude mels, ``L = S // HOP`` (librosa-style
  centred frames with the last one dropped, so 1.8 s -> 112 frames and frame ``l`` is
  centred on sample ``l * HOP``).
* the two time axes meet through time in seconds, never by assuming divisibility:
  one video frame is ``SAMPLE_RATE / FPS / HOP = 6.25`` mel frames at the defaults.
"""

from __future__ import annotations

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


def mel_frames(num_samples: int, hop: int = HOP) -> int:
    """Number of mel frames for ``num_samples`` audio samples under our framing."""
    return num_samples // hop


def samples_per_frame(fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> float:
    """Audio samples spanned by one video frame (1600 at the defaults)."""
    return sample_rate / fps


def mel_frames_per_video_frame(fps: float = FPS, sample_rate: int = SAMPLE_RATE, hop: int = HOP) -> float:
    """Mel frames spanned by one video frame (6.25 at the defaults)."""
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
