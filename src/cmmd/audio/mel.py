"""Log-mel front-end and per-bin mel statistics (METHOD.md sections 1 and 2).

The audio representation of cmmd is an 80-bin natural-log magnitude mel spectrogram of 16 kHz
mono audio: STFT window 512 (32 ms, periodic Hann), hop 256 (16 ms), ``center=True`` with zero
("constant") padding, which is librosa's default ``pad_mode`` since 0.10, Slaney-style mel
filters (``htk=False``, area-normalised) from ``F_MIN`` to ``F_MAX``, magnitude (power 1), then
``log(max(mel, LOG_FLOOR))``. Centred framing yields ``S // HOP + 1`` frames; the last one is
dropped so that ``L = S // HOP`` (1.8 s -> 112 frames) and frame ``l`` is centred on sample
``l * HOP`` (:mod:`cmmd.data.conventions`). The inverse (:mod:`cmmd.audio.griffinlim`) uses
the same framing through :func:`stft`.

Agreement with librosa: :func:`log_mel` equals
``log(max(librosa.feature.melspectrogram(y, sr=16000, n_fft=512, hop_length=256,
win_length=512, power=1.0, n_mels=80, fmin=0, fmax=8000)[:, :-1], LOG_FLOOR))`` to a max abs
difference below 1e-3 (float32) wherever the mel magnitude exceeds 1e-4 (tested in
``tests/test_mel.py``; float32 FFT rounding, relative to the frame's energy, is what limits it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import Tensor

from cmmd.data.conventions import F_MAX, F_MIN, HOP, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, WIN
from cmmd.errors import CmmdError

MIN_STD = 1e-2
"""Floor on per-bin standard deviations in :class:`MelStats` (natural-log units), so that a
bin that is constant over a dataset (e.g. always at ``LOG_FLOOR``) is not divided by zero."""


@functools.lru_cache(maxsize=8)
def _filterbank_f64(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise CmmdError(
            f"mel range {f_min}..{f_max} Hz does not fit sample rate {sample_rate} Hz "
            f"(need 0 <= f_min < f_max <= {sample_rate / 2}); resample the audio to {SAMPLE_RATE} Hz"
        )
    fb = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=False,
        norm="slaney", dtype=np.float64,
    )
    return torch.from_numpy(fb)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> Tensor:
    """Slaney-normalised mel filterbank ``(n_mels, n_fft // 2 + 1)`` float64, as librosa builds it."""
    return _filterbank_f64(int(sample_rate), n_fft, n_mels, float(f_min), float(f_max)).clone()


def mel_frequencies(
    sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX
) -> Tensor:
    """Centre frequency in Hz of each mel bin ``(n_mels,)`` (the peak of its triangular filter)."""
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise CmmdError(f"mel range {f_min}..{f_max} Hz does not fit sample rate {sample_rate} Hz")
    edges = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=f_min, fmax=f_max, htk=False)
    return torch.from_numpy(edges[1:-1].copy())


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # FFTs of half/bfloat16 are not supported everywhere; compute those in float32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@functools.lru_cache(maxsize=32)
def _cached_constants(
    sample_rate: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    fb = mel_filterbank(sample_rate).to(device=device, dtype=dtype)
    window = torch.hann_window(WIN, periodic=True, dtype=dtype, device=device)
    return fb, window


def stft(wave: Tensor, window: Tensor) -> Tensor:
    """Complex STFT ``(..., N_FFT // 2 + 1, S // HOP + 1)`` of ``wave (..., S)`` in cmmd framing.

    Centred frames with zero padding (librosa's default), all ``S // HOP + 1`` of them: callers
    drop the last frame (:func:`log_mel`) or supply it (:mod:`cmmd.audio.griffinlim`).
    """
    lead = wave.shape[:-1]
    spec = torch.stft(
        wave.reshape(-1, wave.shape[-1]), n_fft=N_FFT, hop_length=HOP, win_length=WIN,
        window=window, center=True, pad_mode="constant", return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def _log_mel(wave: Tensor, fb: Tensor, window: Tensor) -> Tensor:
    if wave.dim() not in (1, 2):
        raise CmmdError(f"log_mel expects a waveform (S,) or (B, S), got shape {tuple(wave.shape)}")
    if wave.shape[-1] < HOP:
        raise CmmdError(
            f"waveform of {wave.shape[-1]} samples is shorter than one mel hop ({HOP} samples); "
            "it has no mel frame under cmmd framing (L = S // HOP)"
        )
    if not wave.is_floating_point():
        raise CmmdError(
            f"log_mel expects a float waveform in [-1, 1], got {wave.dtype}; "
            "convert int16 audio with wave.float() / 32768"
        )
    in_dtype = wave.dtype
    x = wave.to(_compute_dtype(in_dtype))
    magnitude = stft(x, window.to(x.dtype)).abs()[..., :-1]  # drop the last centred frame
    mel = torch.matmul(fb.to(x.dtype), magnitude)
    return torch.log(mel.clamp(min=LOG_FLOOR)).to(in_dtype)


def log_mel(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Natural-log magnitude mel (METHOD.md section 1): ``(S,) -> (80, L)``, ``(B, S) -> (B, 80, L)``.

    ``L = S // HOP``. Differentiable; runs on the input's device; float64 inputs are computed in
    float64, half/bfloat16 in float32 and cast back. Filterbank and window are cached per
    sample rate, device and dtype. Raises :class:`CmmdError` for fewer than ``HOP`` samples or
    an integer waveform.
    """
    fb, window = _cached_constants(int(sample_rate), wave.device, _compute_dtype(wave.dtype))
    return _log_mel(wave, fb, window)


class LogMel(torch.nn.Module):
    """Module form of :func:`log_mel`; filterbank and window are non-persistent buffers.

    They follow ``.to(device)`` but stay out of state dicts, since they are derived constants.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.register_buffer("fb", mel_filterbank(self.sample_rate).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(WIN, periodic=True), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        """``wave (S,) or (B, S)`` -> log-mel ``(80, L) or (B, 80, L)``, ``L = S // HOP``."""
        return _log_mel(wave, self.fb, self.window)


def _as_bins_by_frames(mel: Tensor | np.ndarray, n_bins: int) -> Tensor:
    """Any ``(n_bins, L)`` or ``(B, n_bins, L)`` mel as a float64 ``(n_bins, B * L)`` tensor."""
    m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, Tensor) else mel.detach())
    if m.dim() not in (2, 3) or m.shape[-2] != n_bins:
        raise CmmdError(f"mel statistics expect mels (80, L) or (B, 80, L), got shape {tuple(m.shape)}")
    m = m.to(device="cpu", dtype=torch.float64)
    return m.transpose(-2, -1).reshape(-1, n_bins).T if m.dim() == 3 else m


@dataclass
class MelStats:
    """Per-bin log-mel mean and standard deviation of a dataset (METHOD.md section 1, Decision).

    Why per bin: log-mel levels differ by several nats between low and high bins (spectral
    tilt) and so do their spreads. The diffusion prior puts unit-variance noise on every element,
    so with a single global scale quiet or steady bins would be drowned at noise levels where
    loud bins are still legible; per-bin standardisation gives each bin the same signal-to-noise
    ratio at each step. Statistics are pooled over time (clips are stationary in time and vary
    in length), hence one value per bin. Stored with the dataset/checkpoint as JSON.

    ``mean`` and ``std`` are float32 ``(80,)`` tensors; ``count`` is the number of frames pooled.
    """

    mean: Tensor
    std: Tensor
    count: int = 0

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32).detach().cpu()
        self.std = torch.as_tensor(self.std, dtype=torch.float32).detach().cpu()
        if self.mean.dim() != 1 or self.mean.shape != self.std.shape:
            raise CmmdError(
                f"mel stats need mean and std vectors of equal length, got {tuple(self.mean.shape)} "
                f"and {tuple(self.std.shape)}"
            )
        if not bool(torch.all(self.std > 0)):
            raise CmmdError("mel stats have a non-positive std; recompute them with MelStats.compute")

    def _shaped(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        if mel.dim() < 2 or mel.shape[-2] != self.mean.shape[0]:
            raise CmmdError(
                f"mel of shape {tuple(mel.shape)} does not have {self.mean.shape[0]} bins on dim -2"
            )
        kw = {"device": mel.device, "dtype": mel.dtype}
        return self.mean.to(**kw)[:, None], self.std.to(**kw)[:, None]

    def normalize(self, mel: Tensor) -> Tensor:
        """``(mel - mean) / std`` per bin; ``mel (..., 80, L)``."""
        mean, std = self._shaped(mel)
        return (mel - mean) / std

    def denormalize(self, mel: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`: ``mel * std + mean`` per bin; ``mel (..., 80, L)``."""
        mean, std = self._shaped(mel)
        return mel * std + mean

    def save(self, path: str | Path) -> None:
        """Write ``{"mean": [80], "std": [80], "count": int}`` as JSON."""
        data = {"mean": self.mean.tolist(), "std": self.std.tolist(), "count": self.count}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> MelStats:
        """Read stats written by :meth:`save` (``count`` optional)."""
        path = Path(path)
        if not path.is_file():
            raise CmmdError(f"mel stats file {path} does not exist; run `cmmd prepare` to create it")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CmmdError(f"mel stats file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "mean" not in data or "std" not in data:
            raise CmmdError(f"mel stats file {path} must hold an object with 'mean' and 'std' lists")
        try:
            return cls(mean=data["mean"], std=data["std"], count=int(data.get("count", 0)))
        except CmmdError as exc:
            raise CmmdError(f"mel stats file {path}: {exc}") from None

    @classmethod
    def compute(cls, mels: Iterable[Tensor | np.ndarray], n_bins: int = N_MELS) -> MelStats:
        """Stream per-bin mean/std over ``mels``, each ``(80, L)`` or ``(B, 80, L)``.

        Chunks are merged with Chan et al.'s parallel form of Welford's algorithm in float64, so
        a whole dataset can be passed as a generator without holding it; the result equals the
        one-shot population statistics of all frames. ``std`` is floored at :data:`MIN_STD`.
        """
        count = 0
        mean = torch.zeros(n_bins, dtype=torch.float64)
        m2 = torch.zeros(n_bins, dtype=torch.float64)
        for mel in mels:
            x = _as_bins_by_frames(mel, n_bins)
            n = x.shape[1]
            if n == 0:
                continue
            chunk_mean = x.mean(dim=1)
            chunk_m2 = ((x - chunk_mean[:, None]) ** 2).sum(dim=1)
            total = count + n
            delta = chunk_mean - mean
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
            count = total
        if count == 0:
            raise CmmdError("cannot compute mel stats from no frames; the dataset yielded no mels")
        std = torch.sqrt(m2 / count).clamp(min=MIN_STD)
        if not bool(torch.isfinite(mean).all()):
            raise CmmdError("mel stats are not finite; some input mel holds NaN or inf")
        return cls(mean=mean.float(), std=std.float(), count=count)


__all__ = [
    "MIN_STD",
    "LogMel",
    "MelStats",
    "log_mel",
    "mel_filterbank",
    "mel_frequencies",
    "stft",
]
