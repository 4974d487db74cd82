"""Sampling from a trained checkpoint: the pipeline, `cmmd generate`, and the demo's page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from cmmd.cli import main
from cmmd.data.media import read_media, write_media
from cmmd.data.synth import render_clip
from cmmd.errors import CmmdError
from cmmd.pipeline import Pipeline, SamplingSettings


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An impacts clip as mp4 (video + audio), video-only mp4 and audio-only mkv, 3.2 s at 24 px."""
    d = tmp_path_factory.mktemp("clips")
    clip = render_clip("impacts", seed=123, duration=3.2, size=24)
    write_media(d / "both.mp4", clip.frames, clip.audio, 10, 16000)
    write_media(d / "video_only.mp4", clip.frames, None, 10, 16000)
    write_media(d / "audio_only.mkv", None, clip.audio, 10, 16000)
    return {"both": d / "both.mp4", "video": d / "video_only.mp4", "audio": d / "audio_only.mkv"}


def test_pipeline_modes_shapes_and_seed_determinism(micro_run: Path) -> None:
    pipe = Pipeline.from_checkpoint(micro_run)
    clip = render_clip("impacts", seed=7, duration=1.7, size=16)  # odd length: 17 frames, 27200 samples
    s = SamplingSettings(steps=4, seed=3)
    v2a = pipe.generate("v2a", s, frames=clip.frames[None])
    # The audio lasts as long as the video: the vocoder's 106 * 256 samples, then the last partial
    # hop as silence (short of it, a 1.0-s clip's audio was 0.992 s and beat tracking refused it).
    assert v2a.mel.shape == (1, 80, 27200 // 256) and v2a.wave.shape == (1, 27200)
    assert np.abs(v2a.wave[0, : 106 * 256]).max() > 0 and not v2a.wave[0, 106 * 256 :].any()
    np.testing.assert_array_equal(v2a.frames[0], clip.frames)  # the condition comes back exactly
    again = pipe.generate("v2a", s, frames=clip.frames[None])
    np.testing.assert_array_equal(again.mel, v2a.mel)
    other = pipe.generate("v2a", SamplingSettings(steps=4, seed=4), frames=clip.frames[None])
    assert not np.array_equal(other.mel, v2a.mel)
    a2v = pipe.generate("a2v", SamplingSettings(steps=4, method="dpmpp2m", guidance_scale=0.5),
                        wave=clip.audio[None])
    assert a2v.frames.shape == (1, 17, 16, 16, 3) and a2v.frames.dtype == np.uint8
    joint = pipe.generate("joint", s, num_frames=36, batch=2)  # twice the training length
    assert joint.frames.shape == (2, 36, 16, 16, 3) and joint.mel.shape == (2, 80, 225)


def test_joint_orders_keep_the_first_modality_and_redraw_the_other(micro_run: Path) -> None:
    """audio-first is p(a) p(v|a): its audio is the together sample's audio exactly (same seed, same
    first run) and its video is a new draw; video-first the other way round."""
    pipe = Pipeline.from_checkpoint(micro_run)
    together = pipe.generate("joint", SamplingSettings(steps=3, seed=5, joint_order="together"), num_frames=12,
                             batch=2)
    audio_first = pipe.generate("joint", SamplingSettings(steps=3, seed=5, joint_order="audio-first", joint_redraws=1),
                                num_frames=12, batch=2)
    video_first = pipe.generate("joint", SamplingSettings(steps=3, seed=5, joint_order="video-first", joint_redraws=1),
                                num_frames=12, batch=2)
    np.testing.assert_array_equal(audio_first.mel, together.mel)
    assert not np.array_equal(audio_first.frames, together.frames)
    np.testing.assert_array_equal(video_first.frames, together.frames)
    assert not np.array_equal(video_first.mel, together.mel)
    assert audio_first.settings["joint_order"] == "audio-first"
    # Two redraws of video-first (the default): v, a | v, v' | a keeps the second run's audio.
    default = pipe.generate("joint", SamplingSettings(steps=3, seed=5), num_frames=12, batch=2)
    np.testing.assert_array_equal(default.mel, video_first.mel)
    assert not np.array_equal(default.frames, video_first.frames)
    with pytest.raises(CmmdError, match="joint_order must be one of"):
        SamplingSettings(joint_order="sideways")  # type: ignore[arg-type]


def test_pipeline_rejects_wrong_size_frames(micro_run: Path) -> None:
    pipe = Pipeline.from_checkpoint(micro_run)
    frames = np.zeros((1, 8, 24, 24, 3), np.uint8)
    with pytest.raises(CmmdError, match="24x24 but the model was trained on 16x16"):
        pipe.generate("v2a", SamplingSettings(steps=2), frames=frames)


@pytest.mark.parametrize(("video_value", "audio_value", "named"), [
    (0.0, 500.0, r"generated waveform \(after the vocoder\) has NaN .* audio output spans \[500, 500\]"),
    (float("nan"), 0.0, r"generated video has NaN .* video output spans no finite value"),
])
def test_a_diverged_sample_is_refused_with_its_range_not_written(micro_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 video_value: float, audio_value: float,
                                                                 named: str) -> None:
    """A sampler whose log-mel runs off to +-500 (our eps-on-linear joint model's did) gives infinities
    in the vocoder: refused with the model's range, not passed on to the mp4 encoder."""
    import cmmd.pipeline

    def diverged(denoiser, schedule, video_shape, audio_shape, **kw):  # type: ignore[no-untyped-def]
        return torch.full(video_shape, video_value), torch.full(audio_shape, audio_value)

    monkeypatch.setattr(cmmd.pipeline, "sample", diverged)
    pipe = Pipeline.from_checkpoint(micro_run)
    frames = render_clip("impacts", seed=7, duration=1.2, size=16).frames[None]
    with pytest.raises(CmmdError, match=r"sampling diverged \(ddim, 2 steps\): the " + named):
        pipe.generate("v2a", SamplingSettings(steps=2), frames=frames)


def test_generate_cli_v2a_a2v_joint(micro_run: Path, clip_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(clip_files["both"]), "--mode", "v2a", "--steps", "3",
                 "--out", str(out)]) == 0
    media = read_media(out / "both.mp4")
    # The input's own 24 px video comes back, not the model's 16 px copy; the sound is generated.
    assert media.frames.shape == (32, 24, 24, 3) and abs(len(media.audio) - 51200) <= 1024
    settings = json.loads((out / "both.json").read_text())
    assert settings["mode"] == "v2a" and settings["steps"] == 3 and (out / "both_spec.png").is_file()
    assert settings["streams"] == {"video": "input, copied", "audio": "generated"}
    assert read_media(out / "condition" / "both.mp4", audio=False).frames.shape == (32, 16, 16, 3)
    assert not (out / "model_res").exists()
    assert json.loads((out / "failures.jsonl").read_text() or "null") is None
    # The same name again is refused without --overwrite: nothing is silently replaced.
    assert main(["generate", str(micro_run), str(clip_files["both"]), "--mode", "v2a", "--steps", "3",
                 "--out", str(out)]) == 2
    assert main(["generate", str(micro_run), str(clip_files["audio"]), "--mode", "a2v", "--steps", "3",
                 "--method", "dpmpp2m", "--model-res", "--out", str(out)]) == 0
    assert read_media(out / "audio_only.mp4").frames.shape == (32, 16, 16, 3)
    assert read_media(out / "model_res" / "audio_only.mp4").frames.shape == (32, 16, 16, 3)
    assert (out / "condition" / "audio_only.mkv").is_file()
    assert main(["generate", str(micro_run), "--mode", "joint", "--num", "2", "--seconds", "1.6",
                 "--steps", "3", "--out", str(out)]) == 0
    assert read_media(out / "joint_0001.mp4").frames.shape == (16, 16, 16, 3)


