"""Read and write audio-visual media files with PyAV, keeping audio sample-aligned with video.

Everything ffmpeg can demux and decode is readable. Time zero of a file is the start time of its
video stream (of its audio stream when it has no video), so audio that a muxer delays, an AAC
encoder primes (METHOD.md section 1) or a stream that starts late all land where a player would
play them: a click written at ``t`` reads back at ``t`` within a millisecond.

Shapes follow ``cmmd.conventions``: frames are ``uint8 (T, H, W, 3)``, audio is mono
``float32 (S,)`` in ``[-1, 1]``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from cmmd.conventions import FPS, SAMPLE_RATE, frames_to_samples, seconds_to_samples
from cmmd.errors import CmmdError

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m2v", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ogg", ".vob", ".mxf", ".dv", ".nut",
})
"""Containers that can hold video (``.ogg`` too: Theora), case-insensitive: what ``cmmd prepare`` reads."""
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif",
                            ".aiff", ".au"})
"""Audio-only formats (``.ogg`` is in both: an Ogg file may hold either)."""
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES
"""Every file ``cmmd generate`` and ``cmmd evaluate`` take from a folder."""

# A decoded frame counts as "at or before" an output time within this slack, so float error in
# ``start + k / fps`` never picks the previous frame for a frame that sits exactly on the grid.
_TIME_EPS = 1e-6
# Audio chunk timestamps that disagree with the running write position by less than this are
# treated as contiguous (container timestamp rounding, e.g. Matroska's 1 ms); larger jumps are
# real gaps or overlaps and the chunk is placed by its timestamp.
_AUDIO_JITTER_SECONDS = 0.002
# Decoded audio past a stream's declared end by at most this much is encoder padding (AAC: one
# 1024-sample frame, 0.128 s at 8 kHz), not content.
_MAX_PADDING_SECONDS = 0.2

_AvError = (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError)


class MediaError(CmmdError):
    """A file that cannot give the requested media; ``kind`` says why, for machine use:
    ``missing``, ``empty``, ``unreadable``, ``no_video``, ``no_audio``, ``no_decoder``,
    ``truncated``, ``no_frames`` or ``decode_error``."""

    def __init__(self, path: str | os.PathLike, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.kind, self.reason = str(path), kind, reason


@dataclass
class Media:
    """Decoded media: frames at ``fps`` and audio at ``sample_rate`` on a shared time axis.

    ``frames[k]`` shows time ``start + k / fps`` and ``audio[n]`` is time
    ``start + n / sample_rate``, both relative to the file's time zero. When both are present the
    audio spans exactly the frames: ``S == frames_to_samples(T, fps, sample_rate)``.
    """

    frames: np.ndarray | None
    audio: np.ndarray | None
    fps: float
    sample_rate: int
    source: str
    start: float = 0.0
    audio_padded_seconds: float = 0.0
    """Seconds of the returned audio that no decoded sample covered (zero-filled): audio that
    starts after the video, ends before it, or has gaps."""

    @property
    def duration(self) -> float:
        """Length in seconds (of the frames when present, else of the audio)."""
        if self.frames is not None:
            return len(self.frames) / self.fps
        return 0.0 if self.audio is None else len(self.audio) / self.sample_rate


def read_media(
    path: str | os.PathLike,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    size: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    video: bool = True,
    audio: bool = True,
) -> Media:
    """Decode ``[start, start + duration)`` of a media file into frames and mono audio.

    Video: output frame ``k`` (time ``start + k / fps``) is the latest decoded frame whose
    timestamp is at or before that time, so variable-frame-rate sources and sources without a
    declared rate resample correctly; ``T = floor(span * fps)`` whole output frames. With
    ``size`` each frame is centre-cropped to a square and area-resized to ``size x size``
    (pixels taken as square: a sample aspect ratio is ignored). Display rotation metadata (phone
    videos) is applied.

    Audio: all channels are averaged to mono and resampled to ``sample_rate``; samples are placed
    by timestamp. With video, audio is cut or zero-padded to the frames' span (see
    ``Media.audio_padded_seconds``); without, it covers the audio stream's declared extent (which
    drops AAC end padding).

    Raises ``CmmdError`` naming the file for a missing, empty, corrupt or undecodable file and for
    a requested stream the file lacks.
    """
    if not (video or audio):
        raise CmmdError(f"{path}: read_media needs video=True or audio=True")
    if fps <= 0 or sample_rate <= 0 or (size is not None and size <= 0):
        raise CmmdError(f"{path}: fps, sample_rate and size must be positive")
    if start < 0 or (duration is not None and duration <= 0):
        raise CmmdError(f"{path}: need start >= 0 and duration > 0, got {start}, {duration}")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "missing", "no such file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty", "empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except _AvError as exc:
        raise MediaError(path, "unreadable", f"not a readable media file ({_reason(exc)})") from None
    try:
        with container:
            return _read(container, path, fps, sample_rate, size, start, duration, video, audio)
    except CmmdError:
        raise
    except _AvError as exc:
        raise MediaError(path, "decode_error", f"decoding failed ({_reason(exc)})") from None


def write_media(
    path: str | os.PathLike,
    frames: np.ndarray | None,
    audio: np.ndarray | None,
    fps: float,
    sample_rate: int,
    overwrite: bool = False,
) -> None:
    """Encode frames ``uint8 (T, H, W, 3)`` and mono audio ``float32 (S,)`` into one file.

    The container follows the suffix: ``.mp4``/``.m4v`` -> H.264 (libx264, mpeg4 where the build
    lacks it) yuv420p + AAC, what every player reads; ``.mkv`` -> FFV1 RGB + FLAC, lossless both
    ways (internal clips, tests); ``.mov`` -> H.264 + 16-bit PCM. H.264 with an odd width or
    height is written as yuv444p, which yuv420p cannot hold. The file is written under a
    temporary name and renamed, so a crash never leaves a half file under ``path``; an existing
    ``path`` is an error unless ``overwrite``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CONTAINERS:
        raise CmmdError(f"{path}: cannot write '{suffix}' files; use one of {sorted(_CONTAINERS)}")
    if frames is None and audio is None:
        raise CmmdError(f"{path}: nothing to write (no frames and no audio)")
    if path.exists() and not overwrite:
        raise CmmdError(f"{path}: already exists (pass overwrite=True to replace it)")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise CmmdError(f"{path}: frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or len(audio) == 0:
            raise CmmdError(f"{path}: audio must be non-empty mono (S,), got shape {audio.shape}")
    fmt, video_codecs, audio_codec = _CONTAINERS[suffix]
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{suffix}")
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    try:
        with av.open(str(tmp), "w", format=fmt, options=options) as container:
            vstream = _add_video_stream(container, video_codecs, frames, fps) if frames is not None else None
            astream = _add_audio_stream(container, audio_codec, sample_rate) if audio is not None else None
            _encode(container, vstream, frames, astream, audio, fps, sample_rate)
        os.replace(tmp, path)
    except _AvError as exc:
        raise CmmdError(f"{path}: writing failed ({_reason(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


# suffix -> (container format, video encoders in preference order, audio encoder)
_CONTAINERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4"), "aac"),
    ".m4v": ("mp4", ("libx264", "mpeg4"), "aac"),
    ".mkv": ("matroska", ("ffv1",), "flac"),
    ".mov": ("mov", ("libx264", "mpeg4"), "pcm_s16le"),
}


def _reason(exc: BaseException) -> str:
    """A one-line reason from a PyAV/OS error, without the traceback."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _read(
    container: av.container.InputContainer,
    path: Path,
    fps: float,
    sample_rate: int,
    size: int | None,
    start: float,
    duration: float | None,
    want_video: bool,
    want_audio: bool,
) -> Media:
    """Decode the requested streams of an open container (see ``read_media``)."""
    vstream = container.streams.video[0] if container.streams.video else None
    astream = container.streams.audio[0] if container.streams.audio else None
    if vstream is None and astream is None:
        raise MediaError(path, "unreadable", "no audio or video streams (truncated, or not a media file)")
    if want_video and vstream is None:
        raise MediaError(path, "no_video", "no video stream")
    if want_audio and astream is None:
        raise MediaError(path, "no_audio", "no audio stream")
    for stream, wanted in ((vstream, want_video), (astream, want_audio)):
        if wanted and stream.codec_context is None:
            raise MediaError(path, "no_decoder", f"no decoder for its {stream.type} codec")
    anchor = vstream if vstream is not None else astream
    origin = _stream_start(anchor)
    seek = start > 0 and origin is not None
    wanted = (vstream if want_video else None, astream if want_audio else None)
    decoded = _decode(container, *wanted, fps, sample_rate, size, start, duration, origin, seek)
    if seek and not decoded.covers_start(start, sample_rate):
        # The demuxer's seek landed after ``start`` (imprecise index): decode from the beginning.
        container.seek(0)
        decoded = _decode(container, *wanted, fps, sample_rate, size, start, duration, origin, False)
    # Only MP4/MOV indexes declare exact stream durations; elsewhere they may be bitrate guesses.
    exact_durations = container.format.name.startswith("mov")
    if want_audio:
        decoded.trim_audio_padding(_declared_end(astream, decoded.origin), sample_rate)
    if exact_durations and duration is None:
        if want_video and decoded.video_end is not None:
            _check_complete(path, vstream, decoded.video_end, _declared_end(vstream, decoded.origin))
        if want_audio and decoded.placed:
            _check_complete(path, astream, decoded.audio_end / sample_rate, _declared_end(astream, decoded.origin))
    return decoded.to_media(path, fps, sample_rate, start, duration)


def _declared_end(stream: av.stream.Stream, origin: float) -> float | None:
    """End of a stream in seconds from time zero as its header declares it, if it does."""
    declared_start = _stream_start(stream)
    if declared_start is None or not stream.duration:
        return None
    return float(declared_start + stream.duration * stream.time_base) - origin


def _check_complete(path: Path, stream: av.stream.Stream, decoded_end: float, declared_end: float | None) -> None:
    """Raise for a stream that decodes well short of the duration its header declares
    (a truncated download or damaged file), rather than train on a silently shortened item."""
    if declared_end is not None and declared_end - decoded_end > 0.5 + 0.05 * declared_end:
        raise MediaError(path, "truncated", f"truncated or damaged: its {stream.type} stream declares "
                         f"{declared_end:.2f} s but only {max(decoded_end, 0.0):.2f} s decode")


def _stream_start(stream: av.stream.Stream | None) -> Fraction | None:
    """A stream's declared start time in seconds, or None when the container does not say."""
    if stream is None or stream.start_time is None or stream.time_base is None:
        return None
    return stream.start_time * stream.time_base


class _FrameConverter:
    """Decoded frame -> ``uint8 (H, W, 3)`` RGB, centre-cropped and resized when ``size`` is set.

    Cropping and scaling run inside an ffmpeg filter graph (crop, then area scaling, then RGB),
    so only the kept square is scaled and converted. The graph is rebuilt if the frame geometry
    changes mid-stream.
    """

    def __init__(self, size: int | None) -> None:
        self.size = size
        self._graph: av.filter.Graph | None = None
        self._key: tuple[int, int, str] | None = None
        # One reformatter for all frames keeps its swscale context (frame.to_ndarray builds one per call).
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            image = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        else:
            key = (frame.width, frame.height, frame.format.name)
            if key != self._key:
                self._graph, self._key = self._build(*key), key
            self._graph.push(frame)
            image = self._graph.pull().to_ndarray()
        turns = round((frame.rotation or 0) / 90) % 4
        # Centre crop commutes with quarter turns, so rotating the small square is enough.
        return np.ascontiguousarray(np.rot90(image, turns)) if turns else image

    def _build(self, width: int, height: int, pix_fmt: str) -> av.filter.Graph:
        side = min(width, height)
        graph = av.filter.Graph()
        graph.link_nodes(
            graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=Fraction(1, 1000)),
            graph.add("crop", f"{side}:{side}:{(width - side) // 2}:{(height - side) // 2}"),
            graph.add("scale", f"{self.size}:{self.size}:flags=area"),
            graph.add("format", "rgb24"),
            graph.add("buffersink"),
        ).configure()
        return graph


