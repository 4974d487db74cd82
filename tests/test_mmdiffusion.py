"""Tests for the MM-Diffusion baseline: shapes, RS-MMA windows and shifts, init, gradients, sizes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cmmd.config import ConfigError
from cmmd.diffusion import DiffusionLossConfig, JointDenoiser, make_schedule, sample, training_loss
from cmmd.models import build_unet, count_parameters
from cmmd.models.mmdiffusion import MMDIFFUSION_PRESETS, MMDiffusionConfig, MMDiffusionUNet, build_mmdiffusion
from cmmd.models.rsmma import RSMMA, draw_shift, window_index

# Two levels, 8/16 channels: seconds for the whole file on 2 CPU cores.
SMALL = MMDiffusionConfig(
    base_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    video_attention_downsampling=(2,),
    rsmma_downsampling=(1, 2),
    rsmma_windows=(1, 4),
    num_heads=2,
    head_dim=8,
    norm_groups=4,
)


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised layers stop hiding what is behind them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _inputs(frames: int, samples: int, size: int = 16, batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    video = torch.randn(batch, frames, 3, size, size, generator=g)
    audio = torch.randn(batch, 1, samples, generator=g)
    t = torch.tensor([10.0, 700.0])[:batch]
    return video, audio, t


@pytest.mark.parametrize(
    ("frames", "samples", "size"),
    [(16, 16 * 1600, 16), (8, 8 * 1600, 16), (5, 5 * 1600, 16), (5, 5 * 1600 + 1, 16), (8, 12_345, 13)],
)
def test_output_shapes_equal_input_shapes(frames: int, samples: int, size: int) -> None:
    torch.manual_seed(0)
    model = _perturbed(MMDiffusionUNet(SMALL))
    video, audio, t = _inputs(frames, samples, size)
    out_v, out_a = model(video, audio, t)
    assert out_v.shape == video.shape and out_a.shape == audio.shape
    assert torch.isfinite(out_v).all() and torch.isfinite(out_a).all()


def test_tiny_preset_on_study_clips() -> None:
    """The tiny preset on its 1.8 s clips (18 frames, 28,800 samples) and on 16 / 5 frames."""
    torch.manual_seed(0)
    model = build_mmdiffusion("mmdiffusion-tiny")
    for frames, samples in ((18, 28_800), (16, 25_600), (5, 8_001)):
        video, audio, t = _inputs(frames, samples, size=32, batch=1)
        with torch.no_grad():
            out_v, out_a = model(video, audio, t)
        assert out_v.shape == video.shape and out_a.shape == audio.shape


def test_window_index_matches_the_paper_pattern() -> None:
    """F=8, w=4, s=2: frame i sees audio of frames (i+2..i+5) mod 8; segment i sees frames i+2..i+5."""
    per_frame = 3
    idx = window_index(frames=8, window=4, shift=2, audio_len=8 * per_frame, audio_extent=8.0 * per_frame)
    for i in range(8):
        frames_seen = [(i + 2 + r) % 8 for r in range(4)]
        expected_audio = [f * per_frame + j for f in frames_seen for j in range(per_frame)]
        assert idx.audio_keys[i].tolist() == expected_audio
        assert idx.video_keys[i].tolist() == frames_seen
        assert idx.audio_queries[i].tolist() == [i * per_frame + j for j in range(per_frame)]
    assert idx.audio_slots.tolist() == list(range(8 * per_frame))


def test_window_index_with_fractional_segments() -> None:
    """Uneven segments: every audio token is a query exactly once; keys are real tokens."""
    length, extent, frames = 29, 26.5, 8
    idx = window_index(frames, window=2, shift=5, audio_len=length, audio_extent=extent)
    assert torch.equal(idx.audio_queries.flatten()[idx.audio_slots], torch.arange(length))
    assert int(idx.audio_keys.max()) < math.ceil(extent)
    assert idx.audio_keys.shape == (frames, math.ceil(2 * extent / frames))
    # Token j belongs to frame floor(j F / e); the padded tail (j >= e) to the last frame.
    owner = torch.div(idx.audio_slots, idx.audio_queries.shape[1], rounding_mode="floor")
    expected = [min(frames - 1, math.floor(j * frames / extent)) for j in range(length)]
    assert owner.tolist() == expected


def test_window_index_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shift"):
        window_index(8, 4, 5, 24, 24.0)
    with pytest.raises(ValueError, match="window"):
        window_index(8, 9, 0, 24, 24.0)
    with pytest.raises(ValueError, match="audio token per frame"):
        window_index(8, 1, 0, 6, 6.0)


def _reference_rsmma(block: RSMMA, video: torch.Tensor, audio: torch.Tensor, frames: int, window: int, shift: int):
    """RS-MMA written as one masked attention per direction, straight from MMDIFFUSION.md."""
    bt, c, h, w = video.shape
    b, length = bt // frames, audio.shape[-1]
    per = length // frames
    heads = block.heads
    xv = block.video_norm(video.reshape(b, frames, c, h, w).transpose(1, 2)).transpose(1, 2)
    tokens_v = xv.permute(0, 1, 3, 4, 2).reshape(b, frames * h * w, c)
    q_v, k_v, v_v = block.video_qkv(tokens_v).chunk(3, dim=-1)
    q_a, k_a, v_a = block.audio_qkv(block.audio_norm(audio).transpose(1, 2)).chunk(3, dim=-1)
    frame_of_v = torch.arange(frames).repeat_interleave(h * w)
    frame_of_a = torch.arange(length) // per
    allowed = torch.zeros(frames, frames, dtype=torch.bool)  # [query frame, key frame]
    for i in range(frames):
        for r in range(window):
            allowed[i, (i + shift + r) % frames] = True
    mask_va = allowed[frame_of_v][:, frame_of_a]
    mask_av = allowed[frame_of_a][:, frame_of_v]

    def attend(q, k, v, mask):
        split = lambda x: x.reshape(b, x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return out.transpose(1, 2).reshape(b, -1, c)

    out_v = block.video_proj(attend(q_v, k_a, v_a, mask_va)).reshape(b, frames, h, w, c)
    out_a = block.audio_proj(attend(q_a, k_v, v_v, mask_av))
    return video + out_v.permute(0, 1, 4, 2, 3).reshape(bt, c, h, w), audio + out_a.transpose(1, 2)


@pytest.mark.parametrize(("window", "random_shift"), [(1, True), (4, True), (3, False), (None, False)])
def test_rsmma_equals_masked_reference(window: int | None, random_shift: bool) -> None:
    torch.manual_seed(0)
    frames, c, h, w, per = 8, 16, 3, 2, 5
    block = _perturbed(RSMMA(c, 8, window, random_shift, groups=4))
    video = torch.randn(2 * frames, c, h, w).contiguous(memory_format=torch.channels_last)
    audio = torch.randn(2, c, frames * per)
    out_v, out_a = block(video, audio, frames, float(frames * per), (h, w), torch.Generator().manual_seed(7))
    win = frames if window is None else window
    shift = draw_shift(frames, win, torch.Generator().manual_seed(7)) if random_shift else 0
    ref_v, ref_a = _reference_rsmma(block, video, audio, frames, win, shift)
    torch.testing.assert_close(out_v, ref_v, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_a, ref_a, atol=1e-5, rtol=1e-4)


def test_rsmma_is_identity_at_init() -> None:
    torch.manual_seed(0)
    block = RSMMA(16, 8, 4, True, groups=4)
    video, audio = torch.randn(16, 16, 4, 4), torch.randn(2, 16, 8 * 7)
    out_v, out_a = block(video, audio, 8, 56.0, (4, 4))
    assert torch.equal(out_v, video) and torch.equal(out_a, audio)


def test_draw_shift_is_uniform_over_the_valid_range() -> None:
    g = torch.Generator().manual_seed(0)
    draws = [draw_shift(16, 4, g) for _ in range(600)]
    assert set(draws) == set(range(13))
    assert draw_shift(8, 8, g) == 0


def test_shift_changes_between_passes_and_is_reproducible() -> None:
    """Shifts are drawn per forward pass, in eval mode too, from the global RNG or a generator."""
    torch.manual_seed(0)
    model = _perturbed(MMDiffusionUNet(SMALL)).eval()
    video, audio, t = _inputs(6, 6 * 400, size=8)
    with torch.no_grad():
        torch.manual_seed(123)
        first = model(video, audio, t)
        more = [model(video, audio, t) for _ in range(3)]
        torch.manual_seed(123)
        again = model(video, audio, t)
        seeded = [model(video, audio, t, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert any(not torch.equal(first[0], other[0]) for other in more)
    assert any(not torch.equal(first[1], other[1]) for other in more)
    assert torch.equal(seeded[0][0], seeded[1][0]) and torch.equal(seeded[0][1], seeded[1][1])


def test_without_random_shift_every_window_starts_at_its_own_frame() -> None:
    """rsmma_random_shift=False (the ablation): windowed blocks use s = 0, so passes no longer
    depend on the RNG, and in a 1-frame window a change to the last frame's audio reaches the
    last frame's video and no other."""
    torch.manual_seed(0)
    aligned = _perturbed(MMDiffusionUNet(dataclasses.replace(SMALL, rsmma_random_shift=False))).eval()
    windowed = [m for m in aligned.modules() if isinstance(m, RSMMA) and m.window is not None]
    assert windowed and not any(m.random_shift for m in windowed)
    video, audio, t = _inputs(6, 6 * 400, size=8)
    with torch.no_grad():
        torch.manual_seed(1)
        first = aligned(video, audio, t)
        torch.manual_seed(2)
        second = aligned(video, audio, t)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])

    block = RSMMA(8, 8, 1, False, 4)
    _perturbed(block)
    v, a = torch.randn(6, 8, 4, 4), torch.randn(1, 8, 60)
    a_late = a.clone()  # the last frame's 10 tokens, channels swapped within their GroupNorm pairs (same statistics)
    a_late[:, :, 50:] = a[:, [1, 0, 3, 2, 5, 4, 7, 6], 50:]
    out, out_late = block(v, a, 6, 60.0, (4, 4))[0], block(v, a_late, 6, 60.0, (4, 4))[0]
    assert torch.allclose(out[:5], out_late[:5], atol=1e-6) and (out[5] - out_late[5]).abs().max() > 1e-2


