"""Tests for cmmd.data.negatives: the three augmentations and the per-step negative sampler."""

from __future__ import annotations

import pytest
import torch

from cmmd.config import from_dict
from cmmd.conventions import HOP, N_MELS, SAMPLE_RATE
from cmmd.data.negatives import (
    NegativeConfig,
    make_negatives,
    random_derangement,
    random_swap,
    segment_swap,
    shift_ms_to_frames,
    temporal_shift,
)
from cmmd.errors import CmmdError

MEL_RATE = SAMPLE_RATE / HOP  # 62.5 mel frames per second


def _batch(b: int, t: int = 17, length: int = 105, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, 4, 5, generator=g), torch.randn(b, N_MELS, length, generator=g)


def _recover_shift(own: torch.Tensor, neg: torch.Tensor, dim: int) -> list[int]:
    """All shifts s in (-n, n), s != 0, with roll(own, s) == neg along ``dim``."""
    n = own.shape[dim]
    return [s for s in range(-n + 1, n) if s != 0 and torch.equal(torch.roll(own, s, dims=dim), neg)]


def test_temporal_shift_rolls_each_sample_by_its_own_amount() -> None:
    video, audio = _batch(3)
    shifts = torch.tensor([2, -5, 16])
    out_v = temporal_shift(video, shifts, time_dim=1)
    out_a = temporal_shift(audio, shifts * 6, time_dim=-1)
    for b in range(3):
        assert torch.equal(out_v[b], torch.roll(video[b], int(shifts[b]), dims=0))
        assert torch.equal(out_a[b], torch.roll(audio[b], int(shifts[b]) * 6, dims=-1))
    assert out_v.shape == video.shape and out_v.dtype == video.dtype
    half = temporal_shift(audio.half(), shifts, time_dim=2)
    assert half.dtype == torch.float16
    with pytest.raises(CmmdError, match="0 < \\|shift\\|"):
        temporal_shift(video, torch.tensor([1, 0, 2]), time_dim=1)
    with pytest.raises(CmmdError, match="0 < \\|shift\\|"):
        temporal_shift(video, torch.tensor([1, 17, 2]), time_dim=1)
    with pytest.raises(CmmdError, match="batch dimension"):
        temporal_shift(video, shifts, time_dim=0)


def test_segment_swap_takes_each_side_from_the_right_clip() -> None:
    video, audio = _batch(2)
    other_v, other_a = _batch(2, seed=1)
    split = torch.tensor([1, 16])
    own_left = torch.tensor([True, False])
    out = segment_swap(video, other_v, split, own_left, time_dim=1)
    assert torch.equal(out[0, :1], video[0, :1]) and torch.equal(out[0, 1:], other_v[0, 1:])
    assert torch.equal(out[1, :16], other_v[1, :16]) and torch.equal(out[1, 16:], video[1, 16:])
    out_a = segment_swap(audio, other_a, torch.tensor([50, 52]), torch.tensor([False, True]), time_dim=-1)
    assert torch.equal(out_a[0, :, :50], other_a[0, :, :50]) and torch.equal(out_a[0, :, 50:], audio[0, :, 50:])
    assert torch.equal(out_a[1, :, :52], audio[1, :, :52]) and torch.equal(out_a[1, :, 52:], other_a[1, :, 52:])
    with pytest.raises(CmmdError, match="both parts are non-empty"):
        segment_swap(video, other_v, torch.tensor([0, 5]), own_left, time_dim=1)
    with pytest.raises(CmmdError, match="equal shape"):
        segment_swap(video, other_v[:, :5], split, own_left, time_dim=1)


def test_random_derangement_and_swap() -> None:
    g = torch.Generator().manual_seed(0)
    seen = set()
    for n in (2, 3, 5, 8):
        for _ in range(50):
            perm = random_derangement(n, g)
            assert sorted(perm.tolist()) == list(range(n))
            assert not bool((perm == torch.arange(n)).any())
            if n == 3:
                seen.add(tuple(perm.tolist()))
    assert seen == {(1, 2, 0), (2, 0, 1)}  # both derangements of 3 items occur
    a = random_derangement(6, torch.Generator().manual_seed(7))
    assert torch.equal(a, random_derangement(6, torch.Generator().manual_seed(7)))
    video, _ = _batch(3)
    assert torch.equal(random_swap(video, torch.tensor([2, 0, 1])), video[[2, 0, 1]])
    with pytest.raises(CmmdError, match="derangement"):
        random_swap(video, torch.tensor([0, 2, 1]))
    with pytest.raises(CmmdError, match="at least 2"):
        random_derangement(1, g)


