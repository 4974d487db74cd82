"""Griffin-Lim vocoder: the zero-weight fallback from log-mel back to waveform (METHOD.md section 2).

Two steps, both batched torch code that runs on the input's device:

1. mel -> linear magnitude by non-negative least squares, ``min_{X >= 0} ||F X - M||^2`` with
   ``F`` the mel filterbank (80 x 257): projected gradient descent with step ``1 / ||F||_2^2``
   started from the clamped pseudo-inverse ``max(F^+ M, 0)``. The problem is under-determined
   (80 equations per frame for 257 unknowns), so this finds a non-negative magnitude whose mel
   reproduces ``M``, as ``librosa.feature.inverse.mel_to_stft`` does with L-BFGS-B on the CPU.
2. phase by fast Griffin-Lim (Perraud, Balazs and Sondergaard, 2013): the Griffin-Lim
   projection alternated with a momentum step ``c_k = P(X) - momentum / (1 + momentum) * P_prev``
   (librosa's and torchaudio's form, momentum 0.99), from a deterministic initial phase.

Framing matches :func:`cmmd.audio.mel.log_mel`: ``L`` mel frames give ``L * HOP`` samples, frame
``l`` centred on sample ``l * HOP``. The forward transform drops the last centred frame; here it
is supplied again as a copy of frame ``L - 1`` so that every output sample is covered by two
windows and the overlap-add normalisation stays well conditioned up to the last sample.

Measured round trip (``tests/test_mel.py``, 32 iterations): mean abs log-mel difference between
``log_mel(griffin_lim(m))`` and ``m`` below 0.4 nats over all bins on a percussive signal and on a
pure tone (measured 0.33 and 0.23), and below 0.1 nats over bins louder than ``exp(-2)``
(measured 0.013 and 0.035).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

from cmmd.audio.mel import mel_filterbank, stft
from cmmd.conventions import HOP, N_FFT, N_MELS, SAMPLE_RATE, WIN, mel_frames_to_samples
from cmmd.errors import CmmdError


@functools.lru_cache(maxsize=16)
def _constants(
    sample_rate: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, float]:
    fb64 = mel_filterbank(sample_rate)
    pinv = torch.linalg.pinv(fb64)
    step = 1.0 / float(torch.linalg.matrix_norm(fb64, ord=2)) ** 2
    window = torch.hann_window(WIN, periodic=True, dtype=dtype, device=device)
    return fb64.to(device=device, dtype=dtype), pinv.to(device=device, dtype=dtype), window, step


def mel_to_magnitude(mel: Tensor, fb: Tensor, pinv: Tensor, step: float, n_iter: int) -> Tensor:
    """Non-negative least-squares linear magnitude ``(..., 257, L)`` of a magnitude mel ``(..., 80, L)``.

    Projected gradient on ``||fb @ X - mel||^2`` (step ``1 / ||fb||_2^2``, ``n_iter`` steps)
    from ``max(pinv @ mel, 0)``; see the module docstring.
    """
    x = torch.matmul(pinv, mel).clamp(min=0.0)
    for _ in range(n_iter):
        x = (x - step * torch.matmul(fb.T, torch.matmul(fb, x) - mel)).clamp(min=0.0)
    return x


def _istft(spec: Tensor, window: Tensor, length: int) -> Tensor:
    return torch.istft(
        spec, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True, length=length
    )


def griffin_lim(
    log_mel: Tensor,
    n_iter: int = 32,
    momentum: float = 0.99,
    init_phase: Literal["random", "zeros"] = "random",
    seed: int = 0,
    nnls_iter: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> Tensor:
    """Waveform from an un-normalised natural-log magnitude mel (inverse of ``log_mel``).

    ``log_mel (80, L) -> (L * HOP,)`` and ``(B, 80, L) -> (B, L * HOP)``, clamped to ``[-1, 1]``
    (the waveform convention of :mod:`cmmd.conventions`). Normalised model outputs must go
    through :meth:`cmmd.audio.mel.MelStats.denormalize` first. Deterministic: the initial phase
    is zero (``"zeros"``) or uniform from a CPU generator seeded with ``seed`` (``"random"``),
    so every device starts from the same phase, and one phase is shared by the batch, so an item
    gives the same wave alone or batched. Computed in float32 (float64 for float64 input) without
    gradients; returned in the input dtype.
    """
    if log_mel.dim() not in (2, 3) or log_mel.shape[-2] != N_MELS:
        raise CmmdError(
            f"griffin_lim expects a log-mel (80, L) or (B, 80, L), got shape {tuple(log_mel.shape)}"
        )
    if log_mel.shape[-1] < 1:
        raise CmmdError("griffin_lim got a log-mel with no frames")
    if not 0.0 <= momentum < 1.0:
        raise CmmdError(f"griffin_lim momentum must be in [0, 1), got {momentum}")
    if init_phase not in ("random", "zeros"):
        raise CmmdError(f"griffin_lim init_phase must be 'random' or 'zeros', got {init_phase!r}")
    squeeze = log_mel.dim() == 2
    in_dtype = log_mel.dtype
    dtype = in_dtype if in_dtype in (torch.float32, torch.float64) else torch.float32
    device = log_mel.device
    fb, pinv, window, step = _constants(int(sample_rate), device, dtype)

    with torch.no_grad():
        mel = log_mel.reshape(-1, N_MELS, log_mel.shape[-1]).to(dtype).exp()
        frames = mel.shape[-1]
        magnitude = mel_to_magnitude(mel, fb, pinv, step, nnls_iter)
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # the dropped last frame
        length = mel_frames_to_samples(frames)

        # One initial phase (257, L + 1) shared by the batch, so an item's output does not
        # depend on what it is batched with.
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        if init_phase == "zeros":
            angles = torch.ones(magnitude.shape[-2:], dtype=complex_dtype, device=device)
        else:
            gen = torch.Generator().manual_seed(seed)
            phase = torch.rand(magnitude.shape[-2:], generator=gen, dtype=torch.float64) * (2 * math.pi)
            angles = torch.polar(torch.ones_like(phase), phase).to(device=device, dtype=complex_dtype)

        accel = momentum / (1.0 + momentum)
        previous: Tensor | None = None
        for _ in range(n_iter):
            rebuilt = stft(_istft(magnitude * angles, window, length), window)
            angles = rebuilt if previous is None else rebuilt - accel * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        wave = _istft(magnitude * angles, window, length).clamp(-1.0, 1.0)

    wave = wave.to(in_dtype)
    return wave[0] if squeeze else wave
