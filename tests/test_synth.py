"""Synthetic benchmark: the rendered pixels and sounds agree with the events in the sidecar."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from cmmd.cli import main
from cmmd.conventions import IMPACT_CLASSES
from cmmd.data.media import read_media
from cmmd.data.synth import (
    BACKGROUND_RGB,
    FLOOR_RGB,
    IMPACT_GAP_S,
    TEMPO_BPM,
    clip_name,
    clip_seed,
    render_clip,
    write_benchmark,
)
from cmmd.errors import CmmdError


def onset_samples(audio: np.ndarray, hop: int = 16, ratio: float = 10.0) -> np.ndarray:
    """Samples where the 1 ms short-time energy jumps ``ratio`` times above the mean of the
    previous 10 ms, and 20 dB above the -50 dBFS noise floor."""
    n = len(audio) // hop
    energy = (audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).sum(axis=1)
    cum = np.concatenate([[0.0], np.cumsum(energy)])
    k = np.arange(10, n)
    previous = (cum[k] - cum[k - 10]) / 10
    hit = np.zeros(n, dtype=bool)
    hit[k] = (energy[k] > ratio * previous) & (energy[k] > hop * 1e-3)
    starts = np.flatnonzero(hit & ~np.concatenate([[False], hit[:-1]]))
    return starts * hop


def floor_top(frame: np.ndarray) -> int:
    """First row of the floor band: rows that are floor-grey across the whole width."""
    rows = np.flatnonzero((frame == FLOOR_RGB.astype(np.uint8)).all(axis=(1, 2)))
    return int(rows.min())


@pytest.mark.parametrize("scene", ["impacts", "dance"])
def test_render_is_deterministic(scene: str) -> None:
    a = render_clip(scene, 7, duration=2.0, size=32)
    b = render_clip(scene, 7, duration=2.0, size=32)
    c = render_clip(scene, 8, duration=2.0, size=32)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.meta == b.meta
    assert not np.array_equal(a.audio, c.audio)
    assert a.meta["events"] != c.meta["events"]


@pytest.mark.parametrize(
    ("scene", "duration", "size", "fps", "sample_rate", "n_objects"),
    [
        ("impacts", 1.7, 32, 10, 16000, 2),
        ("impacts", 3.6, 48, 10, 16000, 4),
        ("impacts", 1.23, 96, 25, 22050, 1),
        ("impacts", 0.95, 33, 10, 16000, 1),
        ("dance", 1.7, 32, 10, 16000, 1),
        ("dance", 2.05, 96, 24, 8000, 1),
    ],
)
def test_shapes_for_any_duration_and_size(
    scene: str, duration: float, size: int, fps: int, sample_rate: int, n_objects: int
) -> None:
    clip = render_clip(scene, 1, duration, size, fps, sample_rate, n_objects)
    assert clip.frames.shape == (round(duration * fps), size, size, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (round(duration * sample_rate),) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() < 1.0
    # Never digitally silent: every 10 ms window carries the noise floor.
    windows = clip.audio[: len(clip.audio) // 160 * 160].reshape(-1, 160)
    assert (windows.std(axis=1) > 1e-4).all()
    meta = clip.meta
    assert list(meta) == ["scene", "seed", "duration", "fps", "sample_rate", "size", "tempo_bpm", "objects", "events"]
    assert (meta["duration"], meta["size"], meta["fps"], meta["sample_rate"]) == (duration, size, fps, sample_rate)
    assert len(meta["objects"]) == n_objects
    times = [e["time"] for e in meta["events"]]
    assert times == sorted(times) and all(0 <= t < duration for t in times)
    json.dumps(meta)


def test_impact_events_are_on_the_frame_grid_and_not_periodic() -> None:
    fps = 10
    gaps = []
    for seed in range(6):
        clip = render_clip("impacts", seed, duration=8.0, size=32, fps=fps, n_objects=4)
        t_frames = len(clip.frames)
        names = [o["class"] for o in clip.meta["objects"]]
        assert len(set(names)) == 4
        for obj in clip.meta["objects"]:
            assert IMPACT_CLASSES[obj["class_index"]].name == obj["class"]
        assert clip.meta["tempo_bpm"] is None
        for event in clip.meta["events"]:
            assert event["time"] == event["frame"] / fps
            assert 2 <= event["frame"] <= t_frames - 2
            assert event["class"] == names[event["object"]]
        for obj in range(4):
            frames = [e["frame"] for e in clip.meta["events"] if e["object"] == obj]
            gaps += np.diff(frames).tolist()
    gaps = np.asarray(gaps)
    assert gaps.min() >= round(IMPACT_GAP_S[0] * fps) and gaps.max() <= round(IMPACT_GAP_S[1] * fps)
    assert len(np.unique(gaps)) >= 6  # spread over the whole range, not a period


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_impact_audio_onsets_are_exactly_the_events(seed: int) -> None:
    sample_rate = 16000
    clip = render_clip("impacts", seed, duration=3.6, size=16, n_objects=1, sample_rate=sample_rate)
    starts = np.array([round(e["time"] * sample_rate) for e in clip.meta["events"]])
    onsets = onset_samples(clip.audio)
    assert len(starts) >= 2
    tolerance = 0.005 * sample_rate
    assert len(onsets) == len(starts)
    assert np.abs(onsets - starts).max() <= tolerance
    # Nothing before the first event's sample: the tone starts exactly there.
    assert np.abs(clip.audio[: starts[0]]).max() < 0.05


def test_impact_audio_onsets_with_several_objects() -> None:
    sample_rate = 16000
    clip = render_clip("impacts", 5, duration=3.6, size=32, n_objects=3)
    starts = np.unique([round(e["time"] * sample_rate) for e in clip.meta["events"]])
    # A tone 100 ms after another object's sits on that tone's tail: a 4x jump, not 10x.
    onsets = onset_samples(clip.audio, ratio=4.0)
    for start in starts:
        assert np.abs(onsets - start).min() <= 0.005 * sample_rate
    for onset in onsets:
        assert np.abs(starts - onset).min() <= 0.005 * sample_rate


def test_tone_pitch_and_disc_colour_match_the_class() -> None:
    sample_rate = 16000
    seen = set()
    for seed in range(40):
        clip = render_clip("impacts", seed, duration=1.5, size=32, n_objects=1, sample_rate=sample_rate)
        obj = clip.meta["objects"][0]
        impact_class = IMPACT_CLASSES[obj["class_index"]]
        event = clip.meta["events"][0]
        start = round(event["time"] * sample_rate)
        window = clip.audio[start : start + 480] * np.hanning(480)
        spectrum = np.abs(np.fft.rfft(window, n=1 << 15))
        peak_hz = np.argmax(spectrum) * sample_rate / (1 << 15)
        assert abs(peak_hz - impact_class.pitch_hz) < 0.01 * impact_class.pitch_hz
        rgb = np.asarray(impact_class.rgb, dtype=np.uint8)
        flashes = {e["frame"] for e in clip.meta["events"]}
        still = [f for f in range(len(clip.frames)) if f not in flashes]
        assert ((clip.frames[still] == rgb).all(axis=-1).sum(axis=(1, 2)) >= 10).all()
        for other in IMPACT_CLASSES:
            if other is not impact_class:
                assert not (clip.frames == np.asarray(other.rgb, dtype=np.uint8)).all(axis=-1).any()
        seen.add(impact_class.name)
        if len(seen) == len(IMPACT_CLASSES):
            break
    assert len(seen) == len(IMPACT_CLASSES)


@pytest.mark.parametrize(("seed", "n_objects", "size"), [(0, 1, 64), (3, 2, 48), (4, 3, 64), (9, 4, 96)])
def test_impact_pixels_touch_the_floor_and_flash_at_events(seed: int, n_objects: int, size: int) -> None:
    clip = render_clip("impacts", seed, duration=3.6, size=size, n_objects=n_objects)
    frames = clip.frames.astype(np.int16)
    floor = floor_top(clip.frames[0])
    for obj, info in enumerate(clip.meta["objects"]):
        lane = slice(round(obj * size / n_objects), round((obj + 1) * size / n_objects))
        pixels = frames[:, :floor, lane]
        mask = (np.abs(pixels - BACKGROUND_RGB.astype(np.int16)) > 40).any(axis=-1)  # (T, floor, w)
        assert mask.any(axis=(1, 2)).all(), "the object is visible in every frame"
        lowest = np.array([np.flatnonzero(m.any(axis=1)).max() for m in mask])
        brightest = pixels.sum(axis=-1).max(axis=(1, 2))
        impact_frames = sorted({e["frame"] for e in clip.meta["events"] if e["object"] == obj})
        others = np.setdiff1d(np.arange(len(frames)), impact_frames)
        assert (lowest[impact_frames] == floor - 1).all(), "touches the floor at impacts"
        assert (lowest[others] < floor - 1).all(), "in the air elsewhere"
        assert brightest[impact_frames].min() > brightest[others].max() + 60, "flashes at impacts only"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dance_beats_poses_and_kicks(seed: int) -> None:
    sample_rate, fps = 16000, 10
    clip = render_clip("dance", seed, duration=3.6, size=32, fps=fps, sample_rate=sample_rate)
    meta = clip.meta
    tempo = meta["tempo_bpm"]
    assert TEMPO_BPM[0] <= tempo <= TEMPO_BPM[1]
    beats = np.array([e["time"] for e in meta["events"]])
    assert np.allclose(np.diff(beats), 60.0 / tempo)
    assert beats[0] < 60.0 / tempo and beats[-1] + 60.0 / tempo >= 3.6
    assert {(e["class"], e["class_index"], e["object"]) for e in meta["events"]} == {("beat", 0, 0)}
    beat_frames = np.array([e["frame"] for e in meta["events"]])
    assert np.array_equal(beat_frames, np.minimum(np.floor(beats * fps + 0.5), len(clip.frames) - 1))

    # Motion only at beat frames, and a large one: the figure changes pose.
    changed = (np.diff(clip.frames.astype(np.int16), axis=0) != 0).any(axis=-1).sum(axis=(1, 2))  # (T-1,)
    moving = np.flatnonzero(changed) + 1
    assert np.array_equal(moving, beat_frames[beat_frames > 0])
    assert changed[moving - 1].min() >= 20

    # A kick onset at every beat; the only other onsets are the hi-hats half a beat later.
    onsets = onset_samples(clip.audio)
    tolerance = 0.005 * sample_rate
    kicks = np.round(beats * sample_rate)
    hats = np.round((beats + 30.0 / tempo) * sample_rate)
    hats = np.concatenate([np.round((beats[:1] - 30.0 / tempo) * sample_rate), hats])
    for kick in kicks:
        assert np.abs(onsets - kick).min() <= tolerance
    for onset in onsets:
        assert np.abs(np.concatenate([kicks, hats]) - onset).min() <= tolerance
    kick_window = clip.audio[int(kicks[0]) : int(kicks[0]) + 1600]
    spectrum = np.abs(np.fft.rfft(kick_window, n=1 << 14))
    assert np.argmax(spectrum) * sample_rate / (1 << 14) < 160.0


def test_bad_arguments_are_refused_with_a_message(tmp_path) -> None:
    with pytest.raises(CmmdError, match="scene"):
        render_clip("juggling", 0)  # type: ignore[arg-type]
    with pytest.raises(CmmdError, match="1 to 4 objects"):
        render_clip("impacts", 0, n_objects=5)
    with pytest.raises(CmmdError, match="one figure"):
        render_clip("dance", 0, n_objects=2)
    with pytest.raises(CmmdError, match="sample_rate"):
        render_clip("impacts", 0, sample_rate=4000)
    with pytest.raises(CmmdError, match="duration"):
        render_clip("impacts", 0, duration=0.01)
    with pytest.raises(CmmdError, match="even"):
        write_benchmark(tmp_path, "impacts", 1, size=63)


def read_mp4(path) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Stream counts, decoded frames uint8 (T, H, W, 3) and audio (S',) of an mp4."""
    with av.open(str(path)) as container:
        n_video, n_audio = len(container.streams.video), len(container.streams.audio)
        assert container.streams.audio[0].codec_context.sample_rate == 16000
        assert container.streams.audio[0].codec_context.channels == 1
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return n_video, n_audio, frames, audio


