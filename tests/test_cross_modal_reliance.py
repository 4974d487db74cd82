"""``benchmarks/cross_modal_reliance.py``: a network that ignores the other modality scores ratio 1
exactly, one that reads its audio off the video scores far above 1 for audio and 1 for video."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
from torch import nn

from cmmd.diffusion.parameterization import eps_from_x0
from cmmd.diffusion.schedules import make_schedule
from conftest import load_benchmark

@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    yield from load_benchmark("cross_modal_reliance")


SCHEDULE = make_schedule("cosine", 1000)


class Alone(nn.Module):
    """eps-prediction that shrinks each noisy input towards 0 on its own: the partner is never read."""

    def forward(self, video, audio, n_v, n_a):
        ab_v, ab_a = SCHEDULE.alpha_bar_at(n_v), SCHEDULE.alpha_bar_at(n_a)
        return (eps_from_x0(video, 0.5 * video, ab_v), eps_from_x0(audio, 0.5 * audio, ab_a))


class AudioFromVideo(Alone):
    """Audio x0 guessed as the noisy video's per-clip mean (the toy data's audio is exactly that)."""

    def forward(self, video, audio, n_v, n_a):
        out_v, _ = super().forward(video, audio, n_v, n_a)
        ab = SCHEDULE.alpha_bar_at(n_a)
        guess = video.flatten(1).mean(1) / ab.sqrt()  # the mean of the clean video, noise averaged out
        return out_v, eps_from_x0(audio, guess[:, None, None].expand_as(audio), ab)


def _data(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    levels = torch.linspace(-0.8, 0.8, b)
    video0 = levels[:, None, None, None, None] + 0.05 * torch.randn(b, 6, 3, 8, 8, generator=gen)
    audio0 = video0.flatten(1).mean(1)[:, None, None].expand(b, 2, 16).clone()
    return video0, audio0


def test_a_model_that_ignores_the_partner_scores_ratio_one(bench: ModuleType) -> None:
    video0, audio0 = _data()
    r = bench.reliance(Alone(), SCHEDULE, "eps", video0, audio0, level=500, draws=2)
    assert r["audio_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert r["video_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert r["audio_own"] > 0


def test_a_model_that_reads_audio_off_the_video_scores_far_above_one(bench: ModuleType) -> None:
    video0, audio0 = _data()
    r = bench.reliance(AudioFromVideo(), SCHEDULE, "eps", video0, audio0, level=500, draws=2)
    assert r["audio_ratio"] > 20  # the wrong clip's video gives the wrong level
    assert r["video_ratio"] == pytest.approx(1.0, abs=1e-6)  # its video path reads no audio
    # the own-partner error is the small residual of guessing x0 from the noisy video's mean
    assert r["audio_own"] < 0.01


def test_mismatched_partners_need_two_clips(bench: ModuleType) -> None:
    assert bench.derangement(3).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="at least 2 clips"):
        bench.derangement(1)
