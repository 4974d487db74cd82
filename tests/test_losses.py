"""Joint diffusion loss (paper Eq. 2) and joint contrastive loss (Eq. 6, bounded variant)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cmmd.config import ConfigError, from_dict
from cmmd.diffusion.losses import (
    DiffusionLossConfig,
    contrastive_bound,
    contrastive_loss,
    joint_diffusion_loss,
    match_negatives,
    training_loss,
)
from cmmd.diffusion.parameterization import q_sample, velocity_target
from cmmd.diffusion.schedules import append_dims, make_schedule

B, T, C, H, W = 3, 4, 2, 3, 3
M, L = 5, 6


def _batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, T, C, H, W, generator=g, dtype=dtype)
    audio = torch.randn(B, M, L, generator=g, dtype=dtype)
    return video, audio


class Oracle:
    """Knows the clean batch; returns the exact v (or eps) target for any noisy input of it."""

    def __init__(self, video0, audio0, schedule, prediction="v"):
        self.x0 = (video0, audio0)
        self.schedule, self.prediction = schedule, prediction

    def __call__(self, video_n, audio_n, t_video, t_audio):
        outs = []
        for x0, x_n, t in zip(self.x0, (video_n, audio_n), (t_video, t_audio)):
            ab = append_dims(self.schedule.alpha_bar_at(t), x_n.ndim)
            eps = (x_n - ab.sqrt() * x0) / (1 - ab).sqrt()
            outs.append(ab.sqrt() * eps - (1 - ab).sqrt() * x0 if self.prediction == "v" else eps)
        return tuple(outs)


class Coupled(torch.nn.Module):
    """A tiny joint 'network': each output mixes its own input with the other modality's mean."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, 0.3, -0.4, 0.2], dtype=torch.float64))

    def forward(self, video_n, audio_n, t_video, t_audio):
        a_mean = audio_n.mean(dim=(1, 2))[:, None, None, None, None]
        v_mean = video_n.mean(dim=(1, 2, 3, 4))[:, None, None]
        return self.w[0] * video_n + self.w[1] * a_mean, self.w[2] * audio_n + self.w[3] * v_mean


