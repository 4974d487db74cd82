"""The small KL-VAE that cmmd trains itself: the offline stand-in for SD's VAE (METHOD.md section 2).

Same latent contract as ``sd-vae-ft-mse``: a Gaussian posterior ``q(z | x) = N(mu, sigma^2)``
over 4 latent channels at 4x or 8x spatial downsampling (Kingma and Welling 2014; the
autoencoder of Rombach et al. 2022 without its attention and GAN parts). Encoder: a stem conv,
one level per resolution of residual blocks (GroupNorm, SiLU, 3x3 conv, twice, plus skip),
stride-2 convs between levels, a middle block, and a head giving ``(mu, log sigma^2)``; the
decoder mirrors it with nearest-neighbour upsampling. ``levels = log2(d) + 1``.

:class:`CmmdVaeCodec` wraps a trained model as a :class:`~cmmd.video.codecs.VideoCodec`; its
checkpoints come from ``cmmd vae train`` (:mod:`cmmd.train.vae`) and carry the model
config, the scaling factor and the held-out PSNR in their metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmmd.errors import CmmdError
from cmmd.checkpoint import load_weights, read_info
from cmmd.video.codecs import NetworkCodec

LOGVAR_RANGE = (-30.0, 20.0)
"""Clamp of ``log sigma^2`` (as in the LDM autoencoder), keeping ``exp`` finite early in training."""


@dataclass(frozen=True)
class VaeConfig:
    """Architecture of :class:`KlVae`: ``downsampling`` 4 or 8, widths ``base_channels * mults``."""

    downsampling: int = 8
    latent_channels: int = 4
    base_channels: int = 32
    blocks_per_level: int = 1
    norm_groups: int = 8

    @property
    def channel_mults(self) -> tuple[int, ...]:
        """Width multiplier of each level, finest first (``(1, 2, 2)`` at 4x, ``(1, 2, 2, 4)`` at 8x)."""
        return (1, 2, 2, 4)[: self.levels]

    @property
    def levels(self) -> int:
        """Number of resolutions: ``log2(downsampling) + 1``."""
        return int(math.log2(self.downsampling)) + 1

    def validate(self) -> None:
        """Raise CmmdError for a configuration the network cannot be built with."""
        if self.downsampling not in (4, 8):
            raise CmmdError(f"cmmd-vae downsampling must be 4 or 8, got {self.downsampling}")
        if self.latent_channels < 1 or self.blocks_per_level < 1:
            raise CmmdError("cmmd-vae needs latent_channels >= 1 and blocks_per_level >= 1")
        if self.base_channels < self.norm_groups or self.base_channels % self.norm_groups:
            raise CmmdError(f"cmmd-vae base_channels ({self.base_channels}) must be a positive multiple of "
                            f"norm_groups ({self.norm_groups})")


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``, with a 1x1 skip when widths differ: ``(N, c_in, H, W)
    -> (N, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, c_in, H, W) -> (N, c_out, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """Images ``(N, 3, H, W)`` -> posterior parameters ``(N, 2 * latent_channels, H / d, W / d)``."""

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(c, w, cfg.norm_groups))
                c = w
            if i < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers.append(ResBlock(c, c, cfg.norm_groups))
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(cfg.norm_groups, c)
        self.head = nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, 2 C, H / d, W / d)``."""
        return self.head(F.silu(self.norm(self.body(self.stem(x)))))


class Decoder(nn.Module):
    """Latents ``(N, latent_channels, h, w)`` -> images ``(N, 3, h * d, w * d)``."""

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults][::-1]
        c = widths[0]
        self.stem = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(c, c, cfg.norm_groups)]
        for i, w in enumerate(widths):
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(c, w, cfg.norm_groups))
                c = w
            if i < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(cfg.norm_groups, c)
        self.head = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """``(N, C, h, w) -> (N, 3, h d, w d)``."""
        return self.head(F.silu(self.norm(self.body(self.stem(z)))))


class KlVae(nn.Module):
    """Gaussian VAE: :meth:`posterior` gives ``(mu, logvar)``, :meth:`decode` maps ``z`` back."""

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (N, 3, H, W)`` in [-1, 1] -> ``mu, logvar``, each ``(N, C, H / d, W / d)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: Tensor) -> Tensor:
        """``z (N, C, h, w)`` -> reconstruction ``(N, 3, h d, w d)`` (unbounded; ~[-1, 1])."""
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reparameterised pass: ``x (N, 3, H, W)`` -> ``(reconstruction, mu, logvar)``."""
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, sigma^2) || N(0, 1))`` per element, averaged: ``0.5 (mu^2 + sigma^2 - 1 - log sigma^2)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


class CmmdVaeCodec(NetworkCodec):
    """A trained :class:`KlVae` as a video codec (module docstring of :mod:`cmmd.video.codecs`)."""

    name = "cmmd-vae"

    def __init__(self, model: KlVae, scaling_factor: float, spec: str = "", extra: dict[str, Any] | None = None):
        super().__init__(model)
        self.channels = model.cfg.latent_channels
        self.downsampling = model.cfg.downsampling
        self.scaling_factor = float(scaling_factor)
        self.spec = spec
        self.extra = dict(extra or {})

    def encode_images(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> posterior mean ``(N, C, H / d, W / d)``."""
        return self.model.posterior(images)[0]

    def decode_images(self, latents: Tensor) -> Tensor:
        """``(N, C, h, w)`` -> ``(N, 3, h d, w d)``."""
        return self.model.decode(latents)

    def describe(self) -> dict[str, Any]:
        """Base description plus the architecture (``vae``) and the held-out PSNR when known."""
        out = super().describe()
        out["vae"] = asdict(self.model.cfg)
        if "psnr" in self.extra:
            out["psnr"] = self.extra["psnr"]
        return out

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> CmmdVaeCodec:
        """From a ``cmmd vae train`` run dir, checkpoint dir or exported ``.safetensors`` file (EMA weights)."""
        path = Path(path).expanduser()
        if not path.exists():
            raise CmmdError(f"cmmd-vae checkpoint {path} does not exist; train one with "
                            "`cmmd vae train DATA --out RUN`")
        info = read_info(path)
        extra = info.extra
        if extra.get("codec", {}).get("name") != cls.name or "vae" not in extra:
            raise CmmdError(f"{path} is a cmmd checkpoint but not of a cmmd-vae (it records codec "
                            f"{extra.get('codec')!r}); pass a `cmmd vae train` output")
        try:
            model = KlVae(VaeConfig(**extra["vae"]))
            model.load_state_dict(load_weights(path, "ema"))
        except (TypeError, RuntimeError) as exc:
            raise CmmdError(f"{path}: weights do not match the cmmd-vae config they record ({exc})") from None
        return cls(model.to(device), extra["scaling_factor"], spec=f"cmmd-vae:{path}", extra=extra)


__all__ = ["CmmdVaeCodec", "KlVae", "VaeConfig", "kl_divergence"]
