"""Reading the paired files for the metrics: content digests computed once, decoding with
errors that name the file and the metric that needed it, and a progress bar over clips."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from cmmd.data.media import Media, MediaError, read_media
from cmmd.digest import file_sha256
from cmmd.errors import CmmdError
from cmmd.eval.settings import EvalSettings

T = TypeVar("T")
PROBE_SIZE = 16  # frames are decoded this small when only checking that a file is usable


class MediaFiles:
    """Digests (computed once) and media reads at the settings' fps and sample rate."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self.digests: dict[Path, str] = {}

    def digest(self, path: Path) -> str:
        """SHA-256 of the file's content (:func:`cmmd.digest.file_sha256`), memoised."""
        if path not in self.digests:
            self.digests[path] = file_sha256(path)
        return self.digests[path]

    def read(self, path: Path, purpose: str, video: bool, audio: bool, sample_rate: int | None = None,
             duration: float | None = None) -> Media:
        """Decode ``path``; a missing stream names the metric (``purpose``) that needed it."""
        try:
            return read_media(path, fps=self.settings.fps, sample_rate=sample_rate or self.settings.sample_rate,
                              duration=duration, video=video, audio=audio)
        except MediaError as exc:
            if exc.kind in ("no_video", "no_audio"):
                raise CmmdError(f"{path}: {exc.reason}; {purpose} needs its "
                                f"{'video' if exc.kind == 'no_video' else 'audio'} (drop it from --metrics)") from None
            raise


def unusable(path: Path, settings: EvalSettings, video: bool, audio: bool,
             min_frames: int = 0) -> tuple[str, str] | None:
    """``(kind, reason)`` when ``path`` cannot give the streams the metrics read, or fewer than
    ``min_frames`` frames (decoded whole and small, so a truncated file or junk bytes show); None
    when it can."""
    try:
        media = read_media(path, fps=settings.fps, sample_rate=settings.sample_rate, size=PROBE_SIZE, video=video,
                           audio=audio)
    except MediaError as exc:
        return exc.kind, exc.reason
    if media.frames is not None and len(media.frames) < min_frames:
        return "too_short", (f"{len(media.frames)} frame(s) at {settings.fps:g} fps; FVD/KVD use the first "
                             f"{min_frames} (lower --fvd-frames or drop fvd,kvd)")
    return None


def with_file(path: Path, fn: Callable[[], T]) -> T:
    """Run ``fn``; a :class:`CmmdError` it raises is re-raised naming ``path``."""
    try:
        return fn()
    except CmmdError as exc:
        if str(path) in str(exc):
            raise
        raise CmmdError(f"{path}: {exc}") from None


def progress_bar(items: Sequence[Any], desc: str, show: bool) -> Iterable[Any]:
    """A progress bar over ``items`` on stderr, shown for two items or more."""
    return tqdm(items, desc=desc, unit="clip", file=sys.stderr, disable=not show or len(items) < 2)
