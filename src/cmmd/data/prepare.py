"""Turn a folder of videos into memory-mappable training shards (``cmmd prepare SRC OUT``).

Layout (docs/CONTRACTS.md, "Prepared shards")::

    OUT/prepare.json              settings; a later run with other settings is refused
    OUT/items/<key>/video.npy     uint8 (N, size, size, 3) at fps; key = item_key(relative path)
    OUT/items/<key>/audio.npy     int16 (S,) mono at sample_rate, S = N * sample_rate / fps
    OUT/items/<key>/meta.json     written last: its presence marks the item complete
    OUT/index.csv                 clips: key, source, start, length (seconds), non-overlapping
    OUT/mel_stats.json            per-bin log-mel mean/std (80 each) over all items
    OUT/failures.jsonl            one line per bad input of the last run: source, kind, reason
    OUT/codec.json                with ``--codec``: the latent codec's description (cmmd.video.latents)
    OUT/items/<key>/latents.npy   with ``--codec``: float16 (N, C, h, w), frame k of video.npy encoded

Every file is written under a temporary name and renamed, so an interrupted run never leaves a
half item that looks complete, and rerunning resumes. Bad inputs (unreadable, missing a stream,
silent, shorter than one clip) are reported and skipped, never fatal. SRC is only read.
"""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cmmd.conventions import FPS, SAMPLE_RATE, seconds_to_frames
from cmmd.data.failures import failures_text
from cmmd.data.media import VIDEO_SUFFIXES, MediaError, read_media
from cmmd.errors import CmmdError

CODECS = ("pixel",)
"""Representations of ``video.npy``: pixel frames only. Latent codecs (METHOD.md section 2) are
precomputed next to them by :func:`cmmd.video.latents.encode_prepared_dataset` (``cmmd prepare
--codec``, ``cmmd vae encode``), so the frames stay available to every codec and to evaluation."""
SILENCE_THRESHOLD = 1e-4
"""Audio whose every sample has ``|x|`` below this is silent: nothing to learn sync from."""
AUDIO_SCALE = 32767.0
"""int16 full scale used for ``audio.npy`` (``x_int16 = round(x * AUDIO_SCALE)``)."""


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared directory was made with; all of it is checked on resume."""

    size: int = 64
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 1.8
    codec: str = "pixel"

    @property
    def clip_frames(self) -> int:
        """Video frames per index clip (18 at the defaults)."""
        return seconds_to_frames(self.clip_seconds, self.fps)

    def validate(self) -> None:
        """Raise ``CmmdError`` for settings no item could satisfy."""
        if self.size < 8 or self.fps <= 0 or self.sample_rate < 4000:
            raise CmmdError(f"need size >= 8, fps > 0 and sample rate >= 4000 Hz, got {self}")
        if self.clip_frames < 1:
            raise CmmdError(f"clip length {self.clip_seconds} s is shorter than one frame at {self.fps} fps")
        if self.codec not in CODECS:
            raise CmmdError(f"unknown codec {self.codec!r}; choose from {', '.join(CODECS)}")


@dataclass
class ItemResult:
    """Outcome of one source file: ``status`` is ``ok``, ``skipped`` (already prepared) or
    ``failed`` (with ``kind`` and ``reason``)."""

    source: str
    key: str
    status: str
    seconds: float = 0.0
    kind: str = ""
    reason: str = ""


@dataclass
class PrepareSummary:
    """Counts, failures and speed of one ``prepare_dataset`` run."""

    out_dir: Path
    ok: int = 0
    skipped: int = 0
    failures: list[ItemResult] = field(default_factory=list)
    media_seconds: float = 0.0
    wall_seconds: float = 0.0  # decoding and writing this run's items
    stats_seconds: float = 0.0  # index.csv and mel_stats.json over all items (incl. one-off imports)
    workers: int = 1
    clips: int = 0

    @property
    def realtime_factor(self) -> float:
        """Seconds of media prepared per wall-clock second of decoding and writing."""
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line, failures listed by file and reason."""
        out = [
            f"prepared {self.ok} item(s), skipped {self.skipped} already done, {len(self.failures)} failed "
            f"-> {self.out_dir}",
            f"{self.media_seconds:.1f} s of media decoded and written in {self.wall_seconds:.1f} s: "
            f"{self.realtime_factor:.1f}x real time with {self.workers} worker(s) "
            f"({self.realtime_factor / self.workers:.1f}x per worker)",
            f"index.csv: {self.clips} clip(s); index and mel_stats.json took {self.stats_seconds:.1f} s",
        ]
        out += [f"failed: {f.source}: [{f.kind}] {f.reason}" for f in self.failures]
        return out


