"""Evaluation clips cut from long videos (cmmd.data.segments, ``cmmd real-media cut``): names and
count, exact stream lengths, content aligned with the source, determinism, skipped and refused input."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cmmd.cli import main
from cmmd.data.media import read_media, write_media
from cmmd.data.segments import MANIFEST, aac_sample_rate, cut_folder, output_size, segment_name
from cmmd.errors import CmmdError

FPS, SR = 10, 16000


def _levels(frames: np.ndarray) -> np.ndarray:
    """Mean grey level per frame of ``uint8 (T, H, W, 3)``."""
    return frames.astype(np.float64).mean(axis=(1, 2, 3))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 13 s lossless clip (48x32, 10 fps, 16 kHz): frame ``k`` is uniform grey ``7 k mod 256``
    (any one-frame shift changes every level), the audio white noise."""
    frames = np.zeros((13 * FPS, 32, 48, 3), np.uint8)
    frames[:] = ((np.arange(13 * FPS) * 7) % 256)[:, None, None, None]
    audio = (0.1 * np.random.default_rng(0).standard_normal(13 * SR)).astype(np.float32)
    path = tmp_path_factory.mktemp("src") / "a.mkv"
    write_media(path, frames, audio, FPS, SR)
    return path


@pytest.fixture(scope="module")
def cut(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``source`` cut into 6 s segments once."""
    dest = tmp_path_factory.mktemp("cut")
    cut_folder(source.parent, dest, 6.0)
    return dest


def test_a_13_s_file_gives_two_segments_of_exactly_6_s(cut: Path) -> None:
    assert sorted(p.name for p in cut.iterdir()) == ["a-s001.mp4", "a-s002.mp4", MANIFEST]
    manifest = json.loads((cut / MANIFEST).read_text())
    assert [(s["file"], s["source"], s["index"], s["start"], s["seconds"]) for s in manifest["segments"]] == [
        ("a-s001.mp4", "a.mkv", 1, 0.0, 6.0), ("a-s002.mp4", "a.mkv", 2, 6.0, 6.0)]
    assert manifest["skipped"] == []
    for name in ("a-s001.mp4", "a-s002.mp4"):
        with av.open(str(cut / name)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
            assert (video.codec_context.width, video.codec_context.height) == (48, 32)  # under --max-size: kept
            assert video.average_rate == FPS and audio.codec_context.sample_rate == SR
            assert video.start_time == 0 and audio.start_time == 0
            assert video.frames == 6 * FPS and abs(float(video.duration * video.time_base) - 6) < 1 / FPS
            assert abs(float(audio.duration * audio.time_base) - 6) <= 1024 / SR  # one AAC packet
        clip = read_media(cut / name, fps=FPS, sample_rate=SR, video=False)
        assert abs(len(clip.audio) - 6 * SR) <= 1024


def test_segment_2_holds_seconds_6_to_12_of_the_source(source: Path, cut: Path) -> None:
    want = read_media(source, fps=FPS, sample_rate=SR, start=6, duration=6)
    got = read_media(cut / "a-s002.mp4", fps=FPS, sample_rate=SR)
    assert got.frames.shape == want.frames.shape == (60, 32, 48, 3)
    assert np.abs(_levels(got.frames) - _levels(want.frames)).max() < 3  # neighbours differ by 7
    assert abs(_levels(want.frames)[0] - (60 * 7) % 256) < 1
    x, y = want.audio[200:-200], got.audio
    lags = range(-40, 41)
    corr = [float(np.dot(x, y[200 + lag:200 + lag + len(x)])) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0  # aligned to the sample (AAC round trip of noise)
    assert np.corrcoef(x, y[200:-200])[0, 1] > 0.95


def test_cutting_twice_writes_identical_bytes_and_a_rerun_keeps_them(source: Path, cut: Path,
                                                                     tmp_path: Path) -> None:
    again = cut_folder(source.parent, tmp_path, 6.0)
    assert again.written == 3 - 1 and again.kept == 0
    for name in ("a-s001.mp4", "a-s002.mp4", MANIFEST):
        assert (tmp_path / name).read_bytes() == (cut / name).read_bytes(), name
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    rerun = cut_folder(source.parent, tmp_path, 6.0)
    assert (rerun.written, rerun.kept) == (0, 2)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    digests = [s["sha256"] for s in json.loads((tmp_path / MANIFEST).read_text())["segments"]]
    assert digests == [s.sha256 for s in rerun.segments] and len(set(digests)) == 2


def test_an_existing_different_file_is_refused_unless_overwrite(source: Path, cut: Path, tmp_path: Path) -> None:
    mine = tmp_path / "a-s002.mp4"
    mine.write_bytes(b"a user's own clip")
    with pytest.raises(CmmdError, match=r"a-s002\.mp4: already exists with other content; pass --overwrite"):
        cut_folder(source.parent, tmp_path, 6.0)
    assert mine.read_bytes() == b"a user's own clip"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary file left behind
    (tmp_path / MANIFEST).write_text("{}")
    result = cut_folder(source.parent, tmp_path, 6.0, overwrite=True)
    assert (result.written, result.kept) == (1, 1)
    assert mine.read_bytes() == (cut / "a-s002.mp4").read_bytes()
    assert (tmp_path / MANIFEST).read_bytes() == (cut / MANIFEST).read_bytes()
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(CmmdError, match=r"segments\.json: already exists with other content"):
        cut_folder(source.parent, tmp_path, 6.0)
    assert (tmp_path / MANIFEST).read_text() == "{}"


def test_unusable_files_are_skipped_and_listed(source: Path, cut: Path, bad_media: dict[str, Path],
                                               tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(source, src / "a.mkv")
    shutil.copy(source, src / "sub" / "nested.mkv")  # only files directly in SRC
    (src / "notes.txt").write_text("not media")
    for kind in ("zero_byte", "corrupt", "truncated", "no_audio", "no_video", "too_short", "unknown_codec"):
        shutil.copy(bad_media[kind], src / bad_media[kind].name)
    result = cut_folder(src, tmp_path / "out", 6.0)
    reasons = {f.source: f.reason for f in result.files}
    assert sorted(reasons) == ["a.mkv", "corrupt.mp4", "no_audio.mp4", "no_video.mp4", "too_short.mp4",
                               "truncated.mp4", "unknown_codec.mkv", "zero_byte.mp4"]
    assert reasons["a.mkv"] is None and [s.file for s in result.segments] == ["a-s001.mp4", "a-s002.mp4"]
    assert "not a readable media file" in reasons["corrupt.mp4"] and "not a readable" in reasons["zero_byte.mp4"]
    assert reasons["no_audio.mp4"] == "no audio stream" and reasons["no_video.mp4"] == "no video stream"
    assert reasons["too_short.mp4"] == "shorter than 6 s (0.50 s)"
    assert reasons["truncated.mp4"].startswith("shorter than 6 s")  # half an mp4: what decodes, 1.3 of 3 s
    assert reasons["unknown_codec.mkv"] == "no decoder for its video codec"
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert [s["source"] for s in manifest["skipped"]] == sorted(reasons)[1:]
    assert (tmp_path / "out" / "a-s002.mp4").read_bytes() == (cut / "a-s002.mp4").read_bytes()


def test_bad_arguments_and_nothing_to_cut_are_clear_errors(source: Path, bad_media: dict[str, Path],
                                                           tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="missing: no such folder"):
        cut_folder(tmp_path / "missing", tmp_path / "out", 6.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CmmdError, match="no video files directly in .*empty"):
        cut_folder(tmp_path / "empty", tmp_path / "out", 6.0)
    for seconds in (0.0, -1.0, float("nan")):
        with pytest.raises(CmmdError, match="--seconds must be a positive"):
            cut_folder(source.parent, tmp_path / "out", seconds)
    with pytest.raises(CmmdError, match="--max-size must be at least 2"):
        cut_folder(source.parent, tmp_path / "out", 6.0, max_size=1)
    with pytest.raises(CmmdError, match="another folder than the sources'"):
        cut_folder(source.parent, source.parent, 6.0)
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(bad_media["too_short"], clash / "x.mp4")
    shutil.copy(bad_media["too_short"], clash / "x.mov")
    with pytest.raises(CmmdError, match="same segment names: x.mov, x.mp4"):
        cut_folder(clash, tmp_path / "out", 6.0)
    (clash / "x.mov").unlink()
    shutil.copy(bad_media["no_audio"], clash / "y.mp4")
    with pytest.raises(CmmdError, match=r"no segments of 6 s .*x.mp4: shorter than 6 s .*y.mp4: no audio stream"):
        cut_folder(clash, tmp_path / "out", 6.0)
    assert not (tmp_path / "out" / MANIFEST).exists()


def _write_source(path: Path, frames: np.ndarray, rotation: int | None = None,
                  sample_aspect: Fraction | None = None) -> None:
    """H.264 + AAC with display rotation or a sample aspect ratio, which ``write_media`` never sets."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv444p"
        if sample_aspect is not None:
            video.codec_context.sample_aspect_ratio = sample_aspect
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=SR)
        sound.layout = "mono"
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        silence = av.AudioFrame.from_ndarray(np.zeros((1, len(frames) * SR // FPS), np.float32), format="fltp",
                                             layout="mono")
        silence.sample_rate, silence.pts, silence.time_base = SR, 0, Fraction(1, SR)
        out.mux(sound.encode(silence))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))


