"""The training run's configuration: one dataclass tree, read strictly from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cmmd.data.negatives import NegativeConfig
from cmmd.diffusion.losses import DiffusionLossConfig


@dataclass
class DataSection:
    """Where the prepared shards are (``cmmd prepare`` output), how clips are cut, and what the
    model sees: video as pixels in [-1, 1] (B, T, 3, H, W) or as the codec latents precomputed
    into ``root`` (B, T, C, h, w) (``cmmd prepare --codec`` / ``cmmd vae encode``; never encoded
    during training); audio as normalised log-mels (CMMD) or the raw waveform (B, 1, S) (the
    MM-Diffusion baseline)."""

    root: str = ""
    clip_frames: int = 18
    num_workers: int = 2
    video: Literal["pixels", "latents"] = "pixels"
    audio: Literal["mel", "wave"] = "mel"


@dataclass
class ModelSection:
    """A named preset plus field overrides of its config: CMMD's :mod:`cmmd.models.presets`, or
    the MM-Diffusion baseline's ``mmdiffusion-*`` presets (:mod:`cmmd.models.mmdiffusion`)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DiffusionSection:
    """Noise schedule (METHOD.md section 3) and the training objective (sections 3-4)."""

    schedule: Literal["cosine", "linear"] = "cosine"
    num_steps: int = 1000
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)


@dataclass
class OptimSection:
    """AdamW with linear warm-up then cosine or constant learning rate."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class PreviewSection:
    """Periodic sample previews (video->audio spectrograms) written by rank 0."""

    every: int = 0
    method: Literal["ddim", "dpmpp2m"] = "ddim"
    steps: int = 25


@dataclass
class TrainConfig:
    """Everything a run needs; ``batch_size`` is the global batch per optimizer step.

    ``max_minutes`` (> 0) stops the run after that much wall-clock training, checkpoint saved.
    ``fit_steps_to_budget`` (with ``max_minutes``) instead times steps ``FIT_FROM`` to
    ``FIT_FROM + FIT_STEPS`` of this invocation (cmmd.train.loop) and lowers ``steps``, the
    learning-rate horizon included, to what the rest of the budget allows, so that a slower
    machine gets a shorter but fully annealed schedule rather than one cut off half-way. The
    fitted value is stored in every checkpoint and kept by ``--resume`` while this stays true
    (set it false to continue to ``steps`` instead).

    ``init``: a run dir, checkpoint dir or exported weights file whose EMA weights start the
    model and its EMA (fine-tuning; the optimizer starts fresh). With
    ``diffusion.loss.contrastive: dpo`` a frozen copy of them is also the DPO reference model.
    Ignored on ``--resume``, which continues from the run's own checkpoint (the reference is
    still ``init``).
    """

    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000
    max_minutes: float = 0.0
    fit_steps_to_budget: bool = False
    init: str = ""
    batch_size: int = 8
    grad_accum: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    ema_decay: float = 0.999
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    negatives: NegativeConfig = field(default_factory=NegativeConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    preview: PreviewSection = field(default_factory=PreviewSection)