@dataclass
class _Decoded:
    """Raw decode results before they are cut to the requested span."""

    frames: list[np.ndarray] | None
    first_frame_time: float | None
    video_end: float | None  # seconds from time zero; None when decoding stopped before the end
    placed: list[tuple[int, np.ndarray]] | None  # (first sample from time zero, mono audio chunk)
    origin: float  # time zero in stream seconds

    @property
    def audio_end(self) -> int:
        """End of the decoded audio in samples from time zero."""
        pos, chunk = self.placed[-1]
        return pos + len(chunk)

    def covers_start(self, start: float, sample_rate: int) -> bool:
        """Whether decoding began at or before ``start`` (a seek did not overshoot it)."""
        if self.first_frame_time is not None and self.first_frame_time > start + _TIME_EPS:
            return False
        return not self.placed or self.placed[0][0] <= (start + 1e-3) * sample_rate

    def trim_audio_padding(self, declared_end: float | None, sample_rate: int) -> None:
        """Drop decoded samples past the stream's declared end when they are codec padding.

        AAC decodes whole 1024-sample frames, so up to a frame of encoder padding follows the
        real end (METHOD.md section 1: 57,600 samples read back as 58,368). An overshoot longer
        than ``_MAX_PADDING_SECONDS`` means the declaration is wrong instead, and is kept.
        """
        if not self.placed or declared_end is None:
            return
        stop = seconds_to_samples(declared_end, sample_rate)
        if 0 < self.audio_end - stop <= _MAX_PADDING_SECONDS * sample_rate:
            self.placed = [(pos, chunk[:max(stop - pos, 0)]) for pos, chunk in self.placed if pos < stop]

    def to_media(self, path: Path, fps: float, sample_rate: int, start: float, duration: float | None) -> Media:
        """Cut frames and audio to the requested span and assemble the ``Media``."""
        frames = None
        if self.frames is not None:
            if not self.frames:
                after = f" after {start} s" if start else ""
                raise MediaError(path, "no_frames", f"no decodable video frames{after}")
            frames = np.stack(self.frames)
        audio, padded = None, 0.0
        if self.placed is not None:
            first = seconds_to_samples(start, sample_rate)
            if frames is not None:
                num_samples = frames_to_samples(len(frames), fps, sample_rate)
            elif not any(len(chunk) for _, chunk in self.placed):
                raise MediaError(path, "no_frames", "no decodable audio")
            else:
                num_samples = self.audio_end - first
                if duration is not None:
                    num_samples = min(num_samples, seconds_to_samples(duration, sample_rate))
                if num_samples <= 0:
                    raise MediaError(path, "no_frames", f"no audio after {start} s")
            audio, missing = self._place_audio(first, num_samples)
            padded = missing / sample_rate
        return Media(frames, audio, float(fps), int(sample_rate), str(path), float(start), padded)

    def _place_audio(self, first: int, num_samples: int) -> tuple[np.ndarray, int]:
        """Samples ``[first, first + num_samples)`` of the timeline and how many were not decoded."""
        out = np.zeros(num_samples, np.float32)
        covered = np.zeros(num_samples, bool)
        for pos, chunk in self.placed:
            lo, hi = max(pos, first), min(pos + len(chunk), first + num_samples)
            if lo < hi:
                out[lo - first:hi - first] = chunk[lo - pos:hi - pos]
                covered[lo - first:hi - first] = True
        return out, int(num_samples - covered.sum())


