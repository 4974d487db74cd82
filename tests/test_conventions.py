"""cmmd.conventions: length conversions between video frames, samples and mel frames."""

from __future__ import annotations

import math

import pytest

from cmmd.conventions import (
    FPS,
    HOP,
    SAMPLE_RATE,
    frames_to_mel_frames,
    frames_to_samples,
    mel_frames_per_video_frame,
    mel_frames_to_samples,
    mel_rate,
    samples_per_frame,
    samples_to_frames,
    samples_to_mel_frames,
    seconds_to_frames,
    seconds_to_samples,
)


def test_defaults_are_the_documented_rates() -> None:
    assert (FPS, SAMPLE_RATE, HOP) == (10, 16000, 256)
    assert samples_per_frame() == 1600.0
    assert mel_rate() == 62.5
    assert mel_frames_per_video_frame() == 6.25


@pytest.mark.parametrize("num_frames", [0, 1, 7, 18, 19, 301])
def test_frames_to_samples_and_mel_frames_at_defaults(num_frames: int) -> None:
    assert frames_to_samples(num_frames) == 1600 * num_frames
    assert frames_to_mel_frames(num_frames) == 1600 * num_frames // 256
    assert samples_to_frames(frames_to_samples(num_frames)) == num_frames


def test_a_clip_of_18_frames_is_112_mel_frames() -> None:
    assert frames_to_samples(18) == 28800 and frames_to_mel_frames(18) == 112
    assert mel_frames_to_samples(112) == 28672


@pytest.mark.parametrize("num_samples", [0, 1, 255, 256, 257, 511, 28800 + 37, 57601])
def test_mel_frames_floor_odd_lengths(num_samples: int) -> None:
    assert samples_to_mel_frames(num_samples) == num_samples // 256
    assert samples_to_mel_frames(num_samples, hop=100) == num_samples // 100
    assert mel_frames_to_samples(samples_to_mel_frames(num_samples)) <= num_samples


@pytest.mark.parametrize("num_samples", [0, 1599, 1600, 1601, 3199, 28837])
def test_samples_to_frames_counts_whole_frames(num_samples: int) -> None:
    assert samples_to_frames(num_samples) == num_samples // 1600


@pytest.mark.parametrize("fps", [30.0, 29.97, 12.5, 24.0, 7.0])
@pytest.mark.parametrize("sample_rate", [16000, 22050, 44100])
def test_samples_to_frames_inverts_the_rounding_at_odd_rates(fps: float, sample_rate: int) -> None:
    for num_frames in (1, 2, 3, 17, 18, 99):
        num_samples = frames_to_samples(num_frames, fps, sample_rate)
        assert num_samples == round(num_frames * sample_rate / fps)
        assert samples_to_frames(num_samples, fps, sample_rate) == num_frames
        assert samples_to_frames(num_samples - 1, fps, sample_rate) == num_frames - 1
        # The largest T whose audio fits: one more frame would need more samples than there are.
        assert frames_to_samples(num_frames + 1, fps, sample_rate) > num_samples


def test_frames_to_mel_frames_at_odd_rates() -> None:
    # 30 fps at 22.05 kHz: 7 frames are round(5145.0) = 5145 samples -> 5145 // 256 = 20 mel frames.
    assert frames_to_samples(7, 30.0, 22050) == 5145
    assert frames_to_mel_frames(7, 30.0, 22050) == 20
    # 29.97 fps at 16 kHz: 1 frame is round(533.867) = 534 samples -> 2 mel frames.
    assert frames_to_samples(1, 29.97, 16000) == 534 and frames_to_mel_frames(1, 29.97, 16000) == 2
    assert mel_rate(22050, 256) == pytest.approx(86.1328125)


@pytest.mark.parametrize("seconds", [0.0, 0.05, 1.8, 2.0, 3.33, 10.0])
def test_seconds_round_to_the_nearest_frame_and_sample(seconds: float) -> None:
    assert seconds_to_frames(seconds) == round(seconds * 10)
    assert seconds_to_frames(seconds, 30.0) == round(seconds * 30.0)
    assert seconds_to_samples(seconds) == round(seconds * 16000)
    assert seconds_to_samples(seconds, 22050) == round(seconds * 22050)
    assert abs(seconds_to_samples(seconds) - seconds * 16000) <= 0.5
    assert math.isclose(samples_per_frame(30.0, 22050), 735.0)
