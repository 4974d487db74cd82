"""From media files to generated media files: read, generate, trim, write. One path for
``cmmd generate``, the study's generation task and the web app.

:func:`generate_files` reads each input at the model's frame rate, sample rate and size,
generates the other modality (:meth:`Pipeline.generate`) and cuts the audio to the frames' span;
an input that cannot be used (unreadable, missing the stream its mode needs, too short, a name
taken by an earlier input) becomes a :class:`Skipped` with its reason, never an exception.
For one input at a time (the web app): :func:`read_input` reads and checks a file,
:func:`generate_sample` generates from the condition in memory (with a per-step callback).
:func:`write_sample` writes one result into a folder::

    OUT/<name>.mp4              v2a: the input's own video stream (its size, rate, aspect) + generated audio
                                a2v: generated video + the input's own audio track
                                joint: both generated
    OUT/<name>.json             sampling settings, source, model, how each stream was written
    OUT/<name>_spec.png         log-mel spectrograms: condition (or the input's own sound) / generated
    OUT/condition/<name>.mp4    v2a: the frames the model saw (.mkv for a2v: the audio it heard)
    OUT/model_res/<name>.mp4    only with ``model_res``: the output at the model's size and rates

Only media files sit directly in OUT, one per input named like it, so OUT pairs with the input
folder under ``cmmd evaluate``'s rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cmmd.conventions import HOP, frames_to_samples, samples_to_frames
from cmmd.data.failures import Skipped
from cmmd.data.media import MEDIA_SUFFIXES, MediaError, read_media, write_media
from cmmd.data.mux import combine_streams
from cmmd.errors import CmmdError
from cmmd.eval.plots import save_spectrograms
from cmmd.diffusion.samplers import Callback
from cmmd.pipeline import Generated, Mode, Pipeline, SamplingSettings

MIN_FRAMES = 2  # the model needs some time to work with: 0.2 s at 10 fps


@dataclass
class Sample:
    """One generated item at the model's frame rate, sample rate and size.

    ``frames`` uint8 (T, H, W, 3): the condition as read (v2a) or generated (a2v, joint);
    ``wave`` float32 (S,): generated (v2a, joint) or the condition as read (a2v), cut to the
    frames' span (``S <= round(T * sample_rate / fps)``); ``panels``: titled log-mels
    (n_mels, L) for the spectrogram figure; ``outputs``: what :func:`write_sample` wrote.
    """

    name: str
    source: Path | None
    mode: Mode
    frames: np.ndarray
    wave: np.ndarray
    panels: list[tuple[str, np.ndarray]]
    settings: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class Generation:
    """What a call produced: samples in input order, failures, and the sampler's wall time."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