def test_shift_ms_to_frames_rounds_half_up_and_is_never_zero() -> None:
    ms = torch.tensor([200.0, -200.0, 800.0, 1.0, -1.0, 250.0])
    assert shift_ms_to_frames(ms, 10.0).tolist() == [2, -2, 8, 1, -1, 3]
    assert shift_ms_to_frames(ms, MEL_RATE).tolist() == [13, -13, 50, 1, -1, 16]


def _check_negative(kind: str, own: torch.Tensor, neg: torch.Tensor, batch: torch.Tensor, dim: int,
                    shift_range: tuple[int, int]) -> None:
    """``neg`` must be an allowed negative of ``own`` (a row of ``batch``) of the given kind."""
    assert not torch.equal(neg, own)
    if kind == "shift":
        shifts = _recover_shift(own, neg, dim)
        assert any(shift_range[0] <= abs(s) <= shift_range[1] for s in shifts), shifts
    elif kind == "swap":
        assert any(torch.equal(neg, other) for other in batch if not torch.equal(other, own))
    else:
        n = own.shape[dim]
        same = torch.tensor([torch.equal(neg.select(dim, t), own.select(dim, t)) for t in range(n)])
        split = int(torch.nonzero(same[1:] != same[:-1]).squeeze()) + 1  # frames left of the cut
        assert round(0.2 * n) <= split <= round(0.8 * n)
        foreign = torch.nonzero(~same).squeeze(1)
        assert foreign.tolist() in (list(range(split)), list(range(split, n)))
        part = neg.index_select(dim, foreign)
        assert any(torch.equal(part, other.index_select(dim, foreign)) for other in batch
                   if not torch.equal(other, own))


@pytest.mark.parametrize("batch_size", [2, 5])
def test_make_negatives_content_shapes_and_ranges(batch_size: int) -> None:
    video, audio = _batch(batch_size)
    cfg = NegativeConfig()
    lo_v, hi_v = (int(shift_ms_to_frames(torch.tensor([ms]), 10.0)) for ms in cfg.shift_ms)
    lo_a, hi_a = (int(shift_ms_to_frames(torch.tensor([ms]), MEL_RATE)) for ms in cfg.shift_ms)
    kinds_seen: set[str] = set()
    for seed in range(12):
        neg = make_negatives(video, audio, cfg, torch.Generator().manual_seed(seed))
        assert neg.audio.shape == audio.shape and neg.video.shape == video.shape
        assert neg.audio.dtype == audio.dtype and neg.video.device == video.device
        assert torch.equal(neg.video_for_audio, video[neg.audio_index])
        assert torch.equal(neg.audio_for_video, audio[neg.video_index])
        for i, b in enumerate(neg.audio_index.tolist()):
            _check_negative(neg.audio_kinds[i], audio[b], neg.audio[i], audio, -1, (lo_a, hi_a))
        for i, b in enumerate(neg.video_index.tolist()):
            _check_negative(neg.video_kinds[i], video[b], neg.video[i], video, 0, (lo_v, hi_v))
        kinds_seen.update(neg.audio_kinds + neg.video_kinds)
    assert kinds_seen == {"shift", "segment", "swap"}


def test_shifts_are_consistent_in_time_across_modalities() -> None:
    video, audio = _batch(4, t=18, length=112)
    cfg = NegativeConfig(kinds=("shift",), shift_ms=(100.0, 800.0))
    for seed in range(5):
        neg = make_negatives(video, audio, cfg, torch.Generator().manual_seed(seed))
        for b in range(4):
            s_video = [s for s in _recover_shift(video[b], neg.video[b], 0) if abs(s) <= 8]
            s_audio = [s for s in _recover_shift(audio[b], neg.audio[b], -1) if abs(s) <= 50]
            assert len(s_video) == len(s_audio) == 1
            # the same signed shift in ms, each rounded to its own frame grid
            assert abs(s_video[0] / 10.0 - s_audio[0] / MEL_RATE) <= 0.5 / 10.0 + 0.5 / MEL_RATE


