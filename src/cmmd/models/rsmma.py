"""Random-shift multi-modal attention (RS-MMA), the cross-modal block of MM-Diffusion.

Facts from ``docs/MMDIFFUSION.md`` (Ruan et al. 2023): after the residual blocks at video
downsampling 2, 4, 8 the two streams exchange information by cross-attention restricted to a
window of ``w = 1, 4, 8`` frames (the middle block: a full window, no shift). Each modality has its
own GroupNorm and 1x1 q/k/v projection; video queries of frame ``i`` attend only to the audio keys
covering frames ``[i+s, i+s+w)`` (mod ``F``), audio queries of segment ``i`` only to the video
frames ``i+s ... i+s+w-1`` (mod ``F``). The shift ``s`` is drawn uniformly in ``[0, F-w]`` per
block per forward pass, at inference too. Pure cross-attention (no same-modality keys); each
output projection is zero-initialised into a residual, so the block starts as the identity.

Time alignment: at a level whose audio holds ``L`` tokens of which ``e`` (possibly fractional,
after the U-Net padded the waveform) are real, audio token ``j`` belongs to frame
``floor(j F / e)``; segment ``k`` is tokens ``[ceil(k e / F), ceil((k+1) e / F))``, the last
segment also taking the padded tail. When ``e`` is a multiple of ``F`` (the paper's
25,600 samples for 16 frames at every level) every segment has ``e / F`` tokens, as in the paper.

Windows are batched: :func:`window_index` turns ``(F, w, s)`` into gather indices so that all
frames' windows run in one :func:`torch.nn.functional.scaled_dot_product_attention` call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cmmd.models.blocks import frames_as_time_axis, time_axis_as_frames


def clip_norm(norm: nn.GroupNorm, x: torch.Tensor, frames: int) -> torch.Tensor:
    """GroupNorm of frame-folded video ``(B*F, C, H, W)`` with statistics over the whole clip.

    MM-Diffusion normalises video features as ``(B, C, F, H, W)`` volumes (one mean and variance
    per group and clip, not per frame); the time-axis view makes that a plain 4-D GroupNorm.
    """
    _, _, h, w = x.shape
    return time_axis_as_frames(norm(frames_as_time_axis(x, frames)), h, w)


@dataclass(frozen=True)
class WindowIndex:
    """Gather indices of one RS-MMA window layout (``F`` frames, window ``w``, shift ``s``).

    audio_keys: (F, K) long, the audio tokens the video queries of frame ``i`` attend to:
        ``K = ceil(w e / F)`` consecutive real tokens from the start of frame ``(i + s) mod F``,
        wrapping around the real audio.
    audio_queries: (F, Q) long, the audio tokens of segment ``i`` (``Q`` = the longest segment;
        shorter segments repeat their last token, whose duplicate outputs are dropped).
    audio_slots: (L,) long, for each audio token its row in the flattened ``(F * Q)`` query grid.
    video_keys: (F, w) long, the frames ``(i + s + r) mod F``, ``r < w``, that segment ``i``
        attends to.
    """

    audio_keys: torch.Tensor
    audio_queries: torch.Tensor
    audio_slots: torch.Tensor
    video_keys: torch.Tensor


def window_index(
    frames: int,
    window: int,
    shift: int,
    audio_len: int,
    audio_extent: float,
    device: torch.device | None = None,
) -> WindowIndex:
    """Build the :class:`WindowIndex` for ``frames`` frames and ``audio_len`` audio tokens.

    ``audio_extent``: how many of the ``audio_len`` tokens are real (module docstring). Needs
    ``1 <= window <= frames``, ``0 <= shift <= frames - window`` and at least one real audio
    token per frame.
    """
    if not 1 <= window <= frames:
        raise ValueError(f"RS-MMA window must be in [1, {frames}] frames, got {window}")
    if not 0 <= shift <= frames - window:
        raise ValueError(f"RS-MMA shift must be in [0, {frames - window}], got {shift}")
    if audio_extent < frames:
        raise ValueError(
            f"RS-MMA needs at least one audio token per frame: {audio_extent:g} tokens for {frames} frames; "
            "use longer audio or fewer U-Net levels"
        )
    per_frame = audio_extent / frames
    n_real = min(audio_len, math.ceil(audio_extent))
    bounds = [math.ceil(k * per_frame) for k in range(frames)] + [audio_len]
    lengths = [bounds[k + 1] - bounds[k] for k in range(frames)]
    longest = max(lengths)
    starts = torch.tensor(bounds[:frames], dtype=torch.long, device=device)
    frame_ids = torch.arange(frames, device=device)

    window_start = starts[(frame_ids + shift) % frames]
    keys = (window_start[:, None] + torch.arange(math.ceil(window * per_frame), device=device)) % n_real

    offsets = torch.arange(longest, device=device)
    last = torch.tensor(lengths, dtype=torch.long, device=device) - 1
    queries = starts[:, None] + torch.minimum(offsets[None, :], last[:, None])

    positions = torch.arange(audio_len, device=device)
    segment = torch.bucketize(positions, starts[1:], right=True)
    slots = segment * longest + positions - starts[segment]

    video_keys = (frame_ids[:, None] + shift + torch.arange(window, device=device)) % frames
    return WindowIndex(keys, queries, slots, video_keys)


def draw_shift(frames: int, window: int, generator: torch.Generator | None = None) -> int:
    """The random shift ``s`` uniform in ``[0, frames - window]`` (global RNG if no generator)."""
    where = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, frames - window + 1, (1,), generator=generator, device=where).item())


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention over the last two axes: q (..., Lq, C), k/v (..., Lk, C) -> (..., Lq, C)."""
    *lead, lq, c = q.shape
    d = c // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-2], heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(*lead, lq, c)


