"""Building blocks of the joint U-Net (METHOD.md section 3, Paper Fig. 1).

Layout of video features inside the network: ``(B*T, C, H, W)`` with frames folded into the
batch and stored channels-last, so that per-frame 2-D convolutions, per-frame attention and the
temporal convolution all read the same memory without copies: a channels-last
``(B*T, C, H, W)`` tensor is bytewise a channels-last ``(B, C, T, H*W)`` tensor, on which the
1-D temporal convolution is a ``(3, 1)`` 2-D convolution (see :func:`frames_as_time_axis`).
The number of frames ``T`` travels as a plain ``frames`` argument.

Audio features are ``(B, C, L)`` with mel bins as input channels of the first convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def frames_as_time_axis(x: torch.Tensor, frames: int) -> torch.Tensor:
    """View frame-folded video features ``(B*T, C, H, W)`` as ``(B, C, T, H*W)``.

    For a channels-last input this is a free view (memory order ``B, T, H, W, C`` either way),
    so a ``(3, 1)`` convolution or a GroupNorm over time runs without transposing the tensor.
    """
    bt, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(bt // frames, frames, h * w, c).permute(0, 3, 1, 2)


def time_axis_as_frames(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`frames_as_time_axis`: ``(B, C, T, H*W)`` -> ``(B*T, C, H, W)``."""
    b, c, t, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(b * t, height, width, c).permute(0, 3, 1, 2)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of diffusion step indices ``t`` (B,) float in ``[0, N)`` -> (B, dim).

    The transformer position encoding applied to the step index, as in DDPM/ADM: frequencies
    from 1 to ``1 / max_period``; ``t`` may be fractional.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Shared timestep embedding for both streams (METHOD.md section 3: "timestep embedding shared").

    Sinusoids of ``t_video`` and ``t_audio`` are concatenated and passed through one MLP, giving a
    single ``(B, emb_dim)`` embedding that every block of both streams reads. With equal steps
    this is the paper's single shared embedding; unequal steps let training experiment with
    per-modality noise levels without changing the network.
    """

    def __init__(self, freq_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(2 * freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t_video: torch.Tensor, t_audio: torch.Tensor) -> torch.Tensor:
        """``t_video, t_audio``: (B,) step indices -> (B, emb_dim)."""
        freqs = torch.cat(
            [sinusoidal_embedding(t_video, self.freq_dim), sinusoidal_embedding(t_audio, self.freq_dim)], dim=1
        )
        return self.mlp(freqs.to(self.mlp[0].weight.dtype))


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so its residual branch starts as the identity (ADM practice)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class VideoResBlock(nn.Module):
    """Factorised "2D+1D" residual block on frame-folded video features (Paper Fig. 1).

    ``h = conv3x3(SiLU(GN(x)))`` per frame; timestep injection by scale/shift of the next
    GroupNorm, ``GN(h) * (1 + scale) + shift`` (ADM's AdaGN); then a kernel-3 1-D temporal
    convolution ("same" padding) over ``T`` at each pixel; ``out = skip(x) + h``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float, zero_init: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv_spatial = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv_temporal = nn.Conv2d(out_ch, out_ch, (3, 1), padding=(1, 0))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        if zero_init:
            _zero_(self.conv_temporal)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        """``x``: (B*T, C_in, H, W), ``emb``: (B, E) -> (B*T, C_out, H, W)."""
        h = self.conv_spatial(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).repeat_interleave(frames, dim=0)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        y = self.conv_temporal(frames_as_time_axis(self.dropout(h), frames))
        return self.skip(x) + time_axis_as_frames(y, x.shape[2], x.shape[3])


class AudioResBlock(nn.Module):
    """1-D residual block over mel time (Paper Fig. 1): two kernel-3 convs with AdaGN injection."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float, zero_init: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        if zero_init:
            _zero_(self.conv2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C_in, L), ``emb``: (B, E) -> (B, C_out, L)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        return self.skip(x) + self.conv2(self.dropout(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over token sequences ``(N, S, C)`` with fused SDPA.

    No positional embedding: order information comes from the convolutions around it, so the
    same weights run on any sequence length (test clips are twice the training length).
    """

    def __init__(self, channels: int, head_dim: int, zero_init: bool) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        if zero_init:
            _zero_(self.proj)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: (N, S, C) -> (N, S, C) (the residual branch only)."""
        n, s, c = tokens.shape
        q, k, v = self.qkv(tokens).view(n, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, s, c))


class VideoAttention(nn.Module):
    """Factorised video self-attention: spatial within each frame, then temporal at each pixel."""

    def __init__(self, channels: int, head_dim: int, groups: int, zero_init: bool) -> None:
        super().__init__()
        self.norm_spatial = nn.GroupNorm(groups, channels)
        self.spatial = SelfAttention(channels, head_dim, zero_init)
        self.norm_temporal = nn.GroupNorm(groups, channels)
        self.temporal = SelfAttention(channels, head_dim, zero_init)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x``: (B*T, C, H, W) -> same shape."""
        bt, c, h, w = x.shape
        tokens = self.norm_spatial(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)
        x = x + self.spatial(tokens).reshape(bt, h, w, c).permute(0, 3, 1, 2)
        b = bt // frames
        tokens = self.norm_temporal(frames_as_time_axis(x, frames)).permute(0, 3, 2, 1).reshape(b * h * w, frames, c)
        out = self.temporal(tokens).view(b, h * w, frames, c).permute(0, 2, 1, 3)
        return x + out.reshape(bt, h, w, c).permute(0, 3, 1, 2)


class AudioAttention(nn.Module):
    """Self-attention over mel time ``L``."""

    def __init__(self, channels: int, head_dim: int, groups: int, zero_init: bool) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = SelfAttention(channels, head_dim, zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, L) -> same shape."""
        return x + self.attn(self.norm(x).transpose(1, 2)).transpose(1, 2)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling of the trailing spatial (video) or time (audio) axes.

    No convolution here: the decoder's next residual block starts with a 3x3 (or kernel-3)
    convolution on the upsampled features concatenated with the skip, which does the
    smoothing; a separate conv at the higher resolution cost a fifth of the tiny model's FLOPs.
    """
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