def _place_chunks(chunks: list[tuple[int | None, np.ndarray]], origin: int, sample_rate: int
                  ) -> list[tuple[int, np.ndarray]]:
    """Write positions (samples from time zero ``origin``) for timestamped chunks: contiguous
    while timestamps agree with the running position up to container jitter, by timestamp
    across real gaps and overlaps."""
    jitter = math.ceil(_AUDIO_JITTER_SECONDS * sample_rate)
    placed, pos = [], None
    for stamp, chunk in chunks:
        if stamp is not None and (pos is None or abs(stamp - origin - pos) > jitter):
            pos = stamp - origin
        elif pos is None:
            pos = 0
        placed.append((pos, chunk))
        pos += len(chunk)
    return placed


class _FrameGrid:
    """Resamples decoded frames onto the output grid ``start + k / fps`` by timestamp.

    Output frame ``k`` is the latest frame with time at or before its grid time (the first frame
    for grid times before it). Only frames that are emitted are converted to RGB.
    """

    def __init__(self, fps: float, start: float, max_frames: int | None, size: int | None,
                 origin: float | None, nominal_rate: Fraction) -> None:
        self.fps, self.start, self.max_frames = fps, start, max_frames
        self.origin = origin  # time zero in stream seconds; None -> the first frame's time
        self.nominal_step = 1 / float(nominal_rate)
        self.convert = _FrameConverter(size)
        self.frames: list[np.ndarray] = []
        self.first_time: float | None = None
        self.end: float | None = None  # end of the last decoded frame, once decoding ran to it
        self._held: av.VideoFrame | None = None
        self._held_image: np.ndarray | None = None
        self._held_time = 0.0
        self._last_step: float | None = None

    @property
    def full(self) -> bool:
        """Whether every requested output frame has been emitted."""
        return self.max_frames is not None and len(self.frames) >= self.max_frames

    def push(self, frame: av.VideoFrame) -> None:
        """Emit the grid frames before ``frame``'s time, then hold ``frame``."""
        t = frame.time
        if t is None:  # no timestamp: assume it follows the previous frame at the last spacing
            t = self._held_time + (self._last_step or self.nominal_step) if self._held is not None else 0.0
        else:
            if self.origin is None:
                self.origin = t
            t -= self.origin
        if self._held is None:
            self.first_time, self._held, self._held_time = t, frame, t
        elif t > self._held_time:
            self._last_step = t - self._held_time
        self._emit_until(t)
        self._held, self._held_image, self._held_time = frame, None, t

    def finish(self) -> list[np.ndarray]:
        """Emit the grid frames up to the end of the last frame (its duration, else the last
        spacing, else the nominal rate) and return all output frames."""
        if self._held is not None and not self.full:
            step = _frame_seconds(self._held) or self._last_step or self.nominal_step
            self.end = self._held_time + step
            available = max(math.floor((self.end - self.start) * self.fps + _TIME_EPS), 0)
            self.max_frames = available if self.max_frames is None else min(self.max_frames, available)
            del self.frames[self.max_frames:]  # emitted on the fly, possibly into a partial last interval
            self._emit_until(math.inf)
        return self.frames

    def _emit_until(self, time: float) -> None:
        while not self.full and self.start + len(self.frames) / self.fps + _TIME_EPS < time:
            if self._held_image is None:
                self._held_image = self.convert(self._held)
            self.frames.append(self._held_image)


