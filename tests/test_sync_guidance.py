"""Sampling-time sync guidance: negative-condition guidance against a time-shifted condition."""

from __future__ import annotations

import pytest
import torch

from cmmd.diffusion.guidance import Condition, guided_denoiser
from cmmd.diffusion.samplers import sample
from cmmd.diffusion.schedules import make_schedule

SCHED = make_schedule("cosine", 1000)
VIDEO, AUDIO = (2, 6, 1, 2, 2), (2, 3, 12)


def timing_denoiser(video_n, audio_n, n_video, n_audio):
    """Audio x0 follows the video's per-frame mean in time (each frame spans 2 mel frames), plus
    a part that ignores timing; video x0 likewise follows the audio."""
    frame_mean = video_n.mean(dim=(2, 3, 4))  # (B, T)
    audio0 = 0.5 * audio_n + frame_mean.repeat_interleave(2, dim=1)[:, None, :] + 0.1
    audio_mean = audio_n.mean(dim=1)[:, ::2]  # (B, T)
    video0 = 0.5 * video_n + audio_mean[:, :, None, None, None]
    return video0, audio0


def _condition(**fields):
    g = torch.Generator().manual_seed(0)
    video0 = torch.randn(VIDEO, generator=g)
    return Condition("v2a", video0=video0, noise=torch.randn(VIDEO, generator=g), **fields)


def test_guided_output_is_out_c_plus_w_times_out_c_minus_out_shifted():
    w = 1.5
    shifts = torch.tensor([2, -1])
    guided = guided_denoiser(timing_denoiser, _condition(sync_guidance=w, shifts=shifts), SCHED)
    audio_n = torch.randn(AUDIO, generator=torch.Generator().manual_seed(1))
    n = torch.tensor([300.0, 300.0])
    video_state = guided.replace_known(torch.zeros(VIDEO), audio_n, n)[0]
    _, plain = timing_denoiser(video_state, audio_n, n, n)
    shifted_state = torch.stack([video_state[0].roll(2, dims=0), video_state[1].roll(-1, dims=0)])
    _, shifted = timing_denoiser(shifted_state, audio_n, n, n)
    video0, audio0 = guided(torch.zeros(VIDEO), audio_n, n, n)
    torch.testing.assert_close(audio0, plain + w * (plain - shifted))
    assert torch.equal(video0, guided.condition.video0)  # the known modality is returned as given


