"""Windowed generation of long inputs (cmmd.diffusion.windows): the plan against hand cases, the
blended denoiser against closed forms, exact lengths, equality with whole-clip sampling when one
window covers the clip, continuity at the seams with the shipped demo model, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd.cli import main
from cmmd.data.media import write_media
from cmmd.data.synth import render_clip
from cmmd.diffusion.windows import WindowedDenoiser, blend_weights, map_spans, window_spans
from cmmd.errors import CmmdError
from cmmd.pipeline import Pipeline, SamplingSettings


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the plan ---------------------------------------------------------------------------------


def test_window_spans_hand_cases() -> None:
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    # 11 frames: 1 + ceil(7 / 3) = 4 windows, starts spread evenly over 0..7 (overlaps 2, 2, 1).
    assert window_spans(11, 4, 1) == [(0, 4), (2, 6), (4, 8), (7, 11)]
    assert window_spans(19, 18, 0) == [(0, 18), (1, 19)]
    assert window_spans(54, 18, 9) == [(0, 18), (9, 27), (18, 36), (27, 45), (36, 54)]
    assert window_spans(3, 18, 9) == [(0, 3)]  # shorter than one window: the whole clip
    assert window_spans(18, 18, 9) == [(0, 18)]
    for bad in ((0, 4, 1), (10, 0, 0), (10, 4, 4), (10, 4, -1)):
        with pytest.raises(ValueError):
            window_spans(*bad)


@pytest.mark.parametrize("window,overlap", [(2, 0), (5, 1), (5, 4), (18, 9), (7, 3)])
def test_window_spans_cover_with_the_asked_overlap_and_fewest_windows(window: int, overlap: int) -> None:
    for length in range(1, 80):
        spans = window_spans(length, window, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(b - a == min(window, length) for a, b in spans)
        assert all(s0 < s1 and b0 - s1 >= overlap for (s0, b0), (s1, _) in zip(spans, spans[1:]))
        # One window fewer could not cover the length with that overlap.
        assert len(spans) == 1 or (len(spans) - 2) * (window - overlap) + window < length


def test_map_spans_through_time() -> None:
    # 10 video frames over 62 mel frames (6.2 a frame): edges round to the nearest mel frame.
    assert map_spans([(0, 4), (2, 6), (4, 8), (6, 10)], 10, 62) == [(0, 25), (12, 37), (25, 50), (37, 62)]
    assert map_spans([(0, 3)], 3, 18) == [(0, 18)]
    with pytest.raises(ValueError, match="empty"):
        map_spans([(0, 1), (1, 2)], 2, 1)


def test_blend_weights_hand_case_and_linear_crossfade() -> None:
    np.testing.assert_allclose(blend_weights(5, [(0, 3), (2, 5)]), [[1, 1, 0.5, 0, 0], [0, 0, 0.5, 1, 1]])
    w = blend_weights(20, window_spans(20, 8, 4))
    np.testing.assert_allclose(w[0, 4:8], [0.875, 0.625, 0.375, 0.125])  # a linear ramp across the overlap
    np.testing.assert_allclose(w[1, 4:8], [0.125, 0.375, 0.625, 0.875])
    with pytest.raises(ValueError, match="uncovered"):
        blend_weights(6, [(0, 3), (4, 6)])


@pytest.mark.parametrize("length,window,overlap", [(1, 4, 1), (17, 4, 1), (54, 18, 9), (33, 5, 4), (41, 7, 0)])
def test_blend_weights_sum_to_one_and_vanish_outside_each_window(length: int, window: int, overlap: int) -> None:
    spans = window_spans(length, window, overlap)
    for spans_ in (spans, map_spans(spans, length, length * 25 // 4)):
        n = spans_[-1][1]
        w = blend_weights(n, spans_)
        np.testing.assert_allclose(w.sum(axis=0), np.ones(n), atol=1e-12)
        for i, (a, b) in enumerate(spans_):
            assert (w[i, a:b] > 0).all() and not w[i, :a].any() and not w[i, b:].any()


# -- the blended denoiser ---------------------------------------------------------------------


def _pointwise(video: torch.Tensor, audio: torch.Tensor, n_video: torch.Tensor, n_audio: torch.Tensor):
    """A closed-form denoiser without context: windowing must leave it unchanged."""
    return torch.tanh(video) + n_video.view(-1, 1, 1, 1, 1), audio * 0.5 - n_audio.view(-1, 1, 1)


def test_windowed_denoiser_blends_a_pointwise_denoiser_into_itself() -> None:
    video, audio = torch.randn(2, 23, 3, 4, 4), torch.randn(2, 5, 143)
    n = torch.tensor([3.0, 7.0])
    expected = _pointwise(video, audio, n, n)
    for per_call in (1, 3, 8):
        out = WindowedDenoiser(_pointwise, 23, 143, 6, 2, per_call=per_call)(video, audio, n, n)
        for got, want in zip(out, expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_windowed_denoiser_crossfades_windows_that_disagree() -> None:
    """A denoiser that outputs its window's first frame index shows the blend itself."""
    spans = window_spans(10, 4, 2)
    calls: list[int] = []

    def window_id(video, audio, n_video, n_audio):
        calls.append(video.shape[0])
        first = video[:, :1, :1, :1, :1]  # frame index stored in the input
        return first.expand_as(video).clone(), audio.clone()

    video = torch.arange(10.0).view(1, 10, 1, 1, 1)
    out_v, _ = WindowedDenoiser(window_id, 10, 60, 4, 2, per_call=2)(video, torch.zeros(1, 2, 60),
                                                                    torch.zeros(1), torch.zeros(1))
    weights = blend_weights(10, spans)
    expected = (weights * np.array([s for s, _ in spans])[:, None]).sum(axis=0)
    np.testing.assert_allclose(out_v.view(-1).numpy(), expected, atol=1e-6)
    assert calls == [2, 2]  # four windows, two per call


