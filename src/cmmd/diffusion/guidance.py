"""Conditional generation from the joint model: replacement and reconstruction guidance (paper Eq. 3).

Implemented once, as a wrapper around a denoiser, so every sampler supports it unchanged.
For video-to-audio (audio-to-video is the same with the roles swapped), at every evaluation:

1. the known video's state is replaced by its ground truth re-noised to that step's level,
   ``v_n = sqrt(ab_n) v0 + sqrt(1 - ab_n) eps_v`` with one ``eps_v`` drawn at the start
   (paper Eq. 5: ``v_{1:N}`` is fixed by ``v0`` and ``eps_v``);
2. the model predicts both clean signals, ``v0_hat`` and the unguided ``a0_bar``;
3. with ``lambda > 0`` the audio estimate is corrected by reconstruction guidance (paper Eq. 3,
   after Ho et al. 2022): ``a0_hat = a0_bar - lambda * sqrt(ab_n) * grad_{a_n} ||v0 - v0_hat||^2``;
   ``lambda = 0`` is the replacement method (Song et al. 2021);
4. the known video's x0 is returned as ``v0`` itself, so the sampler's final video is the
   ground truth exactly.

*Scale of lambda.* ``||v0 - v0_hat||^2`` is the per-sample *sum* of squares over all elements
of the known modality, as the paper's squared norm says. Per-sample sums keep the samples of a
batch independent (the gradient of the batch total w.r.t. one sample's ``a_n`` is that sample's
gradient), and for a temporally local network the correction per generated element does not
change with clip length (a clip twice as long doubles the sum and the elements it spreads
over), so one lambda serves training-length and test-length clips; it does depend on the known
modality's size per time step (C*H*W of a video frame, the M mel bins), so a lambda tuned for
one latent size is not portable to another. With a mean instead, lambda would have to grow with
the clip length.

*Sync guidance* (beyond the paper; :class:`Condition` ``sync_guidance = w > 0``): negative-condition
guidance against a misaligned condition. Each evaluation also runs the network with the known
modality circularly shifted in time by ``s`` frames (one signed shift per sample, drawn once, as
the temporal-shift negatives are made) and moves the generated modality's x0 prediction away from
that answer: ``x0_g = x0_g(c) + w * (x0_g(c) - x0_g(c_shift))``. This is classifier-free guidance
(Ho & Salimans 2022) with the shifted condition in place of the null one: its score difference
is ``grad log p(c | x) - grad log p(c_shift | x)``, which pushes the sample toward what the
aligned condition explains and the shifted one does not, i.e. toward its timing. The content
both conditions share (what sounds, not when) cancels. Applied to the unguided prediction and
added to any reconstruction-guidance correction; one extra network evaluation per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from cmmd.data.negatives import temporal_shift
from cmmd.diffusion.denoiser import Denoiser
from cmmd.diffusion.parameterization import q_sample
from cmmd.diffusion.schedules import Schedule, append_dims

ConditionMode = Literal["joint", "v2a", "a2v"]


@dataclass
class Condition:
    """What to condition on: nothing (``"joint"``), a known video (``"v2a"``) or a known audio (``"a2v"``).

    ``video0`` (B, T, C, H, W) is required for ``"v2a"``, ``audio0`` (B, M, L) for ``"a2v"``;
    ``guidance_scale`` is Eq. 3's lambda (0 = replacement); ``noise`` is the fixed ``eps`` of
    Eq. 5 used to re-noise the known modality, shaped like it; left ``None``, it is drawn once
    from the sampler's generator. ``known_level="clean"`` (our extension, not in the paper) gives
    the network the known modality clean at level 0 instead of re-noised at the current level;
    it needs a model trained with ``DiffusionLossConfig.clean_condition_prob > 0``, which has
    learned the conditional ``p(a | v)`` directly rather than only the joint.

    ``sync_guidance`` is the sync-guidance weight ``w`` (module docstring; 0 = off) and
    ``sync_shift`` the range ``(low, high)`` of the shift magnitude in frames of the known
    modality's time axis (video frames, mel frames, or samples of a waveform);
    ``shifts`` (B,) are the signed shifts, drawn once from the sampler's generator when left
    ``None`` (uniform magnitude in the range, random sign).
    """

    mode: ConditionMode = "joint"
    video0: torch.Tensor | None = None
    audio0: torch.Tensor | None = None
    guidance_scale: float = 0.0
    noise: torch.Tensor | None = None
    known_level: Literal["renoised", "clean"] = "renoised"
    sync_guidance: float = 0.0
    sync_shift: tuple[int, int] = (1, 1)
    shifts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("joint", "v2a", "a2v"):
            raise ValueError(f"unknown condition mode {self.mode!r}; expected 'joint', 'v2a' or 'a2v'")
        if self.known_level not in ("renoised", "clean"):
            raise ValueError(f"known_level must be 'renoised' or 'clean', got {self.known_level!r}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.sync_guidance < 0:
            raise ValueError(f"sync_guidance must be >= 0, got {self.sync_guidance}")
        if self.mode == "joint":
            for name in ("guidance_scale", "sync_guidance"):
                if getattr(self, name) != 0:
                    raise ValueError(f"{name} needs a known modality (mode 'v2a' or 'a2v')")
            return
        known = self.known
        if known is None:
            name = "video0" if self.mode == "v2a" else "audio0"
            raise ValueError(f"mode {self.mode!r} needs {name}")
        if self.noise is not None and self.noise.shape != known.shape:
            raise ValueError(
                f"condition noise has shape {tuple(self.noise.shape)}, the known modality {tuple(known.shape)}"
            )
        if self.sync_guidance > 0:
            low, high = self.sync_shift
            length = known.shape[self.time_dim]
            if not 0 < low <= high < length:
                raise ValueError(f"sync_shift must satisfy 0 < low <= high < {length} (the known modality's "
                                 f"length in frames), got {list(self.sync_shift)}")
            if self.shifts is not None and (self.shifts.shape != known.shape[:1] or bool(
                    ((self.shifts == 0) | (self.shifts.abs() >= length)).any())):
                raise ValueError(f"shifts must be ({known.shape[0]},) non-zero frame counts below {length}")

    @property
    def time_dim(self) -> int:
        """The known modality's time axis: 1 for video (B, T, C, H, W), -1 for audio (B, M, L)."""
        return 1 if self.mode == "v2a" else -1

    @property
    def known(self) -> torch.Tensor | None:
        """The known clean modality, or None for joint generation."""
        return {"joint": None, "v2a": self.video0, "a2v": self.audio0}[self.mode]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Condition:
        """A copy with its tensors on ``device`` in ``dtype``."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype)

        shifts = None if self.shifts is None else self.shifts.to(device)
        return dataclasses.replace(self, video0=move(self.video0), audio0=move(self.audio0), noise=move(self.noise),
                                   shifts=shifts)


class GuidedDenoiser:
    """A denoiser with a :class:`Condition` applied; same call signature as the wrapped one.

    Samplers also call :meth:`replace_known` on their state before each evaluation, so the
    state they report and integrate holds the re-noised ground truth as well.
    """

    def __init__(self, denoiser: Denoiser, condition: Condition, schedule: Schedule):
        if condition.mode != "joint" and condition.noise is None:
            raise ValueError("GuidedDenoiser needs condition.noise; build it with guided_denoiser()")
        if condition.sync_guidance > 0 and condition.shifts is None:
            raise ValueError("sync guidance needs condition.shifts; build it with guided_denoiser()")
        self.denoiser = denoiser
        self.condition = condition
        self.schedule = schedule
        # Index of the known and the generated modality in (video, audio).
        self.known_index = {"joint": None, "v2a": 0, "a2v": 1}[condition.mode]

    def _renoised_known(self, n: torch.Tensor) -> torch.Tensor:
        """Known modality at step ``n`` (B,): ``sqrt(ab_n) x0 + sqrt(1 - ab_n) eps`` (paper Eq. 5),
        or ``x0`` itself when the condition is given clean."""
        known = self.condition.known
        assert known is not None and self.condition.noise is not None
        if self.condition.known_level == "clean":
            return known
        return q_sample(known, self.condition.noise, self.schedule.alpha_bar_at(n))

    def replace_known(
        self, video_n: torch.Tensor, audio_n: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The state with the known modality replaced by its re-noised ground truth at ``n`` (B,)."""
        if self.known_index is None:
            return video_n, audio_n
        if self.known_index == 0:
            return self._renoised_known(n), audio_n
        return video_n, self._renoised_known(n)

    def __call__(
        self, video_n: torch.Tensor, audio_n: torch.Tensor, n_video: torch.Tensor, n_audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 predictions ``(video0_hat, audio0_hat)`` under the condition (module docstring, steps 1-4)."""
        k = self.known_index
        if k is None:
            return self.denoiser(video_n, audio_n, n_video, n_audio)
        g = 1 - k
        levels = [n_video, n_audio]
        known0 = self.condition.known
        assert known0 is not None
        states = [video_n, audio_n]
        states[k] = self._renoised_known(levels[k])
        if self.condition.known_level == "clean":
            levels[k] = torch.zeros_like(levels[k])
        scale = self.condition.guidance_scale
        if scale == 0:
            out = list(self.denoiser(states[0], states[1], levels[0], levels[1]))
            unguided = out[g]
        else:
            with torch.enable_grad():
                states[g] = states[g].detach().requires_grad_(True)
                out = list(self.denoiser(states[0], states[1], levels[0], levels[1]))
                error = (known0 - out[k]).float().pow(2).sum()  # per-sample sums, added over the batch
                (grad,) = torch.autograd.grad(error, states[g])
            unguided = out[g] = out[g].detach()
            sqrt_ab = append_dims(self.schedule.alpha_bar_at(levels[g]).sqrt(), grad.ndim).to(grad.dtype)
            out[g] = out[g] - scale * sqrt_ab * grad  # Eq. 3, reconstruction guidance
        if self.condition.sync_guidance > 0:
            out[g] = out[g] + self.condition.sync_guidance * (unguided - self._shifted_prediction(states, levels))
        out[k] = known0
        return out[0], out[1]

    def _shifted_prediction(self, states: list[torch.Tensor], levels: list[torch.Tensor]) -> torch.Tensor:
        """The generated modality's x0 prediction with the known state shifted in time (sync guidance)."""
        k = self.known_index
        assert k is not None and self.condition.shifts is not None
        shifted = list(states)
        shifted[k] = temporal_shift(states[k].detach(), self.condition.shifts, self.condition.time_dim)
        shifted[1 - k] = states[1 - k].detach()
        return self.denoiser(shifted[0], shifted[1], levels[0], levels[1])[1 - k]


def guided_denoiser(
    denoiser: Denoiser, condition: Condition, schedule: Schedule, generator: torch.Generator | None = None
) -> GuidedDenoiser:
    """Wrap ``denoiser`` with ``condition``, drawing the fixed re-noising ``eps`` (Eq. 5) if not given.

    The noise is drawn from ``generator`` (on its device, then moved to the known modality's)
    with the known modality's shape and dtype; then, for sync guidance without given
    ``shifts``, one shift magnitude per sample (uniform integer in ``sync_shift``) and one sign.
    """
    known = condition.known
    if known is None:
        return GuidedDenoiser(denoiser, condition, schedule)
    device = generator.device if generator is not None else known.device
    if condition.noise is None:
        noise = torch.randn(known.shape, generator=generator, device=device, dtype=known.dtype).to(known.device)
        condition = dataclasses.replace(condition, noise=noise)
    if condition.sync_guidance > 0 and condition.shifts is None:
        low, high = condition.sync_shift
        size = (known.shape[0],)
        magnitude = torch.randint(low, high + 1, size, generator=generator, device=device)
        sign = 2 * torch.randint(0, 2, size, generator=generator, device=device) - 1
        condition = dataclasses.replace(condition, shifts=(sign * magnitude).to(known.device))
    return GuidedDenoiser(denoiser, condition, schedule)