def find_videos(src: Path) -> list[Path]:
    """Video files under ``src`` by suffix (case-insensitive), sorted; hidden entries skipped."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


def item_key(source: str) -> str:
    """The directory name of a source's item: its relative POSIX path with ``/`` -> ``__``.

    A pure function of the path, so keys never change when files are added between resumed
    runs. Paths holding characters outside ``[A-Za-z0-9._-]`` (replaced by ``_``) or a literal
    ``__`` get a hash of the path appended, which keeps keys unique.
    """
    key = source.replace("/", "__")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    if safe != key or "__" in source:
        safe += "-" + sha1(source.encode()).hexdigest()[:8]
    return safe


def prepare_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    settings: PrepareSettings = PrepareSettings(),
    workers: int = 1,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare every video under ``src`` into ``out`` (see the module docstring).

    Raises ``CmmdError`` for unusable arguments (missing SRC, OUT inside SRC, OUT prepared with
    other settings) and when no item at all is usable; bad individual files are only reported.
    """
    settings.validate()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CmmdError(f"source directory {src} does not exist")
    if workers < 1:
        raise CmmdError(f"workers must be at least 1, got {workers}")
    src_real, out_real = src.resolve(), out.resolve()
    if out_real == src_real or src_real in out_real.parents:
        raise CmmdError(f"output directory {out} is inside the source directory {src}; choose one outside it, "
                        "so that preparing never writes into your data")
    if out.exists() and not out.is_dir():
        raise CmmdError(f"output path {out} exists and is not a directory")
    (out / "items").mkdir(parents=True, exist_ok=True)
    _claim_settings(out, src_real, settings)

    paths = find_videos(src)
    if not paths:
        raise CmmdError(f"no video files in {src} ({', '.join(sorted(VIDEO_SUFFIXES))}); nothing to prepare")
    sources = [p.relative_to(src).as_posix() for p in paths]
    jobs = [(str(p), s, item_key(s), str(out / "items" / item_key(s)), settings) for p, s in zip(paths, sources)]
    summary = PrepareSummary(out_dir=out, workers=workers)
    todo = []
    for job in jobs:
        if (Path(job[3]) / "meta.json").is_file():
            summary.skipped += 1
        else:
            todo.append(job)

    start = time.perf_counter()
    with tqdm(total=len(jobs), initial=summary.skipped, desc="prepare", unit="file", file=sys.stderr,
              disable=not progress) as bar:
        for result in _run_jobs(todo, workers):
            if result.status == "ok":
                summary.ok += 1
                summary.media_seconds += result.seconds
            else:
                summary.failures.append(result)
            bar.update()
    summary.wall_seconds = time.perf_counter() - start
    summary.failures.sort(key=lambda r: r.source)
    _write_text(out / "failures.jsonl", failures_text(summary.failures))
    metas = load_item_metas(out)
    if not metas:
        raise CmmdError(f"no usable items in {src}: {len(jobs)} video file(s) found, {len(summary.failures)} "
                        f"failed (see {out / 'failures.jsonl'})")
    start = time.perf_counter()
    # A failed write (full disk) must not leave the previous run's index beside this run's items.
    for stale in ("index.csv", "mel_stats.json"):
        (out / stale).unlink(missing_ok=True)
    summary.clips = write_index(out, metas, settings)
    write_mel_stats(out, metas)
    summary.stats_seconds = time.perf_counter() - start
    return summary


def _claim_settings(out: Path, src: Path, settings: PrepareSettings) -> None:
    """Write ``prepare.json`` on the first run; on later runs refuse different settings."""
    path = out / "prepare.json"
    wanted = asdict(settings)
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CmmdError(f"{path} is unreadable ({exc}); remove it only if {out} holds no items") from None
        diff = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
        if diff:
            text = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diff.items())
            raise CmmdError(f"{out} was prepared with other settings ({text}); rerun with the recorded settings "
                            "to resume, or choose a new output directory")
        return
    _write_text(path, json.dumps({"settings": wanted, "source_dir": str(src)}, indent=2) + "\n")