def test_display_rotation_and_sample_aspect_give_what_read_media_shows(tmp_path: Path) -> None:
    frames = np.zeros((25, 24, 48, 3), np.uint8)
    frames[:, :12, :24] = 255  # top-left quarter white: any turn or flip moves it
    src = tmp_path / "src"
    src.mkdir()
    _write_source(src / "turned.mp4", frames, rotation=90)
    _write_source(src / "wide.mp4", frames, sample_aspect=Fraction(1, 2))
    cut_folder(src, tmp_path / "out", 2.0)
    want = read_media(src / "turned.mp4", fps=FPS, duration=2).frames
    got = read_media(tmp_path / "out" / "turned-s001.mp4", fps=FPS).frames
    assert got.shape == want.shape == (20, 48, 24, 3)
    assert np.abs(got.astype(int) - want).max() <= 8
    assert read_media(tmp_path / "out" / "wide-s001.mp4", fps=FPS).frames.shape == (20, 24, 24, 3)  # square pixels


def test_output_sizes_and_audio_rates() -> None:
    assert output_size(1024, 768, 256) == (256, 192)
    assert output_size(480, 352, 256) == (256, 188)  # 187.7 -> nearest even
    assert output_size(33, 21, 256) == (32, 22)  # never scaled up, made even
    assert output_size(300, 300, 255) == (254, 254)  # the longer side stays within --max-size
    assert output_size(20, 480, 256) == (10, 256)
    assert aac_sample_rate(22050) == 22050 and aac_sample_rate(37000) == 44100 and aac_sample_rate(192000) == 96000
    assert segment_name("talk", 7) == "talk-s007.mp4" and segment_name("talk", 1234) == "talk-s1234.mp4"