def test_write_benchmark_writes_playable_clips_and_resumes(tmp_path) -> None:
    out = tmp_path / "bench"
    kwargs = dict(duration=1.2, size=32, n_objects=2)
    summary = write_benchmark(out, "impacts", 3, seed=4, **kwargs)
    assert (summary.written, summary.skipped) == (3, 0)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{clip_name('impacts', i)}{ext}" for i in range(3) for ext in (".mp4", ".json")
    )
    for index in range(3):
        meta = json.loads((out / f"impacts_{index:05d}.json").read_text())
        clip = render_clip("impacts", clip_seed(4, index), **kwargs)
        assert meta == clip.meta
        n_video, n_audio, frames, audio = read_mp4(out / f"impacts_{index:05d}.mp4")
        assert (n_video, n_audio) == (1, 1)
        assert frames.shape == clip.frames.shape
        # Luma PSNR: yuv420p halves the chroma resolution, which alone costs RGB ~30 dB at 32 px.
        luma = np.array([0.299, 0.587, 0.114])
        mse = np.mean((frames @ luma - clip.frames @ luma) ** 2)
        assert 10 * np.log10(255**2 / mse) > 38.0
        # Audio stays sample-aligned through the AAC round trip (priming skipped by the decoder).
        lags = np.arange(-32, 33)
        ref = clip.audio[:16000]
        xcorr = [np.dot(ref[32:-32], audio[32 + lag : 16000 - 32 + lag]) for lag in lags]
        assert abs(lags[int(np.argmax(xcorr))]) <= 16

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = write_benchmark(out, "impacts", 4, seed=4, **kwargs)
    assert (again.written, again.skipped) == (1, 3)
    assert all(out.joinpath(name).stat().st_mtime_ns == t for name, t in stamps.items())

    (out / "impacts_00001.json").unlink()  # as if interrupted between the mp4 and its sidecar
    assert write_benchmark(out, "impacts", 4, seed=4, **kwargs).written == 1

    with pytest.raises(CmmdError, match="overwrite"):
        write_benchmark(out, "impacts", 4, seed=5, **kwargs)
    assert json.loads((out / "impacts_00000.json").read_text())["seed"] == clip_seed(4, 0)
    redone = write_benchmark(out, "impacts", 2, seed=5, overwrite=True, **kwargs)
    assert (redone.written, redone.skipped) == (2, 0)
    assert json.loads((out / "impacts_00000.json").read_text())["seed"] == clip_seed(5, 0)