class Recorder(torch.nn.Module):
    """Wraps a model, keeping its inputs and (gradient-retaining) outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, video_n, audio_n, t_video, t_audio):
        self.inputs = (video_n, audio_n, t_video, t_audio)
        out = self.model(video_n, audio_n, t_video, t_audio)
        for o in out:
            o.retain_grad()
        self.outputs = out
        return out


def _negatives(video, audio):
    """Audio negatives: a shift of item 0 and item 2's audio under item 1's video; one video negative."""
    neg_audio = torch.stack([audio[0].roll(2, dims=-1), audio[2]])
    video_for_audio = torch.stack([video[0], video[1]])
    neg_video = video[0].roll(1, dims=0)[None]
    audio_for_video = audio[2][None]
    return neg_audio, video_for_audio, neg_video, audio_for_video  # owners: audio [0, 1], video [2]


@pytest.mark.parametrize("kind,prediction", [("cosine", "v"), ("linear", "v"), ("linear", "eps")])
def test_oracle_loss_is_zero(kind, prediction):
    sched = make_schedule(kind, 1000)
    video, audio = _batch()
    oracle = Oracle(video, audio, sched, prediction)
    cfg = DiffusionLossConfig(prediction=prediction)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 500, 998])
    nv, na = torch.randn(video.shape, generator=g, dtype=video.dtype), torch.randn(audio.shape, generator=g, dtype=audio.dtype)
    loss, parts = joint_diffusion_loss(oracle, video, audio, t, nv, na, sched, cfg)
    assert loss.shape == (B,) and parts["video"].shape == (B,)
    assert float(loss.max()) < 1e-20
    total, logs = training_loss(oracle, video, audio, None, sched, cfg, torch.Generator().manual_seed(2))
    assert total.ndim == 0 and float(total) < 1e-20
    assert set(logs) == {"loss", "loss_diffusion", "loss_video", "loss_audio"}


def test_modalities_are_averaged_per_element_then_weighted():
    sched = make_schedule("cosine", 100)
    video, audio = _batch()
    zero = lambda v, a, tv, ta: (torch.zeros_like(v), torch.zeros_like(a))  # noqa: E731
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (B,), generator=g)
    nv, na = torch.randn(video.shape, generator=g, dtype=video.dtype), torch.randn(audio.shape, generator=g, dtype=audio.dtype)
    cfg = DiffusionLossConfig(video_weight=2.0, audio_weight=0.5)
    loss, parts = joint_diffusion_loss(zero, video, audio, t, nv, na, sched, cfg)
    ab = sched.alpha_bar_at(t)
    expect_v = velocity_target(video, nv, ab).pow(2).flatten(1).mean(1)
    expect_a = velocity_target(audio, na, ab).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(parts["video"], expect_v)
    torch.testing.assert_close(parts["audio"], expect_a)
    torch.testing.assert_close(loss, 2.0 * expect_v + 0.5 * expect_a)


def test_training_loss_draws_steps_and_is_deterministic():
    sched = make_schedule("cosine", 1000)
    video, audio = _batch(torch.float32)
    rec = Recorder(Coupled().float())
    cfg = DiffusionLossConfig()
    l1, _ = training_loss(rec, video, audio, None, sched, cfg, torch.Generator().manual_seed(7))
    t_video, t_audio = rec.inputs[2], rec.inputs[3]
    assert torch.equal(t_video, t_audio) and t_video.dtype == torch.float32
    assert bool(((t_video >= 0) & (t_video < 1000) & (t_video == t_video.round())).all())
    l2, _ = training_loss(rec, video, audio, None, sched, cfg, torch.Generator().manual_seed(7))
    l3, _ = training_loss(rec, video, audio, None, sched, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(l1, l2) and not torch.equal(l1, l3)
    with pytest.raises(ValueError, match="needs negatives"):
        training_loss(rec, video, audio, None, sched, DiffusionLossConfig(contrastive="paper"),
                      torch.Generator().manual_seed(7))


def _fixed_draws(video, audio, seed=4):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([10, 400, 900])
    return t, torch.randn(video.shape, generator=g, dtype=video.dtype), torch.randn(audio.shape, generator=g, dtype=audio.dtype)


@pytest.mark.parametrize("form", ["paper", "bounded"])
@pytest.mark.parametrize("terms", ["joint", "own", "cross"])
def test_contrastive_with_eta_zero_is_the_positive_loss(form, terms):
    sched = make_schedule("cosine", 1000)
    video, audio = _batch()
    model = Coupled()
    t, nv, na = _fixed_draws(video, audio)
    cfg = DiffusionLossConfig(contrastive=form, eta=0.0, negative_terms=terms)
    loss, logs = contrastive_loss(model, video, audio, *_negatives(video, audio), t, nv, na, sched, cfg)
    positive, _ = joint_diffusion_loss(model, video, audio, t, nv, na, sched, cfg)
    torch.testing.assert_close(loss, positive.mean(), rtol=1e-12, atol=0)
    assert {"neg_audio_loss", "neg_video_loss", "neg_audio_gap", "neg_video_gap", "contrast"} <= set(logs)


def test_negatives_share_their_positives_step_and_noise():
    sched = make_schedule("cosine", 1000)
    video, audio = _batch()
    rec = Recorder(Coupled())
    t, nv, na = _fixed_draws(video, audio)
    neg_audio, vfa, neg_video, afv = _negatives(video, audio)
    contrastive_loss(rec, video, audio, neg_audio, vfa, neg_video, afv, t, nv, na, sched,
                     DiffusionLossConfig(contrastive="paper"))
    video_in, audio_in, t_in, _ = rec.inputs
    assert video_in.shape[0] == B + 3
    ab = sched.alpha_bar_at(t)
    # Audio negatives (owners 0, 1): same noisy video as their positive, same audio noise.
    assert torch.equal(video_in[B:B + 2], video_in[[0, 1]])
    torch.testing.assert_close(audio_in[B:B + 2], q_sample(neg_audio, na[[0, 1]], ab[[0, 1]]))
    # Video negative (owner 2): same noisy audio as its positive, same video noise.
    assert torch.equal(audio_in[B + 2:], audio_in[[2]])
    torch.testing.assert_close(video_in[B + 2:], q_sample(neg_video, nv[[2]], ab[[2]]))
    assert torch.equal(t_in, t[[0, 1, 2, 0, 1, 2]].float())


@pytest.mark.parametrize("terms", ["joint", "own", "cross"])
def test_negative_gradient_opposes_positive_gradient(terms):
    """d loss / d output pushes positive outputs toward their targets and negative ones away."""
    sched = make_schedule("linear", 1000)
    video, audio = _batch()
    rec = Recorder(Coupled())
    t, nv, na = _fixed_draws(video, audio)
    neg = _negatives(video, audio)
    cfg = DiffusionLossConfig(prediction="eps", contrastive="paper", eta=0.5, negative_terms=terms)
    loss, _ = contrastive_loss(rec, video, audio, *neg, t, nv, na, sched, cfg)
    loss.backward()
    rows = torch.tensor([0, 1, 2, 0, 1, 2])  # positives, audio negatives (owners 0, 1), video negative (2)
    # Alignment of each row's output gradient with its residual (output - eps target): its sign
    # is the sign of that row's term in the loss.
    align = []
    for out, noise in zip(rec.outputs, (nv, na)):
        align.append(((out - noise[rows]) * out.grad).flatten(1).sum(1))
    align_v, align_a = align
    assert bool((align_v[:B] > 0).all()) and bool((align_a[:B] > 0).all())
    own = torch.cat([align_a[B:B + 2], align_v[B + 2:]])    # negative modality's own output
    cross = torch.cat([align_v[B:B + 2], align_a[B + 2:]])  # partner modality's output
    if terms in ("joint", "own"):
        assert bool((own < 0).all())
    else:
        assert bool((own == 0).all())
    if terms in ("joint", "cross"):
        assert bool((cross < 0).all())
    else:
        assert bool((cross == 0).all())


def test_contrastive_bound_closed_form_and_limits():
    pos = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    neg = torch.tensor([1.5, 0.5, 3.0], dtype=torch.float64)
    owner = torch.tensor([0, 0, 1])
    tau = 0.5
    out = contrastive_bound(pos, neg, owner, tau)
    expect = torch.tensor([
        math.log(1 + math.exp((1.0 - 1.5) / tau) + math.exp((1.0 - 0.5) / tau)),
        -math.log(1 / (1 + math.exp(-(3.0 - 2.0) / tau))),  # one negative: -log sigmoid
        0.0,  # no negatives
    ], dtype=torch.float64)
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-15)
    # Stable for large logits, bounded below by 0, saturating as negatives get worse.
    far = contrastive_bound(pos, neg + 1e4, owner, 1e-3)
    assert bool(torch.isfinite(far).all()) and bool((far >= 0).all()) and float(far.max()) < 1e-300
    huge_pos = contrastive_bound(pos + 1e4, neg, owner, 1e-3)
    assert bool(torch.isfinite(huge_pos).all())


def test_contrastive_bound_decreases_as_negative_losses_grow():
    g = torch.Generator().manual_seed(5)
    pos = torch.rand(4, generator=g, dtype=torch.float64)
    owner = torch.tensor([0, 0, 1, 2, 3, 3])
    neg = torch.rand(6, generator=g, dtype=torch.float64).requires_grad_(True)
    values = [contrastive_bound(pos, neg.detach() + shift, owner, 0.1).sum().item() for shift in (0.0, 0.1, 0.5, 2.0)]
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] >= 0
    contrastive_bound(pos, neg, owner, 0.1).sum().backward()
    assert bool((neg.grad < 0).all())


def test_bounded_loss_is_bounded_below_by_the_positive_loss():
    sched = make_schedule("cosine", 1000)
    video, audio = _batch()
    model = Coupled()
    t, nv, na = _fixed_draws(video, audio)
    positive, _ = joint_diffusion_loss(model, video, audio, t, nv, na, sched, DiffusionLossConfig())
    neg_audio, vfa, neg_video, afv = _negatives(video, audio)
    for scale in (1.0, 10.0, 1e3):  # ever worse negatives: the bounded loss stays >= the positive
        cfg = DiffusionLossConfig(contrastive="bounded", eta=1.0, temperature=0.1)
        loss, logs = contrastive_loss(model, video, audio, neg_audio * scale, vfa, neg_video * scale, afv,
                                      t, nv, na, sched, cfg)
        assert float(loss.detach()) >= float(positive.detach().mean()) and float(logs["contrast"]) >= 0
        paper, _ = contrastive_loss(model, video, audio, neg_audio * scale, vfa, neg_video * scale, afv,
                                    t, nv, na, sched, DiffusionLossConfig(contrastive="paper", eta=1.0))
    assert float(paper.detach()) < -1e3  # while Eq. 6 as written runs away


def test_match_negatives_any_layout_and_errors():
    video, _ = _batch()
    partners = video[[2, 0, 2, 1]]
    assert match_negatives(partners, video).tolist() == [2, 0, 2, 1]
    assert match_negatives(video[:0], video).shape == (0,)
    with pytest.raises(ValueError, match="not an exact copy"):
        match_negatives(video[[0]] + 1e-3, video)
    with pytest.raises(ValueError, match="shape"):
        match_negatives(video[:, :2], video)


def test_training_loss_with_negatives_object():
    sched = make_schedule("cosine", 1000)
    video, audio = _batch(torch.float32)
    neg_audio, vfa, neg_video, afv = _negatives(video, audio)
    negatives = SimpleNamespace(audio=neg_audio, video_for_audio=vfa, audio_index=torch.tensor([0, 1]),
                                video=neg_video, audio_for_video=afv, video_index=torch.tensor([2]))
    model = Coupled().float()
    cfg = DiffusionLossConfig(contrastive="bounded", eta=0.1)
    loss, logs = training_loss(model, video, audio, negatives, sched, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert model.w.grad is not None and bool(torch.isfinite(model.w.grad).all())
    assert float(logs["loss"]) == float(loss.detach())
    unindexed = contrastive_loss(model, video, audio, neg_audio, vfa, neg_video, afv,
                                 *_fixed_draws(video, audio), sched, cfg)[0]
    indexed = contrastive_loss(model, video, audio, neg_audio, vfa, neg_video, afv,
                               *_fixed_draws(video, audio), sched, cfg, negatives.audio_index, negatives.video_index)[0]
    assert torch.equal(unindexed, indexed)
    empty = SimpleNamespace(audio=neg_audio[:0], video_for_audio=vfa[:0], audio_index=torch.zeros(0, dtype=torch.long),
                            video=neg_video, audio_for_video=afv, video_index=torch.tensor([2]))
    _, logs = training_loss(model, video, audio, empty, sched, cfg, torch.Generator().manual_seed(0))
    assert "neg_audio_loss" not in logs and "neg_video_loss" in logs
    wrong = SimpleNamespace(**{**vars(negatives), "video_index": torch.tensor([1])})
    with pytest.raises(ValueError, match="index names"):
        training_loss(model, video, audio, wrong, sched, cfg, torch.Generator().manual_seed(0))


def test_config_is_strict():
    cfg = from_dict(DiffusionLossConfig, {"prediction": "eps", "contrastive": "bounded", "eta": 0.05,
                                          "negative_terms": "cross"})
    assert cfg.prediction == "eps" and cfg.eta == 0.05
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(DiffusionLossConfig, {"lambda": 1.0})
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(DiffusionLossConfig, {"contrastive": "simclr"})
    with pytest.raises(ConfigError, match="temperature"):
        from_dict(DiffusionLossConfig, {"temperature": 0.0})


def test_clean_condition_rows_get_level_zero_clean_input_and_no_loss_on_that_modality() -> None:
    """clean_condition_prob (our extension): a conditioned modality enters clean at step 0, unscored."""
    from cmmd.diffusion.losses import DiffusionLossConfig, joint_diffusion_loss
    from cmmd.diffusion.schedules import make_schedule

    seen = {}

    def model(video_n, audio_n, n_video, n_audio):
        seen.update(video_n=video_n, audio_n=audio_n, n_video=n_video, n_audio=n_audio)
        return torch.ones_like(video_n), torch.ones_like(audio_n)

    schedule = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(3, 2, 3, 4, 4, generator=g), torch.randn(3, 5, 8, generator=g)
    t = torch.tensor([500, 600, 700])
    clean_video = torch.tensor([True, False, False])
    clean_audio = torch.tensor([False, True, False])
    loss, parts = joint_diffusion_loss(model, video, audio, t, torch.randn_like(video), torch.randn_like(audio),
                                       schedule, DiffusionLossConfig(), clean_video, clean_audio)
    assert torch.equal(seen["video_n"][0], video[0]) and torch.equal(seen["audio_n"][1], audio[1])
    assert not torch.equal(seen["video_n"][1], video[1])
    assert seen["n_video"].tolist() == [0.0, 600.0, 700.0] and seen["n_audio"].tolist() == [500.0, 0.0, 700.0]
    assert parts["video"][0] == 0 and parts["audio"][1] == 0
    assert parts["video"][1] > 0 and parts["audio"][0] > 0 and parts["video"][2] > 0 and parts["audio"][2] > 0
