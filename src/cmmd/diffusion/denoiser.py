"""The joint denoiser: a network wrapped so that it returns clean-signal (x0) predictions.

Like k-diffusion's ``VDenoiser``, the wrapper owns the parameterisation, so the network stays
ignorant of it and samplers and guidance only ever see x0 predictions. Any callable with the
signature of :meth:`JointDenoiser.__call__` is a denoiser (tests use closed-form ones).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cmmd.diffusion.parameterization import Prediction, x0_from_prediction
from cmmd.diffusion.schedules import Schedule

# A joint network: (video_n (B,T,C,H,W), audio_n (B,M,L), t_video (B,), t_audio (B,)) -> outputs shaped alike.
JointModel = Callable[..., tuple[torch.Tensor, torch.Tensor]]

# (video_n (B,T,C,H,W), audio_n (B,M,L), n_video (B,), n_audio (B,)) -> (video0_hat, audio0_hat).
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class JointDenoiser:
    """``(video_n, audio_n, n_video, n_audio) -> (video0_hat, audio0_hat)`` for a joint network.

    ``model`` follows the JointUNet contract ``(video (B,T,C,H,W), audio (B,M,L), t_video (B,),
    t_audio (B,)) -> (video_out, audio_out)``; ``prediction`` says whether its outputs are
    velocities (``x0 = sqrt(ab) x_n - sqrt(1 - ab) v``, inverse of paper Eq. 2) or noises
    (``x0 = (x_n - sqrt(1 - ab) eps) / sqrt(ab)``, inverse of Eq. 5).
    """

    def __init__(self, model: JointModel, schedule: Schedule, prediction: Prediction = "v"):
        self.model = model
        self.schedule = schedule
        self.prediction = prediction

    def __call__(
        self, video_n: torch.Tensor, audio_n: torch.Tensor, n_video: torch.Tensor, n_audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 predictions for noisy ``video_n`` (B,T,C,H,W) / ``audio_n`` (B,M,L) at float steps (B,).

        Outputs have the inputs' dtype even when the network runs under autocast.
        """
        out_v, out_a = self.model(video_n, audio_n, n_video, n_audio)
        ab_v = self.schedule.alpha_bar_at(n_video)
        ab_a = self.schedule.alpha_bar_at(n_audio)
        video0 = x0_from_prediction(self.prediction, video_n, out_v.to(video_n.dtype), ab_v)
        audio0 = x0_from_prediction(self.prediction, audio_n, out_a.to(audio_n.dtype), ab_a)
        return video0, audio0
