"""Audio quality metrics between a reference waveform and a test one (e.g. a vocoder's output).

Both take waves ``(S,)`` or ``(B, S)`` float and return one float; lower is better.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmmd.audio.mel import CMMD_MEL, MelConfig
from cmmd.errors import CmmdError


def multi_resolution_stft_distance(
    reference: Tensor, test: Tensor,
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
) -> float:
    """Multi-resolution STFT distance (Yamamoto et al. 2020, Eqs. 3-5), averaged over resolutions:
    spectral convergence ``||S_r| - |S_t||_F / ||S_r||_F`` plus mean ``|log |S_r| - log |S_t||``,
    Hann windows of ``n_fft`` with hop given. Waves ``(S,)`` or ``(B, S)`` of equal length."""
    if reference.shape != test.shape:
        raise CmmdError(f"STFT distance needs equal shapes, got {tuple(reference.shape)} and {tuple(test.shape)}")
    total = 0.0
    for n_fft, hop in resolutions:
        r, t = _stft_magnitude(reference, n_fft, hop), _stft_magnitude(test, n_fft, hop)
        convergence = torch.linalg.norm(r - t) / torch.linalg.norm(r)
        total += float(convergence + (r.log() - t.log()).abs().mean())
    return total / len(resolutions)


def _stft_magnitude(wave: Tensor, n_fft: int, hop: int) -> Tensor:
    """``|STFT|`` (floored at 1e-7) of ``wave (S,) or (B, S)`` in float64, Hann window of ``n_fft``."""
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(wave.double().reshape(-1, wave.shape[-1]), n_fft, hop, window=window, return_complex=True)
    return spec.abs().clamp(min=1e-7)


def log_mel_l1(reference: Tensor, test: Tensor, mel: MelConfig = CMMD_MEL) -> float:
    """Mean absolute log-mel difference (nats) between two waves ``(S,)`` or ``(B, S)`` at ``mel.sample_rate``."""
    n = min(reference.shape[-1], test.shape[-1])
    return float((mel.log_mel(reference[..., :n].float()) - mel.log_mel(test[..., :n].float())).abs().mean())


__all__ = ["log_mel_l1", "multi_resolution_stft_distance"]
