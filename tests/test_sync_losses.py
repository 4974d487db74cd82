"""The sync-discriminative term on x0 predictions (cmmd.diffusion.sync_losses) and its use in training_loss."""

from __future__ import annotations

import math

import pytest
import torch

from cmmd.diffusion.losses import DiffusionLossConfig, training_loss
from cmmd.diffusion.schedules import make_schedule
from cmmd.diffusion.sync_losses import (
    motion_energy,
    onset_envelope,
    shift_infonce,
    shift_offsets,
    shift_scores,
    standardize,
    sync_loss,
    to_audio_grid,
)


def test_onset_envelope_is_the_positive_mel_flux():
    mel = torch.tensor([[[0.0, 1.0, 0.5, 2.0], [1.0, 1.0, 3.0, 0.0]]])  # (1, M=2, L=4)
    # diffs bin0: 1, -0.5, 1.5 -> relu 1, 0, 1.5; bin1: 0, 2, -3 -> 0, 2, 0; mean over bins
    assert onset_envelope(mel).tolist() == [[0.0, 0.5, 1.0, 0.75]]


def test_motion_energy_is_the_mean_squared_frame_difference():
    video = torch.zeros(1, 3, 1, 1, 2)
    video[0, 1] = torch.tensor([1.0, 3.0])
    video[0, 2] = torch.tensor([1.0, 3.0])
    assert motion_energy(video).tolist() == [[0.0, 5.0, 0.0]]  # (1 + 9) / 2, then no change


def test_to_audio_grid_takes_the_change_ending_at_or_after_each_mel_frame():
    e = torch.tensor([[10.0, 11.0, 12.0]])  # T = 3 video frames, L = 6 mel frames: 2 per frame
    # mel frame l at video time l * 3 / 6: ceil(0)=0, ceil(.5)=1, 1, ceil(1.5)=2, 2, ceil(2.5)=3 -> clamp 2
    assert to_audio_grid(e, 6).tolist() == [[10.0, 11.0, 11.0, 12.0, 12.0, 12.0]]


def test_standardize_and_constant_envelopes():
    x = torch.tensor([[1.0, 3.0, 1.0, 3.0]])
    z = standardize(x)
    expect = torch.tensor([[-1.0, 1.0, -1.0, 1.0]]) / math.sqrt(1 + 1e-3 * 5)
    torch.testing.assert_close(z, expect)
    assert torch.equal(standardize(torch.full((2, 5), 0.3)), torch.zeros(2, 5))  # no timing, no signal


def test_shift_scores_closed_form_and_infonce():
    z = torch.tensor([[1.0, 0.0, 0.0, 0.0, -1.0]])
    partner = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0]])
    assert shift_offsets((1, 2)) == [0, 1, -1, 2, -2]
    scores = shift_scores(z, partner, (1, 2))
    # s_k = mean_l z[l] partner[l - k]: partner rolled by k puts its 2 at index 1 + k (mod 5)
    expect = torch.tensor([[0.0, 0.0, 2 / 5, 0.0, -2 / 5]])
    torch.testing.assert_close(scores, expect)
    tau = 0.5
    logits = expect[0] / tau
    nce = shift_infonce(z, partner, (1, 2), tau)
    torch.testing.assert_close(nce, (torch.logsumexp(logits, 0) - logits[0])[None])
    with pytest.raises(ValueError, match="sync shifts"):
        shift_scores(z, partner, (5,))


def _impact_pair(length=40, frames=8, at=(10, 25)):
    """True video with motion at frames covering mel frames ``at``; audio with onsets there."""
    video0 = torch.zeros(1, frames, 1, 2, 2)
    audio0 = torch.zeros(1, 3, length)
    for l in at:
        t = math.ceil(l * frames / length)
        video0[0, t:] += 1.0  # a step change first visible at frame t
        audio0[0, :, l:] += 1.0  # an onset at mel frame l
    return video0, audio0


