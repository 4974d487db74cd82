"""Noise schedules: the cumulative product ``alpha_bar`` of METHOD.md section 3.

The forward process of both modalities is ``x_n = sqrt(alpha_bar_n) x_0 + sqrt(1 - alpha_bar_n)
eps`` (paper Eq. 5) with ``n`` in ``[0, N)``; ``alpha_bar[n] = prod_{i <= n} (1 - beta_i)``, so
index 0 is the least noisy training level (``alpha_bar[0] < 1``) and ``N - 1`` the noisiest.
Schedules are kept in float64 because ``1 - alpha_bar`` near ``n = 0`` is ~1e-4 and float32
would lose ~0.02 % of it; the coefficients are cast to the data's dtype only when applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleKind = Literal["cosine", "linear"]


def cosine_alpha_bar(N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021, Eq. 17), as their reference code builds it.

    ``f(u) = cos((u + s) / (1 + s) * pi / 2)^2``; ``beta_n = min(1 - f((n + 1) / N) / f(n / N),
    max_beta)``; returns ``alpha_bar`` (N,) float64 = cumulative product of ``1 - beta``.
    The clip only bites at the last step, where ``f(1) = 0`` would make ``beta = 1``, so
    ``alpha_bar[-1] = alpha_bar[-2] * (1 - max_beta)`` stays positive (about 2.4e-9 at N = 1000).
    """
    u = torch.arange(N + 1, dtype=torch.float64) / N
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def linear_alpha_bar(N: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear beta schedule of Ho et al. (2020): ``beta`` evenly spaced in ``[beta_start, beta_end]``.

    Returns ``alpha_bar`` (N,) float64; ``alpha_bar[0] = 1 - beta_start``. Used by the
    MM-Diffusion baseline (eps-prediction, MMDIFFUSION.md).
    """
    betas = torch.linspace(beta_start, beta_end, N, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """``values`` (B,) reshaped to (B, 1, ..., 1) with ``ndim`` dims, to broadcast over a batch."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete noise schedule: ``alpha_bar`` (N,) float64, strictly decreasing in (0, 1)."""

    alpha_bar: torch.Tensor
    kind: str

    @property
    def num_steps(self) -> int:
        """N, the number of training noise levels."""
        return int(self.alpha_bar.shape[0])

    def alpha_bar_at(self, n: torch.Tensor) -> torch.Tensor:
        """``alpha_bar`` at step indices ``n`` (any shape, values in ``[0, N - 1]``), float64 on n's device.

        Integer ``n`` gathers exactly. Float ``n`` interpolates geometrically between the two
        neighbouring levels, ``ab[lo] * (ab[hi] / ab[lo]) ** w``: ``log alpha_bar`` is a sum of
        per-step ``log(1 - beta)``, so a fractional step is a fractional share of the next one;
        at integer-valued floats ``w = 0`` and the result equals the gathered value exactly.
        """
        ab = self.alpha_bar.to(n.device)
        if not n.is_floating_point():
            return ab[n]
        n = n.to(torch.float64)
        lo = n.floor().long()
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = n - lo
        return ab[lo] * (ab[hi] / ab[lo]) ** w


def make_schedule(kind: ScheduleKind = "cosine", N: int = 1000) -> Schedule:
    """The schedule named by a config (METHOD.md section 3: cosine by default, linear available)."""
    if kind == "cosine":
        return Schedule(cosine_alpha_bar(N), kind)
    if kind == "linear":
        return Schedule(linear_alpha_bar(N), kind)
    raise ValueError(f"unknown noise schedule {kind!r}; expected 'cosine' or 'linear'")
