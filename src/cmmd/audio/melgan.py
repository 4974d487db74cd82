"""MelGAN generator (Kumar et al. 2019): log-mel ``(B, 80, L)`` -> waveform ``(B, L * 256)``.

The paper's vocoder architecture (METHOD.md section 2), trained with HiFi-GAN's discriminators
and loss weights by :mod:`cmmd.train.vocoder`. Layout as in MelGAN's Fig. 1: a 7-tap
input conv, then one stage per upsampling rate (8, 8, 2, 2; product = hop 256) of LeakyReLU(0.2)
+ transposed conv (kernel ``2 r``, stride ``r``: exactly ``r`` times longer) + a residual stack
of dilated 3-tap convs (dilations 1, 3, 9, reflection padded, each followed by a 1x1 conv, with a
1x1 shortcut), halving the width at each stage; a 7-tap output conv and tanh. Every conv is
weight-normalised (Salimans and Kingma 2016).

Receptive field, measured as the mel frames with a non-zero gradient for one output sample:
12 frames (0.19 s at 16 kHz) for this stack. The CMMD paper quotes "approximately 1.6 s" for its
MelGAN when it argues for 4 s training segments, more than MelGAN's published stack gives, so
its variant was probably deeper; we keep MelGAN's published stack and the paper's 4 s segments.

``channels`` is the width after the input conv (MelGAN: 512); the default 128 keeps CPU
training feasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from cmmd.errors import CmmdError

LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class MelGanConfig:
    """Architecture of :class:`MelGanGenerator`."""

    n_mels: int = 80
    channels: int = 128
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    dilations: tuple[int, ...] = (1, 3, 9)

    @property
    def hop(self) -> int:
        """Samples per mel frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)

    def validate(self) -> None:
        """Raise CmmdError for an architecture that cannot be built."""
        if self.channels % 2 ** len(self.upsample_rates) or self.channels < 2 ** len(self.upsample_rates):
            raise CmmdError(f"MelGAN channels ({self.channels}) must be a positive multiple of "
                            f"2^{len(self.upsample_rates)} (the width halves at each upsampling stage)")
        if any(r < 1 for r in self.upsample_rates) or any(d < 1 for d in self.dilations):
            raise CmmdError("MelGAN upsampling rates and dilations must be positive")


class ResidualUnit(nn.Module):
    """``shortcut(x) + conv1x1(LReLU(conv3(LReLU(x), dilation)))``: ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(LRELU_SLOPE),
            nn.ReflectionPad1d(dilation),
            weight_norm(nn.Conv1d(channels, channels, 3, dilation=dilation)),
            nn.LeakyReLU(LRELU_SLOPE),
            weight_norm(nn.Conv1d(channels, channels, 1)),
        )
        self.shortcut = weight_norm(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T) -> (B, C, T)``."""
        return self.shortcut(x) + self.block(x)


class MelGanGenerator(nn.Module):
    """Log-mel ``(B, n_mels, L)`` -> waveform ``(B, L * hop)`` in ``[-1, 1]``."""

    def __init__(self, cfg: MelGanConfig = MelGanConfig()) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c = cfg.channels
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(cfg.n_mels, c, 7))]
        for r in cfg.upsample_rates:
            layers += [
                nn.LeakyReLU(LRELU_SLOPE),
                weight_norm(nn.ConvTranspose1d(c, c // 2, 2 * r, stride=r, padding=r // 2 + r % 2,
                                               output_padding=r % 2)),
            ]
            c //= 2
            layers += [ResidualUnit(c, d) for d in cfg.dilations]
        layers += [nn.LeakyReLU(LRELU_SLOPE), nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(c, 1, 7)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @property
    def hop(self) -> int:
        """Samples per mel frame."""
        return self.cfg.hop

    def forward(self, mel: Tensor) -> Tensor:
        """``(B, n_mels, L) -> (B, L * hop)``."""
        return self.net(mel).squeeze(1)


__all__ = ["MelGanConfig", "MelGanGenerator"]
