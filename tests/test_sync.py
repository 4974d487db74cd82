"""Tests for cmmd.eval.sync: event detectors (audio, video), matching and metrics, AV offset."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cmmd.data.synth import SynthClip, _background, render_clip
from cmmd.errors import CmmdError
from cmmd.eval.sync.audio import AudioEvent, detect_audio_events, detect_audio_events_mel, wave_log_mel
from cmmd.eval.sync.heldout import score_heldout
from cmmd.eval.sync.offset import av_offset
from cmmd.eval.sync.score import clip_sync_scores, derangement, event_sync_metrics, match_events, shuffled_baseline
from cmmd.eval.sync.video import detect_video_events

SR = 16_000
FPS = 10
ONE_FRAME = 1.0 / FPS


@lru_cache(maxsize=None)
def clip(seed: int, size: int = 64, n_objects: int = 1) -> SynthClip:
    return render_clip("impacts", seed, size=size, n_objects=n_objects)


def delayed(wave: np.ndarray, seconds: float) -> np.ndarray:
    """``wave`` delayed by ``seconds`` (silence in front), same length."""
    n = round(seconds * SR)
    return np.concatenate([np.zeros(n, dtype=wave.dtype), wave[:-n]])


# ----------------------------------------------------------------------------- matching, metrics


def test_match_events_is_optimal_not_greedy() -> None:
    # Greedy by distance pairs pred 0.55 with gt 0.5 and leaves gt 0.62 unmatched;
    # the optimal one-to-one matching keeps both.
    matches, offsets = match_events([0.41, 0.55], [0.5, 0.62], tolerance=0.1)
    assert matches == [(0, 0), (1, 1)]
    np.testing.assert_allclose(offsets, [-0.09, -0.07])


def test_match_events_tolerance_and_classes() -> None:
    assert match_events([1.0], [1.2], 0.1) == ([], pytest.approx(np.zeros(0)))
    matches, _ = match_events([1.0], [1.1], 0.1)
    assert matches == [(0, 0)]
    # Two objects hit 20 ms apart: classes decide the pairing.
    matches, _ = match_events([1.00, 1.02], [1.00, 1.02], 0.1, pred_classes=[1, 0], gt_classes=[0, 1])
    assert matches == [(1, 0), (0, 1)]
    with pytest.raises(CmmdError):
        match_events([1.0], [1.0], 0.0)
    with pytest.raises(CmmdError):
        match_events([float("nan")], [1.0], 0.1)


def test_event_sync_metrics_gt_against_itself() -> None:
    events = clip(3, n_objects=2).meta["events"]
    scores = event_sync_metrics(events, events)
    assert scores["f1"] == 1.0 and scores["class_accuracy"] == 1.0
    assert scores["median_offset_ms"] == 0.0 and scores["n_gt"] == len(events)


def test_event_sync_metrics_empty_sets_are_defined() -> None:
    both = event_sync_metrics([], [])
    assert both["precision"] == both["recall"] == both["f1"] == 1.0
    assert math.isnan(both["class_accuracy"]) and math.isnan(both["median_offset_ms"])
    no_pred = event_sync_metrics([], [{"time": 1.0, "class_index": 0}])
    assert no_pred["f1"] == no_pred["recall"] == no_pred["precision"] == 0.0
    no_gt = event_sync_metrics([AudioEvent(1.0, 0, 3.0)], [])
    assert no_gt["f1"] == 0.0 and no_gt["n_pred"] == 1
    bare = event_sync_metrics([1.0, 2.0], [1.05, 3.0])
    assert bare["f1"] == 0.5 and math.isnan(bare["class_accuracy"])
    with pytest.raises(CmmdError, match="time"):
        event_sync_metrics([{"class_index": 0}], [])


# ----------------------------------------------------------------------------- audio events


@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_audio_events_on_synth_clips(n_objects: int) -> None:
    for seed in range(4):
        c = clip(seed, n_objects=n_objects)
        events = detect_audio_events(c.audio, SR)
        scores = event_sync_metrics(events, c.meta["events"], tolerance=ONE_FRAME)
        assert scores["f1"] == 1.0, (seed, c.meta["events"], events)
        assert scores["class_accuracy"] == 1.0
        offsets = match_events([e.time for e in events], [e["time"] for e in c.meta["events"]], ONE_FRAME)[1]
        assert np.abs(offsets).max() <= 0.0085  # half a hop


def test_simultaneous_impacts_give_two_classes() -> None:
    # Seed 4 with 2 objects has a yellow and a blue impact in the same frame (t = 2.8 s).
    c = clip(4, n_objects=2)
    times = [e["time"] for e in c.meta["events"]]
    assert len(times) != len(set(times))
    scores = event_sync_metrics(detect_audio_events(c.audio), c.meta["events"])
    assert scores["f1"] == 1.0 and scores["class_accuracy"] == 1.0


def test_mel_detector_matches_wave_detector() -> None:
    c = clip(5, n_objects=2)
    from_wave = detect_audio_events(c.audio)
    from_mel = detect_audio_events_mel(wave_log_mel(c.audio), SR, 256)
    assert from_wave == from_mel


def test_audio_detector_survives_smeared_noisy_mels() -> None:
    """Mels blurred in time and frequency, with log-domain noise and a raised noise floor,
    standing in for a small diffusion model's output."""
    rng = np.random.default_rng(0)
    f1, accuracy = [], []
    for seed in range(6):
        c = clip(seed, n_objects=2)
        mel = gaussian_filter(wave_log_mel(c.audio), (0.5, 0.7))
        mel = np.logaddexp(mel, -8.0 + 0.5 * rng.standard_normal(mel.shape)) + 0.2 * rng.standard_normal(mel.shape)
        scores = event_sync_metrics(detect_audio_events_mel(mel), c.meta["events"])
        f1.append(scores["f1"])
        accuracy.append(scores["class_accuracy"])
    assert np.mean(f1) >= 0.95 and np.mean(accuracy) >= 0.95


