"""A sync-discriminative term on the denoiser's clean-signal (x0) predictions (beyond the paper).

The diffusion loss scores a predicted mel element by element: an onset placed 50 ms late costs
about as much as slightly wrong loudness spread over the clip, so timing, the thing a
video-to-audio model must get right, is a small part of the objective. This term scores timing
alone, from two envelopes that any impact, footstep or dance beat shares across modalities:

* audio onset envelope ``o[l] = mean_m relu(a[m, l] - a[m, l-1])`` (positive spectral flux of a
  log-mel ``a`` (B, M, L), ``o[0] = 0``; Bello et al. 2005): sound onsets;
* video motion energy ``e[t] = mean_{c,h,w} (v[t] - v[t-1])^2`` (frame-difference energy of a
  video or its latents ``v`` (B, T, C, H, W), ``e[0] = 0``): visible changes. In latent space it
  is the energy of the latent change, which the codec keeps for moving objects.

``e`` is put on the mel grid (mel frame ``l`` at time ``l / L`` of the clip takes the change that
ends at the first video frame at or after it, :func:`to_audio_grid`), both envelopes are
standardised over time (:func:`standardize`), and a clip's alignment with a partner shifted by
``k`` mel frames is their correlation ``s_k = mean_l z_x[l] z_p[l - k]`` (circular, like the
temporal-shift negatives). The term is InfoNCE over shifts (:func:`shift_infonce`):
``-log softmax_k(s_k / tau)`` at ``k = 0`` among ``k in {0, +-k_1, ..., +-k_S}``: the prediction
must correlate with its partner better at the true alignment than at any tested misalignment.
Like the bounded contrastive loss it is >= 0 and saturates, so nothing is gained by destroying
the shifted correlations, and it needs no negative pass through the network.

Both directions (:func:`sync_loss`): the predicted audio against the true video (what v2a must
learn) and the predicted video against the true audio (a2v). The partner is the ground truth, not
the other prediction, so that the term cannot be lowered by making both predictions agree on a
wrong timing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Relative floor of the variance in :func:`standardize`, against dividing noise by ~0.
_VAR_FLOOR = 1e-3


def onset_envelope(mel: torch.Tensor) -> torch.Tensor:
    """Positive mel flux ``o[l] = mean_m relu(a[m, l] - a[m, l-1])``, ``o[0] = 0``: (B, M, L) -> (B, L)."""
    flux = F.relu(mel[..., 1:] - mel[..., :-1]).mean(dim=1)
    return F.pad(flux, (1, 0))


def motion_energy(video: torch.Tensor) -> torch.Tensor:
    """Frame-difference energy ``e[t] = mean (v[t] - v[t-1])^2``, ``e[0] = 0``: (B, T, C, H, W) -> (B, T)."""
    energy = (video[:, 1:] - video[:, :-1]).pow(2).flatten(2).mean(dim=2)
    return F.pad(energy, (1, 0))


def to_audio_grid(envelope: torch.Tensor, length: int) -> torch.Tensor:
    """A video-rate envelope (B, T) on the mel grid (B, ``length``).

    Mel frame ``l`` lies at clip time ``l / length``; a change seen first in video frame ``t``
    happened between frames ``t - 1`` and ``t``, so mel frame ``l`` takes ``e[ceil(l T / length)]``
    (clamped to the last frame).
    """
    frames = envelope.shape[1]
    index = torch.div(torch.arange(length, device=envelope.device) * frames + length - 1, length,
                      rounding_mode="floor").clamp(max=frames - 1)
    return envelope[:, index]


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean and (about) unit variance along the last axis: ``(x - mu) / sqrt(var + 1e-3 E[x^2])``.

    The floor is relative to the signal's own scale (mel flux and latent motion energy differ by
    orders of magnitude) and makes a constant envelope (a static video, silence) standardise to
    zeros, i.e. carry no timing, instead of amplified rounding noise.
    """
    x = x.float()
    centred = x - x.mean(dim=-1, keepdim=True)
    var = centred.pow(2).mean(dim=-1, keepdim=True)
    return centred / (var + _VAR_FLOOR * x.pow(2).mean(dim=-1, keepdim=True) + 1e-12).sqrt()


def shift_offsets(shifts: tuple[int, ...]) -> list[int]:
    """The tested offsets ``[0, +k_1, -k_1, ..., +k_S, -k_S]`` (the aligned one first)."""
    return [0] + [s * k for k in shifts for s in (1, -1)]


def shift_scores(z: torch.Tensor, partner: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """Correlations ``s_k = mean_l z[l] partner[l - k]`` (B, 1 + 2S) over :func:`shift_offsets`.

    ``z``, ``partner`` (B, L) standardised envelopes; shifts are circular and must be < L.
    """
    length = z.shape[-1]
    if any(not 0 < k < length for k in shifts):
        raise ValueError(f"sync shifts must lie in [1, {length - 1}] mel frames for clips of {length}, got {shifts}")
    return torch.stack([(z * partner.roll(k, dims=-1)).mean(dim=-1) for k in shift_offsets(shifts)], dim=-1)


def shift_infonce(z: torch.Tensor, partner: torch.Tensor, shifts: tuple[int, ...], temperature: float) -> torch.Tensor:
    """``-log softmax_k(s_k / tau)[k = 0]`` per clip (B,): InfoNCE with the aligned partner as positive."""
    logits = shift_scores(z, partner, shifts) / temperature
    return torch.logsumexp(logits, dim=-1) - logits[:, 0]


def sync_loss(
    video0: torch.Tensor,
    audio0: torch.Tensor,
    video0_hat: torch.Tensor,
    audio0_hat: torch.Tensor,
    shifts: tuple[int, ...],
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip sync terms ``(audio (B,), video (B,))`` (module docstring).

    ``audio``: InfoNCE of the predicted audio's onsets against the true video's motion,
    ``video``: of the predicted video's motion against the true audio's onsets. ``video0`` /
    ``video0_hat`` (B, T, C, H, W), ``audio0`` / ``audio0_hat`` (B, M, L) log-mels; the ground truth
    carries no gradient.
    """
    length = audio0.shape[-1]
    true_motion = standardize(to_audio_grid(motion_energy(video0.detach()), length))
    true_onsets = standardize(onset_envelope(audio0.detach()))
    predicted_onsets = standardize(onset_envelope(audio0_hat))
    predicted_motion = standardize(to_audio_grid(motion_energy(video0_hat), length))
    return (shift_infonce(predicted_onsets, true_motion, shifts, temperature),
            shift_infonce(predicted_motion, true_onsets, shifts, temperature))