def media_files(inputs: Sequence[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given, and the media files (by suffix) directly inside each given folder, as
    ``cmmd evaluate`` reads a folder; a path that does not exist is a failure."""
    files: list[Path] = []
    failures: list[Skipped] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            failures.append(Skipped(path, "missing", "no such file or folder"))
    return files, failures


def trim_to_frames(wave: np.ndarray, num_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """``wave`` (S,) cut to the span of ``num_frames`` video frames from time zero."""
    return wave[: frames_to_samples(num_frames, fps, sample_rate)]


def read_input(pipe: Pipeline, mode: Literal["v2a", "a2v"], path: Path, seconds: float | None = None
               ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """The condition of ``path`` (its first ``seconds``, default all of it) as the model takes it
    (frames (T, H, W, 3) or wave (S,) spanning whole frames) and spectrogram panels of the sound it
    brings. Raises :class:`MediaError` (with ``reason`` for people) for a file that cannot be used."""
    if mode == "v2a":
        frames = read_media(path, fps=pipe.fps, sample_rate=pipe.sample_rate, size=pipe.size, duration=seconds,
                            audio=False).frames
        assert frames is not None
        if len(frames) < MIN_FRAMES:
            raise MediaError(path, "too_short", f"video->audio needs at least {MIN_FRAMES / pipe.fps:.1f} s of video")
        try:  # the input's own sound, when it has one, beside the generated one
            own = read_media(path, fps=pipe.fps, sample_rate=pipe.sample_rate, duration=len(frames) / pipe.fps,
                             video=False).audio
        except CmmdError:
            return frames, []
        assert own is not None
        return frames, [("the input's own sound", pipe.log_mel(own[None])[0].cpu().numpy())]
    wave = read_media(path, fps=pipe.fps, sample_rate=pipe.sample_rate, duration=seconds, video=False).audio
    assert wave is not None
    num_frames = samples_to_frames(len(wave), pipe.fps, pipe.sample_rate)
    if num_frames < MIN_FRAMES:
        raise MediaError(path, "too_short", f"audio->video needs at least {MIN_FRAMES / pipe.fps:.1f} s of audio")
    wave = trim_to_frames(wave, num_frames, pipe.fps, pipe.sample_rate)
    return wave, [("condition (input audio)", pipe.log_mel(wave[None])[0].cpu().numpy())]


def _sample(pipe: Pipeline, gen: Generated, i: int, name: str, source: Path | None, condition: np.ndarray | None,
            panels: list[tuple[str, np.ndarray]]) -> Sample:
    """Item ``i`` of ``gen`` as a :class:`Sample`: the condition and the generated stream, the
    sound cut to the frames' span, the generated sound's log-mel added to ``panels`` (v2a, joint)."""
    mode = gen.settings["mode"]
    if mode == "a2v":
        assert condition is not None
        frames = gen.frames[i]
        wave = trim_to_frames(condition, len(frames), pipe.fps, pipe.sample_rate)
    else:
        frames = gen.frames[i] if condition is None else condition
        wave = trim_to_frames(gen.wave[i], len(frames), pipe.fps, pipe.sample_rate)
        panels = [*panels, ("generated from video" if mode == "v2a" else "generated", gen.mel[i])]
    return Sample(name, source, mode, frames, wave, panels, gen.settings)


def generate_sample(pipe: Pipeline, mode: Mode, settings: SamplingSettings, name: str,
                    condition: np.ndarray | None = None, panels: Sequence[tuple[str, np.ndarray]] = (),
                    num_frames: int | None = None, callback: Callback | None = None) -> Sample:
    """One item from an in-memory ``condition`` and its ``panels`` (as :func:`read_input` gives
    them; none for joint, which is ``num_frames`` long, default the training length), with
    ``settings.seed``. ``callback`` is the sampler's, called after each step."""
    batch = None if condition is None else condition[None]
    gen = pipe.generate(mode, settings, frames=batch if mode == "v2a" else None,
                        wave=batch if mode == "a2v" else None, num_frames=num_frames, callback=callback)
    return _sample(pipe, gen, 0, name, None, condition, list(panels))


def generate_files(pipe: Pipeline, mode: Literal["v2a", "a2v"], files: Sequence[Path], settings: SamplingSettings,
                   seconds: float | None = None, batch: int = 1, done: Collection[Path] = ()) -> Generation:
    """v2a or a2v for each file (its first ``seconds``, default all of it).

    Files are taken ``batch`` at a time; the inputs of a batch with the same length are sampled
    together, with seed ``settings.seed + i`` for ``i`` the index of the first of them in
    ``files`` (so a result depends on neither later inputs nor skipped ones). Names are file
    stems; a stem taken by an earlier file is a failure (``duplicate_name``), and so is a file in
    ``done``, whose output exists and is not to be replaced (``exists``).
    """
    result = Generation()
    names: dict[str, Path] = {}
    for first in range(0, len(files), batch):
        read: list[tuple[int, Path, np.ndarray, list[tuple[str, np.ndarray]]]] = []
        for index, path in enumerate(files[first : first + batch], start=first):
            if path.stem in names:
                result.failures.append(Skipped(path, "duplicate_name", f"same name as {names[path.stem]}"))
                continue
            names[path.stem] = path
            if path in done:
                result.failures.append(Skipped(path, "exists", "its output exists (pass --overwrite to replace it)"))
                continue
            try:
                read.append((index, path, *read_input(pipe, mode, path, seconds)))
            except MediaError as exc:
                result.failures.append(Skipped(path, exc.kind, exc.reason))
        lengths = sorted({len(condition) for _, _, condition, _ in read})
        for length in lengths:
            group = [item for item in read if len(item[2]) == length]
            start = time.perf_counter()
            gen = pipe.generate(mode, replace(settings, seed=settings.seed + group[0][0]),
                                **{"frames" if mode == "v2a" else "wave": np.stack([c for _, _, c, _ in group])})
            result.seconds += time.perf_counter() - start
            for i, (_, path, condition, panels) in enumerate(group):
                result.samples.append(_sample(pipe, gen, i, path.stem, path, condition, panels))
    order = {path: k for k, path in enumerate(files)}
    result.samples.sort(key=lambda s: order[s.source])
    return result


def generate_joint(pipe: Pipeline, settings: SamplingSettings, num: int, seconds: float | None = None) -> Generation:
    """``num`` unconditional video+audio clips ``joint_<k>`` of ``seconds`` (default the training
    length), clip ``k`` with seed ``settings.seed + k``."""
    num_frames = None if seconds is None else round(seconds * pipe.fps)
    result = Generation()
    for k in range(num):
        start = time.perf_counter()
        sample = generate_sample(pipe, "joint", replace(settings, seed=settings.seed + k), f"joint_{k:04d}",
                                 num_frames=num_frames)
        result.seconds += time.perf_counter() - start
        result.samples.append(sample)
    return result


def output_path(out_dir: Path, name: str) -> Path:
    """Where :func:`write_sample` puts the output of ``name``."""
    return out_dir / f"{name}.mp4"


def write_sample(sample: Sample, pipe: Pipeline, out_dir: Path, info: dict[str, Any] | None = None,
                 model_res: bool = False, details: bool = True, overwrite: bool = False) -> dict[str, Path]:
    """Write ``sample`` into ``out_dir`` (layout in the module docstring); ``details``: also the
    JSON, the spectrograms and the condition copy. Returns the written paths by role."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = output_path(out_dir, sample.name)
    span = len(sample.frames) / pipe.fps
    streams = {"video": "generated", "audio": "generated"}
    if sample.source is None:
        write_media(out, sample.frames, sample.wave, pipe.fps, pipe.sample_rate, overwrite=overwrite)
    else:
        streams = _write_with_source(sample, pipe, out, span, overwrite)
    sample.outputs = {"output": out}
    if model_res:
        sample.outputs["model_res"] = out_dir / "model_res" / out.name
        sample.outputs["model_res"].parent.mkdir(exist_ok=True)
        write_media(sample.outputs["model_res"], sample.frames, sample.wave, pipe.fps, pipe.sample_rate,
                    overwrite=overwrite)
    if not details:
        return sample.outputs
    if sample.mode != "joint":
        condition = out_dir / "condition" / (f"{sample.name}.mp4" if sample.mode == "v2a" else f"{sample.name}.mkv")
        condition.parent.mkdir(exist_ok=True)
        if sample.mode == "v2a":
            write_media(condition, sample.frames, None, pipe.fps, pipe.sample_rate, overwrite=overwrite)
        else:
            write_media(condition, None, sample.wave, pipe.fps, pipe.sample_rate, overwrite=overwrite)
        sample.outputs["condition"] = condition
    sample.outputs["spectrograms"] = write_spectrograms(sample, pipe, out_dir)
    record = {"source": None if sample.source is None else str(sample.source), "seconds": span, "streams": streams,
              "checkpoint_step": pipe.step, "version": pipe.version, "codec": pipe.codec.spec or pipe.codec.name,
              "vocoder": pipe.vocoder.spec or pipe.vocoder.name, **(info or {}), **sample.settings}
    sample.outputs["settings"] = out_dir / f"{sample.name}.json"
    sample.outputs["settings"].write_text(json.dumps(record, indent=1))
    return sample.outputs


def write_spectrograms(sample: Sample, pipe: Pipeline, out_dir: Path) -> Path:
    """``sample``'s spectrogram panels as ``out_dir/<name>_spec.png``."""
    return save_spectrograms(sample.panels, out_dir / f"{sample.name}_spec.png", pipe.sample_rate / HOP)


def _write_with_source(sample: Sample, pipe: Pipeline, out: Path, span: float, overwrite: bool) -> dict[str, str]:
    """The output with the input's own kept stream (module docstring); returns how each stream
    got there."""
    assert sample.source is not None
    generated = out.with_name(f".{out.stem}.generated.mp4")
    try:
        if sample.mode == "v2a":
            write_media(generated, None, sample.wave, pipe.fps, pipe.sample_rate, overwrite=True)
            how = combine_streams(out, sample.source, generated, span, overwrite=overwrite)
            return {"video": f"input, {how['video']}", "audio": "generated"}
        write_media(generated, sample.frames, None, pipe.fps, pipe.sample_rate, overwrite=True)
        how = combine_streams(out, generated, sample.source, span, overwrite=overwrite)
        return {"video": "generated", "audio": f"input, {how['audio']}"}
    finally:
        generated.unlink(missing_ok=True)
