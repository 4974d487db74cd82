"""HiFi-GAN's discriminators and GAN losses (Kong et al. 2020, Sec. 2.2-2.3), for vocoder training.

* Multi-period discriminator (MPD): for each period ``p`` in (2, 3, 5, 7, 11) the waveform is
  reflect-padded to a multiple of ``p``, folded to ``(B, 1, S / p, p)`` and judged by 2-D convs
  with ``(5, 1)`` kernels (stride 3 along time), so each sees every ``p``-th sample.
* Multi-scale discriminator (MSD): three 1-D conv stacks (kernel 41, grouped, strided) on the
  raw waveform and on two successive 4-tap average-pooled (x2) versions; the first uses
  spectral norm, the others weight norm.

Channel widths are HiFi-GAN's multiplied by ``width`` (1.0 = the original; the CPU default of
:mod:`cmmd.train.vocoder` is smaller), kept a multiple of each conv's group count.

Losses (least-squares GAN, Mao et al. 2017, as in HiFi-GAN Eqs. 1-2 and 4-6)::

    L_D   = sum_k E[(D_k(x) - 1)^2] + E[D_k(G(s))^2]
    L_adv = sum_k E[(D_k(G(s)) - 1)^2]
    L_fm  = sum_k sum_i mean |D_k^i(x) - D_k^i(G(s))|          (feature matching, Eq. 3)
    L_G   = L_adv + 2 L_fm + 45 L_mel                           (Eq. 6, lambda_fm = 2, lambda_mel = 45)

with ``k`` over all sub-discriminators of both MPD and MSD and ``i`` over their layers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU_SLOPE = 0.1
PERIODS = (2, 3, 5, 7, 11)
FEATURE_MATCHING_WEIGHT = 2.0
"""lambda_fm of HiFi-GAN Eq. 6."""
MEL_WEIGHT = 45.0
"""lambda_mel of HiFi-GAN Eq. 6."""

Scores = list[Tensor]
"""One flattened score tensor ``(B, n)`` per sub-discriminator."""
Features = list[list[Tensor]]
"""Per sub-discriminator, the activations of each of its layers."""


def _width(channels: int, width: float, groups: int = 1) -> int:
    """``channels * width`` rounded to a positive multiple of ``groups``."""
    return max(groups, round(channels * width / groups) * groups)


class PeriodDiscriminator(nn.Module):
    """MPD sub-discriminator for one period: waveform ``(B, S)`` -> ``(score (B, n), features)``."""

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_width(c, width) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i in range(5)
        )
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, S)`` -> ``(B, n)`` scores and the activations of every layer."""
        x = wave[:, None]
        if x.shape[-1] % self.period:
            x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.view(x.shape[0], 1, x.shape[-1] // self.period, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class ScaleDiscriminator(nn.Module):
    """MSD sub-discriminator: waveform ``(B, S)`` -> ``(score (B, n), features)``."""

    # (in, out, kernel, stride, groups) of HiFi-GAN's DiscriminatorS
    LAYERS = ((1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
              (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1))

    def __init__(self, width: float = 1.0, spectral: bool = False) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        convs = []
        for i, (c_in, c_out, k, s, g) in enumerate(self.LAYERS):
            next_groups = self.LAYERS[i + 1][4] if i + 1 < len(self.LAYERS) else 1
            cin = 1 if i == 0 else _width(c_in, width, max(g, self.LAYERS[i - 1][4]))
            cout = _width(c_out, width, max(g, next_groups))
            convs.append(norm(nn.Conv1d(cin, cout, k, s, groups=g, padding=k // 2)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm(nn.Conv1d(convs[-1].out_channels, 1, 3, 1, padding=1))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, S)`` -> ``(B, n)`` scores and the activations of every layer."""
        x = wave[:, None]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period; ``forward(wave (B, S)) -> (scores, features)``."""

    def __init__(self, periods: tuple[int, ...] = PERIODS, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)

    def forward(self, wave: Tensor) -> tuple[Scores, Features]:
        """Scores and features of every sub-discriminator for ``wave (B, S)``."""
        outs = [d(wave) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiScaleDiscriminator(nn.Module):
    """Three :class:`ScaleDiscriminator` on the waveform pooled x1, x2, x4; ``forward`` as MPD's."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [ScaleDiscriminator(width, spectral=True), ScaleDiscriminator(width), ScaleDiscriminator(width)]
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wave: Tensor) -> tuple[Scores, Features]:
        """Scores and features of every sub-discriminator for ``wave (B, S)``."""
        scores, features = [], []
        x = wave
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.pool(x[:, None])[:, 0]
            s, f = d(x)
            scores.append(s)
            features.append(f)
        return scores, features


def discriminator_loss(real: Scores, fake: Scores) -> Tensor:
    """LSGAN ``sum_k E[(D_k(x) - 1)^2] + E[D_k(G(s))^2]`` (HiFi-GAN Eq. 1)."""
    return sum(((1 - r) ** 2).mean() + (f**2).mean() for r, f in zip(real, fake, strict=True))


def generator_adversarial_loss(fake: Scores) -> Tensor:
    """LSGAN ``sum_k E[(D_k(G(s)) - 1)^2]`` (HiFi-GAN Eq. 2)."""
    return sum(((1 - f) ** 2).mean() for f in fake)


def feature_matching_loss(real: Features, fake: Features) -> Tensor:
    """``sum_k sum_i mean |D_k^i(x) - D_k^i(G(s))|`` over layers (HiFi-GAN Eq. 3), unweighted."""
    return sum((r.detach() - f).abs().mean() for rk, fk in zip(real, fake, strict=True)
               for r, f in zip(rk, fk, strict=True))


__all__ = [
    "FEATURE_MATCHING_WEIGHT",
    "MEL_WEIGHT",
    "PERIODS",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "PeriodDiscriminator",
    "ScaleDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
]
