"""Objectives beyond the paper: InfoNCE over K negatives and Diffusion-DPO (cmmd.diffusion.losses)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cmmd.config import ConfigError, from_dict
from cmmd.data.negatives import NegativeConfig, make_negatives
from cmmd.diffusion.losses import (
    DiffusionLossConfig,
    concat_negatives,
    contrastive_bound,
    contrastive_loss,
    dpo_loss,
    joint_diffusion_loss,
    training_loss,
)
from cmmd.diffusion.schedules import make_schedule
from cmmd.train.config import TrainConfig

B, T, C, H, W = 3, 4, 2, 3, 3
M, L = 5, 6
SCHED = make_schedule("cosine", 1000)


class Coupled(torch.nn.Module):
    """Each output mixes its own input with the other modality's mean (as in test_losses)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, 0.3, -0.4, 0.2], dtype=torch.float64))

    def forward(self, video_n, audio_n, t_video, t_audio):
        a_mean = audio_n.mean(dim=(1, 2))[:, None, None, None, None]
        v_mean = video_n.mean(dim=(1, 2, 3, 4))[:, None, None]
        return self.w[0] * video_n + self.w[1] * a_mean, self.w[2] * audio_n + self.w[3] * v_mean


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, T, C, H, W, generator=g, dtype=torch.float64)
    audio = torch.randn(B, M, L, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 400, 900])
    nv = torch.randn(video.shape, generator=g, dtype=torch.float64)
    na = torch.randn(audio.shape, generator=g, dtype=torch.float64)
    return video, audio, t, nv, na


