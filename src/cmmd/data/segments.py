"""Cut long videos into fixed-length evaluation clips (``cmmd real-media cut SRC DEST --seconds S``).

Every video file directly in ``SRC`` (the suffixes ``cmmd prepare`` reads) becomes consecutive,
non-overlapping segments of exactly ``S`` seconds, ``DEST/<stem>-s<NNN>.mp4`` numbered from 1
(segment ``n`` is ``[(n - 1) S, n S)`` of the source); the last partial segment is dropped. The
names pair a generated clip with its reference in ``cmmd evaluate`` and never end in ``__g<k>``.

Each file is decoded once. Time zero is the one :func:`cmmd.data.media.read_media` uses (the
video stream's start), so segment ``n`` holds what ``read_media(src, start=(n - 1) S,
duration=S)`` reads. Video: a constant frame rate, the source's (ffmpeg's guess, at most 1001 as
denominator); output frame ``k`` of a segment shows the latest source frame at or before its
time; pixels made square (sample aspect ratio), display rotation applied, scaled down so the
longer side is at most ``max_size`` (even width and height), H.264 yuv420p. Audio: channels
averaged to mono at the source rate (the nearest AAC rate above it if AAC lacks it), placed by
timestamp (gaps zero-filled), AAC. Both streams start at the segment's ``t = 0`` and last ``S``
seconds up to one frame (``round(S * fps)`` frames) and one AAC packet of padding.

Output bytes are deterministic for one PyAV/FFmpeg build: libx264 runs single-threaded with fixed
settings and without its macroblock tree (which made repeated encodes differ), so cutting twice
writes identical files, and ``DEST/segments.json`` records each
segment's sha256. An existing file with other content is never replaced unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Media I/O conventions shared with read_media (same package): grid slack, audio jitter, errors.
from cmmd.data.media import (_AUDIO_JITTER_SECONDS, _TIME_EPS, VIDEO_SUFFIXES, _AvError, _frame_seconds, _reason,
                             _stream_start)
from cmmd.errors import CmmdError

MANIFEST = "segments.json"
DEFAULT_MAX_SIZE = 256
# x264's output depends on its thread count, so one thread; and with its macroblock tree on, 2 of 40
# encodes of the same frames in one process differed in one packet (mbtree=0: 150 of 150 identical).
_VIDEO_OPTIONS = {"crf": "18", "preset": "fast", "threads": "1", "x264-params": "mbtree=0"}
_AUDIO_BIT_RATE = 128_000


@dataclass(frozen=True)
class Segment:
    """One written clip: ``DEST/<file>`` is ``[start, start + seconds)`` of ``SRC/<source>``."""

    file: str
    source: str
    index: int
    start: float
    seconds: float
    sha256: str


@dataclass
class FileOutcome:
    """What became of one source file: its segments, and why it gave none or stopped early
    (``reason``: unreadable, no audio/video stream, shorter than a segment, decoding failed);
    ``seconds`` is how much of it decoded."""

    source: str
    segments: list[Segment] = field(default_factory=list)
    seconds: float = 0.0
    reason: str | None = None


@dataclass
class CutResult:
    """Per source file outcomes, how many segment files were written or kept (already there and
    identical), and ``.mp4`` files in DEST that ``segments.json`` does not list."""

    files: list[FileOutcome]
    written: int = 0
    kept: int = 0
    unlisted: list[str] = field(default_factory=list)

    @property
    def segments(self) -> list[Segment]:
        return [s for f in self.files for s in f.segments]


def segment_name(stem: str, index: int) -> str:
    """``<stem>-s<NNN>.mp4``: segment ``index`` (from 1) of the source named ``stem``."""
    return f"{stem}-s{index:03d}.mp4"


def find_sources(src: Path) -> list[Path]:
    """Video files directly in ``src`` by suffix (case-insensitive), sorted; hidden entries skipped."""
    return sorted(p for p in src.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)


def cut_folder(src: Path, dest: Path, seconds: float, max_size: int = DEFAULT_MAX_SIZE,
               overwrite: bool = False) -> CutResult:
    """Cut every video in ``src`` into ``seconds``-long segments in ``dest`` and write
    ``dest/segments.json``. Files that cannot be read, lack a stream or are shorter than a
    segment are listed in the result (and the manifest) and skipped; raises ``CmmdError`` for bad
    arguments, for an existing different file (unless ``overwrite``) and when no segment results."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise CmmdError(f"--seconds must be a positive number of seconds, got {seconds}")
    if max_size < 2:
        raise CmmdError(f"--max-size must be at least 2 pixels, got {max_size}")
    if not src.is_dir():
        raise CmmdError(f"{src}: no such folder")
    sources = find_sources(src)
    if not sources:
        raise CmmdError(f"no video files directly in {src} ({', '.join(sorted(VIDEO_SUFFIXES))}); nothing to cut")
    if dest.resolve() == src.resolve():
        raise CmmdError(f"{dest}: write the segments to another folder than the sources'")
    stems: dict[str, list[str]] = {}
    for path in sources:
        stems.setdefault(path.stem, []).append(path.name)
    clashes = [names for names in stems.values() if len(names) > 1]
    if clashes:
        raise CmmdError(f"{src}: files with the same name would give the same segment names: "
                        f"{'; '.join(', '.join(names) for names in clashes)}; rename one of each")
    dest.mkdir(parents=True, exist_ok=True)
    result = CutResult([])
    for path in sources:
        outcome = FileOutcome(path.name)
        result.files.append(outcome)
        try:
            container = av.open(str(path), metadata_errors="ignore")
        except _AvError as exc:
            outcome.reason = f"not a readable media file ({_reason(exc)})"
            continue
        with container:
            try:
                _cut_file(container, path, dest, seconds, max_size, overwrite, outcome, result)
            except _AvError as exc:
                after = f" after segment {len(outcome.segments)}" if outcome.segments else ""
                outcome.reason = f"decoding failed{after} ({_reason(exc)})"
        if not outcome.segments and outcome.reason is None:
            outcome.reason = f"shorter than {seconds:g} s ({outcome.seconds:.2f} s)"
    if not result.segments:
        raise CmmdError(f"no segments of {seconds:g} s from {src}: " +
                        "; ".join(f"{f.source}: {f.reason}" for f in result.files))
    manifest = {
        "seconds": seconds, "max_size": max_size,
        "segments": [asdict(s) for s in result.segments],
        "skipped": [{"source": f.source, "reason": f.reason} for f in result.files if f.reason],
    }
    _place(dest / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode(), overwrite)
    listed = {s.file for s in result.segments}
    result.unlisted = sorted(p.name for p in dest.glob("*.mp4") if p.name not in listed and not p.name.startswith("."))
    return result