def _run_jobs(jobs: list[tuple], workers: int) -> Iterator[ItemResult]:
    """Results of ``_prepare_job`` over ``jobs``, in a spawned process pool when ``workers > 1``."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_prepare_job, jobs)
        return
    # spawn: a forked child would inherit the parent's threads (torch, tqdm) and their locks.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_prepare_job, jobs)


def _prepare_job(job: tuple[str, str, str, str, PrepareSettings]) -> ItemResult:
    """Pool entry point: one file -> an item directory, or a failure record for a bad input."""
    path, source, key, item_dir, settings = job
    try:
        seconds = prepare_item(Path(path), Path(item_dir), source, settings)
    except (MediaError, UnusableItem) as exc:
        return ItemResult(source, key, "failed", kind=exc.kind, reason=exc.reason)
    return ItemResult(source, key, "ok", seconds=seconds)


class UnusableItem(CmmdError):
    """A file that cannot become an item: ``kind`` is ``silent``, ``too_short``, ``bad_sidecar``
    or ``internal`` (decoding hit an unexpected error, reported rather than ending the run)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def prepare_item(path: Path, item_dir: Path, source: str, settings: PrepareSettings) -> float:
    """Decode one file and write its item directory; returns its duration in seconds.

    Raises ``MediaError`` (unreadable, missing stream...) or ``UnusableItem``; errors writing
    ``item_dir`` (disk full, permissions) propagate, since every later item would hit them too.
    """
    try:
        media = read_media(path, fps=settings.fps, sample_rate=settings.sample_rate, size=settings.size)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - one odd file must not end a long run; it is reported
        raise UnusableItem("internal", f"{type(exc).__name__}: {exc}") from exc
    num_frames = len(media.frames)
    if num_frames < settings.clip_frames:
        raise UnusableItem("too_short", f"{num_frames / settings.fps:.2f} s of video is shorter than one "
                                        f"{settings.clip_seconds} s clip")
    if not np.any(np.abs(media.audio) >= SILENCE_THRESHOLD):
        raise UnusableItem("silent", f"audio is silent (every |sample| < {SILENCE_THRESHOLD})")
    meta: dict[str, Any] = {
        "source": source,
        "fps": settings.fps,
        "sample_rate": settings.sample_rate,
        "size": settings.size,
        "num_frames": num_frames,
        "num_samples": len(media.audio),
        "duration": num_frames / settings.fps,
        "audio_padded_seconds": media.audio_padded_seconds,
    }
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta["synth"] = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise UnusableItem("bad_sidecar", f"sidecar {sidecar.name} is not readable JSON ({exc})") from None
    write_item(item_dir, media.frames, media.audio, meta)
    return meta["duration"]


def write_item(item_dir: Path, frames: np.ndarray, audio: np.ndarray, meta: dict[str, Any]) -> None:
    """Write one item: frames ``uint8 (N, H, W, 3)`` -> ``video.npy``, audio ``float32 (S,)``
    in [-1, 1] -> int16 ``audio.npy``, then ``meta.json`` (which marks it complete)."""
    item_dir.mkdir(parents=True, exist_ok=True)
    try:
        _write_npy(item_dir / "video.npy", np.ascontiguousarray(frames, dtype=np.uint8))
        _write_npy(item_dir / "audio.npy", np.round(np.clip(audio, -1.0, 1.0) * AUDIO_SCALE).astype(np.int16))
        _write_text(item_dir / "meta.json", json.dumps(meta, indent=1) + "\n")
    except (OSError, CmmdError):
        shutil.rmtree(item_dir, ignore_errors=True)  # no half item for a rerun or a reader to find
        raise


def load_item_metas(out: Path) -> dict[str, dict[str, Any]]:
    """``key -> meta`` for every complete item (one with ``meta.json``) under ``out/items``."""
    items = out / "items"
    metas = {}
    for meta_path in sorted(items.glob("*/meta.json")):
        try:
            metas[meta_path.parent.name] = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise CmmdError(f"{meta_path} is unreadable ({exc}); delete its item directory and rerun") from None
    return metas


def write_index(out: Path, metas: dict[str, dict[str, Any]], settings: PrepareSettings) -> int:
    """Write ``index.csv``: each item's non-overlapping clips of ``clip_seconds``; returns the count."""
    rows = []
    for key, meta in metas.items():
        for k in range(meta["num_frames"] // settings.clip_frames):
            start = k * settings.clip_frames / settings.fps
            rows.append((key, meta["source"], f"{start:.6g}", f"{settings.clip_frames / settings.fps:.6g}"))
    with _replacing(out / "index.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("key", "source", "start", "length"))
        writer.writerows(rows)
    return len(rows)


def write_mel_stats(out: Path, metas: dict[str, dict[str, Any]]) -> None:
    """Write ``mel_stats.json``: per-bin log-mel mean/std pooled over every frame of every item."""
    # Imported here, not at the top: spawned decoding workers import this module and need no torch.
    import torch

    from cmmd.audio.mel import MelStats, log_mel

    def mels() -> Iterator[torch.Tensor]:
        for key, meta in metas.items():
            audio = np.load(out / "items" / key / "audio.npy", mmap_mode="r")
            wave = torch.from_numpy(audio.astype(np.float32) / AUDIO_SCALE)
            yield log_mel(wave, meta["sample_rate"])

    stats = MelStats.compute(mels())
    with _replacing(out / "mel_stats.json") as tmp:
        stats.save(tmp)


def _write_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename into place."""
    with _replacing(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _write_text(path: Path, text: str) -> None:
    """Write text to a temporary name, then rename into place."""
    with _replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path``, renamed onto it when the block succeeds and removed when
    writing fails; a full disk is a CmmdError naming the file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise CmmdError(f"no space left on device while writing {path}; free space and rerun `cmmd prepare` "
                            "with the same arguments to resume") from None
        raise
