"""Diffusion stage of cmmd: schedules, parameterisations, losses, the denoiser, guidance, samplers.

METHOD.md sections 3-5: the joint v-prediction objective (paper Eq. 2), the joint contrastive
loss (Eq. 6) and its bounded variant, and conditional sampling by replacement / reconstruction
guidance (Eq. 3) with DDIM or DPM-Solver++(2M). Beyond the paper: InfoNCE over K negatives,
Diffusion-DPO, a sync term on x0 predictions (``sync_losses``), sync guidance and windowed
sampling of long inputs (``windows``).
"""

from cmmd.diffusion.denoiser import Denoiser, JointDenoiser
from cmmd.diffusion.guidance import Condition, GuidedDenoiser, guided_denoiser
from cmmd.diffusion.losses import (
    DiffusionLossConfig,
    concat_negatives,
    contrastive_bound,
    contrastive_loss,
    dpo_loss,
    joint_diffusion_loss,
    match_negatives,
    training_loss,
)
from cmmd.diffusion.parameterization import (
    eps_from_v,
    eps_from_x0,
    prediction_target,
    q_sample,
    v_from_eps,
    velocity_target,
    x0_from_eps,
    x0_from_prediction,
    x0_from_v,
)
from cmmd.diffusion.samplers import SAMPLERS, ddim_sample, dpmpp2m_sample, sample, sampling_timesteps
from cmmd.diffusion.schedules import Schedule, append_dims, cosine_alpha_bar, linear_alpha_bar, make_schedule
from cmmd.diffusion.windows import WindowedDenoiser, blend_weights, map_spans, window_spans

__all__ = [
    "SAMPLERS",
    "Condition",
    "Denoiser",
    "DiffusionLossConfig",
    "GuidedDenoiser",
    "JointDenoiser",
    "Schedule",
    "WindowedDenoiser",
    "append_dims",
    "blend_weights",
    "concat_negatives",
    "contrastive_bound",
    "contrastive_loss",
    "cosine_alpha_bar",
    "ddim_sample",
    "dpmpp2m_sample",
    "dpo_loss",
    "eps_from_v",
    "eps_from_x0",
    "guided_denoiser",
    "joint_diffusion_loss",
    "linear_alpha_bar",
    "make_schedule",
    "map_spans",
    "match_negatives",
    "prediction_target",
    "q_sample",
    "sample",
    "sampling_timesteps",
    "training_loss",
    "v_from_eps",
    "velocity_target",
    "window_spans",
    "x0_from_eps",
    "x0_from_prediction",
    "x0_from_v",
]
