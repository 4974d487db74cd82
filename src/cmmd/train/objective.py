"""One micro-batch's training objective as ``cmmd train`` runs it: negatives, then the loss.

Shared by the training loop and the speed benchmark (``benchmarks/speed_cmmd_vs_mmdiffusion.py``)
so that the benchmark times exactly what a training step computes.
"""

from __future__ import annotations

import torch

from cmmd.conventions import FPS, SAMPLE_RATE
from cmmd.data.negatives import NegativeConfig, make_negatives
from cmmd.diffusion.denoiser import JointModel
from cmmd.diffusion.losses import DiffusionLossConfig, concat_negatives, training_loss
from cmmd.diffusion.schedules import Schedule


def step_objective(
    model: JointModel,
    video: torch.Tensor,
    audio: torch.Tensor,
    schedule: Schedule,
    loss_cfg: DiffusionLossConfig,
    negative_cfg: NegativeConfig,
    generator: torch.Generator,
    step: int,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    reference: JointModel | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scalar loss and detached logs of one micro-batch at training step ``step``.

    ``video (B, T, C, H, W)``, ``audio (B, 80, L)`` mels (or ``(B, 1, S)`` waves when the loss
    is not contrastive). With a contrastive loss the step's negatives are drawn first by
    :func:`cmmd.data.negatives.make_negatives` from ``generator``, then
    :func:`cmmd.diffusion.losses.training_loss` draws its steps and noise from the same
    generator and runs positives and negatives through ``model`` in one forward pass
    (``B + Ka + Kv`` rows, ``num_negatives`` draws of each for InfoNCE); without one only the
    ``B`` positives. ``reference`` is the frozen model of the DPO form.
    """
    negatives = None
    if loss_cfg.contrastive != "none":
        negatives = concat_negatives([
            make_negatives(video, audio, negative_cfg, generator, fps=fps, sample_rate=sample_rate, step=step)
            for _ in range(loss_cfg.num_negatives or 1)])
    return training_loss(model, video, audio, negatives, schedule, loss_cfg, generator, reference)