def test_write_benchmark_in_parallel_matches_serial(tmp_path) -> None:
    serial = write_benchmark(tmp_path / "a", "dance", 3, seed=2, duration=0.8, size=16)
    parallel = write_benchmark(tmp_path / "b", "dance", 3, seed=2, duration=0.8, size=16, workers=2)
    assert serial.written == parallel.written == 3
    for index in range(3):
        name = f"dance_{index:05d}.json"
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
        assert (tmp_path / "b" / name).with_suffix(".mp4").stat().st_size > 0


def test_cli_help_and_small_run(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    assert "--sample-rate" in capsys.readouterr().out

    out = tmp_path / "cli"
    args = ["synth", str(out), "--scene", "dance", "--n", "2", "--duration", "0.6", "--size", "16"]
    assert main(args) == 0
    assert "wrote 2 dance clip(s)" in capsys.readouterr().out
    assert main(args) == 0
    assert "kept 2 complete clip(s)" in capsys.readouterr().out
    assert main([*args, "--seed", "3"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(out), "--size", "17"]) == 2


def test_written_clips_read_back_in_sync_through_read_media(tmp_path) -> None:
    write_benchmark(tmp_path, "impacts", 1, seed=3, duration=2.0, size=32)
    media = read_media(tmp_path / "impacts_00000.mp4")
    clip = render_clip("impacts", clip_seed(3, 0), duration=2.0, size=32)
    assert media.frames.shape == clip.frames.shape and media.audio.shape == clip.audio.shape
    starts = np.array([round(e["time"] * 16000) for e in clip.meta["events"]])
    onsets = onset_samples(media.audio)
    assert len(onsets) == len(starts) and np.abs(onsets - starts).max() <= 16  # 1 ms