def test_detector_agrees_with_model_mel_front_end() -> None:
    """Generated log-mels come from cmmd.audio.mel; the detector must read them as its own."""
    torch = pytest.importorskip("torch")
    from cmmd.audio.mel import log_mel as model_log_mel

    for seed in range(4):
        c = clip(seed, n_objects=1 + seed % 2)
        mel = model_log_mel(torch.from_numpy(c.audio)).numpy()
        ours = [(e.time, e.class_index) for e in detect_audio_events(c.audio)]
        assert [(e.time, e.class_index) for e in detect_audio_events_mel(mel)] == ours


def test_audio_detector_through_griffin_lim() -> None:
    """Smeared, noisy mels vocoded by the project's Griffin-Lim: events, classes and the AV
    offset survive the vocoder's phase artefacts."""
    torch = pytest.importorskip("torch")
    from cmmd.audio.griffinlim import griffin_lim

    rng = np.random.default_rng(1)
    clips = [clip(20 + i, n_objects=1 + i % 2) for i in range(4)]
    mels = []
    for c in clips:
        mel = gaussian_filter(wave_log_mel(c.audio), (0.7, 1.0))
        mels.append(np.logaddexp(mel, -6.0 + 0.5 * rng.standard_normal(mel.shape)) + 0.4 * rng.standard_normal(mel.shape))
    waves = griffin_lim(torch.tensor(np.stack(mels), dtype=torch.float32)).numpy()
    for wave, c in zip(waves, clips):
        scores = event_sync_metrics(detect_audio_events(wave), c.meta["events"])
        assert scores["f1"] >= 0.9 and scores["class_accuracy"] == 1.0
        assert abs(av_offset(wave, SR, c.frames, FPS)) <= 30.0


def test_delayed_audio_loses_sync() -> None:
    for seed in range(3):
        c = clip(seed)
        late = detect_audio_events(delayed(c.audio, 0.3))
        # Impacts of one object are >= 0.4 s apart, so a 0.3 s shift can land within 0.1 s
        # of the next impact only at the very edge of the tolerance.
        assert event_sync_metrics(late, c.meta["events"])["f1"] <= 0.3
        shifted = [{**e, "time": e["time"] + 0.3} for e in c.meta["events"] if e["time"] + 0.3 < 3.55]
        assert event_sync_metrics(late, shifted)["f1"] == 1.0


def test_noise_and_silence_give_no_audio_events() -> None:
    rng = np.random.default_rng(0)
    assert detect_audio_events(np.zeros(SR * 2, np.float32)) == []
    for amplitude in (1e-4, 0.05, 0.5):
        assert detect_audio_events((amplitude * rng.standard_normal(SR * 3)).astype(np.float32)) == []
    noisy_silence = np.log(1e-5) + 0.4 * rng.standard_normal((80, 200))
    assert detect_audio_events_mel(noisy_silence) == []
    assert detect_audio_events(np.zeros(300, np.float32)) == []  # one frame