def test_windowed_denoiser_refuses_other_lengths() -> None:
    with pytest.raises(ValueError, match="planned for 20 frames"):
        WindowedDenoiser(_pointwise, 20, 125, 6, 2)(torch.zeros(1, 21, 1, 1, 1), torch.zeros(1, 1, 125),
                                                    torch.zeros(1), torch.zeros(1))


# -- through the pipeline ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_pipe() -> Pipeline:
    """A tiny randomly initialised model on 16x16 pixels (no training)."""
    from cmmd.audio.mel import MelStats
    from cmmd.models.presets import build_model
    from cmmd.train.config import TrainConfig

    torch.manual_seed(0)
    model = build_model("tiny", {"base_channels": 8, "channel_mult": [1, 2], "attention_levels": [1],
                                 "fusion_levels": [0, 1], "head_dim": 8, "norm_groups": 4, "zero_init_output": False})
    return Pipeline(model, TrainConfig(), MelStats(torch.zeros(80), torch.ones(80)), 10, 16, 16000)


def test_a_window_covering_the_clip_is_whole_clip_sampling(random_pipe: Pipeline) -> None:
    clip = render_clip("impacts", seed=3, duration=2.3, size=16)
    for mode, given in (("v2a", {"frames": clip.frames[None]}), ("a2v", {"wave": clip.audio[None]})):
        whole = random_pipe.generate(mode, SamplingSettings(steps=3, seed=1), **given)
        covered = random_pipe.generate(mode, SamplingSettings(steps=3, seed=1, window=2.3), **given)
        longer = random_pipe.generate(mode, SamplingSettings(steps=3, seed=1, window=9.0, overlap=1.0), **given)
        for other in (covered, longer):
            np.testing.assert_array_equal(other.mel, whole.mel)
            np.testing.assert_array_equal(other.frames, whole.frames)
        windowed = random_pipe.generate(mode, SamplingSettings(steps=3, seed=1, window=0.8), **given)
        assert not np.array_equal(windowed.mel if mode == "v2a" else windowed.frames,
                                  whole.mel if mode == "v2a" else whole.frames)