def test_make_negatives_is_deterministic_and_subsets() -> None:
    video, audio = _batch(6)
    cfg = NegativeConfig(num_per_step=2)
    a = make_negatives(video, audio, cfg, torch.Generator().manual_seed(3))
    b = make_negatives(video, audio, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.audio, b.audio) and torch.equal(a.video, b.video)
    assert a.audio_kinds == b.audio_kinds and torch.equal(a.video_index, b.video_index)
    assert a.audio.shape == (2, N_MELS, 105) and a.video.shape == (2, 17, 3, 4, 5)
    assert len(set(a.audio_index.tolist())) == 2 and len(a.video_kinds) == 2
    c = make_negatives(video, audio, cfg, torch.Generator().manual_seed(4))
    assert not (torch.equal(a.audio, c.audio) and torch.equal(a.video, c.video))
    big = make_negatives(video, audio, NegativeConfig(num_per_step=100), torch.Generator().manual_seed(0))
    assert big.audio_index.tolist() == list(range(6))


def test_batch_of_one_falls_back_to_shift() -> None:
    video, audio = _batch(1)
    neg = make_negatives(video, audio, NegativeConfig(), torch.Generator().manual_seed(0))
    assert neg.audio_kinds == ["shift"] and neg.video_kinds == ["shift"]
    assert _recover_shift(audio[0], neg.audio[0], -1) and _recover_shift(video[0], neg.video[0], 0)
    with pytest.raises(CmmdError, match="at least 2 or enable 'shift'"):
        make_negatives(video, audio, NegativeConfig(kinds=("swap", "segment")), torch.Generator())


def test_config_validation_and_yaml_types() -> None:
    cfg = from_dict(NegativeConfig, {"kinds": ["shift", "swap"], "shift_ms": [100, 300], "num_per_step": 4})
    assert cfg.kinds == ("shift", "swap") and cfg.shift_ms == (100.0, 300.0)
    with pytest.raises(CmmdError, match="shift_ms"):
        NegativeConfig(shift_ms=(0.0, 500.0))
    with pytest.raises(CmmdError, match="kinds"):
        NegativeConfig(kinds=("shift", "shift"))
    with pytest.raises(CmmdError, match="split"):
        NegativeConfig(split=(0.5, 1.0))
    with pytest.raises(CmmdError, match="num_per_step"):
        NegativeConfig(num_per_step=0)
    video, audio = _batch(2, t=5)
    with pytest.raises(CmmdError, match="lower negatives.shift_ms"):
        make_negatives(video, audio, NegativeConfig(), torch.Generator())
    with pytest.raises(CmmdError, match=r"\(B, T, C, H, W\)"):
        make_negatives(video[0], audio, NegativeConfig(), torch.Generator())


def test_modalities_choose_which_negatives_a_step_draws() -> None:
    video, audio = _batch(4)
    both = make_negatives(video, audio, NegativeConfig(num_per_step=3), torch.Generator().manual_seed(5))
    for step in range(4):
        cfg = NegativeConfig(num_per_step=3, modalities="alternate")
        neg = make_negatives(video, audio, cfg, torch.Generator().manual_seed(5), step=step)
        audio_step = step % 2 == 0
        assert (neg.audio.shape[0], neg.video.shape[0]) == ((3, 0) if audio_step else (0, 3))
        assert neg.video_for_audio.shape[0] == len(neg.audio_index) == len(neg.audio_kinds)
        assert neg.audio_for_video.shape[0] == len(neg.video_index) == len(neg.video_kinds)
        kept = ("audio", both.audio, neg.audio) if audio_step else ("video", both.video, neg.video)
        assert torch.equal(kept[1], kept[2])  # the same draws as "both", the other modality left out
        again = make_negatives(video, audio, NegativeConfig(num_per_step=3), torch.Generator().manual_seed(5),
                               step=step)
        assert torch.equal(again.audio, both.audio) and torch.equal(again.video, both.video)
    for only in ("audio", "video"):
        neg = make_negatives(video, audio, NegativeConfig(modalities=only), torch.Generator().manual_seed(5), step=1)
        assert (neg.audio.shape[0], neg.video.shape[0]) == ((4, 0) if only == "audio" else (0, 4))
    assert from_dict(NegativeConfig, {"modalities": "alternate"}).modalities_at(3) == ("video",)
    with pytest.raises(CmmdError, match="negatives.modalities must be one of"):
        NegativeConfig(modalities="audio+video")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_same_negatives_as_cpu() -> None:
    video, audio = _batch(4)
    cfg = NegativeConfig(num_per_step=3)
    ref = make_negatives(video, audio, cfg, torch.Generator().manual_seed(0))
    out = make_negatives(video.cuda(), audio.cuda(), cfg, torch.Generator().manual_seed(0))
    assert out.audio.device.type == "cuda" and out.video_for_audio.device.type == "cuda"
    assert torch.equal(out.audio.cpu(), ref.audio) and torch.equal(out.video.cpu(), ref.video)
    assert out.audio_kinds == ref.audio_kinds