def _place(target: Path, data: bytes, overwrite: bool) -> bool:
    """Write ``data`` to ``target`` unless it already holds exactly that; returns whether it wrote.
    Other existing content is an error unless ``overwrite``."""
    tmp = _partial(target)
    try:
        tmp.write_bytes(data)
        return _settle(tmp, target, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _partial(target: Path) -> Path:
    """A hidden temporary name beside ``target``, so a crash never leaves a half file under its name."""
    return target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")


def _settle(tmp: Path, target: Path, overwrite: bool) -> bool:
    """Move the finished ``tmp`` to ``target`` unless ``target`` already holds the same bytes
    (then ``tmp`` is left for the caller to delete); returns whether it moved. Other existing
    content is an error unless ``overwrite``."""
    if target.exists():
        if target.read_bytes() == tmp.read_bytes():
            return False
        if not overwrite:
            raise CmmdError(f"{target}: already exists with other content; pass --overwrite to replace it")
    os.replace(tmp, target)
    return True


def _cut_file(container: av.container.InputContainer, path: Path, dest: Path, seconds: float, max_size: int,
              overwrite: bool, outcome: FileOutcome, result: CutResult) -> None:
    """Decode ``container`` once and write each segment as soon as both of its streams are complete."""
    if not container.streams.video or not container.streams.audio:
        outcome.reason = f"no {'video' if not container.streams.video else 'audio'} stream"
        return
    vstream, astream = container.streams.video[0], container.streams.audio[0]
    if vstream.codec_context is None or astream.codec_context is None:
        outcome.reason = f"no decoder for its {'video' if vstream.codec_context is None else 'audio'} codec"
        return
    rate = _frame_rate(vstream)
    if rate is None:
        outcome.reason = "its video stream declares no frame rate"
        return
    vstream.thread_type = "AUTO"  # decoding is bit-exact whatever the thread count
    timeline = _Timeline(seconds, rate, aac_sample_rate(astream.codec_context.sample_rate), max_size,
                         vstream.sample_aspect_ratio or vstream.codec_context.sample_aspect_ratio,
                         None if (start := _stream_start(vstream)) is None else float(start))

    def write_ready(at_end: bool = False) -> None:
        for index, frames, audio in timeline.ready(at_end):
            name = segment_name(path.stem, index + 1)
            tmp = _partial(dest / name)
            try:
                try:
                    _encode(tmp, frames, audio, rate, timeline.sample_rate)
                    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
                    moved = _settle(tmp, dest / name, overwrite)
                except _AvError as exc:  # not the source's fault: a full disk, a read-only DEST
                    raise CmmdError(f"{dest / name}: writing failed ({_reason(exc)})") from None
                result.written += moved
                result.kept += not moved
            finally:
                tmp.unlink(missing_ok=True)
            outcome.segments.append(Segment(name, path.name, index + 1, round(index * seconds, 6), seconds, digest))

    for packet in container.demux(vstream, astream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue  # a damaged packet: skip it, as ffmpeg and read_media do
        for frame in frames:
            if packet.stream is vstream:
                timeline.push_video(frame)
            else:
                timeline.push_audio(frame)
        write_ready()
    timeline.finish()
    write_ready(at_end=True)
    outcome.seconds = timeline.decoded_seconds


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The output frame rate: ffmpeg's guess for the stream (else its average rate), as a
    fraction with a denominator of at most 1001 (30000/1001 stays exact)."""
    rate = stream.guessed_rate or stream.average_rate
    return Fraction(rate).limit_denominator(1001) if rate else None


def aac_sample_rate(sample_rate: int) -> int:
    """The source's sample rate when the AAC encoder takes it, else the next higher rate it takes."""
    rates = sorted(av.Codec("aac", "w").audio_rates or (sample_rate,))
    return next((r for r in rates if r >= sample_rate), rates[-1])


def output_size(width: float, height: float, max_size: int) -> tuple[int, int]:
    """Even ``(width, height)`` for a picture of that display size, scaled down (never up) so the
    longer side is at most ``max_size``: the longer side rounded down to even, the shorter to the
    nearest even number (at least 2)."""
    scale = min(1.0, max_size / max(width, height))
    longest = max(2, 2 * math.floor(max(width, height) * scale / 2 + _TIME_EPS))
    w, h = (min(longest, max(2, 2 * math.floor(side * scale / 2 + 0.5))) for side in (width, height))
    return w, h


class _Converter:
    """Decoded frame -> ``uint8 (H * 3 / 2, W)`` yuv420p planes: square pixels, rotated for
    display like :func:`cmmd.data.media.read_media` (``np.rot90`` by the frame's quarter turns),
    scaled down to at most ``max_size`` with area averaging. Rebuilt if the geometry changes."""

    def __init__(self, max_size: int, sample_aspect: Fraction | None) -> None:
        self.max_size, self.sample_aspect = max_size, sample_aspect
        self._graph: av.filter.Graph | None = None
        self._key: tuple | None = None
        self.size: tuple[int, int] | None = None  # output (width, height), fixed by the first frame

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        turns = round((frame.rotation or 0) / 90) % 4
        key = (frame.width, frame.height, frame.format.name, turns)
        if key != self._key:
            self._graph, self._key = self._build(*key), key
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()

    def _build(self, width: int, height: int, pix_fmt: str, turns: int) -> av.filter.Graph:
        if self.size is None:
            square = (width * float(self.sample_aspect or 1), height)
            self.size = output_size(*(square[::-1] if turns % 2 else square), self.max_size)
        out_w, out_h = self.size[::-1] if turns % 2 else self.size
        graph = av.filter.Graph()
        # np.rot90 turns counter-clockwise; so does transpose=cclock.
        rotate = {1: [("transpose", "cclock")], 2: [("hflip", ""), ("vflip", "")], 3: [("transpose", "clock")]}
        nodes = [graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=Fraction(1, 1000)),
                 graph.add("scale", f"{out_w}:{out_h}:flags=area"),
                 *(graph.add(name, args) for name, args in rotate.get(turns, [])),
                 graph.add("format", "yuv420p"), graph.add("buffersink")]
        graph.link_nodes(*nodes).configure()
        return graph


class _Timeline:
    """Routes one file's decoded frames and audio into consecutive ``seconds``-long segments.

    Segment ``i`` is ``[i S, (i + 1) S)`` from time zero: ``round(S * rate)`` frames, frame ``k``
    showing the latest decoded frame at or before ``i S + k / rate`` (the first frame for times
    before it), and audio samples ``[round(i S sr), round((i + 1) S sr))``.
    """

    def __init__(self, seconds: float, rate: Fraction, sample_rate: int, max_size: int,
                 sample_aspect: Fraction | None, origin: float | None) -> None:
        self.seconds, self.rate, self.sample_rate = seconds, rate, sample_rate
        self.frames_per_segment = max(round(seconds * rate), 1)
        self.origin = origin  # time zero in stream seconds; None -> the first video frame's time
        self.convert = _Converter(max_size, sample_aspect)
        self.resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # keeps the channel layout
        self.frames: dict[int, list[np.ndarray]] = {}
        self.audio: dict[int, np.ndarray] = {}
        self.next_frame = 0  # global output frame index: segment next // F, frame next % F
        self.held: av.VideoFrame | None = None
        self.held_image: np.ndarray | None = None
        self.held_time = 0.0
        self.last_step: float | None = None
        self.video_end = 0.0  # seconds from time zero covered by emitted frames' source
        self.audio_pos: int | None = None  # where the next contiguous audio sample goes
        self.audio_end = 0  # end of the placed audio, samples from time zero
        self.pending: list[av.AudioFrame] = []  # audio decoded before time zero was known

    @property
    def decoded_seconds(self) -> float:
        return min(self.video_end, self.audio_end / self.sample_rate)

    def _grid_time(self, n: int) -> float:
        segment, k = divmod(n, self.frames_per_segment)
        return segment * self.seconds + float(k / self.rate)

    def _segment_samples(self, index: int) -> tuple[int, int]:
        return (round(index * self.seconds * self.sample_rate), round((index + 1) * self.seconds * self.sample_rate))

    def push_video(self, frame: av.VideoFrame) -> None:
        """Emit the grid frames before ``frame``'s time (the held frame shows them), then hold it."""
        t = frame.time
        if t is None:  # no timestamp: assume it follows the previous frame at the last spacing
            t = self.held_time + (self.last_step or float(1 / self.rate)) if self.held is not None else 0.0
        else:
            if self.origin is None:
                self.origin = t
            t -= self.origin
        if self.pending:
            frames, self.pending = self.pending, []
            for audio in frames:
                self.push_audio(audio)
        if self.held is None:
            self.held, self.held_time = frame, t
        elif t > self.held_time:
            self.last_step = t - self.held_time
        self._emit_until(t)
        self.held, self.held_image, self.held_time = frame, None, t
        self.video_end = max(self.video_end, t)

    def push_audio(self, frame: av.AudioFrame | None) -> None:
        """Resample ``frame`` (None flushes) and place its samples by timestamp."""
        if self.origin is None and frame is not None:
            self.pending.append(frame)
            return
        jitter = math.ceil(_AUDIO_JITTER_SECONDS * self.sample_rate)
        for out in self.resampler.resample(frame):
            data = out.to_ndarray()
            mono = data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data[0].astype(np.float32)
            if out.time is not None:
                stamp = round((out.time - (self.origin or 0.0)) * self.sample_rate)
                if self.audio_pos is None or abs(stamp - self.audio_pos) > jitter:
                    self.audio_pos = stamp
            elif self.audio_pos is None:
                self.audio_pos = 0
            self._place_audio(self.audio_pos, mono)
            self.audio_pos += len(mono)

    def _place_audio(self, pos: int, mono: np.ndarray) -> None:
        end = pos + len(mono)
        per_segment = self.seconds * self.sample_rate
        index = max(math.floor(max(pos, 0) / per_segment) - 1, 0)
        while True:
            lo, hi = self._segment_samples(index)
            if lo >= end:
                break
            a, b = max(lo, pos), min(hi, end)
            if a < b:
                buffer = self.audio.setdefault(index, np.zeros(hi - lo, np.float32))
                buffer[a - lo:b - lo] = mono[a - pos:b - pos]
            index += 1
        self.audio_end = max(self.audio_end, end)

    def _emit_until(self, time: float) -> None:
        while self._grid_time(self.next_frame) + _TIME_EPS < time:
            if self.held_image is None:
                self.held_image = self.convert(self.held)
            self.frames.setdefault(self.next_frame // self.frames_per_segment, []).append(self.held_image)
            self.next_frame += 1

    def finish(self) -> None:
        """Flush the audio resampler and emit the grid frames up to the end of the last frame
        (its duration, else the last spacing, else one frame at the output rate)."""
        if self.origin is None:
            self.origin = 0.0
        if self.pending:  # audio only decoded: place it so the outcome reports its length
            frames, self.pending = self.pending, []
            for audio in frames:
                self.push_audio(audio)
        self.push_audio(None)
        if self.held is not None:
            step = _frame_seconds(self.held) or self.last_step or float(1 / self.rate)
            self.video_end = self.held_time + step
            self._emit_until(self.video_end)

    def ready(self, at_end: bool) -> Iterator[tuple[int, list[np.ndarray], np.ndarray]]:
        """Pop the segments whose frames and audio are complete: ``(index, frames, audio)``. At
        the end, audio that stops less than one output frame short is zero-filled."""
        slack = round(self.sample_rate / self.rate) if at_end else 0
        for index in sorted(self.frames):
            frames = self.frames[index]
            if len(frames) < self.frames_per_segment or self.audio_end + slack < self._segment_samples(index)[1]:
                continue
            lo, hi = self._segment_samples(index)
            del self.frames[index]
            yield index, frames, self.audio.pop(index, np.zeros(hi - lo, np.float32))
        if at_end:
            self.frames.clear()
            self.audio.clear()


def _encode(path: Path, frames: list[np.ndarray], audio: np.ndarray, rate: Fraction, sample_rate: int) -> None:
    """Write ``path`` (MP4): yuv420p ``frames`` (each ``uint8 (H * 3 / 2, W)``) at ``rate`` from time zero
    (H.264) and mono ``audio`` ``float32 (S,)`` spread over them (AAC), interleaved frame by frame."""
    height, width = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=rate, options=dict(_VIDEO_OPTIONS))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = 1 / rate
        sound = out.add_stream("aac", rate=sample_rate)
        sound.layout, sound.bit_rate = "mono", _AUDIO_BIT_RATE
        bounds = [len(audio) * k // len(frames) for k in range(len(frames) + 1)]
        for k, image in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(image, format="yuv420p")
            picture.pts = k
            out.mux(video.encode(picture))
            if bounds[k + 1] > bounds[k]:
                chunk = av.AudioFrame.from_ndarray(np.clip(audio[None, bounds[k]:bounds[k + 1]], -1, 1),
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, bounds[k], Fraction(1, sample_rate)
                out.mux(sound.encode(chunk))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))