def test_cli_cuts_scales_and_reports(source: Path, bad_media: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(source, src / "a.mkv")
    shutil.copy(bad_media["no_audio"], src / "quiet.mp4")
    assert main(["real-media", "cut", str(src), str(tmp_path / "out"), "--seconds", "4", "--max-size", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["cmmd real-media cut: a.mkv: 3 segment(s)",
                         "cmmd real-media cut: quiet.mp4: skipped: no audio stream"]
    assert lines[2].startswith("cmmd real-media cut: 1 of 2 file(s) -> 3 segment(s) of 4 s (0.2 min); wrote 3, kept 0")
    with av.open(str(tmp_path / "out" / "a-s003.mp4")) as container:
        video = container.streams.video[0].codec_context
        assert (video.width, video.height) == (20, 14)
    (tmp_path / "out" / "old-s001.mp4").write_bytes(b"an earlier cut")
    assert main(["real-media", "cut", str(src), str(tmp_path / "out"), "--seconds", "4", "--max-size", "20"]) == 0
    assert "segments.json does not list (cmmd evaluate would pair them too): old-s001.mp4" in capsys.readouterr().out
    (src / "a.mkv").unlink()
    assert main(["real-media", "cut", str(src), str(tmp_path / "out"), "--seconds", "4"]) == 2
    assert "error: no segments of 4 s" in capsys.readouterr().err
