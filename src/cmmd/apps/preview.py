"""Periodic training previews: the EMA model's audio for a fixed training clip's video."""

from __future__ import annotations

from pathlib import Path

import torch

from cmmd.audio.mel import MelStats
from cmmd.conventions import mel_rate
from cmmd.data.dataset import ClipDataset
from cmmd.diffusion.schedules import Schedule
from cmmd.eval.plots import save_spectrograms
from cmmd.pipeline import Pipeline, SamplingSettings
from cmmd.train.config import TrainConfig


def write_preview(ema: torch.nn.Module, schedule: Schedule, cfg: TrainConfig, clips: ClipDataset,
                  mel_stats: MelStats, path: Path) -> Path:
    """Spectrograms of ground truth vs video->audio for clip 0 of epoch 0 (fixed seed), as PNG."""
    was_training = ema.training
    device = next(ema.parameters()).device
    pipe = Pipeline(ema, cfg, mel_stats, clips.fps, clips.size, clips.sample_rate, device)
    item = clips.get(0, 0)
    frames = ((item["video"].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    gen = pipe.generate("v2a", SamplingSettings(cfg.preview.method, cfg.preview.steps, seed=0), frames=frames[None])
    ema.train(was_training)
    return save_spectrograms([("ground truth", item["mel"].numpy()), ("generated from video", gen.mel[0])],
                             path, mel_rate(clips.mel.sample_rate, clips.mel.hop))