@pytest.mark.parametrize("seconds", [2.3, 3.7])
def test_windowed_lengths_are_exact_for_odd_lengths(random_pipe: Pipeline, seconds: float) -> None:
    clip = render_clip("impacts", seed=4, duration=seconds, size=16)
    frames, samples = len(clip.frames), len(clip.audio) - 123  # an odd number of audio samples
    settings = SamplingSettings(steps=2, window=0.7, overlap=0.3)
    v2a = random_pipe.generate("v2a", settings, frames=clip.frames[None])
    mel_frames = random_pipe.audio_length_for(frames)
    assert v2a.frames.shape == (1, frames, 16, 16, 3) and v2a.mel.shape == (1, 80, mel_frames)
    assert v2a.wave.shape == (1, frames * 1600)  # as long as the video: the vocoder's part, then silence
    assert not v2a.wave[0, mel_frames * 256 :].any()
    np.testing.assert_array_equal(v2a.frames[0], clip.frames)
    a2v = random_pipe.generate("a2v", settings, wave=clip.audio[None, :samples])
    assert a2v.frames.shape == (1, samples * 10 // 16000, 16, 16, 3)


def test_pipeline_refuses_windows_it_cannot_use(random_pipe: Pipeline) -> None:
    frames = np.zeros((1, 12, 16, 16, 3), np.uint8)
    with pytest.raises(CmmdError, match="under 2 frames"):
        random_pipe.generate("v2a", SamplingSettings(steps=2, window=0.1), frames=frames)
    with pytest.raises(CmmdError, match="shorter than the window"):
        random_pipe.generate("v2a", SamplingSettings(steps=2, window=0.5, overlap=0.5), frames=frames)


# -- continuity at the seams, with the shipped demo model -------------------------------------

NEIGHBOURHOOD_S = 0.25  # around a seam, for event F1 there
SPURIOUS_S = 0.1  # a detected onset this close to a seam must be a real one


def seam_problems(wave: np.ndarray, mel: np.ndarray, truth_events: list[dict], truth_mel: np.ndarray,
                  seams: list[float], sample_rate: int) -> list[str]:
    """What is wrong at the ``seams`` (seconds) of generated audio, against the ground truth: event
    F1 near the seams below the clip's, spurious onsets at a seam, or a jump of mel energy at a
    seam (beyond the ground truth's jump there) larger than 95 % of the jumps elsewhere."""
    from cmmd.conventions import HOP
    from cmmd.eval.sync.audio import detect_audio_events
    from cmmd.eval.sync.score import match_events

    events = detect_audio_events(wave, sample_rate)
    pred = np.array([e.time for e in events])
    truth = np.array([e["time"] for e in truth_events])
    matches, _ = match_events(pred, truth, 0.1, [e.class_index for e in events],
                              [e["class_index"] for e in truth_events])
    hit_pred, hit_truth = {i for i, _ in matches}, {j for _, j in matches}

    def f1(pred_ids: list[int], truth_ids: list[int]) -> float:
        p = np.mean([i in hit_pred for i in pred_ids]) if pred_ids else 1.0
        r = np.mean([j in hit_truth for j in truth_ids]) if truth_ids else 1.0
        return float(2 * p * r / (p + r)) if p + r else 0.0

    def near(t: float, within: float) -> bool:
        return any(abs(t - s) <= within for s in seams)

    problems = []
    overall = f1(list(range(len(pred))), list(range(len(truth))))
    at_seams = f1([i for i, t in enumerate(pred) if near(t, NEIGHBOURHOOD_S)],
                  [j for j, t in enumerate(truth) if near(t, NEIGHBOURHOOD_S)])
    if at_seams < overall - 0.1:
        problems.append(f"event F1 {at_seams:.2f} near the seams, {overall:.2f} overall")
    spurious = [round(float(t), 2) for i, t in enumerate(pred) if near(t, SPURIOUS_S) and i not in hit_pred]
    if spurious:
        problems.append(f"spurious onsets at {spurious} s")
    energy, truth_energy = (np.log(np.exp(m).sum(axis=0)) for m in (mel, truth_mel[:, : mel.shape[1]]))
    excess = np.abs(np.diff(energy)) - np.abs(np.diff(truth_energy))  # excess[l]: frame l to l + 1
    at = [round(s * sample_rate / HOP) - 1 for s in seams]
    limit = np.percentile(np.delete(excess, at), 95)
    jumps = [(s, float(excess[i])) for s, i in zip(seams, at) if excess[i] > limit]
    if jumps:
        problems.append(f"mel energy jumps at seams {jumps} above 95 % of the other frames' ({limit:.2f})")
    return problems


@pytest.fixture(scope="module")
def demo_pipe() -> Pipeline:
    from cmmd.assets import DEMO_CHECKPOINT

    return Pipeline.from_checkpoint(DEMO_CHECKPOINT)


@pytest.fixture(scope="module")
def long_clip(demo_pipe: Pipeline):
    """A held-out-like impacts clip three windows (5.4 s) long, one object as in training."""
    return render_clip("impacts", 7, duration=5.4, size=demo_pipe.size, fps=round(demo_pipe.fps),
                       sample_rate=demo_pipe.sample_rate)


def test_windowed_v2a_is_continuous_at_the_seams(demo_pipe: Pipeline, long_clip) -> None:
    """Windows of the training length (1.8 s, 0.9 s overlap) over 5.4 s: onsets near every window
    edge match the ground truth as well as elsewhere, none is invented at an edge, and the mel
    energy does not jump there. Measured: F1 1.0 overall and near the seams, no problem."""
    pipe, clip = demo_pipe, long_clip
    gen = pipe.generate("v2a", SamplingSettings(steps=10, window=1.8), frames=clip.frames[None])
    spans = map_spans(window_spans(len(clip.frames), 18, 9), len(clip.frames), gen.mel.shape[-1])
    seams = sorted({a for a, _ in spans[1:]} | {b for _, b in spans[:-1]})
    seconds = [s * 256 / pipe.sample_rate for s in seams]
    truth_mel = pipe.log_mel(clip.audio[None])[0].cpu().numpy()
    assert len(seconds) == 5 and seconds[0] == pytest.approx(0.9, abs=0.01)
    assert seam_problems(gen.wave[0], gen.mel[0], clip.meta["events"], truth_mel, seconds, pipe.sample_rate) == []
    from cmmd.eval.sync.audio import detect_audio_events
    from cmmd.eval.sync.score import event_sync_metrics

    assert event_sync_metrics(detect_audio_events(gen.wave[0], pipe.sample_rate), clip.meta["events"])["f1"] >= 0.9


def test_seam_check_catches_windows_sampled_apart(demo_pipe: Pipeline, long_clip) -> None:
    """The control: the same clip as three 1.8 s windows sampled independently and butted
    together has seams the check sees (measured: a spurious onset at the 1.8 s seam and an energy
    jump at the 3.6 s one)."""
    pipe, clip = demo_pipe, long_clip
    mel = np.concatenate([pipe.generate("v2a", SamplingSettings(steps=10, seed=k),
                                        frames=clip.frames[None, 18 * k : 18 * k + 18]).mel[0] for k in range(3)], -1)
    wave = pipe.vocoder(torch.as_tensor(mel)[None]).numpy()[0]
    truth_mel = pipe.log_mel(clip.audio[None])[0].cpu().numpy()
    seams = [mel.shape[-1] / 3 * 256 / pipe.sample_rate * k for k in (1, 2)]
    assert seam_problems(wave, mel, clip.meta["events"], truth_mel, seams, pipe.sample_rate) != []


def test_generate_cli_windowed_writes_the_mp4_spectrograms_and_settings(demo_pipe: Pipeline, tmp_path: Path) -> None:
    from cmmd.assets import DEMO_CHECKPOINT
    from cmmd.generation import generate_files

    clip = render_clip("impacts", 11, duration=2.9, size=demo_pipe.size)
    source = tmp_path / "long.mp4"
    write_media(source, clip.frames, clip.audio, 10, 16000)
    out = tmp_path / "out"
    assert main(["generate", str(DEMO_CHECKPOINT), str(source), "--mode", "v2a", "--steps", "2",
                 "--window", "native", "--out", str(out)]) == 0
    settings = json.loads((out / "long.json").read_text())
    assert (settings["window"], settings["overlap"]) == (pytest.approx(1.8), pytest.approx(0.9))
    assert (out / "long.mp4").is_file() and (out / "long_spec.png").is_file()
    # The spectrogram shows the input's own sound above the generated one, over the same span.
    sample = generate_files(demo_pipe, "v2a", [source], SamplingSettings(steps=2, window=1.0)).samples[0]
    assert [title for title, _ in sample.panels] == ["the input's own sound", "generated from video"]
    assert sample.panels[0][1].shape == sample.panels[1][1].shape
    assert main(["generate", str(DEMO_CHECKPOINT), str(source), "--mode", "a2v", "--steps", "2",
                 "--window", "1", "--overlap", "0.3", "--out", str(tmp_path / "a2v")]) == 0
    assert (tmp_path / "a2v" / "long.mp4").is_file() and (tmp_path / "a2v" / "long_spec.png").is_file()


@pytest.mark.parametrize("flags,message", [
    (["--window", "soon"], "--window must be a number of seconds or 'native'"),
    (["--window", "0"], "--window must be > 0"),
    (["--window", "1", "--overlap", "1"], "--overlap must be shorter than --window"),
    (["--overlap", "0.5"], "give --window too"),
    (["--window", "1", "--overlap", "-1"], "--overlap must be >= 0"),
])
def test_generate_cli_refuses_bad_window_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               flags: list[str], message: str) -> None:
    from cmmd.assets import DEMO_CHECKPOINT

    assert main(["generate", str(DEMO_CHECKPOINT), str(tmp_path / "x.mp4"), "--mode", "v2a", *flags]) == 2
    assert message in capsys.readouterr().err
