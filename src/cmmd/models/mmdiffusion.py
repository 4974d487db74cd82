"""The MM-Diffusion baseline network (Ruan et al. 2023), built from ``docs/MMDIFFUSION.md``.

A coupled U-Net over pixel video ``(B, F, 3, H, W)`` and the raw waveform ``(B, 1, S)``:

* every residual block (:class:`CoupledResBlock`) has a video path, a "2D+1D" convolution (3x3
  per frame, then kernel-3 over frames), and an audio path, a kernel-3 1-D convolution whose
  dilation cycles ``2 ** (k mod 10)`` with the block's running index ``k``; both read one
  timestep embedding (one scale/shift projection, as in their code);
* each level downsamples video by 2 in H and W (frames stay at ``F``) and audio by 4
  (25,600 -> 6,400 -> 1,600 -> 400 samples), inside residual blocks (average pooling after the
  first convolution, nearest upsampling in the decoder);
* video self-attention, spatial then temporal, after the residual blocks at downsampling
  2, 4, 8 (4 heads); audio self-attention only in the middle block;
* RS-MMA (:mod:`cmmd.models.rsmma`) after the residual blocks at downsampling 2, 4, 8 with
  windows 1, 4, 8 frames and a random shift; in the middle a full window without shift.

As in their code, video GroupNorms take statistics over the whole clip (:func:`clip_norm`), the
timestep embedding is ``base_channels`` wide, decoders run ``num_res_blocks + 1`` blocks per level
on skip concatenations, and the outputs are zero-initialised (a 3x3x3 convolution for video).
The network predicts eps (MMDIFFUSION.md: eps-prediction, linear schedule, T = 1000 are training
settings; ``t`` only enters through the timestep embedding).

Video features are frame-folded ``(B*F, C, H, W)`` and channels-last, the layout of
:mod:`cmmd.models.blocks`, whose timestep embedder and attention layers are reused here. That
reuse gives the only differences from their network that we know of: the embedder reads
``t_video`` and ``t_audio`` (its first layer is ``2 * base_channels`` wide, 16 k more parameters;
with ``t_audio = t_video``, the paper's setting, it is still one shared embedding), and temporal
attention normalises over the clip rather than per pixel. The AIST++ preset has 133.69 M
parameters (the paper: 133.7 M). Their code also recomputes every attention layer in the backward
pass (gradient checkpointing, always on) and loops over frames in RS-MMA; here RS-MMA is batched
and nothing is recomputed, which only changes speed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cmmd.config import ConfigError
from cmmd.models.blocks import (
    AudioAttention,
    TimestepEmbedder,
    VideoAttention,
    frames_as_time_axis,
    time_axis_as_frames,
)
from cmmd.models.rsmma import RSMMA, clip_norm

Resample = Literal["none", "down", "up"]


@dataclass
class MMDiffusionConfig:
    """MM-Diffusion U-Net hyper-parameters; defaults are their AIST++ 64x64 model (133.7 M).

    video_channels / audio_channels: input/output channels (RGB pixels, mono waveform).
    base_channels: width of level 0 and of the timestep embedding.
    channel_mult: width multiplier per level; its length is the number of levels.
    num_res_blocks: residual blocks per encoder level (decoder: one more).
    video_attention_downsampling: video downsampling factors (``video_downsample ** level``)
        with spatial-then-temporal video self-attention.
    rsmma_downsampling / rsmma_windows: where RS-MMA runs and its window in frames there.
    rsmma_random_shift: draw the windows' shift per pass, as theirs (True); False fixes ``s = 0``,
        so frame ``i`` reads only its own audio: an ablation of the one part of their design
        that keeps windows off the frame's own time (docs/results/study_sync_mmdiffusion_aligned_cpu.md).
    num_heads: heads of the video/audio self-attention.
    head_dim: channels per head of RS-MMA.
    dilation_cycle: audio dilations cycle through ``2 ** (k mod dilation_cycle)``.
    video_downsample / audio_downsample: per-level factor of H, W and of the waveform length.
    norm_groups: GroupNorm groups.
    dropout: dropout inside residual blocks (their AIST++ script: 0.1).
    """

    video_channels: int = 3
    audio_channels: int = 1
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    video_attention_downsampling: tuple[int, ...] = (2, 4, 8)
    rsmma_downsampling: tuple[int, ...] = (2, 4, 8)
    rsmma_windows: tuple[int, ...] = (1, 4, 8)
    rsmma_random_shift: bool = True
    num_heads: int = 4
    head_dim: int = 64
    dilation_cycle: int = 10
    video_downsample: int = 2
    audio_downsample: int = 4
    norm_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult: expected positive multipliers, got {self.channel_mult}")
        if self.num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks: expected >= 1, got {self.num_res_blocks}")
        if self.video_downsample < 2 or self.audio_downsample < 2:
            raise ConfigError("video_downsample and audio_downsample must be >= 2")
        if len(self.rsmma_windows) != len(self.rsmma_downsampling):
            raise ConfigError(
                f"rsmma_windows {self.rsmma_windows} needs one window per rsmma_downsampling {self.rsmma_downsampling}"
            )
        if min(self.rsmma_windows, default=1) < 1:
            raise ConfigError(f"rsmma_windows: expected >= 1 frame, got {self.rsmma_windows}")
        widths = [self.base_channels * m for m in self.channel_mult]
        for width in widths:
            if width % self.norm_groups:
                raise ConfigError(f"norm_groups={self.norm_groups} does not divide width {width}")
        factors = [self.video_downsample**level for level in range(len(widths))]
        for name in ("video_attention_downsampling", "rsmma_downsampling"):
            bad = [ds for ds in getattr(self, name) if ds not in factors]
            if bad:
                raise ConfigError(f"{name}: downsampling {bad[0]} is not one of the levels' factors {factors}")
        for ds in self.video_attention_downsampling:
            if widths[factors.index(ds)] % self.num_heads:
                raise ConfigError(f"num_heads={self.num_heads} does not divide width {widths[factors.index(ds)]}")
        if widths[-1] % self.num_heads:
            raise ConfigError(f"num_heads={self.num_heads} does not divide the middle width {widths[-1]}")
        for width in [widths[factors.index(ds)] for ds in self.rsmma_downsampling] + [widths[-1]]:
            if width % self.head_dim:
                raise ConfigError(f"head_dim={self.head_dim} does not divide RS-MMA width {width}")

    def level_of(self, downsampling: int) -> int:
        """The level whose video is downsampled by ``downsampling``."""
        return round(math.log(downsampling, self.video_downsample))


class VideoConv2p1(nn.Module):
    """The "2D+1D" video convolution: 3x3 per frame, then kernel 3 over frames ("same" padding)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temporal = nn.Conv2d(out_ch, out_ch, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x``: (B*F, C_in, H, W) -> (B*F, C_out, H, W)."""
        y = self.spatial(x)
        return time_axis_as_frames(self.temporal(frames_as_time_axis(y, frames)), y.shape[2], y.shape[3])


class CoupledResBlock(nn.Module):
    """One residual block with a video and an audio path sharing the timestep embedding.

    ``h = conv(SiLU(GN(x)))`` ("2D+1D" for video, dilated kernel-3 1-D for audio), resampled if
    the block is a down/up block (the skip input ``x`` too), then AdaGN
    ``GN(h) * (1 + scale) + shift`` with one ``(scale, shift)`` for both streams, SiLU, dropout
    and a zero-initialised 1x1 convolution; ``out = skip(x) + h``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        dilation: int,
        cfg: MMDiffusionConfig,
        resample: Resample = "none",
    ) -> None:
        super().__init__()
        groups = cfg.norm_groups
        self.resample = resample
        self.video_factor, self.audio_factor = cfg.video_downsample, cfg.audio_downsample
        self.video_norm1 = nn.GroupNorm(groups, in_ch)
        self.video_conv = VideoConv2p1(in_ch, out_ch)
        self.audio_norm1 = nn.GroupNorm(groups, in_ch)
        self.audio_conv = nn.Conv1d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.video_norm2 = nn.GroupNorm(groups, out_ch)
        self.audio_norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(cfg.dropout)
        self.video_out = nn.Conv2d(out_ch, out_ch, 1)
        self.audio_out = nn.Conv1d(out_ch, out_ch, 1)
        for layer in (self.video_out, self.audio_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        same = in_ch == out_ch
        self.video_skip = nn.Identity() if same else nn.Conv2d(in_ch, out_ch, 1)
        self.audio_skip = nn.Identity() if same else nn.Conv1d(in_ch, out_ch, 1)

    def _resample(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Average-pool (down) or nearest-upsample (up) H, W by the video and L by the audio factor."""
        if self.resample == "down":
            return F.avg_pool2d(video, self.video_factor), F.avg_pool1d(audio, self.audio_factor)
        if self.resample == "up":
            return (
                F.interpolate(video, scale_factor=self.video_factor, mode="nearest"),
                F.interpolate(audio, scale_factor=self.audio_factor, mode="nearest"),
            )
        return video, audio

    def forward(
        self, video: torch.Tensor, audio: torch.Tensor, emb: torch.Tensor, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (B*F, C_in, H, W), audio: (B, C_in, L), emb: (B, E) -> (B*F, C_out, H', W'), (B, C_out, L')."""
        h_v = self.video_conv(F.silu(clip_norm(self.video_norm1, video, frames)), frames)
        h_a = self.audio_conv(F.silu(self.audio_norm1(audio)))
        h_v, h_a = self._resample(h_v, h_a)
        video, audio = self._resample(video, audio)

        scale, shift = self.emb(F.silu(emb))[:, :, None].chunk(2, dim=1)
        height, width = h_v.shape[2], h_v.shape[3]
        h_t = frames_as_time_axis(h_v, frames)
        h_t = F.silu(torch.addcmul(shift[..., None], self.video_norm2(h_t), 1 + scale[..., None]))
        h_v = time_axis_as_frames(self.video_out(self.dropout(h_t)), height, width)
        h_a = F.silu(torch.addcmul(shift, self.audio_norm2(h_a), 1 + scale))
        h_a = self.audio_out(self.dropout(h_a))
        return self.video_skip(video) + h_v, self.audio_skip(audio) + h_a


class CoupledStage(nn.Module):
    """A residual block, then (if enabled) self-attention, then (if enabled) RS-MMA."""

    def __init__(
        self,
        cfg: MMDiffusionConfig,
        block: CoupledResBlock,
        channels: int,
        video_attention: bool,
        audio_attention: bool,
        rsmma: RSMMA | None,
    ) -> None:
        super().__init__()
        groups, head = cfg.norm_groups, channels // cfg.num_heads
        self.block = block
        self.video_attn = VideoAttention(channels, head, groups, True) if video_attention else None
        self.audio_attn = AudioAttention(channels, head, groups, True) if audio_attention else None
        self.rsmma = rsmma

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        emb: torch.Tensor,
        frames: int,
        audio_extent: float,
        valid_hw: tuple[int, int],
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (B*F, C, H, W), audio: (B, C, L) -> the block's output shapes."""
        video, audio = self.block(video, audio, emb, frames)
        if self.video_attn is not None:
            video = self.video_attn(video, frames)
        if self.audio_attn is not None:
            audio = self.audio_attn(audio)
        if self.rsmma is not None:
            video, audio = self.rsmma(video, audio, frames, audio_extent, valid_hw, generator)
        return video, audio


class MMDiffusionUNet(nn.Module):
    """MM-Diffusion's coupled U-Net ``eps_theta(video_t, audio_t, t)`` (module docstring).

    ``forward(video (B, F, 3, H, W), audio (B, 1, S), t_video (B,), t_audio (B,) | None)`` returns
    ``(video_eps, audio_eps)`` of the input shapes, the :class:`~cmmd.models.unet.JointUNet`
    contract, so :mod:`cmmd.diffusion` trains and samples it unchanged. H and W are zero-padded
    to a multiple of ``video_downsample ** (levels - 1)`` and S of ``audio_downsample **
    (levels - 1)``, then cropped back; RS-MMA aligns frames with the real samples only. Any F
    works (windows longer than the clip are clipped to it); S must leave at least one audio
    token per frame at every level with windowed RS-MMA (``S >= 64 F`` for the AIST++ preset).
    """

    def __init__(self, cfg: MMDiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        base = cfg.base_channels
        widths = [base * m for m in cfg.channel_mult]
        levels = len(widths)
        attn_levels = {cfg.level_of(ds) for ds in cfg.video_attention_downsampling}
        windows = {cfg.level_of(ds): w for ds, w in zip(cfg.rsmma_downsampling, cfg.rsmma_windows)}
        dilation_index = 0

        def block(cin: int, cout: int, resample: Resample = "none") -> CoupledResBlock:
            return CoupledResBlock(cin, cout, base, 2 ** (dilation_index % cfg.dilation_cycle), cfg, resample)

        def stage(cin: int, cout: int, level: int) -> CoupledStage:
            rsmma = None
            if level in windows:
                rsmma = RSMMA(cout, cfg.head_dim, windows[level], cfg.rsmma_random_shift, cfg.norm_groups)
            return CoupledStage(cfg, block(cin, cout), cout, level in attn_levels, False, rsmma)

        self.time_embed = TimestepEmbedder(base, base)
        self.video_in = VideoConv2p1(cfg.video_channels, base)
        self.audio_in = nn.Conv1d(cfg.audio_channels, base, 3, padding=1)

        skip_widths = [base]
        ch = base
        self.encoder, self.down = nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(widths):
            stages = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                dilation_index += 1
                stages.append(stage(ch, width, level))
                ch = width
                skip_widths.append(ch)
            self.encoder.append(stages)
            if level < levels - 1:
                dilation_index += 1
                self.down.append(block(ch, ch, "down"))
                skip_widths.append(ch)

        dilation_index += 1
        full_window = RSMMA(ch, cfg.head_dim, None, False, cfg.norm_groups)
        self.middle = nn.ModuleList(
            [
                CoupledStage(cfg, block(ch, ch), ch, True, True, full_window),
                CoupledStage(cfg, block(ch, ch), ch, True, True, None),
            ]
        )

        self.decoder, self.up = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels)):
            stages = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                dilation_index -= 1
                stages.append(stage(ch + skip_widths.pop(), widths[level], level))
                ch = widths[level]
            self.decoder.append(stages)
            if level > 0:
                dilation_index -= 1
                self.up.append(block(ch, ch, "up"))

        self.video_out_norm = nn.GroupNorm(cfg.norm_groups, ch)
        self.video_out = nn.Conv3d(ch, cfg.video_channels, 3, padding=1)
        self.audio_out = nn.Sequential(
            nn.GroupNorm(cfg.norm_groups, ch), nn.SiLU(), nn.Conv1d(ch, cfg.audio_channels, 3, padding=1)
        )
        for layer in (self.video_out, self.audio_out[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        t_video: torch.Tensor,
        t_audio: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the noise of both modalities.

        video: (B, F, C, H, W) pixels; audio: (B, 1, S) waveform; t_video, t_audio: (B,) float step
        indices in ``[0, 1000)`` (``t_audio=None`` uses ``t_video``). ``generator`` draws the
        RS-MMA shifts (one per windowed block, in network order; default: the global RNG, so
        ``torch.manual_seed`` makes a pass repeatable). Returns (video_eps, audio_eps) with the
        input shapes.
        """
        cfg = self.cfg
        b, frames, c, height, width = video.shape
        length = audio.shape[-1]
        if c != cfg.video_channels or audio.shape[1] != cfg.audio_channels:
            raise ValueError(
                f"MMDiffusionUNet expects {cfg.video_channels} video and {cfg.audio_channels} audio channels, "
                f"got video {tuple(video.shape)} and audio {tuple(audio.shape)}"
            )
        emb = self.time_embed(t_video, t_video if t_audio is None else t_audio)

        deepest = len(self.encoder) - 1
        pixel_factor, sample_factor = cfg.video_downsample**deepest, cfg.audio_downsample**deepest
        pad_h, pad_w, pad_s = (-height) % pixel_factor, (-width) % pixel_factor, (-length) % sample_factor
        v = F.pad(video.reshape(b * frames, c, height, width), (0, pad_w, 0, pad_h))
        v = self.video_in(v.contiguous(memory_format=torch.channels_last), frames)
        a = self.audio_in(F.pad(audio, (0, pad_s)))

        def geometry(level: int) -> tuple[float, tuple[int, int]]:
            pixels = cfg.video_downsample**level
            return length / cfg.audio_downsample**level, (math.ceil(height / pixels), math.ceil(width / pixels))

        skips = [(v, a)]
        for level, stages in enumerate(self.encoder):
            for enc in stages:
                v, a = enc(v, a, emb, frames, *geometry(level), generator)
                skips.append((v, a))
            if level < deepest:
                v, a = self.down[level](v, a, emb, frames)
                skips.append((v, a))

        for mid in self.middle:
            v, a = mid(v, a, emb, frames, *geometry(deepest), generator)

        for i, stages in enumerate(self.decoder):
            level = deepest - i
            for dec in stages:
                v_skip, a_skip = skips.pop()
                v, a = dec(torch.cat([v, v_skip], dim=1), torch.cat([a, a_skip], dim=1), emb, frames,
                           *geometry(level), generator)
            if level > 0:
                v, a = self.up[i](v, a, emb, frames)

        h = F.silu(clip_norm(self.video_out_norm, v, frames))
        volume = frames_as_time_axis(h, frames).unflatten(-1, (h.shape[2], h.shape[3]))
        video_out = self.video_out(volume).permute(0, 2, 1, 3, 4)[..., :height, :width].contiguous()
        audio_out = self.audio_out(a)[:, :, :length]
        return video_out, audio_out


# Named sizes. ``mmdiffusion-aist``: their AIST++ model for 16 x 3 x 64 x 64 pixels at 10 fps +
# 25,600 samples at 16 kHz (1.6 s), 133.69 M parameters (the paper: 133.7 M). ``mmdiffusion-tiny``
# (1.61 M, CMMD ``tiny`` has 1.58 M): the CPU tests and study, on 18 x 3 x 32 x 32 pixels +
# 28,800 samples (1.8 s); three levels (32 -> 16 -> 8 pixels, 28,800 -> 7,200 -> 1,800 samples),
# one residual block per level, video attention at downsampling 4, RS-MMA at 2 and 4 with windows
# 1 and 4 frames. ``mmdiffusion-matched-small`` (14.47 M, CMMD ``small`` has 14.07 M): the AIST++
# layout at base width 42 (the nearest width whose levels split into equal GroupNorm groups and
# attention heads), for the speed comparison at matched parameters.
MMDIFFUSION_PRESETS: dict[str, MMDiffusionConfig] = {
    "mmdiffusion-aist": MMDiffusionConfig(dropout=0.1),
    "mmdiffusion-matched-small": MMDiffusionConfig(base_channels=42, norm_groups=14, num_heads=2, head_dim=42),
    "mmdiffusion-tiny": MMDiffusionConfig(
        base_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        video_attention_downsampling=(4,),
        rsmma_downsampling=(2, 4),
        rsmma_windows=(1, 4),
        num_heads=2,
        head_dim=32,
        norm_groups=8,
    ),
}


def build_mmdiffusion(name_or_cfg: str | MMDiffusionConfig, **overrides: Any) -> MMDiffusionUNet:
    """Build an :class:`MMDiffusionUNet` from a preset name or a config, with field overrides."""
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in MMDIFFUSION_PRESETS:
            raise ConfigError(
                f"unknown MM-Diffusion preset {name_or_cfg!r}; choose from {', '.join(MMDIFFUSION_PRESETS)}"
            )
        cfg = MMDIFFUSION_PRESETS[name_or_cfg]
    else:
        cfg = name_or_cfg
    fields = {f.name for f in dataclasses.fields(MMDiffusionConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown MMDiffusionConfig field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}")
    return MMDiffusionUNet(dataclasses.replace(cfg, **overrides))