def test_outputs_are_zero_at_init_and_rsmma_blocks_are_identities() -> None:
    torch.manual_seed(0)
    model = MMDiffusionUNet(SMALL)
    video, audio, t = _inputs(6, 6 * 400, size=8)
    out_v, out_a = model(video, audio, t)
    assert torch.equal(out_v, torch.zeros_like(video)) and torch.equal(out_a, torch.zeros_like(audio))
    blocks = [m for m in model.modules() if isinstance(m, RSMMA)]
    assert len(blocks) == 2 + 1 + 4  # one per encoder level, the middle's, two per decoder level


def test_gradients_reach_all_parameters() -> None:
    torch.manual_seed(0)
    model = MMDiffusionUNet(SMALL)
    video, audio, t = _inputs(6, 6 * 400, size=8)
    out_v, out_a = model(video, audio, t)
    (out_v.square().mean() + out_a.square().mean() + out_v.sum() + out_a.sum()).backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter is not in the graph at init"

    model = _perturbed(model)
    model.zero_grad(set_to_none=True)
    out_v, out_a = model(video, audio, t)
    (out_v.square().mean() + out_a.square().mean()).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def test_trains_and_samples_through_the_diffusion_stage() -> None:
    """eps-prediction, linear schedule, T = 1000 (MMDIFFUSION.md) with the shared loss and sampler."""
    torch.manual_seed(0)
    model = MMDiffusionUNet(SMALL)
    schedule = make_schedule("linear")
    video, audio, _ = _inputs(4, 4 * 1600)
    loss, logs = training_loss(
        model, video, audio, None, schedule, DiffusionLossConfig(prediction="eps"), torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert torch.isfinite(loss) and set(logs) >= {"loss_video", "loss_audio"}
    denoiser = JointDenoiser(model.eval(), schedule, prediction="eps")
    v0, a0 = sample(denoiser, schedule, tuple(video.shape), tuple(audio.shape), method="dpmpp2m", steps=2,
                    generator=torch.Generator().manual_seed(0))
    assert v0.shape == video.shape and a0.shape == audio.shape and torch.isfinite(v0).all()


def test_preset_parameter_counts() -> None:
    """AIST++: 133.7 M in the paper; tiny and matched presets within 3% of the CMMD presets."""
    with torch.device("meta"):
        aist = count_parameters(build_mmdiffusion("mmdiffusion-aist"))
        small = count_parameters(build_mmdiffusion("mmdiffusion-matched-small"))
        cmmd_small = count_parameters(build_unet("small"))
    tiny = count_parameters(build_mmdiffusion("mmdiffusion-tiny"))
    cmmd_tiny = count_parameters(build_unet("tiny"))
    assert abs(aist / 133.7e6 - 1) < 0.01, aist
    assert 1.5e6 <= tiny <= 2.0e6 and abs(tiny / cmmd_tiny - 1) < 0.03, tiny
    assert abs(small / cmmd_small - 1) < 0.03, small


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown MM-Diffusion preset"):
        build_mmdiffusion("mmdiffusion-huge")
    with pytest.raises(ConfigError, match="base_channel"):
        build_mmdiffusion("mmdiffusion-tiny", base_channel=8)
    with pytest.raises(ConfigError, match="rsmma_downsampling"):
        MMDiffusionConfig(rsmma_downsampling=(3,), rsmma_windows=(1,))
    with pytest.raises(ConfigError, match="one window per"):
        MMDiffusionConfig(rsmma_windows=(1, 4))
    with pytest.raises(ValueError, match="audio channels"):
        MMDiffusionUNet(SMALL)(torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 2, 3200), torch.zeros(1))
    assert set(MMDIFFUSION_PRESETS) >= {"mmdiffusion-aist", "mmdiffusion-tiny", "mmdiffusion-matched-small"}
