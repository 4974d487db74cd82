"""cmmd.train.objective.step_objective: the negatives a training step puts through the network."""

from __future__ import annotations

import pytest
import torch

from cmmd.conventions import N_MELS
from cmmd.data.negatives import NegativeConfig
from cmmd.diffusion import DiffusionLossConfig, make_schedule
from cmmd.train.objective import step_objective

B = 3


class Recorder:
    """A stand-in joint model: records its noisy inputs, predicts zeros."""

    def __init__(self) -> None:
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, video: torch.Tensor, audio: torch.Tensor, *_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.inputs.append((video, audio))
        return torch.zeros_like(video), torch.zeros_like(audio)


def _run(contrastive: str, negatives: NegativeConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(B, 16, 3, 4, 4, generator=g), torch.randn(B, N_MELS, 100, generator=g)
    model = Recorder()
    loss, _ = step_objective(model, video, audio, make_schedule("cosine"), DiffusionLossConfig(contrastive=contrastive),
                             negatives, torch.Generator().manual_seed(step), step)
    assert torch.isfinite(loss) and len(model.inputs) == 1
    return model.inputs[0]


def _is_copy_of_a_positive(rows: torch.Tensor, positives: torch.Tensor) -> bool:
    return all(any(torch.equal(r, p) for p in positives) for r in rows)


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_alternate_draws_audio_negatives_on_even_steps_and_video_ones_on_odd(step: int) -> None:
    video, audio = _run("paper", NegativeConfig(modalities="alternate"), step)
    assert video.shape[0] == audio.shape[0] == 2 * B
    # An audio negative is paired with its positive's (noisy) video, a video negative with its audio.
    audio_negatives = step % 2 == 0
    same, other = (video, audio) if audio_negatives else (audio, video)
    assert _is_copy_of_a_positive(same[B:], same[:B])
    assert not _is_copy_of_a_positive(other[B:], other[:B])


def test_both_modalities_and_no_contrast() -> None:
    video, audio = _run("paper", NegativeConfig(), 1)
    assert video.shape[0] == 3 * B
    assert _is_copy_of_a_positive(video[B:2 * B], video[:B]) and _is_copy_of_a_positive(audio[2 * B:], audio[:B])
    video, audio = _run("none", NegativeConfig(), 1)
    assert video.shape[0] == audio.shape[0] == B
