"""Samplers for the joint model: DDIM and DPM-Solver++(2M), sharing one signature.

Every sampler is ``f(denoiser, schedule, video_shape, audio_shape, *, steps, condition,
eta_ddim, spacing, generator, callback, device, dtype, autocast) -> (video0, audio0)``:

* ``denoiser``: any callable ``(video_n, audio_n, n_video, n_audio) -> (video0_hat, audio0_hat)``
  returning clean-signal predictions (:class:`~cmmd.diffusion.denoiser.JointDenoiser` for a
  network), differentiable when reconstruction guidance is used;
* ``condition``: a :class:`~cmmd.diffusion.guidance.Condition`; the sampler wraps the denoiser
  with :func:`~cmmd.diffusion.guidance.guided_denoiser` and replaces the known modality in its
  state before each evaluation, which is all a sampler knows about conditioning (paper Eq. 3, 5);
* ``callback(info)`` after each evaluation, ``info`` a dict with ``step`` (0-based), ``steps``,
  ``n`` (the integer level), ``video`` / ``audio`` (the state the denoiser saw) and ``video0`` /
  ``audio0`` (its x0 predictions).

Randomness, in order: initial video noise, initial audio noise, the condition's re-noising
``eps`` (if not given), then per step (DDIM with ``eta_ddim > 0`` only) video then audio
noise, all from ``generator`` on its own device; a run is a pure function of its seed. Both
samplers run under ``torch.no_grad()`` (guidance enables gradients for its own step) and, with
``autocast=True`` on CUDA, evaluate the denoiser under bf16 autocast while the update
arithmetic stays in ``dtype``. The last step jumps to ``alpha_bar = 1`` and returns the final
x0 predictions, so a known modality comes back exactly equal to its ground truth.

*Timestep spacing* (``spacing``, over the N training levels, ``steps <= N``): ``"trailing"``
(default; Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed")
takes ``round(N - i N / steps) - 1`` for ``i = 0..steps-1``, so the first evaluation is
at the noisiest level ``N - 1``, matching the pure-noise start; ``"leading"`` (the original
DDIM code) takes ``i * (N // steps)`` reversed, which ends at level 0 but starts below ``N - 1``
(at 960 of 1000 for 25 steps), where the pure-noise start is slightly off-distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from cmmd.diffusion.denoiser import Denoiser
from cmmd.diffusion.guidance import Condition, GuidedDenoiser, guided_denoiser
from cmmd.diffusion.schedules import Schedule

Method = Literal["ddim", "dpmpp2m"]
Spacing = Literal["trailing", "leading"]
Callback = Callable[[dict[str, Any]], None]


def sampling_timesteps(num_train_steps: int, steps: int, spacing: Spacing = "trailing") -> list[int]:
    """The ``steps`` training levels a sampler visits, strictly decreasing (module docstring)."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in [1, {num_train_steps}], got {steps}")
    if spacing == "trailing":
        return [round(num_train_steps - i * num_train_steps / steps) - 1 for i in range(steps)]
    if spacing == "leading":
        return [i * (num_train_steps // steps) for i in reversed(range(steps))]
    raise ValueError(f"unknown timestep spacing {spacing!r}; expected 'trailing' or 'leading'")


def _randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal draw on the generator's device (so results do not depend on ``device``)."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def _start(
    denoiser: Denoiser,
    schedule: Schedule,
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...],
    steps: int,
    condition: Condition | None,
    spacing: Spacing,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[GuidedDenoiser, torch.Tensor, torch.Tensor, list[int]]:
    """Validate, draw the initial noise and wrap the denoiser with the condition."""
    video_shape, audio_shape = tuple(video_shape), tuple(audio_shape)
    if video_shape[0] != audio_shape[0]:
        raise ValueError(f"video batch {video_shape[0]} != audio batch {audio_shape[0]}")
    condition = (condition or Condition()).to(device, dtype)
    for name, shape in (("video0", video_shape), ("audio0", audio_shape)):
        given = getattr(condition, name)
        if given is not None and tuple(given.shape) != shape:
            raise ValueError(f"condition {name} has shape {tuple(given.shape)}, the sampler was asked for {shape}")
    timesteps = sampling_timesteps(schedule.num_steps, steps, spacing)
    video = _randn(video_shape, generator, device, dtype)
    audio = _randn(audio_shape, generator, device, dtype)
    return guided_denoiser(denoiser, condition, schedule, generator), video, audio, timesteps


def _evaluate(
    guided: GuidedDenoiser, video: torch.Tensor, audio: torch.Tensor, n: int, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace the known modality at level ``n``, then the x0 predictions; returns (state, x0s)."""
    levels = torch.full((video.shape[0],), float(n), device=video.device)
    video, audio = guided.replace_known(video, audio, levels)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and video.device.type == "cuda"):
        video0, audio0 = guided(video, audio, levels, levels)
    return video, audio, video0.to(video.dtype), audio0.to(audio.dtype)


def _report(callback: Callback | None, i: int, timesteps: list[int], *tensors: torch.Tensor) -> None:
    if callback is not None:
        video, audio, video0, audio0 = tensors
        callback({"step": i, "steps": len(timesteps), "n": timesteps[i], "video": video, "audio": audio,
                  "video0": video0, "audio0": audio0})


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...],
    *,
    steps: int = 50,
    condition: Condition | None = None,
    eta_ddim: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM (Song et al. 2021, Eq. 12 with sigma from Eq. 16), as paper Eq. 3 uses it; returns ``(video0, audio0)``.

    From level ``n`` to the next visited level ``p`` with ``eps_hat = (x_n - sqrt(ab_n) x0_hat) /
    sqrt(1 - ab_n)``: ``x_p = sqrt(ab_p) x0_hat + sqrt(1 - ab_p - sigma^2) eps_hat + sigma z`` with
    ``sigma = eta_ddim * sqrt((1 - ab_p) / (1 - ab_n)) * sqrt(1 - ab_n / ab_p)``; ``eta_ddim = 0``
    is deterministic, 1 is DDPM-like. We read Eq. 3's ``eps_a`` in the update as DDIM's predicted
    noise ``eps_hat``: with a noise fixed at the start the update would not be DDIM.
    """
    if eta_ddim < 0:
        raise ValueError(f"eta_ddim must be >= 0, got {eta_ddim}")
    device = torch.device(device)
    guided, video, audio, timesteps = _start(denoiser, schedule, video_shape, audio_shape, steps, condition,
                                             spacing, generator, device, dtype)
    alpha_bar = schedule.alpha_bar.tolist()
    for i, n in enumerate(timesteps):
        video, audio, video0, audio0 = _evaluate(guided, video, audio, n, autocast)
        _report(callback, i, timesteps, video, audio, video0, audio0)
        if i + 1 == len(timesteps):
            break
        ab, ab_prev = alpha_bar[n], alpha_bar[timesteps[i + 1]]
        sigma = eta_ddim * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
        c_eps = math.sqrt(max(1 - ab_prev - sigma**2, 0.0))
        updated = []
        for x, x0 in ((video, video0), (audio, audio0)):
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            x = math.sqrt(ab_prev) * x0 + c_eps * eps
            if eta_ddim > 0:
                x = x + sigma * _randn(tuple(x.shape), generator, device, dtype)
            updated.append(x)
        video, audio = updated
    return video0, audio0


@torch.no_grad()
def dpmpp2m_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...],
    *,
    steps: int = 20,
    condition: Condition | None = None,
    eta_ddim: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), deterministic; 10-25 steps.

    Data prediction, multistep second order in ``lambda = log(sqrt(ab) / sqrt(1 - ab))``: with
    ``alpha = sqrt(ab)``, ``sigma = sqrt(1 - ab)``, ``h = lambda_next - lambda_n``,
    ``x_next = (sigma_next / sigma_n) x_n - alpha_next * (exp(-h) - 1) * D`` where ``D = x0_hat``
    on the first step and ``D = (1 + 1/(2r)) x0_hat_n - 1/(2r) x0_hat_prev`` after it,
    ``r = h_prev / h``. The last step (to ``ab = 1``, ``lambda = inf``) is first order, i.e. the
    x0 prediction itself. ``eta_ddim`` exists for the shared signature and must be 0.
    """
    if eta_ddim != 0:
        raise ValueError("dpmpp2m is deterministic; eta_ddim must be 0 (use method 'ddim' for stochastic sampling)")
    device = torch.device(device)
    guided, video, audio, timesteps = _start(denoiser, schedule, video_shape, audio_shape, steps, condition,
                                             spacing, generator, device, dtype)
    alpha_bar = schedule.alpha_bar.tolist()
    lam = [0.5 * (math.log(alpha_bar[n]) - math.log1p(-alpha_bar[n])) for n in timesteps]
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    h_previous = 0.0
    for i, n in enumerate(timesteps):
        video, audio, video0, audio0 = _evaluate(guided, video, audio, n, autocast)
        _report(callback, i, timesteps, video, audio, video0, audio0)
        if i + 1 == len(timesteps):
            break
        ab, ab_next = alpha_bar[n], alpha_bar[timesteps[i + 1]]
        h = lam[i + 1] - lam[i]
        ratio = math.sqrt((1 - ab_next) / (1 - ab))
        c_d = -math.sqrt(ab_next) * math.expm1(-h)
        updated = []
        for j, (x, x0) in enumerate(((video, video0), (audio, audio0))):
            d = x0
            if previous is not None:
                half_inv_r = h / (2 * h_previous)
                d = (1 + half_inv_r) * x0 - half_inv_r * previous[j]
            updated.append(ratio * x + c_d * d)
        video, audio = updated
        previous, h_previous = (video0, audio0), h
    return video0, audio0


SAMPLERS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "ddim": ddim_sample,
    "dpmpp2m": dpmpp2m_sample,
}


def sample(
    denoiser: Denoiser,
    schedule: Schedule,
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...],
    *,
    method: Method = "ddim",
    steps: int = 50,
    condition: Condition | None = None,
    eta_ddim: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``(video0 (B,T,C,H,W), audio0 (B,M,L))`` with the sampler named ``method``.

    Joint generation by default; pass a :class:`Condition` for video-to-audio or
    audio-to-video (replacement or reconstruction guidance, paper Eq. 3). See the module
    docstring for the shared arguments.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[method](
        denoiser, schedule, video_shape, audio_shape, steps=steps, condition=condition, eta_ddim=eta_ddim,
        spacing=spacing, generator=generator, callback=callback, device=device, dtype=dtype, autocast=autocast,
    )