def _decode(
    container: av.container.InputContainer,
    vstream: av.stream.Stream | None,
    astream: av.stream.Stream | None,
    fps: float,
    sample_rate: int,
    size: int | None,
    start: float,
    duration: float | None,
    origin: Fraction | None,
    seek: bool,
) -> _Decoded:
    """One demux pass: video onto the output time grid, audio resampled and timestamped."""
    if seek:
        # Half a second early so audio packets interleaved just before the video keyframe come too.
        target = float(origin) + max(start - 0.5, 0.0)
        container.seek(int(target * av.time_base), backward=True, any_frame=False)
    end = None if duration is None else start + duration
    grid = None
    if vstream is not None:
        vstream.thread_type = "AUTO"
        max_frames = None if duration is None else math.floor(duration * fps + _TIME_EPS)
        nominal = vstream.average_rate or vstream.guessed_rate or Fraction(fps)
        grid = _FrameGrid(fps, start, max_frames, size, None if origin is None else float(origin), nominal)
    chunks: list[tuple[int | None, np.ndarray]] | None = None
    if astream is not None:
        chunks = []
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # keeps the channel layout
    audio_done = astream is None

    for packet in container.demux(*(s for s in (vstream, astream) if s is not None)):
        is_video = packet.stream is vstream
        if (grid.full if is_video else audio_done):
            continue
        try:
            decoded = packet.decode()
        except av.error.InvalidDataError:
            continue  # a damaged packet: skip it, as ffmpeg does, and keep the rest of the file
        for frame in decoded:
            if is_video:
                grid.push(frame)
            else:
                for out in resampler.resample(frame):
                    _collect_audio(out, chunks, sample_rate)
                audio_origin = float(origin) if origin is not None else (grid.origin if grid else None)
                if end is not None and frame.time is not None and audio_origin is not None:
                    audio_done = frame.time - audio_origin > end + 0.1
        if (grid is None or grid.full) and audio_done:
            break
    if astream is not None:
        for out in resampler.resample(None):
            _collect_audio(out, chunks, sample_rate)

    frames = grid.finish() if grid is not None else None
    origin_s = float(origin) if origin is not None else (grid.origin if grid is not None else None)
    if origin_s is None:
        origin_s = _first_audio_time(chunks, sample_rate)
    placed = None if chunks is None else _place_chunks(chunks, seconds_to_samples(origin_s, sample_rate), sample_rate)
    return _Decoded(frames, grid.first_time if grid else None, grid.end if grid else None, placed, origin_s)