def test_sync_loss_prefers_aligned_predictions_and_its_gradient_moves_onsets_to_the_motion():
    video0, audio0 = _impact_pair()
    shifts = (3, 6)
    aligned, _ = sync_loss(video0, audio0, video0, audio0, shifts, 0.1)
    late, _ = sync_loss(video0, audio0, video0, audio0.roll(6, dims=-1), shifts, 0.1)
    assert float(aligned) < float(late)
    # Descending the term from a near-flat predicted audio puts its onsets where the video moves.
    pred = (0.01 * torch.randn(1, 3, 40, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    motion = standardize(to_audio_grid(motion_energy(video0), 40))
    before = shift_scores(standardize(onset_envelope(pred.detach())), motion, shifts)[0]
    opt = torch.optim.Adam([pred], lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        sync_loss(video0, audio0, video0, pred, shifts, 0.1)[0].sum().backward()
        opt.step()
    after = shift_scores(standardize(onset_envelope(pred.detach())), motion, shifts)[0]
    assert float(after[0]) > float(before[0]) + 0.3 and int(after.argmax()) == 0


def test_sync_loss_video_direction_and_no_gradient_into_the_ground_truth():
    video0, audio0 = _impact_pair()
    video0.requires_grad_(True)
    audio0.requires_grad_(True)
    pred_v = video0.detach().clone().requires_grad_(True)
    a_term, v_term = sync_loss(video0, audio0, pred_v, audio0.detach(), (3, 6), 0.1)
    (a_term + v_term).sum().backward()
    assert video0.grad is None and audio0.grad is None and pred_v.grad is not None
    _, v_late = sync_loss(video0.detach(), audio0.detach(), video0.detach().roll(2, dims=1), audio0.detach(),
                          (3, 6), 0.1)
    assert float(v_term.detach()) < float(v_late)


class Coupled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, 0.3, -0.4, 0.2]))

    def forward(self, video_n, audio_n, t_video, t_audio):
        a_mean = audio_n.mean(dim=(1, 2))[:, None, None, None, None]
        v_mean = video_n.mean(dim=(1, 2, 3, 4))[:, None, None]
        return self.w[0] * video_n + self.w[1] * a_mean, self.w[2] * audio_n + self.w[3] * v_mean


def test_training_loss_adds_the_weighted_sync_term():
    sched = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(3, 8, 2, 3, 3, generator=g), torch.randn(3, 5, 40, generator=g)
    model = Coupled()
    plain, plain_logs = training_loss(model, video, audio, None, sched, DiffusionLossConfig(),
                                      torch.Generator().manual_seed(1))
    cfg = DiffusionLossConfig(sync_weight=0.5, sync_shifts=(3, 6))
    loss, logs = training_loss(model, video, audio, None, sched, cfg, torch.Generator().manual_seed(1))
    assert {"sync", "sync_audio", "sync_video"} <= set(logs)
    torch.testing.assert_close(loss.detach(), plain.detach() + logs["sync"])
    assert float(logs["sync"]) > 0 and float(logs["loss_diffusion"]) == float(plain_logs["loss_diffusion"])
    # By hand: the x0 implied by the model's v output, weighted by the partner's signal fraction.
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (3,), generator=gen)
    nv, na = torch.randn(video.shape, generator=gen), torch.randn(audio.shape, generator=gen)
    ab = sched.alpha_bar_at(t.float())
    a, s = ab.sqrt(), (1 - ab).sqrt()
    vn = a[:, None, None, None, None] * video + s[:, None, None, None, None] * nv
    an = a[:, None, None] * audio + s[:, None, None] * na
    out_v, out_a = model(vn, an, t.float(), t.float())
    x0_v = a[:, None, None, None, None] * vn - s[:, None, None, None, None] * out_v
    x0_a = a[:, None, None] * an - s[:, None, None] * out_a
    s_a, s_v = sync_loss(video, audio, x0_v, x0_a, (3, 6), 0.1)
    torch.testing.assert_close(logs["sync"], 0.5 * (ab * s_a + ab * s_v).mean().float(), rtol=1e-5, atol=1e-7)
    loss.backward()
    assert model.w.grad is not None and bool(torch.isfinite(model.w.grad).all())


def test_sync_term_skips_a_modality_given_clean():
    sched = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(2)
    video, audio = torch.randn(4, 8, 2, 3, 3, generator=g), torch.randn(4, 5, 40, generator=g)
    cfg = DiffusionLossConfig(sync_weight=1.0, sync_shifts=(3,), clean_condition_prob=1.0)
    _, logs = training_loss(Coupled(), video, audio, None, sched, cfg, torch.Generator().manual_seed(3))
    # every row gives one modality clean: its own prediction is unscored, the other's weight is ab(0) ~ 1
    assert float(logs["sync"]) > 0 and math.isfinite(float(logs["sync"]))


def test_sync_config_errors_name_the_key():
    from cmmd.config import ConfigError, from_dict

    for bad, key in (({"sync_weight": -1.0}, "sync_weight"), ({"sync_temperature": 0.0}, "sync_temperature"),
                     ({"sync_shifts": [3, 3]}, "sync_shifts"), ({"sync_shifts": [0]}, "sync_shifts"),
                     ({"sync_shifts": []}, "sync_shifts")):
        with pytest.raises(ConfigError, match=key):
            from_dict(DiffusionLossConfig, bad)
