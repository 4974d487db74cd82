"""cmmd.data.media: sample-accurate audio placement, timestamp-based frame resampling, cropping,
and clear errors for every kind of bad file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cmmd.data.media import MediaError, read_media, write_media
from cmmd.errors import CmmdError

SR = 16000
FPS = 10
ONE_MS = SR // 1000


def click_clip(seconds: float = 3.6, click_at: float = 1.0, size: tuple[int, int] = (32, 32)
               ) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose grey level is 4x the frame index, and silence with a click at ``click_at``."""
    num_frames = round(seconds * FPS)
    frames = np.zeros((num_frames, *size, 3), np.uint8)
    frames[:] = (np.arange(num_frames) * 4)[:, None, None, None]
    audio = np.zeros(round(seconds * SR), np.float32)
    audio[round(click_at * SR)] = 0.9
    return frames, audio


def code_frame(index: int, size: int = 16) -> np.ndarray:
    """A frame whose (red, green) levels identify ``index`` exactly (for lossless codecs)."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0], image[..., 1] = (index * 37) % 256, (index * 101) % 256
    return image


def decode_code(image: np.ndarray, count: int) -> int:
    """Inverse of ``code_frame`` over candidate indices ``0..count-1``."""
    red, green = int(image[..., 0].mean()), int(image[..., 1].mean())
    return int(np.argmin([abs(red - (i * 37) % 256) + abs(green - (i * 101) % 256) for i in range(count)]))


def write_video_at(path: Path, pts_ms: list[int], declare_rate: bool) -> None:
    """Lossless FFV1 Matroska video with frame ``i`` (``code_frame(i)``) at ``pts_ms[i]`` ms.

    ``declare_rate=False`` writes no frame rate, so the stream has no ``average_rate`` and its
    frames carry no durations.
    """
    tb = Fraction(1, 1000)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=30)
        if not declare_rate:
            stream.codec_context.framerate = Fraction(0, 1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "bgr0"
        stream.time_base = stream.codec_context.time_base = tb
        for index, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(code_frame(index), format="rgb24")
            frame.pts, frame.time_base = pts, tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_multichannel_audio(path: Path, channels: np.ndarray, sample_rate: int, layout: str) -> None:
    """FLAC Matroska audio-only file from ``channels`` float32 ``(C, S)``."""
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("flac", rate=sample_rate)
        stream.layout = layout
        data = np.round(np.clip(channels, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T.reshape(1, -1)), format="s16", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_click_reads_back_at_written_time(tmp_path: Path, suffix: str) -> None:
    # METHOD.md section 1: AAC priming must not shift audio; a click at 1.000 s reads back there.
    frames, audio = click_clip()
    path = tmp_path / f"click{suffix}"
    write_media(path, frames, audio, FPS, SR)
    media = read_media(path)
    assert media.frames.shape == (36, 32, 32, 3)
    assert media.audio.shape == (57600,)  # with video, audio spans the frames exactly
    assert media.audio_padded_seconds == 0.0
    peak = int(np.argmax(np.abs(media.audio)))
    onset = int(np.argmax(np.abs(media.audio) > 0.5 * np.abs(media.audio).max()))
    assert abs(peak - SR) <= ONE_MS and abs(onset - SR) <= ONE_MS
    # Audio alone covers the stream's declared extent: AAC's end padding (57,600 -> 58,368
    # decoded) is trimmed. Tolerance 1 ms; measured: exactly 57,600 for all three containers.
    alone = read_media(path, video=False).audio
    assert abs(len(alone) - 57600) <= ONE_MS
    assert abs(int(np.argmax(np.abs(alone))) - SR) <= ONE_MS
    # Frames come back in order (lossy codecs shift levels slightly).
    grey = media.frames.mean(axis=(1, 2, 3))
    assert np.all(np.abs(grey - np.arange(36) * 4) < 2)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_window_seeks_and_stays_aligned(tmp_path: Path, suffix: str) -> None:
    frames, audio = click_clip(seconds=6.0, click_at=4.0)
    path = tmp_path / f"long{suffix}"
    write_media(path, frames, audio, FPS, SR)
    media = read_media(path, start=3.5, duration=1.2)
    assert media.frames.shape[0] == 12 and media.audio.shape == (19200,)
    assert media.start == 3.5
    assert abs(int(np.argmax(np.abs(media.audio))) - round(0.5 * SR)) <= ONE_MS
    grey = media.frames.mean(axis=(1, 2, 3))
    assert np.all(np.abs(grey - np.arange(35, 47) * 4) < 2)


def test_stereo_48k_downmixed_by_channel_mean(tmp_path: Path) -> None:
    sr_in = 48000
    t = np.arange(3 * sr_in) / sr_in
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = 0.4 * np.sin(2 * np.pi * 440 * t)
    left[sr_in : sr_in + 48] += 0.5  # a 1 ms click in the left channel only, at 1.000 s
    path = tmp_path / "stereo.mkv"
    write_multichannel_audio(path, np.stack([left, right]).astype(np.float32), sr_in, "stereo")
    media = read_media(path, video=False)
    assert media.audio.shape == (3 * SR,)
    # Mean of channels: the shared tone keeps its 0.4 amplitude (ffmpeg's default downmix
    # would scale it by 1/sqrt(2) per channel and sum, giving 0.57).
    steady = media.audio[2 * SR : 3 * SR - 100]
    assert abs(np.abs(steady).max() - 0.4) < 0.01
    residual = media.audio - 0.4 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)
    onset = int(np.argmax(np.abs(residual[100:-100]) > 0.1)) + 100
    assert abs(onset - SR) <= ONE_MS


def test_surround_downmix_stays_in_range(tmp_path: Path) -> None:
    channels = np.full((6, SR), 0.8, np.float32)
    path = tmp_path / "surround.mkv"
    write_multichannel_audio(path, channels, SR, "5.1")
    audio = read_media(path, video=False).audio
    assert np.allclose(audio[100:-100], 0.8, atol=1e-3)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_shorter_than_video_is_zero_padded(tmp_path: Path, suffix: str) -> None:
    frames, _ = click_clip(seconds=2.0)
    audio = np.full(SR, 0.3, np.float32)
    path = tmp_path / f"short_audio{suffix}"
    write_media(path, frames, audio, FPS, SR)
    media = read_media(path)
    assert media.audio.shape == (2 * SR,)
    assert media.audio_padded_seconds == pytest.approx(1.0, abs=1e-3)
    assert np.all(media.audio[SR + ONE_MS :] == 0)
    assert np.abs(media.audio[ONE_MS * 10 : SR - ONE_MS * 10] - 0.3).max() < 0.02


def test_audio_starting_late_is_placed_by_timestamp(tmp_path: Path) -> None:
    # Video from 0 s, audio stream starting at 0.5 s: the audio keeps its place on the timeline.
    path = tmp_path / "late_audio.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("ffv1", rate=FPS)
        video.width, video.height, video.pix_fmt = 16, 16, "bgr0"
        sound = container.add_stream("flac", rate=SR)
        sound.layout = "mono"
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(code_frame(index), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = np.zeros(SR, np.int16)
        samples[SR // 2] = 30000  # at 0.5 s into the stream, i.e. 1.0 s on the timeline
        chunk = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = SR, SR // 2, Fraction(1, SR)
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    media = read_media(path)
    assert media.audio.shape == (2 * SR,)
    assert abs(int(np.argmax(np.abs(media.audio))) - SR) <= ONE_MS
    assert media.audio_padded_seconds == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("declare_rate", [True, False], ids=["vfr", "vfr-no-average-rate"])
def test_variable_frame_rate_resampled_by_timestamp(tmp_path: Path, declare_rate: bool) -> None:
    rng = np.random.default_rng(0)
    pts = np.cumsum(np.r_[0, rng.integers(20, 180, 30)]).tolist()  # irregular, in ms
    path = tmp_path / "vfr.mkv"
    write_video_at(path, pts, declare_rate)
    if not declare_rate:
        with av.open(str(path)) as container:
            assert container.streams.video[0].average_rate is None
    media = read_media(path, audio=False)
    got = [decode_code(image, len(pts)) for image in media.frames]
    # Output frame k shows the latest source frame with pts <= k / fps.
    expected = [int(np.searchsorted(pts, k * 1000 // FPS, side="right")) - 1 for k in range(len(got))]
    assert got == expected
    # Length: to the end of the last frame (its duration, else the last frame spacing).
    last_duration = (1000 / 30) if declare_rate else pts[-1] - pts[-2]
    assert len(got) == int((pts[-1] + last_duration) * FPS // 1000)


def test_frames_without_timestamps_use_the_stream_rate(tmp_path: Path) -> None:
    # A raw H.264 elementary stream has no container timestamps; ffmpeg assumes 25 fps.
    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv444p"
        stream.codec_context.options = {"qp": "0"}
        for index in range(50):
            frame = av.VideoFrame.from_ndarray(code_frame(index), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    media = read_media(path, audio=False)
    assert [decode_code(image, 50) for image in media.frames] == [round(k * 2.5 - 0.01) for k in range(20)]


@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 64)])
def test_non_square_source_is_centre_cropped(tmp_path: Path, height: int, width: int) -> None:
    frames = np.zeros((10, height, width, 3), np.uint8)
    frames[..., 0] = 255  # red everywhere...
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    frames[:, top : top + side, left : left + side] = (0, 255, 0)  # ...except the centre square
    path = tmp_path / "wide.mkv"
    write_media(path, frames, None, FPS, SR)
    media = read_media(path, size=32, audio=False)
    assert media.frames.shape == (10, 32, 32, 3)
    assert media.frames[..., 0].max() <= 2 and media.frames[..., 1].min() >= 253
    full = read_media(path, audio=False).frames
    assert full.shape == (10, height, width, 3)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_odd_sizes(tmp_path: Path, suffix: str) -> None:
    frames, audio = click_clip(seconds=1.0, click_at=0.5, size=(47, 65))
    path = tmp_path / f"odd{suffix}"
    write_media(path, frames, audio, FPS, SR)
    assert read_media(path).frames.shape == (10, 47, 65, 3)
    media = read_media(path, size=33)
    assert media.frames.shape == (10, 33, 33, 3) and media.audio.shape == (SR,)


def test_display_rotation_applied(tmp_path: Path) -> None:
    # A phone video stored landscape with a 90 degree display matrix plays as portrait.
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    frames[:, :4, :4] = 255  # marker in the stored top-left corner
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.set_display_rotation(90)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    image = read_media(path, audio=False).frames[0]
    assert image.shape == (48, 32, 3)
    # Rotating 90 degrees counter-clockwise moves the stored top-left corner to bottom-left.
    assert image[-4:, :4].mean() > 200 and image[:4, :4].mean() < 50


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    frames, audio = click_clip(seconds=1.0, click_at=0.5)
    path = tmp_path / "clip.mp4"
    write_media(path, frames, audio, FPS, SR)
    with pytest.raises(CmmdError, match="already exists"):
        write_media(path, frames, audio, FPS, SR)
    write_media(path, frames[:5], audio[: SR // 2], FPS, SR, overwrite=True)
    assert read_media(path).frames.shape[0] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp files left


def test_write_rejects_bad_arguments(tmp_path: Path) -> None:
    frames, audio = click_clip(seconds=1.0, click_at=0.5)
    with pytest.raises(CmmdError, match="cannot write"):
        write_media(tmp_path / "x.gif", frames, audio, FPS, SR)
    with pytest.raises(CmmdError, match="nothing to write"):
        write_media(tmp_path / "x.mp4", None, None, FPS, SR)
    with pytest.raises(CmmdError, match="uint8"):
        write_media(tmp_path / "x.mp4", frames.astype(np.float32), audio, FPS, SR)


BAD_FILES = {  # fixture name -> (MediaError.kind, words of the message)
    "zero_byte": ("empty", "empty file"),
    "corrupt": ("unreadable", "not a readable media file"),
    "truncated": ("truncated", "truncated or damaged"),
    "no_audio": ("no_audio", "no audio stream"),
    "no_video": ("no_video", "no video stream"),
    "unknown_codec": ("no_decoder", "no decoder for its video codec"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_clear_errors(bad_media: dict[str, Path], name: str) -> None:
    path = bad_media[name]
    with pytest.raises(MediaError) as info:
        read_media(path)
    kind, words = BAD_FILES[name]
    assert isinstance(info.value, CmmdError) and info.value.kind == kind
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="no such file"):
        read_media(tmp_path / "absent.mp4")
    with pytest.raises(CmmdError, match="no such file"):
        read_media(tmp_path)


def test_real_video_decodes(real_video: Path) -> None:
    media = read_media(real_video, size=64)
    # 132 frames at 25 fps = 5.28 s -> 52 whole frames at 10 fps; audio spans them.
    assert media.frames.shape == (52, 64, 64, 3)
    assert media.audio.shape == (52 * 1600,) and media.audio.dtype == np.float32
    assert media.audio_padded_seconds == 0.0
    assert np.sqrt(np.mean(media.audio**2)) > 1e-3
    assert np.abs(np.diff(media.frames.astype(np.float32), axis=0)).mean() > 1.0  # it moves
    alone = read_media(real_video, video=False)
    assert len(alone.audio) == round(5.312 * SR)  # the AAC track's declared length


def test_one_suffix_list_for_prepare_generate_and_evaluate(tmp_path: Path) -> None:
    """Ogg and MPEG files that `cmmd prepare` reads from a folder are also taken by `cmmd generate`
    and `cmmd evaluate` (they once had three lists that disagreed)."""
    from cmmd.data.prepare import find_videos
    from cmmd.eval.pairing import _media_files
    from cmmd.generation import media_files

    for name in ("a.ogv", "b.OGG", "c.mpg", "d.webm", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    videos = {p.name for p in find_videos(tmp_path)}
    assert videos == {"a.ogv", "b.OGG", "c.mpg", "d.webm"}
    assert {p.name for p in media_files([tmp_path])[0]} == videos
    assert {p.name for p in _media_files(tmp_path, "generated").values()} == videos
