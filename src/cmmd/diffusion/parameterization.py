"""Conversions between the noisy sample, the clean signal, the noise and the velocity.

With ``a = sqrt(alpha_bar)`` and ``s = sqrt(1 - alpha_bar)`` (``a^2 + s^2 = 1``):

* ``x_n = a x_0 + s eps``  (forward process, paper Eq. 5 / METHOD.md section 3);
* ``v   = a eps - s x_0``  (velocity target, paper Eq. 2; Salimans & Ho 2022, section 4).

``(x_n, v)`` is a rotation of ``(x_0, eps)`` by the angle ``arccos(a)``, so every quantity is a
linear function of any two others; the functions below are those inverses. Each takes ``ab``
of shape (B,) (any float dtype; float64 keeps ``1 - ab`` exact near ``n = 0``) and broadcasts it
over tensors of any rank ``(B, ...)``; results have the data's dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

from cmmd.diffusion.schedules import append_dims

Prediction = Literal["v", "eps"]


def _coefficients(ab: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(ab), sqrt(1 - ab))`` computed in ab's precision, shaped (B, 1, ...) in like's dtype."""
    ab = append_dims(ab.to(like.device), like.ndim)
    return ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype)


def q_sample(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Noisy sample ``x_n = sqrt(ab) x0 + sqrt(1 - ab) eps`` (paper Eq. 5)."""
    a, s = _coefficients(ab, x0)
    return a * x0 + s * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (paper Eq. 2)."""
    a, s = _coefficients(ab, x0)
    return a * eps - s * x0


def x0_from_v(x_n: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Clean signal ``x0 = sqrt(ab) x_n - sqrt(1 - ab) v`` (inverse rotation of Eq. 2 / Eq. 5)."""
    a, s = _coefficients(ab, x_n)
    return a * x_n - s * v


def eps_from_v(x_n: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Noise ``eps = sqrt(1 - ab) x_n + sqrt(ab) v`` (inverse rotation of Eq. 2 / Eq. 5)."""
    a, s = _coefficients(ab, x_n)
    return s * x_n + a * v


def x0_from_eps(x_n: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Clean signal ``x0 = (x_n - sqrt(1 - ab) eps) / sqrt(ab)`` (Eq. 5 solved for x0)."""
    a, s = _coefficients(ab, x_n)
    return (x_n - s * eps) / a


def eps_from_x0(x_n: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Noise ``eps = (x_n - sqrt(ab) x0) / sqrt(1 - ab)`` (Eq. 5 solved for eps); needs ``ab < 1``."""
    a, s = _coefficients(ab, x_n)
    return (x_n - a * x0) / s


def v_from_eps(x_n: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Velocity ``v = (eps - sqrt(1 - ab) x_n) / sqrt(ab)`` (Eq. 2 with x0 from Eq. 5)."""
    a, s = _coefficients(ab, x_n)
    return (eps - s * x_n) / a


def prediction_target(prediction: Prediction, x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """What the network regresses: the velocity (paper Eq. 1-2, ours) or the noise (Eq. 1, baseline)."""
    if prediction == "v":
        return velocity_target(x0, eps, ab)
    if prediction == "eps":
        return eps
    raise ValueError(f"unknown prediction {prediction!r}; expected 'v' or 'eps'")


def x0_from_prediction(prediction: Prediction, x_n: torch.Tensor, out: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """The clean-signal estimate implied by a network output of kind ``prediction``."""
    if prediction == "v":
        return x0_from_v(x_n, out, ab)
    if prediction == "eps":
        return x0_from_eps(x_n, out, ab)
    raise ValueError(f"unknown prediction {prediction!r}; expected 'v' or 'eps'")