class RSMMA(nn.Module):
    """Random-shift multi-modal attention between video ``(B*F, C, H, W)`` and audio ``(B, C, L)``.

    ``window``: frames per window (``None``: the full clip, the middle block's setting);
    ``random_shift``: draw ``s`` per forward pass (off: ``s = 0``). A window longer than the
    clip is clipped to the clip. See the module docstring for the attention pattern.
    """

    def __init__(self, channels: int, head_dim: int, window: int | None, random_shift: bool, groups: int) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.window = window
        self.random_shift = random_shift
        self.video_norm = nn.GroupNorm(groups, channels)
        self.audio_norm = nn.GroupNorm(groups, channels)
        self.video_qkv = nn.Linear(channels, 3 * channels)
        self.audio_qkv = nn.Linear(channels, 3 * channels)
        self.video_proj = nn.Linear(channels, channels)
        self.audio_proj = nn.Linear(channels, channels)
        for layer in (self.video_proj, self.audio_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        frames: int,
        audio_extent: float,
        valid_hw: tuple[int, int],
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attend the streams within (shifted) windows; returns updated ``(video, audio)``.

        video: (B*F, C, H, W) frame-folded; audio: (B, C, L), of which ``audio_extent`` tokens are
        real; ``valid_hw``: the unpadded part of ``H x W`` (padded pixels are never keys).
        """
        bt, c, h, w = video.shape
        b, length = bt // frames, audio.shape[-1]
        vh, vw = valid_hw
        tokens_v = clip_norm(self.video_norm, video, frames).permute(0, 2, 3, 1).reshape(b, frames, h * w, c)
        q_v, k_v, v_v = self.video_qkv(tokens_v).chunk(3, dim=-1)
        q_a, k_a, v_a = self.audio_qkv(self.audio_norm(audio).transpose(1, 2)).chunk(3, dim=-1)
        if (vh, vw) != (h, w):
            k_v, v_v = (
                x.reshape(b, frames, h, w, c)[:, :, :vh, :vw].reshape(b, frames, vh * vw, c) for x in (k_v, v_v)
            )

        window = frames if self.window is None else min(self.window, frames)
        if window == frames:
            # Every frame sees the whole clip: one plain cross-attention per direction.
            n_real = min(length, math.ceil(audio_extent))
            out_v = _attend(q_v.reshape(b, frames * h * w, c), k_a[:, :n_real], v_a[:, :n_real], self.heads)
            out_a = _attend(q_a, k_v.reshape(b, -1, c), v_v.reshape(b, -1, c), self.heads)
        else:
            shift = draw_shift(frames, window, generator) if self.random_shift else 0
            idx = window_index(frames, window, shift, length, audio_extent, video.device)
            out_v = _attend(q_v, k_a[:, idx.audio_keys], v_a[:, idx.audio_keys], self.heads)
            keys_v, values_v = (x[:, idx.video_keys].reshape(b, frames, -1, c) for x in (k_v, v_v))
            out_a = _attend(q_a[:, idx.audio_queries], keys_v, values_v, self.heads)
            out_a = out_a.reshape(b, -1, c)[:, idx.audio_slots]

        video = video + self.video_proj(out_v).reshape(bt, h, w, c).permute(0, 3, 1, 2)
        audio = audio + self.audio_proj(out_a).transpose(1, 2)
        return video, audio
