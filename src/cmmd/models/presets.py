"""Named joint U-Net sizes (METHOD.md section 3) and a factory, as MMAudio's model-size factories.

* ``tiny`` (1.6 M parameters): the CPU demo. Pixels (3 channels) at 32x32 through a 2x2
  space-to-depth stem, so the video stream works on 16x16 grids; one residual block per level,
  attention only at the 4x4 level and in the middle, easy fusion at every level. One training
  step on (8, 18, 3, 32, 32) + (8, 80, 112) takes about half a second on 2 CPU cores. For
  16x16 latents build it with ``video_channels=4, patch_size=1``.
* ``small`` (14 M): SD-VAE latents (4 x 16 x 16) on a single GPU or a patient CPU.
* ``paper`` (126 M): roughly the paper's scale for 18 x 4 x 16 x 16 latents + 80 x 112 mels.
  The paper gives no parameter count; we take ADM/LDM-like widths (192, 384, 576) over three
  levels (16 -> 8 -> 4 latent pixels, 112 -> 56 -> 28 mel frames), two residual blocks per
  level, attention at the two low-resolution levels and in the middle, fusion everywhere,
  which puts the video stream (79 M) near MM-Diffusion's video U-Net and the LDM U-Nets used
  for 16x16 latents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from cmmd.config import ConfigError
from cmmd.models.unet import JointUNet, UNetConfig

PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(
        video_channels=3,
        patch_size=2,
        base_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_levels=(2,),
        fusion_levels=(0, 1, 2),
        head_dim=32,
        norm_groups=8,
    ),
    "small": UNetConfig(
        video_channels=4,
        base_channels=64,
        channel_mult=(1, 2, 3),
        num_res_blocks=2,
        attention_levels=(1, 2),
        fusion_levels=(0, 1, 2),
        head_dim=32,
        norm_groups=32,
    ),
    "paper": UNetConfig(
        video_channels=4,
        base_channels=192,
        channel_mult=(1, 2, 3),
        num_res_blocks=2,
        attention_levels=(1, 2),
        fusion_levels=(0, 1, 2),
        head_dim=64,
        norm_groups=32,
    ),
}


def build_unet(name_or_cfg: str | UNetConfig, **overrides: Any) -> JointUNet:
    """Build a :class:`JointUNet` from a preset name or a config, with field overrides.

    ``build_unet("tiny", video_channels=4, patch_size=1)`` gives the tiny model for 16x16 latents.
    """
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in PRESETS:
            raise ConfigError(f"unknown model preset {name_or_cfg!r}; choose from {', '.join(PRESETS)}")
        cfg = PRESETS[name_or_cfg]
    else:
        cfg = name_or_cfg
    fields = {f.name for f in dataclasses.fields(UNetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown UNetConfig field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}")
    return JointUNet(dataclasses.replace(cfg, **overrides))


def build_model(preset: str, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """The network a run names: a CMMD preset (:data:`PRESETS`) or the MM-Diffusion baseline's
    ``mmdiffusion-*`` presets, with strictly validated field overrides."""
    if preset.startswith("mmdiffusion"):
        from cmmd.models.mmdiffusion import build_mmdiffusion

        return build_mmdiffusion(preset, **dict(overrides or {}))
    return build_unet(preset, **dict(overrides or {}))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
