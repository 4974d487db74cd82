"""Easy fusion between the video and audio streams (METHOD.md section 3, Paper Fig. 1).

At a fusion point each stream receives the other's features, aligned on its own grid,
concatenated along channels and projected back to its width by a 1x1 convolution:

* video <- audio: audio features ``(B, Ca, L)`` resampled along time to the video's ``T``,
  broadcast over ``H x W``;
* audio <- video: video features averaged over ``H x W`` to ``(B, Cv, T)``, resampled along
  time to the audio's ``L``. Option ``pool="meanmax"`` (ours, not the paper's) concatenates the
  spatial maximum to the average, ``(B, 2 Cv, T)``: an object covering 5 % of the frame reaches
  the audio at 1/20 of its strength through the average alone, which made the colour -> pitch
  mapping of the synthetic benchmark unlearnable in the CPU demo's budget (README, demo notes).

The two time axes meet through time, never through divisibility (mel frames per video frame is
6.25 at the defaults): both sequences cover the same duration, sample ``i`` of ``n`` is centred at
``(i + 0.5) / n`` of it (PyTorch's ``align_corners=False`` convention), and values are linearly
interpolated in time. When shrinking, the linear (triangle) kernel is widened to the scale
factor, as PIL/``antialias=True`` does, so every audio frame contributes to the video frame
it overlaps: a 16 ms onset is not skipped between two samples.

There is no cross-attention layer: the self-attention that follows a fusion point attends over
features that now carry both modalities (the paper's "implicit cross-attention").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def time_resample_matrix(
    src_len: int,
    dst_len: int,
    src_extent: float,
    dst_extent: float,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Linear-in-time resampling weights ``(src_len, dst_len)``; ``y = x @ W``.

    ``src_extent`` / ``dst_extent`` give how many samples of each sequence the common duration
    spans (possibly fractional: after the U-Net pads mel time to a multiple of its downsampling,
    only ``L / 2**level`` frames of a level are real). Source samples beyond ``ceil(src_extent)``
    get zero weight; destination samples beyond ``dst_extent`` extrapolate by clamping (they are
    cropped later). With full extents this equals
    ``F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)`` along one axis.
    Each column sums to 1, so a constant signal is kept constant.
    """
    scale = src_extent / dst_extent
    support = max(scale, 1.0)
    n_valid = max(1, min(src_len, math.ceil(src_extent)))
    centres = (torch.arange(dst_len, device=device, dtype=torch.float64) + 0.5) * scale - 0.5
    centres = centres.clamp(1.0 - support, n_valid - 2.0 + support)
    src = torch.arange(src_len, device=device, dtype=torch.float64)
    weights = (1.0 - (src[:, None] - centres[None, :]).abs() / support).clamp(min=0.0)
    weights = weights * (src < n_valid).to(weights.dtype)[:, None]
    return (weights / weights.sum(dim=0, keepdim=True)).to(dtype)


def resample_time(x: torch.Tensor, dst_len: int, src_extent: float, dst_extent: float) -> torch.Tensor:
    """Resample the last axis of ``x`` (..., L_src) to ``dst_len`` samples by time (see module doc)."""
    return x @ time_resample_matrix(x.shape[-1], dst_len, src_extent, dst_extent, x.device, x.dtype)


class EasyFusion(nn.Module):
    """Exchange features between the streams: ``v += proj_v([v; a->v])``, ``a += proj_a([a; v->a])``.

    Each projection is one 1x1 convolution on the channel concatenation (stored as such, so its
    weight is ``(C_own, C_own + C_other)``, with ``2 C_other`` for the audio side under ``"meanmax"``). It is computed split, ``W_own x + W_other y + b``,
    which is the same sum but lets the other stream's term be computed at ``(B, T)`` (video) or
    ``(B, L)`` (audio) resolution and broadcast, instead of materialising the broadcast concat;
    the residual is folded in as ``(I + W_own) x``, which at zero init is exactly ``x``.

    Residual form with the projection zero-initialised (``zero_init=True``): the joint model
    starts as two independent single-modality U-Nets, every fusion point an exact identity, and
    the coupling grows from there. The gradient with respect to the projection is
    ``grad_out x concat``, non-zero at init, so the zero start does not block learning; it avoids
    injecting the other modality's (initially meaningless, differently scaled) features at full
    strength, in the same way as ADM's zero-initialised residual branches. Both directions read
    the pre-fusion features, so the exchange is symmetric.
    """

    def __init__(self, video_ch: int, audio_ch: int, zero_init: bool, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "meanmax"):
            raise ValueError(f"pool must be 'mean' or 'meanmax', got {pool!r}")
        self.video_ch = video_ch
        self.audio_ch = audio_ch
        self.pool = pool
        self.to_video = nn.Conv2d(video_ch + audio_ch, video_ch, 1)
        pooled_ch = video_ch * (2 if pool == "meanmax" else 1)
        self.to_audio = nn.Conv1d(audio_ch + pooled_ch, audio_ch, 1)
        if zero_init:
            for p in self.parameters():
                nn.init.zeros_(p)

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        frames: int,
        audio_extent: float,
        valid_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse one level.

        video: (B*T, Cv, H, W) frame-folded features; audio: (B, Ca, L).
        ``audio_extent``: how many of the ``L`` frames are real (the rest is padding);
        ``valid_hw``: the unpadded part of ``H x W`` that the spatial average covers.
        Returns the updated ``(video, audio)`` with unchanged shapes.
        """
        cv, ca = self.video_ch, self.audio_ch
        bt = video.shape[0]
        b = bt // frames
        w_video = self.to_video.weight[:, :, 0, 0]
        w_audio = self.to_audio.weight[:, :, 0]

        # video <- audio: project, then resample to the T frames (both linear, so they commute).
        a_proj = torch.einsum("oc,bcl->bol", w_video[:, cv:], audio)
        a_on_frames = resample_time(a_proj, frames, audio_extent, float(frames))
        a_on_frames = a_on_frames.transpose(1, 2).reshape(bt, cv, 1, 1)
        # The residual is folded into the weight, x + W x = (I + W) x: one pass over the video.
        own_v = torch.eye(cv, device=video.device, dtype=w_video.dtype) + w_video[:, :cv]
        video_out = F.conv2d(video, own_v[:, :, None, None], self.to_video.bias) + a_on_frames

        # audio <- video: spatial mean (and max) over the real pixels, project, resample to L.
        real = video[:, :, : valid_hw[0], : valid_hw[1]]
        pooled = real.mean(dim=(2, 3))
        if self.pool == "meanmax":
            pooled = torch.cat([pooled, real.amax(dim=(2, 3))], dim=1)
        pooled = pooled.view(b, frames, -1)
        v_proj = torch.einsum("oc,btc->bot", w_audio[:, ca:], pooled)
        v_on_mels = resample_time(v_proj, audio.shape[-1], float(frames), audio_extent)
        own_a = torch.eye(ca, device=audio.device, dtype=w_audio.dtype) + w_audio[:, :ca]
        audio_out = F.conv1d(audio, own_a[:, :, None], self.to_audio.bias) + v_on_mels
        return video_out, audio_out