def _frame_seconds(frame: av.VideoFrame) -> float | None:
    """A frame's own duration in seconds when the container records it."""
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    return None


def _collect_audio(frame: av.AudioFrame, chunks: list[tuple[int | None, np.ndarray]], sample_rate: int) -> None:
    """Append one resampled frame as (timestamp in output samples, channel mean)."""
    data = frame.to_ndarray()
    mono = data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data[0]
    time = frame.time  # float seconds: exact enough for sample indices of hours-long files
    chunks.append((None if time is None else seconds_to_samples(time, sample_rate), mono))


def _first_audio_time(chunks: list[tuple[int | None, np.ndarray]] | None, sample_rate: int) -> float:
    """Time zero for a file whose streams declare no start: its first audio timestamp."""
    for stamp, _ in chunks or ():
        if stamp is not None:
            return stamp / sample_rate
    return 0.0


def _add_video_stream(container: av.container.OutputContainer, codecs: tuple[str, ...], frames: np.ndarray,
                      fps: float) -> av.stream.Stream:
    """The first available encoder of ``codecs`` configured for ``frames``."""
    height, width = frames.shape[1:3]
    odd = width % 2 or height % 2
    rate = Fraction(fps).limit_denominator(1001)
    for name in codecs:
        if name not in av.codecs_available:
            continue
        if name == "ffv1":
            stream = container.add_stream(name, rate=rate)
            stream.pix_fmt = "bgr0"
        elif name == "libx264":
            stream = container.add_stream(name, rate=rate, options={"crf": "18", "preset": "fast"})
            stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        elif odd:
            continue  # mpeg4 holds only yuv420p, i.e. even sizes
        else:
            stream = container.add_stream(name, rate=rate)
            stream.pix_fmt = "yuv420p"
            # Fixed quantiser 2 (ffmpeg's ``-q:v 2``): near-transparent; lambda = qp * FF_QP2LAMBDA.
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = 2 * 118
        stream.width, stream.height = width, height
        stream.time_base = Fraction(1) / rate
        return stream
    raise CmmdError(f"{container.name}: no video encoder among {codecs} for a {width}x{height} frame")