def test_generate_folder_skips_unusable_inputs_and_lists_them(micro_run: Path, clip_files: dict[str, Path],
                                                             bad_media: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """v2a on a folder of videos, an audio-only file and broken files: every usable input is
    generated, every other one is named with its reason, and the run succeeds."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("both", "video", "audio"):
        shutil.copy(clip_files[name], folder)
    for kind in ("corrupt", "zero_byte", "no_video"):
        shutil.copy(bad_media[kind], folder)
    (folder / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(folder), "--mode", "v2a", "--steps", "2", "--seconds", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.mp4")) == ["both.mp4", "video_only.mp4"]
    failures = {Path(f["source"]).name: f for f in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert set(failures) == {"audio_only.mkv", "corrupt.mp4", "zero_byte.mp4", "no_video.mp4"}
    assert failures["audio_only.mkv"]["kind"] == "no_video" and failures["zero_byte.mp4"]["kind"] == "empty"
    assert "skipped" in printed and "audio_only.mkv: no video stream" in printed
    assert "2 generated, 4 skipped" in printed
    # Nothing usable at all: a non-zero exit with one line naming the listing.
    assert main(["generate", str(micro_run), str(bad_media["no_video"]), "--mode", "v2a", "--steps", "2",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "nothing generated" in err and "failures.jsonl" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "5000"], "--steps must be at most"),
    (["--guidance", "-1"], "--guidance must be >= 0"),
    (["--eta-ddim", "2"], "--eta-ddim must be in [0, 1]"),
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--num", "2"], "--num is for --mode joint"),
    (["--joint-order", "audio-first"], "--joint-order is for --mode joint"),
])
def test_generate_cli_refuses_bad_arguments_in_one_line(micro_run: Path, clip_files: dict[str, Path],
                                                        tmp_path: Path, flags: list[str], message: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(micro_run), str(clip_files["both"]), "--mode", "v2a", "--out", str(tmp_path),
                 *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmmd generate: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_generate_cli_joint_orders(micro_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Default: video-first with 2 redraws; guidance needs a sequential order; redraws need one."""
    assert main(["generate", str(micro_run), "--mode", "joint", "--guidance", "1", "--joint-order", "together",
                 "--out", str(tmp_path)]) == 2
    assert "--joint-order together has none" in capsys.readouterr().err
    assert main(["generate", str(micro_run), "--mode", "joint", "--joint-order", "together", "--joint-redraws", "2",
                 "--out", str(tmp_path)]) == 2
    assert "--joint-redraws needs --joint-order audio-first or video-first" in capsys.readouterr().err
    assert main(["generate", str(micro_run), "--mode", "joint", "--guidance", "1", "--steps", "2", "--seconds", "1",
                 "--out", str(tmp_path / "default")]) == 0
    info = json.loads((tmp_path / "default" / "joint_0000.json").read_text())
    assert (info["joint_order"], info["joint_redraws"]) == ("video-first", 2)
    assert main(["generate", str(micro_run), "--mode", "joint", "--joint-order", "audio-first", "--steps", "2",
                 "--seconds", "1", "--out", str(tmp_path / "af")]) == 0
    info = json.loads((tmp_path / "af" / "joint_0000.json").read_text())
    assert (info["joint_order"], info["joint_redraws"]) == ("audio-first", 1)


def test_generate_cli_takes_inputs_after_the_flags(micro_run: Path, clip_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """`cmmd generate CKPT --mode v2a a.mp4 b.mp4`, as the README writes it, works like inputs first."""
    assert main(["generate", str(micro_run), "--mode", "v2a", str(clip_files["both"]), str(clip_files["video"]),
                 "--steps", "2", "--seconds", "1", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["both.mp4", "video_only.mp4"]


def test_generate_keeps_the_users_own_streams(micro_run: Path, real_video: Path, tmp_path: Path) -> None:
    """v2a on a 1280x720 25 fps H.264 video gives that video back (copied, cut to the generated
    second) with the generated sound; a2v keeps its 48 kHz AAC track beside the generated video."""
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(real_video), "--mode", "v2a", "--steps", "2", "--seconds", "1",
                 "--model-res", "--out", str(out)]) == 0
    with av.open(str(real_video)) as src, av.open(str(out / "bigbuckbunny.mp4")) as dst:
        sv, dv = src.streams.video[0], dst.streams.video[0]
        assert (dv.codec_context.name, dv.width, dv.height, dv.average_rate) == (
            sv.codec_context.name, sv.width, sv.height, sv.average_rate)
        assert dst.streams.audio[0].rate == 16000 and 0.9 <= float(dv.duration * dv.time_base) <= 1.1
    model_res = read_media(out / "model_res" / "bigbuckbunny.mp4")
    assert model_res.frames.shape == (10, 16, 16, 3)
    own = read_media(out / "bigbuckbunny.mp4", duration=1.0)
    n = min(len(own.audio), len(model_res.audio)) - 512  # the generated sound, at the same time
    assert np.corrcoef(own.audio[:n], model_res.audio[:n])[0, 1] > 0.99
    assert main(["generate", str(micro_run), str(real_video), "--mode", "a2v", "--steps", "2", "--seconds", "1",
                 "--out", str(out / "a2v")]) == 0
    with av.open(str(real_video)) as src, av.open(str(out / "a2v" / "bigbuckbunny.mp4")) as dst:
        sa, da = src.streams.audio[0], dst.streams.audio[0]
        assert (da.codec_context.name, da.rate, da.channels) == (sa.codec_context.name, sa.rate, sa.channels)
        assert dst.streams.video[0].width == 16
    generated = read_media(out / "a2v" / "bigbuckbunny.mp4")
    original = read_media(real_video, duration=generated.duration)
    assert np.corrcoef(generated.audio, original.audio)[0, 1] > 0.99  # the same sound, at the same time


def test_combine_streams_reencodes_what_mp4_cannot_hold(tmp_path: Path) -> None:
    """Raw video (AVI) is re-encoded to H.264 at its own size; the other stream is copied."""
    from fractions import Fraction

    from cmmd.data.mux import combine_streams

    raw = tmp_path / "raw.avi"
    with av.open(str(raw), "w") as container:
        stream = container.add_stream("rawvideo", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 46, 34, "rgb24"
        for k, image in enumerate(np.random.default_rng(0).integers(0, 256, (30, 34, 46, 3), dtype=np.uint8)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    sound = tmp_path / "sound.mp4"
    write_media(sound, None, np.zeros(32000, np.float32), 10, 16000)
    how = combine_streams(tmp_path / "out.mp4", raw, sound, 0.5)
    assert how == {"video": "re-encoded", "audio": "copied"}
    media = read_media(tmp_path / "out.mp4", fps=30000 / 1001)
    assert media.frames.shape[1:3] == (34, 46) and 14 <= len(media.frames) <= 16


def test_generate_output_folder_pairs_with_its_input_folder_for_evaluate(micro_run: Path, tmp_path: Path) -> None:
    """`cmmd generate CKPT REF --mode a2v --out OUT` then `cmmd evaluate OUT REF`: the condition
    copies, spectrograms, JSON and failure list beside the outputs do not break the pairing."""
    from cmmd.data.synth import write_benchmark
    from cmmd.eval.evaluate import pair_folders

    ref = tmp_path / "ref"
    write_benchmark(ref, "impacts", 2, seed=5, duration=1.2, size=16)
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(ref), "--mode", "a2v", "--steps", "2", "--out", str(out)]) == 0
    assert (out / "condition").is_dir() and list(out.glob("*_spec.png"))
    pairing = pair_folders(out, ref)
    assert pairing.names == tuple(sorted(p.stem for p in ref.glob("*.mp4"))) and len(pairing.names) == 2
    assert all(pairing.generated[n] == (out / f"{n}.mp4",) for n in pairing.names)
    assert len(pairing.sidecars) == 2


def test_generate_files_seeds_batches_and_reports_failures(micro_run: Path, clip_files: dict[str, Path]) -> None:
    """The helper the CLI, the study and the web app share: per-item samples in input order,
    per-item failures, one seed per batch from its first input's index."""
    from cmmd.generation import generate_files

    pipe = Pipeline.from_checkpoint(micro_run)
    files = [clip_files["both"], clip_files["audio"], clip_files["video"]]
    result = generate_files(pipe, "v2a", files, SamplingSettings(steps=2, seed=7), seconds=1.0, batch=3)
    assert [s.name for s in result.samples] == ["both", "video_only"]
    assert [(f.source.name, f.kind) for f in result.failures] == [("audio_only.mkv", "no_video")]
    both = result.samples[0]
    assert both.frames.shape == (10, 16, 16, 3) and len(both.wave) <= 16000 and both.settings["seed"] == 7
    assert [title for title, _ in both.panels] == ["the input's own sound", "generated from video"]
    assert result.samples[1].settings["seed"] == 7  # one batch, one seed
    one_by_one = generate_files(pipe, "v2a", files, SamplingSettings(steps=2, seed=7), seconds=1.0)
    assert [s.settings["seed"] for s in one_by_one.samples] == [7, 9]  # the index in the input list
    alone = generate_files(pipe, "v2a", [clip_files["both"]], SamplingSettings(steps=2, seed=7), seconds=1.0)
    np.testing.assert_array_equal(alone.samples[0].wave, one_by_one.samples[0].wave)


def test_generate_cli_rejects_wrong_modality(micro_run: Path, clip_files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(micro_run), str(clip_files["audio"]), "--mode", "v2a",
                 "--out", str(tmp_path)]) == 2
    assert "audio_only.mkv" in capsys.readouterr().out
    assert main(["generate", str(micro_run), str(clip_files["video"]), "--mode", "a2v",
                 "--out", str(tmp_path)]) == 2
    assert "video_only.mp4" in capsys.readouterr().out
    assert main(["generate", str(tmp_path / "missing"), "--mode", "joint"]) == 2
