"""Log-mel front-end, its configuration, and per-bin mel statistics (METHOD.md sections 1 and 2).

One implementation, :meth:`MelConfig.log_mel`, computes every log-mel in cmmd: the dataset's,
the pipeline's, the vocoders' and their training's. A checkpoint records the
:class:`MelConfig` it was trained on (:func:`recorded_mel`, :meth:`MelConfig.describe`).

The audio representation of cmmd is an 80-bin natural-log magnitude mel spectrogram of 16 kHz
mono audio: STFT window 512 (32 ms, periodic Hann), hop 256 (16 ms), ``center=True`` with zero
("constant") padding, which is librosa's default ``pad_mode`` since 0.10, Slaney-style mel
filters (``htk=False``, area-normalised) from ``F_MIN`` to ``F_MAX``, magnitude (power 1), then
``log(max(mel, LOG_FLOOR))``. Centred framing yields ``S // HOP + 1`` frames; the last one is
dropped so that ``L = S // HOP`` (1.8 s -> 112 frames) and frame ``l`` is centred on sample
``l * HOP`` (:mod:`cmmd.conventions`). The inverse (:mod:`cmmd.audio.griffinlim`) uses
the same framing through :func:`stft`.

Agreement with librosa: :func:`log_mel` equals
``log(max(librosa.feature.melspectrogram(y, sr=16000, n_fft=512, hop_length=256,
win_length=512, power=1.0, n_mels=80, fmin=0, fmax=8000)[:, :-1], LOG_FLOOR))`` to a max abs
difference below 1e-3 (float32) wherever the mel magnitude exceeds 1e-4 (tested in
``tests/test_mel.py``; float32 FFT rounding, relative to the frame's energy, is what limits it).
:data:`HIFIGAN_MEL` is the released HiFi-GAN vocoder's mel, in its own framing (:class:`MelConfig`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import librosa
import numpy as np
import torch
from torch import Tensor

from cmmd.conventions import F_MAX, F_MIN, HOP, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, WIN
from cmmd.errors import CmmdError

MIN_STD = 1e-2
"""Floor on per-bin standard deviations in :class:`MelStats` (natural-log units), so that a
bin that is constant over a dataset (e.g. always at ``LOG_FLOOR``) is not divided by zero."""


@dataclass(frozen=True)
class MelConfig:
    """A log-mel front-end: STFT, Slaney mel filterbank, magnitude, ``log(max(mel, log_floor))``.

    The one description of a mel: what checkpoints record (:meth:`describe`), what the dataset,
    the pipeline, the vocoders and their training compute with (:meth:`log_mel`). Invalid
    settings raise :class:`CmmdError` on construction.

    ``framing`` fixes how frames sit on the waveform; both give ``L = S // hop`` frames, so a
    vocoder with upsampling product ``hop`` returns exactly ``S`` samples:

    * ``"cmmd"``: centred frames with zero padding, last frame dropped; frame ``l`` is centred
      on sample ``l * hop`` (module docstring; :data:`CMMD_MEL`);
    * ``"hifigan"``: HiFi-GAN's ``meldataset.mel_spectrogram``: reflect padding by
      ``(n_fft - hop) / 2`` on each side, uncentred frames, magnitude ``sqrt(|X|^2 + 1e-9)``;
      frame ``l`` is centred on sample ``l * hop + hop / 2`` (:data:`HIFIGAN_MEL`).
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = WIN
    hop: int = HOP
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    log_floor: float = LOG_FLOOR
    framing: Literal["cmmd", "hifigan"] = "cmmd"

    def __post_init__(self) -> None:
        if self.framing not in ("cmmd", "hifigan"):
            raise CmmdError(f"mel framing must be 'cmmd' or 'hifigan', got {self.framing!r}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise CmmdError(
                f"mel range {self.f_min}..{self.f_max} Hz does not fit sample rate {self.sample_rate} Hz "
                f"(need 0 <= f_min < f_max <= {self.sample_rate / 2}); resample the audio to {SAMPLE_RATE} Hz"
            )
        if not 0 < self.hop <= self.win_length <= self.n_fft:
            raise CmmdError(f"mel config needs 0 < hop <= win_length <= n_fft, got {self.hop}, "
                            f"{self.win_length}, {self.n_fft}")

    def describe(self) -> dict[str, Any]:
        """JSON-able fields (what checkpoints record; :func:`mel_config_from` reads them back)."""
        return asdict(self)

    def filterbank(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """Slaney-normalised mel filterbank ``(n_mels, n_fft // 2 + 1)``, as librosa builds it."""
        return _constants(self, torch.device(device), dtype)[0].clone()

    def log_mel(self, wave: Tensor) -> Tensor:
        """Natural-log magnitude mel: ``(S,) -> (n_mels, L)``, ``(B, S) -> (B, n_mels, L)``, ``L = S // hop``.

        Differentiable; runs on the input's device; float64 inputs are computed in float64,
        half/bfloat16 in float32 and cast back. Filterbank and window are cached per config,
        device and dtype. Raises :class:`CmmdError` for fewer than ``hop`` samples or an integer
        waveform.
        """
        fb, window = _constants(self, wave.device, _compute_dtype(wave.dtype))
        return _log_mel(wave, self, fb, window)


CMMD_MEL = MelConfig()
"""cmmd's mel (METHOD.md section 1): 16 kHz, n_fft 512, hop 256, 80 bins, 0-8 kHz."""
HIFIGAN_MEL = MelConfig(sample_rate=22050, n_fft=1024, win_length=1024, hop=256, n_mels=80, f_min=0.0,
                        f_max=8000.0, log_floor=1e-5, framing="hifigan")
"""The HiFi-GAN universal model's mel (its ``config.json`` and ``meldataset.py``)."""
MEL_CONFIGS = {"cmmd": CMMD_MEL, "hifigan": HIFIGAN_MEL}
"""Mel configurations by name (``cmmd vocoder train --mel``)."""


def cmmd_mel(sample_rate: int = SAMPLE_RATE) -> MelConfig:
    """cmmd's mel (:data:`CMMD_MEL`) at ``sample_rate``: what a dataset at that rate computes and records."""
    return CMMD_MEL if int(sample_rate) == CMMD_MEL.sample_rate else replace(CMMD_MEL, sample_rate=int(sample_rate))


def mel_config_from(record: Mapping[str, Any]) -> MelConfig:
    """A :class:`MelConfig` from its ``describe()`` dict; CmmdError naming unknown or missing fields."""
    try:
        return MelConfig(**dict(record))
    except TypeError as exc:
        raise CmmdError(f"not a mel configuration: {dict(record)} ({exc})") from None


def recorded_mel(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The mel configuration a diffusion checkpoint's ``extra`` records (``"mel"``); checkpoints
    from before it was recorded used cmmd's mel at their ``sample_rate``."""
    if "mel" in extra:
        return dict(extra["mel"])
    return cmmd_mel(int(extra.get("sample_rate", SAMPLE_RATE))).describe()


def mel_filterbank(sample_rate: int = SAMPLE_RATE) -> Tensor:
    """cmmd's filterbank at ``sample_rate``: ``cmmd_mel(sample_rate).filterbank()``, float64 ``(80, 257)``."""
    return cmmd_mel(sample_rate).filterbank()


def mel_frequencies(mel: MelConfig = CMMD_MEL) -> Tensor:
    """Centre frequency in Hz of each mel bin ``(n_mels,)`` (the peak of its triangular filter)."""
    edges = librosa.mel_frequencies(n_mels=mel.n_mels + 2, fmin=mel.f_min, fmax=mel.f_max, htk=False)
    return torch.from_numpy(edges[1:-1].copy())


def log_mel(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """cmmd's log-mel (METHOD.md section 1) at ``sample_rate``: ``cmmd_mel(sample_rate).log_mel(wave)``.

    ``(S,) -> (80, L)``, ``(B, S) -> (B, 80, L)``, ``L = S // HOP``; see :meth:`MelConfig.log_mel`.
    """
    return cmmd_mel(sample_rate).log_mel(wave)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # FFTs of half/bfloat16 are not supported everywhere; compute those in float32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@functools.lru_cache(maxsize=32)
def _constants(mel: MelConfig, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The one filterbank cache: ``(filterbank, periodic Hann window)`` of ``mel`` on ``device``."""
    fb = librosa.filters.mel(
        sr=mel.sample_rate, n_fft=mel.n_fft, n_mels=mel.n_mels, fmin=mel.f_min, fmax=mel.f_max, htk=False,
        norm="slaney", dtype=np.float64,
    )
    window = torch.hann_window(mel.win_length, periodic=True, dtype=dtype, device=device)
    return torch.from_numpy(fb).to(device=device, dtype=dtype), window


def stft(wave: Tensor, window: Tensor, mel: MelConfig = CMMD_MEL) -> Tensor:
    """Complex STFT ``(..., n_fft // 2 + 1, S // hop + 1)`` of ``wave (..., S)`` in cmmd framing.

    Centred frames with zero padding (librosa's default), all ``S // hop + 1`` of them: callers
    drop the last frame (:meth:`MelConfig.log_mel`) or supply it (:mod:`cmmd.audio.griffinlim`).
    """
    lead = wave.shape[:-1]
    spec = torch.stft(
        wave.reshape(-1, wave.shape[-1]), n_fft=mel.n_fft, hop_length=mel.hop, win_length=mel.win_length,
        window=window, center=True, pad_mode="constant", return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def _magnitude(x: Tensor, mel: MelConfig, window: Tensor) -> Tensor:
    """``|STFT|`` ``(B, n_fft // 2 + 1, S // hop)`` of ``x (B, S)`` in ``mel.framing``."""
    frames = x.shape[-1] // mel.hop
    if mel.framing == "cmmd":
        return stft(x, window, mel).abs()[..., :frames]  # drop the last centred frame
    pad = (mel.n_fft - mel.hop) // 2
    if x.shape[-1] <= pad:
        raise CmmdError(f"HiFi-GAN framing reflects {pad} samples at each end, so it needs more than {pad} "
                        f"samples; got {x.shape[-1]}")
    x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(x, mel.n_fft, mel.hop, mel.win_length, window, center=False, return_complex=True)
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)[..., :frames]


def _log_mel(wave: Tensor, mel: MelConfig, fb: Tensor, window: Tensor) -> Tensor:
    """The one log-mel: ``log(max(fb @ |STFT(wave)|, log_floor))`` (module docstring)."""
    if wave.dim() not in (1, 2):
        raise CmmdError(f"log_mel expects a waveform (S,) or (B, S), got shape {tuple(wave.shape)}")
    if wave.shape[-1] < mel.hop:
        raise CmmdError(
            f"waveform of {wave.shape[-1]} samples is shorter than one mel hop ({mel.hop} samples); "
            "it has no mel frame (L = S // hop)"
        )
    if not wave.is_floating_point():
        raise CmmdError(
            f"log_mel expects a float waveform in [-1, 1], got {wave.dtype}; "
            "convert int16 audio with wave.float() / 32768"
        )
    in_dtype = wave.dtype
    x = wave.to(_compute_dtype(in_dtype))
    magnitude = _magnitude(x.reshape(-1, x.shape[-1]), mel, window.to(x.dtype))
    out = torch.log(torch.matmul(fb.to(x.dtype), magnitude).clamp(min=mel.log_floor))
    return out.reshape(*wave.shape[:-1], *out.shape[-2:]).to(in_dtype)


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
    "CMMD_MEL",
    "HIFIGAN_MEL",
    "MEL_CONFIGS",
    "MIN_STD",
    "MelConfig",
    "MelStats",
    "cmmd_mel",
    "log_mel",
    "mel_config_from",
    "mel_filterbank",
    "mel_frequencies",
    "recorded_mel",
    "stft",
]