def _add_audio_stream(container: av.container.OutputContainer, codec: str, sample_rate: int) -> av.stream.Stream:
    """A mono audio stream at ``sample_rate``."""
    stream = container.add_stream(codec, rate=sample_rate)
    stream.layout = "mono"
    if codec == "aac":
        stream.bit_rate = 128_000
    return stream


def _encode(container: av.container.OutputContainer, vstream: av.stream.Stream | None, frames: np.ndarray | None,
            astream: av.stream.Stream | None, audio: np.ndarray | None, fps: float, sample_rate: int) -> None:
    """Encode frame ``k`` at timestamp ``k`` of the ``1/fps`` time base and audio from time zero,
    interleaved frame by frame so players and demuxers never wait for one stream."""
    chunk = sample_rate if frames is None else max(frames_to_samples(1, fps, sample_rate), 1)  # audio samples per step
    steps = max(0 if frames is None else len(frames), 0 if audio is None else math.ceil(len(audio) / chunk))
    for k in range(steps):
        if vstream is not None and k < len(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[k]), format="rgb24")
            frame.pts = k
            container.mux(vstream.encode(frame))
        if astream is not None and k * chunk < len(audio):
            piece = audio[k * chunk:(k + 1) * chunk]
            container.mux(astream.encode(_audio_frame(astream, piece, k * chunk, sample_rate)))
    for stream in (vstream, astream):
        if stream is not None:
            container.mux(stream.encode(None))


def _audio_frame(stream: av.stream.Stream, audio: np.ndarray, first_sample: int, sample_rate: int) -> av.AudioFrame:
    """Mono float audio as a frame in the encoder's sample format, stamped at ``first_sample``."""
    fmt = stream.format.name
    clipped = np.clip(audio, -1.0, 1.0)
    if fmt.startswith("s16"):
        data = np.round(clipped * 32767).astype(np.int16)
    elif fmt.startswith("s32"):
        data = np.round(clipped.astype(np.float64) * 2147483647).astype(np.int32)
    else:
        data = clipped.astype(np.float32)
    frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = first_sample
    frame.time_base = Fraction(1, sample_rate)
    return frame
