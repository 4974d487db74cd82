"""Tests of the joint U-Net, easy fusion and presets (METHOD.md section 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cmmd.config import ConfigError, from_dict, to_dict
from cmmd.models import (
    PRESETS,
    EasyFusion,
    JointUNet,
    UNetConfig,
    build_model,
    build_unet,
    count_parameters,
    resample_time,
    time_resample_matrix,
)

# A model small enough that every test runs in well under a second on one core: two levels,
# attention and fusion at both, pixels in, no zero-init so every path is live at init.
TEST_CFG = UNetConfig(
    video_channels=3,
    base_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    fusion_levels=(0, 1),
    head_dim=16,
    norm_groups=4,
    zero_init_output=False,
    zero_init_residual=False,
)


def make_model(cfg: UNetConfig = TEST_CFG, seed: int = 0, **overrides: object) -> JointUNet:
    torch.manual_seed(seed)
    return JointUNet(dataclasses.replace(cfg, **overrides))


def make_inputs(
    batch: int, frames: int, length: int, size: tuple[int, int] = (8, 8), channels: int = 3, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, frames, channels, *size, generator=g)
    audio = torch.randn(batch, 80, length, generator=g)
    t = torch.rand(batch, generator=g) * 999
    return video, audio, t


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("frames", "length"), [(18, 112), (36, 225), (17, 106)])
def test_output_shapes_equal_input_shapes(batch: int, frames: int, length: int) -> None:
    model = make_model()
    video, audio, t = make_inputs(batch, frames, length)
    v_out, a_out = model(video, audio, t)
    assert v_out.shape == video.shape
    assert a_out.shape == audio.shape
    assert torch.isfinite(v_out).all() and torch.isfinite(a_out).all()


@pytest.mark.parametrize("size", [(30, 30), (13, 7), (1, 1)])
def test_odd_spatial_sizes_are_padded_and_cropped(size: tuple[int, int]) -> None:
    model = build_unet("tiny", zero_init_output=False)
    video, audio, t = make_inputs(1, 3, 19, size=size)
    v_out, a_out = model(video, audio, t)
    assert v_out.shape == video.shape and a_out.shape == audio.shape


@pytest.mark.parametrize(("frames", "length"), [(18, 112), (17, 106)])
def test_wider_audio_stream_keeps_shapes_coupling_and_gradients(frames: int, length: int) -> None:
    model = make_model(audio_width_mult=3)
    assert model.audio_in.out_channels == 3 * TEST_CFG.base_channels
    assert model.video_in.out_channels == TEST_CFG.base_channels
    video, audio, t = make_inputs(2, frames, length)
    v_out, a_out = model(video, audio, t)
    assert v_out.shape == video.shape and a_out.shape == audio.shape
    (v_out.square().mean() + a_out.square().mean()).backward()
    assert not [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert _outputs_after_changing(model, "audio") == (True, True)
    assert _outputs_after_changing(model, "video") == (True, True)
    narrow = make_model()
    assert count_parameters(model) > count_parameters(narrow)


def test_short_audio_and_single_frame() -> None:
    model = make_model(channel_mult=(1, 2, 2), attention_levels=(2,), attention_in_middle=False, fusion_levels=(0, 1, 2))
    video, audio, t = make_inputs(2, 1, 3)
    v_out, a_out = model(video, audio, t)
    assert v_out.shape == video.shape and a_out.shape == audio.shape


def _outputs_after_changing(model: JointUNet, which: str) -> tuple[bool, bool]:
    """Whether (video_out, audio_out) change when the ``which`` input is changed."""
    video, audio, t = make_inputs(2, 6, 38)
    with torch.no_grad():
        v0, a0 = model(video, audio, t)
        if which == "audio":
            v1, a1 = model(video, audio + torch.randn_like(audio), t)
        else:
            v1, a1 = model(video + torch.randn_like(video), audio, t)
    return not torch.equal(v0, v1), not torch.equal(a0, a1)


def test_without_fusion_streams_are_independent() -> None:
    model = make_model(fusion_levels=(), fusion_in_middle=False)
    assert _outputs_after_changing(model, "audio") == (False, True)
    assert _outputs_after_changing(model, "video") == (True, False)


@pytest.mark.parametrize(("levels", "middle"), [((0, 1), True), ((0,), False), ((), True)])
def test_fusion_couples_streams_both_ways(levels: tuple[int, ...], middle: bool) -> None:
    model = make_model(fusion_levels=levels, fusion_in_middle=middle)
    assert _outputs_after_changing(model, "audio") == (True, True)
    assert _outputs_after_changing(model, "video") == (True, True)


@pytest.mark.parametrize("zero_init", [False, True])
def test_gradient_reaches_every_parameter(zero_init: bool) -> None:
    model = make_model(zero_init_output=zero_init, zero_init_residual=zero_init)
    video, audio, t = make_inputs(2, 4, 25)
    v_out, a_out = model(video, audio, t)
    (v_out.square().mean() + a_out.square().mean() + v_out.mean() + a_out.mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    if not zero_init:
        dead = [name for name, p in model.named_parameters() if not p.grad.abs().sum() > 0]
        assert not dead


def test_same_seed_same_output() -> None:
    video, audio, t = make_inputs(2, 5, 31)
    outs = [make_model(seed=7)(video, audio, t) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    other = make_model(seed=8)(video, audio, t)
    assert not torch.equal(outs[0][0], other[0])


def test_eval_runs_at_twice_the_training_length() -> None:
    model = make_model(dropout=0.1).eval()
    video, audio, t = make_inputs(1, 36, 225)
    with torch.no_grad():
        v_out, a_out = model(video, audio, t)
        v_again, _ = model(video, audio, t)
    assert v_out.shape == video.shape and a_out.shape == audio.shape
    assert torch.equal(v_out, v_again)


def test_zero_initialised_outputs_start_at_zero_then_move() -> None:
    model = make_model(zero_init_output=True, zero_init_residual=True)
    video, audio, t = make_inputs(2, 4, 25)
    v_out, a_out = model(video, audio, t)
    assert torch.count_nonzero(v_out) == 0 and torch.count_nonzero(a_out) == 0
    (F.mse_loss(v_out, video) + F.mse_loss(a_out, audio)).backward()
    with torch.no_grad():  # one plain SGD step (torch.optim's first step imports dynamo: 1.5 s)
        for p in model.parameters():
            p -= 0.1 * p.grad
    v_out, a_out = model(video, audio, t)
    assert v_out.abs().mean() > 0 and a_out.abs().mean() > 0


def test_t_audio_may_differ_from_t_video() -> None:
    model = make_model()
    video, audio, t = make_inputs(2, 4, 25)
    with torch.no_grad():
        same = model(video, audio, t)
        explicit = model(video, audio, t, t)
        other = model(video, audio, t, t_audio=torch.tensor([0.0, 999.0]))
        fractional = model(video, audio, t + 0.5)
    assert torch.equal(same[0], explicit[0])
    assert not torch.equal(same[1], other[1]) and not torch.equal(same[0], other[0])
    assert not torch.equal(same[0], fractional[0])


def test_wrong_channel_counts_raise() -> None:
    model = make_model()
    video, audio, t = make_inputs(1, 2, 12, channels=4)
    with pytest.raises(ValueError, match="video channels"):
        model(video, audio, t)


README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(("name", "millions"), [("tiny", 1.58), ("small", 14.07), ("paper", 126.07),
                                                ("mmdiffusion-aist", 133.69), ("mmdiffusion-tiny", 1.61),
                                                ("mmdiffusion-matched-small", 14.47)])
def test_preset_parameter_counts_match_the_readme(name: str, millions: float) -> None:
    """Exact to the README's two decimals, and the README's preset table states that figure."""
    with torch.device("meta"):
        model = build_model(name)
    assert round(count_parameters(model) / 1e6, 2) == millions
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `") and f"`{name}`" in line]
    assert rows and f"{millions:.2f} M" in rows[0], f"README's preset table does not state {millions:.2f} M for {name}"


def test_presets_round_trip_through_config_dicts() -> None:
    for cfg in PRESETS.values():
        assert from_dict(UNetConfig, to_dict(cfg)) == cfg


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="head_dim"):
        UNetConfig(base_channels=32, channel_mult=(1, 3), attention_levels=(1,), fusion_levels=(0,), head_dim=64)
    with pytest.raises(ConfigError, match="fusion_levels"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(1,), fusion_levels=(2,))
    with pytest.raises(ConfigError, match="norm_groups"):
        UNetConfig(base_channels=24, norm_groups=32)
    with pytest.raises(ConfigError, match="unknown UNetConfig field 'width'"):
        build_unet("tiny", width=3)
    with pytest.raises(ConfigError, match="unknown model preset"):
        build_unet("huge")
    with pytest.raises(ConfigError, match="fusion_pool"):
        UNetConfig(fusion_pool="median")
    with pytest.raises(ConfigError, match="audio_width_mult"):
        UNetConfig(audio_width_mult=0)


@pytest.mark.parametrize(("src", "dst"), [(112, 18), (56, 18), (28, 18), (14, 18), (18, 112), (225, 36), (7, 3)])
def test_resample_matches_antialiased_linear_interpolation(src: int, dst: int) -> None:
    x = torch.randn(2, 5, src, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x[:, :, None], size=(1, dst), mode="bilinear", align_corners=False, antialias=True)[:, :, 0]
    torch.testing.assert_close(resample_time(x, dst, float(src), float(dst)), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("src", "dst"), [(112, 18), (18, 112), (225, 36), (36, 225), (106, 17)])
def test_resample_aligns_by_time(src: int, dst: int) -> None:
    """A signal linear in time (sample i of n at (i + 0.5) / n) stays linear in time.

    Tolerance 1e-3 of the duration (0.1 mel frame): the discretised triangle kernel is not exactly
    symmetric when shrinking; a half-frame misalignment would be 4e-3 (mel) or 3e-2 (video).
    """
    ramp = (torch.arange(src, dtype=torch.float64) + 0.5) / src
    out = resample_time(ramp[None], dst, float(src), float(dst))[0]
    expected = (torch.arange(dst, dtype=torch.float64) + 0.5) / dst
    margin = -(-dst // src) + 1  # away from the borders, where kernels are truncated or clamped
    interior = slice(margin, dst - margin)
    torch.testing.assert_close(out[interior], expected[interior], atol=1e-3, rtol=0)
    constant = resample_time(torch.ones(1, src), dst, float(src), float(dst))
    torch.testing.assert_close(constant, torch.ones(1, dst))


def test_resample_ignores_padding_beyond_the_extent() -> None:
    weights = time_resample_matrix(108, 17, 106.0, 17.0)
    assert torch.count_nonzero(weights[106:]) == 0
    torch.testing.assert_close(weights.sum(0), torch.ones(17))
    # A padded level with a half-real last frame (106 mel frames at level 2: extent 26.5 of 27).
    weights = time_resample_matrix(27, 17, 26.5, 17.0)
    assert torch.count_nonzero(weights[26]) > 0


def test_easy_fusion_is_identity_when_zero_initialised_and_aligns_padded_audio() -> None:
    fusion = EasyFusion(8, 6, zero_init=True)
    video = torch.randn(2 * 5, 8, 4, 4)
    audio = torch.randn(2, 6, 32)
    v_out, a_out = fusion(video, audio, 5, 30.0, (4, 4))
    assert torch.equal(v_out, video) and torch.equal(a_out, audio)

    torch.manual_seed(0)
    fusion = EasyFusion(8, 6, zero_init=False)
    garbage = audio.clone()
    garbage[..., 30:] = 1e3
    v_clean, _ = fusion(video, audio, 5, 30.0, (4, 4))
    v_garbage, _ = fusion(video, garbage, 5, 30.0, (4, 4))
    torch.testing.assert_close(v_clean, v_garbage)
    padded_video = video.clone()
    padded_video[:, :, 3:, :] = 1e3
    _, a_clean = fusion(video[:, :, :3], audio, 5, 30.0, (3, 4))
    _, a_padded = fusion(padded_video, audio, 5, 30.0, (3, 4))
    torch.testing.assert_close(a_clean, a_padded)


def test_meanmax_pooling_passes_a_small_object_at_full_strength() -> None:
    """One hot pixel in a 8x8 frame reaches the audio 64x weaker through the mean than the max."""
    video = torch.zeros(1 * 3, 4, 8, 8)
    hot = video.clone()
    hot[:, 0, 2, 5] = 1.0
    audio = torch.zeros(1, 2, 12)
    responses = {}
    for pool in ("mean", "meanmax"):
        fusion = EasyFusion(4, 2, zero_init=True, pool=pool)
        assert fusion.to_audio.in_channels == 2 + 4 * (2 if pool == "meanmax" else 1)
        with torch.no_grad():
            fusion.to_audio.weight.fill_(1.0)
        _, base = fusion(video, audio, 3, 12.0, (8, 8))
        _, moved = fusion(hot, audio, 3, 12.0, (8, 8))
        responses[pool] = (moved - base).abs().max().item()
    assert responses["mean"] == pytest.approx(1 / 64)
    assert responses["meanmax"] == pytest.approx(1 + 1 / 64)
    build_unet("tiny", fusion_pool="meanmax")(torch.randn(1, 4, 3, 16, 16), torch.randn(1, 80, 24), torch.rand(1))
