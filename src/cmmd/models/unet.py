"""The joint video <-> audio U-Net of CMMD (METHOD.md section 3, Paper Fig. 1).

Two U-Nets side by side, one per modality, sharing one timestep embedding and exchanging
features by easy fusion (:mod:`cmmd.models.fusion`) at chosen levels:

* video stream on ``(B, T, C, H, W)``: factorised "2D+1D" residual blocks, per-frame spatial
  down/up-sampling by 2 per level (``T`` is never downsampled, so any ``T`` works);
* audio stream on ``(B, 80, L)``: 1-D residual blocks over mel time, down/up-sampling ``L``.

Level ``l`` has width ``base_channels * channel_mult[l]`` in the video stream and
``audio_width_mult`` times that in the audio stream. Each level runs
``num_res_blocks`` residual blocks, then (if enabled for the level) easy fusion, then (if
enabled) self-attention, so the attention sees both modalities' information; the decoder mirrors
this with ``num_res_blocks + 1`` blocks per level fed by skip connections, as in ADM. The middle
is residual block, fusion (``fusion_in_middle``), attention, residual block.

The network predicts whatever its training target is (velocity in CMMD) and knows nothing of the
noise schedule: ``t`` only enters through the timestep embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cmmd.config import ConfigError
from cmmd.models.blocks import (
    AudioAttention,
    AudioResBlock,
    TimestepEmbedder,
    VideoAttention,
    VideoResBlock,
    upsample,
)
from cmmd.models.fusion import EasyFusion


@dataclass
class UNetConfig:
    """Joint U-Net hyper-parameters; defaults are the ``small`` preset (SD-VAE latents).

    video_channels: input/output channels of the video stream (4 for VAE latents, 3 for pixels).
    patch_size: space-to-depth factor of the video stem: frames enter as
        ``(video_channels * patch_size**2, H / patch_size, W / patch_size)`` (pixel unshuffle) and
        leave by pixel shuffle, so a CPU-sized model can take 32x32 pixels at the cost of 16x16.
    audio_channels: mel bins, the audio stream's input/output channels.
    base_channels: width of level 0; must be divisible by ``norm_groups``.
    audio_width_mult: the audio stream's widths relative to the video stream's (ours, not the
        paper's; README design note). Audio is a small share of the compute (112 mel frames
        against 18 frames of 8x8 in the demo, where doubling its width adds about 7 % to a
        training step), while at width 32 its first layer squeezes 80 mel bins into 32 channels.
    channel_mult: width multiplier per level; its length is the number of levels, and inputs
        are downsampled by ``2 ** (len(channel_mult) - 1)`` in H, W and L (T is never).
    num_res_blocks: residual blocks per encoder level (decoder: one more).
    attention_levels: levels with self-attention (video: spatial then temporal; audio: over L).
    attention_in_middle: self-attention in the middle block.
    fusion_levels: levels with easy fusion; ``()`` and ``fusion_in_middle=False`` make the two
        streams fully independent (no information flows between modalities).
    fusion_in_middle: easy fusion in the middle block.
    fusion_pool: how audio <- video pools over H x W: ``"mean"`` (the paper's average) or
        ``"meanmax"`` (ours: average and maximum concatenated, so a small object's features reach
        the audio at full strength instead of diluted by its share of the frame; see fusion.py).
    head_dim: channels per attention head; widths at attention levels must be multiples.
    norm_groups: GroupNorm groups.
    emb_mult: timestep-embedding width as a multiple of ``base_channels``.
    dropout: dropout inside residual blocks.
    zero_init_output: zero the output convolutions, so the initial prediction is 0.
    zero_init_residual: zero the last layer of every residual branch (residual blocks,
        attention, fusion projections), so each block starts as the identity (ADM practice).
    """

    video_channels: int = 4
    patch_size: int = 1
    audio_channels: int = 80
    base_channels: int = 64
    audio_width_mult: int = 1
    channel_mult: tuple[int, ...] = (1, 2, 3)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)
    attention_in_middle: bool = True
    fusion_levels: tuple[int, ...] = (0, 1, 2)
    fusion_in_middle: bool = True
    fusion_pool: Literal["mean", "meanmax"] = "mean"
    head_dim: int = 32
    norm_groups: int = 32
    emb_mult: int = 4
    dropout: float = 0.0
    zero_init_output: bool = True
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if levels == 0 or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult: expected positive multipliers, got {self.channel_mult}")
        if self.base_channels % self.norm_groups:
            raise ConfigError(
                f"base_channels={self.base_channels} must be divisible by norm_groups={self.norm_groups}"
            )
        for name in ("attention_levels", "fusion_levels"):
            bad = [lvl for lvl in getattr(self, name) if not 0 <= lvl < levels]
            if bad:
                raise ConfigError(f"{name}: level {bad[0]} does not exist (levels are 0..{levels - 1})")
        if self.audio_width_mult < 1:
            raise ConfigError(f"audio_width_mult: expected >= 1, got {self.audio_width_mult}")
        attn_widths = [self.base_channels * self.channel_mult[lvl] for lvl in self.attention_levels]
        if self.attention_in_middle:
            attn_widths.append(self.base_channels * self.channel_mult[-1])
        for width in attn_widths:
            if width % self.head_dim:
                raise ConfigError(f"head_dim={self.head_dim} does not divide attention width {width}")
        if self.patch_size < 1:
            raise ConfigError(f"patch_size: expected >= 1, got {self.patch_size}")
        if self.fusion_pool not in ("mean", "meanmax"):
            raise ConfigError(f"fusion_pool: expected 'mean' or 'meanmax', got {self.fusion_pool!r}")
        if self.num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks: expected >= 1, got {self.num_res_blocks}")

    @property
    def downsampling(self) -> int:
        """Total down-sampling factor of L (audio) and of H, W after the video stem."""
        return 2 ** (len(self.channel_mult) - 1)


class FuseAttend(nn.Module):
    """Easy fusion then self-attention at one point of the U-Net; either may be absent."""

    def __init__(self, cfg: UNetConfig, video_ch: int, audio_ch: int, fuse: bool, attend: bool) -> None:
        super().__init__()
        groups, zero = cfg.norm_groups, cfg.zero_init_residual
        self.fusion = EasyFusion(video_ch, audio_ch, zero, cfg.fusion_pool) if fuse else None
        self.video_attn = VideoAttention(video_ch, cfg.head_dim, groups, zero) if attend else None
        self.audio_attn = AudioAttention(audio_ch, cfg.head_dim, groups, zero) if attend else None

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        frames: int,
        audio_extent: float,
        valid_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (B*T, Cv, H, W), audio: (B, Ca, L) -> same shapes."""
        if self.fusion is not None:
            video, audio = self.fusion(video, audio, frames, audio_extent, valid_hw)
        if self.video_attn is not None and self.audio_attn is not None:
            video = self.video_attn(video, frames)
            audio = self.audio_attn(audio)
        return video, audio


class JointUNet(nn.Module):
    """Joint video/audio U-Net ``v_theta(v_n, a_n, n)`` (METHOD.md section 3, Paper Eq. 2).

    ``forward(video (B, T, C, H, W), audio (B, M, L), t_video (B,), t_audio (B,) | None)``
    returns ``(video_out, audio_out)`` of exactly the input shapes. H and W that do not divide by
    ``cfg.patch_size * cfg.downsampling``, and L that does not divide by ``cfg.downsampling``, are
    zero-padded (right/bottom) internally and cropped back; fusion aligns time over the real,
    unpadded duration and pools video over the real pixels. T is never resampled: any T works.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        base, groups, drop, zero = cfg.base_channels, cfg.norm_groups, cfg.dropout, cfg.zero_init_residual
        emb_dim = base * cfg.emb_mult
        widths = [base * m for m in cfg.channel_mult]
        levels = len(widths)

        self.time_embed = TimestepEmbedder(base, emb_dim)
        patch_ch = cfg.video_channels * cfg.patch_size**2
        am = cfg.audio_width_mult
        self.video_in = nn.Conv2d(patch_ch, base, 3, padding=1)
        self.audio_in = nn.Conv1d(cfg.audio_channels, base * am, 3, padding=1)

        def video_block(cin: int, cout: int) -> VideoResBlock:
            return VideoResBlock(cin, cout, emb_dim, groups, drop, zero)

        def audio_block(cin: int, cout: int) -> AudioResBlock:
            return AudioResBlock(cin, cout, emb_dim, groups, drop, zero)

        skip_widths = [base]  # video widths; the audio stream's are am times these
        ch = base
        self.enc_video, self.enc_audio, self.enc_mix = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.down_video, self.down_audio = nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(widths):
            vids, auds = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                vids.append(video_block(ch, width))
                auds.append(audio_block(ch * am, width * am))
                ch = width
                skip_widths.append(ch)
            self.enc_video.append(vids)
            self.enc_audio.append(auds)
            self.enc_mix.append(FuseAttend(cfg, ch, ch * am, level in cfg.fusion_levels, level in cfg.attention_levels))
            if level < levels - 1:
                self.down_video.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                self.down_audio.append(nn.Conv1d(ch * am, ch * am, 3, stride=2, padding=1))
                skip_widths.append(ch)

        self.mid_video = nn.ModuleList([video_block(ch, ch), video_block(ch, ch)])
        self.mid_audio = nn.ModuleList([audio_block(ch * am, ch * am), audio_block(ch * am, ch * am)])
        self.mid_mix = FuseAttend(cfg, ch, ch * am, cfg.fusion_in_middle, cfg.attention_in_middle)

        self.dec_video, self.dec_audio, self.dec_mix = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels)):
            width = widths[level]
            vids, auds = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                skip = skip_widths.pop()
                vids.append(video_block(ch + skip, width))
                auds.append(audio_block((ch + skip) * am, width * am))
                ch = width
            self.dec_video.append(vids)
            self.dec_audio.append(auds)
            self.dec_mix.append(FuseAttend(cfg, ch, ch * am, level in cfg.fusion_levels, level in cfg.attention_levels))

        self.video_out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, patch_ch, 3, padding=1)
        )
        self.audio_out = nn.Sequential(
            nn.GroupNorm(groups, ch * am), nn.SiLU(), nn.Conv1d(ch * am, cfg.audio_channels, 3, padding=1)
        )
        if cfg.zero_init_output:
            for layer in (self.video_out[-1], self.audio_out[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        t_video: torch.Tensor,
        t_audio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict both outputs.

        video: (B, T, C, H, W); audio: (B, M, L); t_video, t_audio: (B,) float step indices in
        ``[0, N)`` (``t_audio=None`` uses ``t_video``). Returns (video_out, audio_out) with the
        input shapes.
        """
        cfg = self.cfg
        b, frames, c, height, width = video.shape
        length = audio.shape[-1]
        if c != cfg.video_channels or audio.shape[1] != cfg.audio_channels:
            raise ValueError(
                f"JointUNet expects {cfg.video_channels} video channels and {cfg.audio_channels} mel bins, "
                f"got video {tuple(video.shape)} and audio {tuple(audio.shape)}"
            )
        t_audio = t_video if t_audio is None else t_audio
        emb = self.time_embed(t_video, t_audio)

        p, factor = cfg.patch_size, cfg.downsampling
        pixel_factor = p * factor
        pad_h, pad_w, pad_l = (-height) % pixel_factor, (-width) % pixel_factor, (-length) % factor
        v = F.pad(video.reshape(b * frames, c, height, width), (0, pad_w, 0, pad_h))
        v = self.video_in(F.pixel_unshuffle(v, p).contiguous(memory_format=torch.channels_last))
        a = self.audio_in(F.pad(audio, (0, pad_l)))

        def geometry(level: int) -> tuple[float, tuple[int, int]]:
            scale = 2**level
            return length / scale, (math.ceil(height / (p * scale)), math.ceil(width / (p * scale)))

        skips = [(v, a)]
        for level, (vids, auds, mix) in enumerate(zip(self.enc_video, self.enc_audio, self.enc_mix)):
            for i, (vblock, ablock) in enumerate(zip(vids, auds)):
                v, a = vblock(v, emb, frames), ablock(a, emb)
                if i == len(vids) - 1:
                    v, a = mix(v, a, frames, *geometry(level))
                skips.append((v, a))
            if level < len(self.down_video):
                v, a = self.down_video[level](v), self.down_audio[level](a)
                skips.append((v, a))

        deepest = len(self.enc_video) - 1
        v, a = self.mid_video[0](v, emb, frames), self.mid_audio[0](a, emb)
        v, a = self.mid_mix(v, a, frames, *geometry(deepest))
        v, a = self.mid_video[1](v, emb, frames), self.mid_audio[1](a, emb)

        for i, (vids, auds, mix) in enumerate(zip(self.dec_video, self.dec_audio, self.dec_mix)):
            level = deepest - i
            for vblock, ablock in zip(vids, auds):
                v_skip, a_skip = skips.pop()
                v = vblock(torch.cat([v, v_skip], dim=1), emb, frames)
                a = ablock(torch.cat([a, a_skip], dim=1), emb)
            v, a = mix(v, a, frames, *geometry(level))
            if level > 0:
                v, a = upsample(v), upsample(a)

        v = F.pixel_shuffle(self.video_out(v), p)[:, :, :height, :width]
        video_out = v.reshape(b, frames, c, height, width)
        audio_out = self.audio_out(a)[:, :, :length]
        return video_out, audio_out