def test_zero_weight_and_an_unchanged_shifted_condition_give_plain_sampling():
    g = torch.Generator().manual_seed(2)
    steady = torch.randn(2, 1, 1, 2, 2, generator=g).expand(VIDEO).contiguous()  # no timing: rolls are no-ops
    plain = Condition("v2a", video0=steady, known_level="clean")
    off = Condition("v2a", video0=steady, known_level="clean", sync_guidance=0.0, sync_shift=(1, 3))
    on = Condition("v2a", video0=steady, known_level="clean", sync_guidance=3.0, sync_shift=(1, 3))
    runs = [sample(timing_denoiser, SCHED, VIDEO, AUDIO, steps=8, condition=c, generator=torch.Generator().manual_seed(5))
            for c in (plain, off, on)]
    assert torch.equal(runs[0][1], runs[1][1])  # w = 0 is plain, bit for bit
    torch.testing.assert_close(runs[2][1], runs[0][1])  # c_shifted == c: the guidance term vanishes
    moving = Condition("v2a", video0=torch.randn(VIDEO, generator=g), sync_guidance=3.0, sync_shift=(1, 3))
    base = Condition("v2a", video0=moving.video0)
    a = sample(timing_denoiser, SCHED, VIDEO, AUDIO, steps=8, condition=moving, generator=torch.Generator().manual_seed(5))
    b = sample(timing_denoiser, SCHED, VIDEO, AUDIO, steps=8, condition=base, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(a[1], b[1])  # with timing in the condition it does act


def test_shifts_are_drawn_once_in_range_after_the_noise():
    cond = _condition(sync_guidance=1.0, sync_shift=(2, 4))
    cond.shifts = None
    cond.noise = None
    guided = guided_denoiser(timing_denoiser, cond, SCHED, torch.Generator().manual_seed(3))
    shifts = guided.condition.shifts
    assert shifts is not None and shifts.shape == (2,)
    assert bool(((shifts.abs() >= 2) & (shifts.abs() <= 4)).all())
    again = guided_denoiser(timing_denoiser, cond, SCHED, torch.Generator().manual_seed(3))
    assert torch.equal(again.condition.shifts, shifts) and torch.equal(again.condition.noise, guided.condition.noise)
    plain = guided_denoiser(timing_denoiser, _condition(), SCHED, torch.Generator().manual_seed(3))
    assert plain.condition.shifts is None


def test_sync_guidance_with_reconstruction_guidance_adds_both_corrections():
    cond = _condition(guidance_scale=0.5, sync_guidance=1.0, shifts=torch.tensor([1, 1]))
    guided = guided_denoiser(timing_denoiser, cond, SCHED)
    only_recon = guided_denoiser(timing_denoiser, _condition(guidance_scale=0.5), SCHED)
    only_sync = guided_denoiser(timing_denoiser, _condition(sync_guidance=1.0, shifts=torch.tensor([1, 1])), SCHED)
    plain = guided_denoiser(timing_denoiser, _condition(), SCHED)
    audio_n = torch.randn(AUDIO, generator=torch.Generator().manual_seed(4))
    n = torch.tensor([500.0, 500.0])
    outs = [d(torch.zeros(VIDEO), audio_n, n, n)[1] for d in (guided, only_recon, only_sync, plain)]
    torch.testing.assert_close(outs[0] - outs[3], (outs[1] - outs[3]) + (outs[2] - outs[3]))


def test_sync_guidance_argument_errors():
    with pytest.raises(ValueError, match="sync_guidance needs a known modality"):
        Condition("joint", sync_guidance=1.0)
    with pytest.raises(ValueError, match="sync_guidance must be >= 0"):
        _condition(sync_guidance=-1.0)
    with pytest.raises(ValueError, match="sync_shift must satisfy"):
        _condition(sync_guidance=1.0, sync_shift=(2, 6))  # the video has 6 frames
    with pytest.raises(ValueError, match="shifts must be"):
        _condition(sync_guidance=1.0, shifts=torch.tensor([0, 1]))


def test_pipeline_and_cli_sync_guidance(micro_run, tmp_path, capsys) -> None:
    import numpy as np

    from cmmd.cli import main
    from cmmd.data.synth import render_clip
    from cmmd.errors import CmmdError
    from cmmd.pipeline import Pipeline, SamplingSettings

    pipe = Pipeline.from_checkpoint(micro_run)
    frames = render_clip("impacts", seed=7, duration=1.2, size=16).frames[None]  # 12 frames at 10 fps
    assert pipe.shift_frames("v2a", 200.0, 800.0) == (2, 8) and pipe.shift_frames("a2v", 16.0, 40.0) == (1, 3)
    plain = pipe.generate("v2a", SamplingSettings(steps=3), frames=frames)
    off = pipe.generate("v2a", SamplingSettings(steps=3, sync_guidance=0.0), frames=frames)
    on = pipe.generate("v2a", SamplingSettings(steps=3, sync_guidance=1.0), frames=frames)
    np.testing.assert_array_equal(off.mel, plain.mel)
    assert np.isfinite(on.mel).all() and not np.array_equal(on.mel, plain.mel)
    assert on.settings["sync_guidance"] == 1.0
    with pytest.raises(CmmdError, match="sync_shift_max_ms=1500"):
        pipe.generate("v2a", SamplingSettings(steps=3, sync_guidance=1.0, sync_shift_max_ms=1500.0), frames=frames)
    for flags, message in ((["--mode", "v2a", "--sync-guidance", "-1"], "--sync-guidance must be >= 0"),
                           (["--mode", "joint", "--joint-order", "together", "--sync-guidance", "1"],
                            "--joint-order together has none")):
        inputs = [] if "joint" in flags else [str(micro_run)]
        assert main(["generate", str(micro_run), *inputs, *flags, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
