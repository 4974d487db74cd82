"""Put one file's video stream and another file's audio stream into one MP4, as they are.

``cmmd generate`` gives back the user's own video (its size, frame rate and aspect) with the
generated sound, or the user's own audio track with the generated video. Packets are copied;
a stream is re-encoded (H.264 at its own size and rate, or AAC at its own rate and channel layout)
only when the MP4 muxer refuses its codec (FFV1, Theora, ...). Time zero of each file is the
one :func:`cmmd.data.media.read_media` uses (the video stream's start, else the audio's), so
what the model saw and what the output plays line up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import av

from cmmd.errors import CmmdError

Kind = Literal["video", "audio"]
_AvError = (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError)


def combine_streams(path: Path, video_from: Path, audio_from: Path, seconds: float,
                    overwrite: bool = False) -> dict[Kind, str]:
    """Write ``path`` (.mp4): the video stream of ``video_from`` and the audio stream of
    ``audio_from``, each from its file's time zero for ``seconds`` (cut at the first packet that
    decodes at or after the end, as ``ffmpeg -t -c copy`` does). Returns how each stream got
    there: ``{"video": "copied" | "re-encoded", "audio": ...}``."""
    if path.suffix.lower() != ".mp4":
        raise CmmdError(f"{path}: combine_streams writes .mp4 files")
    if path.exists() and not overwrite:
        raise CmmdError(f"{path}: already exists (pass overwrite=True to replace it)")
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.mp4")
    last: BaseException | None = None
    for copy_video, copy_audio in ((True, True), (False, True), (True, False), (False, False)):
        try:
            with (av.open(str(video_from), metadata_errors="ignore") as vsrc,
                  av.open(str(audio_from), metadata_errors="ignore") as asrc,
                  av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out):
                # Every stream is added before the first packet: the muxer writes its header then.
                writers = [_add(out, vsrc, video_from, "video", seconds, copy_video),
                           _add(out, asrc, audio_from, "audio", seconds, copy_audio)]
                for write in writers:
                    write()
            os.replace(tmp, path)
            return {"video": "copied" if copy_video else "re-encoded", "audio": "copied" if copy_audio else "re-encoded"}
        except _AvError as exc:
            last = exc
        finally:
            tmp.unlink(missing_ok=True)
    raise CmmdError(f"{path}: could not write the {video_from.name} video with the {audio_from.name} audio ({last})")


def _origin(container: av.container.InputContainer) -> float:
    anchor = container.streams.video[0] if container.streams.video else container.streams.audio[0]
    if anchor.start_time is None or anchor.time_base is None:
        return 0.0
    return float(anchor.start_time * anchor.time_base)


def _add(out: av.container.OutputContainer, src: av.container.InputContainer, source: Path, kind: Kind,
         seconds: float, copy: bool) -> Callable[[], None]:
    """Add an output stream for the first ``kind`` stream of ``src``; returns what muxes its
    first ``seconds`` (copied packets or re-encoded frames)."""
    streams = src.streams.video if kind == "video" else src.streams.audio
    if not streams:
        raise CmmdError(f"{source}: no {kind} stream")
    stream, origin = streams[0], _origin(src)
    end, shift = origin + seconds, round(origin / stream.time_base)
    if copy:
        target = out.add_stream_from_template(stream)
        target.time_base = stream.time_base
        return lambda: _copy(out, src, stream, target, shift, end)
    if kind == "video":
        ctx = stream.codec_context
        target = out.add_stream("libx264", rate=stream.average_rate or stream.guessed_rate or 25,
                                options={"crf": "18", "preset": "fast"})
        target.width, target.height = ctx.width, ctx.height
        target.pix_fmt = "yuv444p" if ctx.width % 2 or ctx.height % 2 else "yuv420p"
        if ctx.sample_aspect_ratio:
            target.codec_context.sample_aspect_ratio = ctx.sample_aspect_ratio
    else:
        target = out.add_stream("aac", rate=stream.codec_context.sample_rate)
        target.layout = stream.codec_context.layout.name
    target.codec_context.time_base = stream.time_base
    return lambda: _reencode(out, src, stream, target, shift, end)


def _copy(out: av.container.OutputContainer, src: av.container.InputContainer, stream: av.stream.Stream,
          target: av.stream.Stream, shift: int, end: float) -> None:
    for packet in src.demux(stream):
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None:  # the demuxer's final empty packet
            continue
        if stamp * stream.time_base >= end:
            break
        packet.pts = None if packet.pts is None else packet.pts - shift
        packet.dts = None if packet.dts is None else packet.dts - shift
        packet.stream = target
        out.mux(packet)


def _reencode(out: av.container.OutputContainer, src: av.container.InputContainer, stream: av.stream.Stream,
              target: av.stream.Stream, shift: int, end: float) -> None:
    for frame in src.decode(stream):
        if frame.pts is None:
            continue
        if frame.pts * stream.time_base >= end:
            break
        pts = frame.pts - shift
        if stream.type == "video":
            frame = frame.reformat(format=target.pix_fmt)
        frame.pts, frame.time_base = pts, stream.time_base
        out.mux(target.encode(frame))
    out.mux(target.encode(None))