def test_audio_input_errors() -> None:
    with pytest.raises(CmmdError, match="empty"):
        detect_audio_events(np.zeros(0, np.float32))
    with pytest.raises(CmmdError, match="shorter than one hop"):
        detect_audio_events(np.zeros(100, np.float32))
    with pytest.raises(CmmdError, match="mono"):
        detect_audio_events(np.zeros((2, SR), np.float32))
    with pytest.raises(CmmdError, match="NaN"):
        detect_audio_events(np.full(SR, np.nan, np.float32))
    with pytest.raises(CmmdError, match="log-mel"):
        detect_audio_events_mel(np.zeros((64, 10)))
    with pytest.raises(CmmdError, match="no frames"):
        detect_audio_events_mel(np.zeros((80, 0)))


# ----------------------------------------------------------------------------- video events


@pytest.mark.parametrize("size", [64, 32, 16])
@pytest.mark.parametrize("n_objects", [1, 2])
def test_video_events_on_synth_clips(size: int, n_objects: int) -> None:
    for seed in range(3):
        c = clip(seed, size=size, n_objects=n_objects)
        events = detect_video_events(c.frames, FPS)
        scores = event_sync_metrics(events, c.meta["events"], tolerance=ONE_FRAME)
        assert scores["f1"] == 1.0, (size, seed, c.meta["events"], events)
        assert scores["class_accuracy"] == 1.0 and scores["median_offset_ms"] == 0.0
        for e in events:
            gt_object = next(g["object"] for g in c.meta["events"] if g["class_index"] == e.class_index)
            assert e.object == gt_object


def test_video_detector_survives_blur_noise_and_missing_frames() -> None:
    rng = np.random.default_rng(0)
    for size in (64, 16):
        for seed in range(3):
            c = clip(seed, size=size, n_objects=2)
            frames = gaussian_filter(c.frames.astype(np.float32), (0, size / 64, size / 64, 0))
            frames = frames + 16.0 * rng.standard_normal(frames.shape)
            # The disc vanishes on every other impact frame of object 0: the bounce is
            # recovered from the arcs on both sides (which needs a few frames of each arc).
            hidden = [e["frame"] for e in c.meta["events"] if e["object"] == 0 and e["frame"] >= 4][::2]
            frames[hidden] = _background(size)
            frames = np.clip(frames, 0, 255).astype(np.uint8)
            scores = event_sync_metrics(detect_video_events(frames, FPS), c.meta["events"], ONE_FRAME)
            assert scores["f1"] == 1.0, (size, seed)


def test_video_float_frames_and_blank_video() -> None:
    c = clip(1, size=32)
    as_float = detect_video_events(c.frames.astype(np.float32) / 255.0, FPS)
    assert as_float == detect_video_events(c.frames, FPS)
    blank = np.broadcast_to(_background(32).astype(np.uint8), (36, 32, 32, 3))
    assert detect_video_events(blank, FPS) == []
    assert detect_video_events(np.zeros((36, 16, 16, 3), np.uint8), FPS) == []
    frozen = np.broadcast_to(c.frames[5], c.frames.shape)
    assert detect_video_events(frozen, FPS) == []


def test_video_input_errors() -> None:
    frames = clip(0, size=16).frames
    with pytest.raises(CmmdError, match="at least 3 frames"):
        detect_video_events(frames[:1], FPS)
    with pytest.raises(CmmdError, match=r"\(x \+ 1\) / 2"):
        detect_video_events(frames.astype(np.float32) / 127.5 - 1.0, FPS)
    with pytest.raises(CmmdError, match="T, H, W, 3"):
        detect_video_events(frames[..., 0], FPS)
    with pytest.raises(CmmdError, match="fps"):
        detect_video_events(frames, 0)
    with pytest.raises(CmmdError, match="dtype"):
        detect_video_events(frames.astype(np.int32), FPS)


# ----------------------------------------------------------------------------- AV offset


def test_av_offset_of_synced_and_delayed_audio() -> None:
    for seed, n_objects, size in [(0, 1, 64), (1, 2, 32), (2, 3, 16)]:
        c = clip(seed, size=size, n_objects=n_objects)
        base = av_offset(c.audio, SR, c.frames, FPS)
        assert abs(base) <= 30.0
        assert av_offset(delayed(c.audio, 0.3), SR, c.frames, FPS) - base == pytest.approx(300.0, abs=30.0)
        early = np.concatenate([c.audio[round(0.3 * SR):], np.zeros(round(0.3 * SR), np.float32)])
        assert av_offset(early, SR, c.frames, FPS) - base == pytest.approx(-300.0, abs=30.0)