def _two_negatives_each(video, audio):
    """Two audio negatives and two video negatives per positive (K = 2), interleaved owners."""
    owners = torch.tensor([0, 1, 2, 0, 1, 2])
    neg_audio = torch.stack([audio[b].roll(1 + (j // B), dims=-1) for j, b in enumerate(owners.tolist())])
    neg_video = torch.stack([video[b].roll(1 + (j // B), dims=0) for j, b in enumerate(owners.tolist())])
    return neg_audio, video[owners], neg_video, audio[owners], owners


def _row_loss(model, video, audio, t, nv, na, rows):
    """Per-row joint loss of (video, audio) pairs noised with the positives' draws of ``rows``."""
    return joint_diffusion_loss(model, video, audio, t[rows], nv[rows], na[rows], SCHED, DiffusionLossConfig())[0]


def test_infonce_over_k_negatives_matches_the_hand_computed_softmax():
    video, audio, t, nv, na = _data()
    model = Coupled()
    neg_audio, vfa, neg_video, afv, owners = _two_negatives_each(video, audio)
    tau, eta = 0.05, 0.3
    cfg = DiffusionLossConfig(contrastive="infonce", num_negatives=2, eta=eta, temperature=tau)
    loss, logs = contrastive_loss(model, video, audio, neg_audio, vfa, neg_video, afv, t, nv, na, SCHED, cfg,
                                  owners, owners)
    pos = _row_loss(model, video, audio, t, nv, na, torch.arange(B))
    la = _row_loss(model, vfa, neg_audio, t, nv, na, owners)
    lv = _row_loss(model, neg_video, afv, t, nv, na, owners)
    expect = pos.mean()
    for neg in (la, lv):
        nce = []
        for b in range(B):
            logits = torch.stack([-pos[b], *(-neg[owners == b])]) / tau
            nce.append(-torch.log_softmax(logits, 0)[0])
        expect = expect + eta * torch.stack(nce).mean()
    torch.testing.assert_close(loss, expect, rtol=1e-10, atol=1e-12)
    assert float(logs["neg_audio_gap"]) == pytest.approx(float((la - pos[owners]).detach().mean()))


def test_infonce_with_one_negative_is_the_bounded_form():
    video, audio, t, nv, na = _data(1)
    model = Coupled()
    neg_audio, vfa, neg_video, afv, owners = _two_negatives_each(video, audio)
    one = slice(0, B)  # the first negative of each positive only
    args = (neg_audio[one], vfa[one], neg_video[one], afv[one], t, nv, na, SCHED)
    infonce, _ = contrastive_loss(model, video, audio, *args,
                                  DiffusionLossConfig(contrastive="infonce", num_negatives=2, eta=0.5))
    bounded, _ = contrastive_loss(model, video, audio, *args, DiffusionLossConfig(contrastive="bounded", eta=0.5))
    assert torch.equal(infonce, bounded)


def test_infonce_gradient_lowers_the_positive_and_raises_every_negative_loss():
    owners = torch.tensor([0, 1, 2, 0, 1, 2])  # K = 2 negatives per positive
    pos = torch.rand(B, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    neg = torch.rand(2 * B, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    contrastive_bound(pos, neg, owners, 0.1).sum().backward()
    assert bool((pos.grad > 0).all()) and bool((neg.grad < 0).all())
    # Each positive's gradient is minus the sum of its negatives' (softmax weights sum to one).
    torch.testing.assert_close(pos.grad, -torch.zeros(B, dtype=torch.float64).index_add(0, owners, neg.grad))


def test_dpo_loss_closed_form_and_gradient_signs():
    win, lose = torch.tensor([0.2, 0.5], dtype=torch.float64), torch.tensor([0.3, 0.1], dtype=torch.float64)
    win_ref, lose_ref = torch.tensor([0.25, 0.4], dtype=torch.float64), torch.tensor([0.2, 0.3], dtype=torch.float64)
    beta_n = 7.0
    margin = (win - win_ref) - (lose - lose_ref)
    expect = torch.log1p(torch.exp(beta_n * margin))  # -log sigmoid(-x) = log(1 + e^x)
    torch.testing.assert_close(dpo_loss(win, win_ref, lose, lose_ref, beta_n), expect)
    # At init (model == reference) it is log 2, and descending it lowers L_w and raises L_l.
    w = win.clone().requires_grad_(True)
    l_ = lose.clone().requires_grad_(True)
    at_init = dpo_loss(w, win.clone(), l_, lose.clone(), beta_n)
    torch.testing.assert_close(at_init, torch.full((2,), math.log(2), dtype=torch.float64))
    at_init.sum().backward()
    torch.testing.assert_close(w.grad, torch.full((2,), beta_n / 2, dtype=torch.float64))
    torch.testing.assert_close(l_.grad, torch.full((2,), -beta_n / 2, dtype=torch.float64))


def test_dpo_form_is_log_two_at_init_and_pushes_negatives_away():
    video, audio, t, nv, na = _data(3)
    model = Coupled()
    reference = copy.deepcopy(model).requires_grad_(False)
    neg_audio, vfa, neg_video, afv, owners = _two_negatives_each(video, audio)
    eta = 0.7
    cfg = DiffusionLossConfig(contrastive="dpo", eta=eta, dpo_beta=0.01)
    args = (neg_audio, vfa, neg_video, afv, t, nv, na, SCHED, cfg, owners, owners)
    loss, logs = contrastive_loss(model, video, audio, *args, reference=reference)
    torch.testing.assert_close(logs["contrast"], torch.tensor(2 * eta * math.log(2), dtype=torch.float64))
    assert float(logs["dpo_audio_margin"]) == 0.0 and float(logs["dpo_video_margin"]) == 0.0
    # The DPO term's gradient is beta N eta / 2 * grad(mean L_w - mean L_l) per kind at init.
    contrast = loss - _row_loss(model, video, audio, t, nv, na, torch.arange(B)).mean()
    (grad,) = torch.autograd.grad(contrast, model.w)
    pos = _row_loss(model, video[owners], audio[owners], t, nv, na, owners)
    la = _row_loss(model, vfa, neg_audio, t, nv, na, owners)
    lv = _row_loss(model, neg_video, afv, t, nv, na, owners)
    target = 0.01 * 1000 * eta / 2 * ((pos - la).mean() + (pos - lv).mean())
    (expect,) = torch.autograd.grad(target, model.w)
    torch.testing.assert_close(grad, expect)
    with pytest.raises(ValueError, match="reference"):
        contrastive_loss(model, video, audio, *args)


def test_k_draws_of_negatives_reach_the_network_as_b_times_1_plus_2k_rows():
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(4, 6, 3, 4, 4, generator=g), torch.randn(4, 80, 20, generator=g)
    neg_cfg = NegativeConfig(kinds=("shift",), shift_ms=(100.0, 200.0))
    draws = [make_negatives(video, audio, neg_cfg, g) for _ in range(3)]
    negatives = concat_negatives(draws)
    assert negatives.audio.shape[0] == 12 and negatives.audio_index.tolist() == [0, 1, 2, 3] * 3
    seen = []

    def model(video_n, audio_n, tv, ta):
        seen.append(video_n.shape[0])
        return torch.zeros_like(video_n), torch.zeros_like(audio_n)

    cfg = DiffusionLossConfig(contrastive="infonce", num_negatives=3, eta=0.1)
    loss, _ = training_loss(model, video, audio, negatives, SCHED, cfg, torch.Generator().manual_seed(1))
    assert seen == [4 * (1 + 2 * 3)] and math.isfinite(float(loss))
    with pytest.raises(ValueError, match="at least one"):
        concat_negatives([])


def test_config_errors_name_the_key():
    assert DiffusionLossConfig(contrastive="infonce").num_negatives == 4
    assert DiffusionLossConfig(contrastive="bounded").num_negatives == 1
    cases = [({"contrastive": "infonce", "num_negatives": 1}, "num_negatives"),
             ({"contrastive": "bounded", "num_negatives": 3}, "num_negatives"),
             ({"num_negatives": 0}, "num_negatives"),
             ({"contrastive": "dpo", "dpo_beta": 0.0}, "dpo_beta")]
    for fields, key in cases:
        with pytest.raises(ConfigError, match=key):
            from_dict(DiffusionLossConfig, fields)
    with pytest.raises(ConfigError, match=r"diffusion\.loss.*num_negatives"):
        from_dict(TrainConfig, {"diffusion": {"loss": {"contrastive": "infonce", "num_negatives": 1}}})
