"""A generation request's checks, run before it is queued: form fields -> :class:`GenRequest`,
an uploaded file -> the condition's frames or audio.

A bad request costs no sampling time and gets a one-line reason. Media problems carry the same
reasons as ``cmmd generate``, naming the file as uploaded, never the server's temporary path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from cmmd.data.media import MediaError
from cmmd.diffusion.samplers import SAMPLERS
from cmmd.errors import CmmdError
from cmmd.generation import read_input
from cmmd.pipeline import Mode, Pipeline, SamplingSettings

MODES: dict[str, str] = {"v2a": "Video -> audio", "a2v": "Audio -> video", "joint": "Joint (unconditional)"}
MAX_VARIATIONS = 4
MAX_GUIDANCE = 100.0
MAX_SEED = 2**63 - 1
FIELDS = ("mode", "sampler", "steps", "guidance", "seed", "variations", "seconds", "vocoder")


class InputError(CmmdError):
    """A request the app refuses before any work; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GenRequest:
    """What to generate: ``condition`` is the input's frames uint8 (T, H, W, 3) for v2a or its wave
    float32 (S,) for a2v, ``panels`` the log-mels of the sound it brings (as
    :func:`cmmd.generation.read_input` gives them); none for joint."""

    mode: Mode
    settings: SamplingSettings
    variations: int
    num_frames: int
    vocoder: str
    source: str = ""
    condition: np.ndarray | None = None
    panels: list[tuple[str, np.ndarray]] = field(default_factory=list)


def parse_fields(form: Mapping[str, str], pipe: Pipeline, vocoders: list[str], max_seconds: float) -> GenRequest:
    """Validate the form fields (all but the file); unknown fields and out-of-range values are refused."""
    unknown = sorted(set(form) - set(FIELDS) - {"file"})
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)}; known: file, {', '.join(FIELDS)}")
    mode = form.get("mode", "")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode[:20]!r}")
    sampler = form.get("sampler") or "ddim"
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler[:20]!r}")
    vocoder = form.get("vocoder") or vocoders[0]
    if vocoder not in vocoders:
        raise InputError(f"vocoder must be one of {', '.join(vocoders)} (start the app with --vocoder SPEC to "
                         f"add one), got {vocoder[:40]!r}")
    max_steps = pipe.config.diffusion.num_steps
    steps = _number(form, "steps", int, 25, 1, max_steps)
    guidance = _number(form, "guidance", float, 0.0, 0.0, MAX_GUIDANCE)
    seed = _number(form, "seed", int, 0, 0, MAX_SEED)
    variations = _number(form, "variations", int, 1, 1, MAX_VARIATIONS)
    train_seconds = pipe.config.data.clip_frames / pipe.fps
    seconds = _number(form, "seconds", float, train_seconds, 2 / pipe.fps, max_seconds)
    settings = SamplingSettings(method=sampler, steps=steps, guidance_scale=guidance, seed=seed)  # type: ignore[arg-type]
    return GenRequest(mode, settings, variations, round(seconds * pipe.fps), vocoder)  # type: ignore[arg-type]


def _number(form: Mapping[str, str], name: str, kind: type[int] | type[float], default: float, lo: float,
            hi: float) -> float:
    """Field ``name`` as ``kind`` within ``[lo, hi]``; ``default`` when absent or blank."""
    text = form.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"{name} must be a {'whole ' if kind is int else ''}number, got {text[:20]!r}") from None
    if not lo <= value <= hi:  # also refuses nan
        raise InputError(f"{name} must be from {lo:g} to {hi:g}, got {text[:20]}")
    return value


def read_upload(request: GenRequest, path: Path, name: str, pipe: Pipeline, max_seconds: float) -> None:
    """Read the uploaded file at ``path`` (shown as ``name``) into ``request``'s condition as
    ``cmmd generate`` reads an input (:func:`cmmd.generation.read_input`); a file declared longer
    than ``max_seconds`` is refused before decoding."""
    seconds = _declared_seconds(path)
    if seconds is not None and seconds > max_seconds + 0.05:
        raise InputError(f"{name}: {seconds:.1f} s long; the app takes at most {max_seconds:g} s (cut it, or start "
                         "the app with a larger --max-seconds)")
    assert request.mode != "joint"
    try:
        request.condition, request.panels = read_input(pipe, request.mode, path)
    except MediaError as exc:
        raise InputError(f"{name}: {exc.reason}") from None
    request.source = name


def _declared_seconds(path: Path) -> float | None:
    """The container's declared duration, None when it declares none or cannot be opened (decoding
    then gives the reason)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return None if container.duration is None else container.duration / av.time_base
    except (av.FFmpegError, OSError, ValueError):
        return None