def test_av_offset_undefined_cases() -> None:
    c = clip(0, size=16)
    blank = np.zeros_like(c.frames)
    assert math.isnan(av_offset(c.audio, SR, blank, FPS))
    assert math.isnan(av_offset(np.zeros_like(c.audio), SR, c.frames, FPS))
    with pytest.raises(CmmdError, match="at least 2 frames"):
        av_offset(c.audio, SR, c.frames[:1], FPS)
    with pytest.raises(CmmdError, match="max_offset"):
        av_offset(c.audio, SR, c.frames, FPS, max_offset=0.0)


# ----------------------------------------------------------------------------- clip scores, baseline


def test_clip_sync_scores_both_modes() -> None:
    c = clip(2, size=32, n_objects=2)
    v2a = clip_sync_scores(c.audio, c.frames, c.meta, mode="v2a")
    a2v = clip_sync_scores(c.audio, c.frames, c.meta, mode="a2v")
    assert v2a["f1"] == a2v["f1"] == 1.0
    assert abs(v2a["av_offset_ms"]) <= 30.0
    from_mel = clip_sync_scores(wave_log_mel(c.audio), None, c.meta, mode="v2a")
    assert from_mel["f1"] == 1.0 and math.isnan(from_mel["av_offset_ms"])
    late = clip_sync_scores(delayed(c.audio, 0.3), c.frames, c.meta, mode="v2a")
    assert late["f1"] < 0.5 and late["av_offset_ms"] == pytest.approx(300.0, abs=30.0)


def test_clip_sync_scores_errors() -> None:
    c = clip(0, size=16)
    with pytest.raises(CmmdError, match="mode"):
        clip_sync_scores(c.audio, c.frames, c.meta, mode="both")  # type: ignore[arg-type]
    with pytest.raises(CmmdError, match="audio is None"):
        clip_sync_scores(None, c.frames, c.meta, mode="v2a")
    with pytest.raises(CmmdError, match="frames is None"):
        clip_sync_scores(c.audio, None, c.meta, mode="a2v")
    dance = render_clip("dance", 0, size=16)
    with pytest.raises(CmmdError, match="beats"):
        clip_sync_scores(dance.audio, dance.frames, dance.meta)


def test_shuffled_baseline_is_well_below_matched_scores() -> None:
    clips = [clip(10 + i, size=32, n_objects=1 + i % 2) for i in range(8)]
    audios = [c.audio for c in clips]
    frames = [c.frames for c in clips]
    metas = [c.meta for c in clips]
    for mode in ("v2a", "a2v"):
        matched = np.mean([clip_sync_scores(a, f, m, mode)["f1"] for a, f, m in zip(audios, frames, metas)])
        shuffled = shuffled_baseline(audios, frames, metas, mode, seed=0)
        assert all(s["gt_index"] != i for i, s in enumerate(shuffled))
        chance = np.mean([s["f1"] for s in shuffled])
        assert matched == 1.0 and chance < 0.5, (mode, chance)
    with pytest.raises(CmmdError, match="differ"):
        shuffled_baseline(audios[:2], frames, metas)


def test_heldout_table_of_ground_truth_outputs() -> None:
    clips = [clip(10 + i, size=32, n_objects=1 + i % 2) for i in range(6)]
    mels = np.stack([wave_log_mel(c.audio) for c in clips])
    frames = np.stack([c.frames for c in clips])
    names = [f"c{i}" for i in range(6)]
    scores = score_heldout(names, [c.meta for c in clips], mels, frames)
    table = scores["table"]
    assert list(table) == ["v2a", "v2a_shuffled", "a2v", "a2v_shuffled"]
    for mode in ("v2a", "a2v"):
        assert table[mode]["f1"]["mean"] == 1.0 and table[mode]["f1"]["n"] == 6
        assert table[f"{mode}_shuffled"]["f1"]["mean"] < 0.7
    assert [row["name"] for row in scores["per_clip"]] == names
    with pytest.raises(CmmdError, match="differ"):
        score_heldout(names[:2], [c.meta for c in clips], mels, frames)


def test_derangement() -> None:
    for n in (2, 3, 10):
        perm = derangement(n, seed=1)
        assert sorted(perm.tolist()) == list(range(n)) and not np.any(perm == np.arange(n))
    np.testing.assert_array_equal(derangement(10, 5), derangement(10, 5))
    with pytest.raises(CmmdError):
        derangement(1)
