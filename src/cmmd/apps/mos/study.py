"""A MOS study on disk: build it from folders of generated clips, load it, assign items to raters.

Layout of ``STUDY_DIR`` (only ``media/`` files are ever served, and only by opaque id)::

    study.json        systems, clips, items, questions, seed (server-side only)
    media/<id>.<ext>  one hard link (or copy) per rated item; attention checks are remuxed here
    ratings.sqlite    the ratings database (``cmmd.apps.mos.db``)

Each *clip* (a file stem shared by every system's folder) is shown once per system; an *item*
is one (clip, system) file. Attention-check items are a ground-truth clip's video muxed with
another clip's ground-truth audio, so a rater who listens should rate their synchronisation low.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from cmmd.data.media import read_media
from cmmd.errors import CmmdError
from cmmd.apps.mos import db
from cmmd.apps.mos.questions import Question, attention_question, questions_from_json

STUDY_FILE = "study.json"
MEDIA_DIR = "media"
STUDY_VERSION = 1

# Containers a browser's <video> plays; other video files in a system folder are reported.
BROWSER_CONTAINERS: dict[str, str] = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm"}
VIDEO_SUFFIXES = frozenset(BROWSER_CONTAINERS) | {".mkv", ".mov", ".avi", ".mpg", ".mpeg", ".flv", ".ogv"}
BROWSER_VIDEO_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
BROWSER_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "vorbis", "flac"})
# H.264 in other pixel formats (yuv444p from odd frame sizes, 10-bit) does not play in Chrome.
BROWSER_H264_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
# A clip whose audio RMS is below this level has no audible sound track.
SILENCE_DBFS = -60.0
GROUND_TRUTH_NAMES = ("gt", "ground_truth", "ground-truth", "groundtruth")
_SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")


class StudyProblems(CmmdError):
    """Every reason the input folders cannot make a study, listed at once in the message."""

    def __init__(self, problems: list[str]) -> None:
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"cannot build the study, {len(problems)} problem(s):\n{listing}")
        self.problems = problems


@dataclass(frozen=True)
class Item:
    """One thing a rater rates: ``clip`` as produced by ``system`` (``None`` for an attention
    check, whose video is the ground truth of ``clip`` and audio that of ``audio_clip``)."""

    id: str
    clip: str
    system: str | None
    file: str
    audio_clip: str | None = None

    @property
    def is_attention(self) -> bool:
        """Whether this is an attention-check item."""
        return self.system is None

    def to_json(self) -> dict[str, Any]:
        """Plain dict for study.json."""
        return {"id": self.id, "clip": self.clip, "system": self.system, "file": self.file,
                "audio_clip": self.audio_clip}


@dataclass(frozen=True)
class Study:
    """A loaded study: its folder, systems (in command-line order), clips, items and questions."""

    root: Path
    seed: int
    systems: tuple[str, ...]
    sources: Mapping[str, str]
    ground_truth: str | None
    clips: tuple[str, ...]
    items: tuple[Item, ...]
    questions: tuple[Question, ...]
    clips_per_rater: int | None

    @property
    def db_path(self) -> Path:
        """Path of the ratings database."""
        return self.root / db.DB_FILE

    @property
    def items_by_id(self) -> dict[str, Item]:
        """Items keyed by their opaque id."""
        return {item.id: item for item in self.items}

    def media_path(self, item: Item) -> Path:
        """Absolute path of an item's media file."""
        return self.root / item.file

    def assignment(self, rater_id: str) -> list[Item]:
        """The items ``rater_id`` rates, in that rater's order.

        Seeded by (study seed, rater id), so the order survives restarts and differs between
        raters. With ``clips_per_rater`` the rater gets that many clips, every system of each
        (so ratings stay paired by rater and clip); attention checks always come along.
        """
        digest = hashlib.sha256(f"{self.seed}:{rater_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        clips = set(self.clips)
        if self.clips_per_rater is not None and self.clips_per_rater < len(self.clips):
            clips = set(rng.choice(np.array(self.clips), size=self.clips_per_rater, replace=False).tolist())
        chosen = [item for item in self.items if item.is_attention or item.clip in clips]
        return [chosen[i] for i in rng.permutation(len(chosen))]


def parse_systems(specs: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` strings -> ``{name: dir}`` in order; names must be unique and simple."""
    systems: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise CmmdError(f"--systems {spec!r}: expected NAME=DIR")
        if not _SYSTEM_NAME.match(name):
            raise CmmdError(f"--systems {spec!r}: system name must be letters, digits, '_', '.', '+' or '-' "
                            "(at most 40 characters)")
        if name in systems:
            raise CmmdError(f"--systems: system {name!r} given twice")
        systems[name] = Path(folder)
    if not systems:
        raise CmmdError("--systems: give at least one NAME=DIR")
    return systems


def create_study(
    study_dir: str | os.PathLike,
    systems: Mapping[str, str | os.PathLike],
    questions: tuple[Question, ...],
    attention_checks: int = 0,
    seed: int = 0,
    ground_truth: str | None = None,
    clips_per_rater: int | None = None,
) -> Study:
    """Check every clip of every system, then write the study folder (see module docstring).

    Clips are paired by file stem across ``systems`` (``{name: folder}``). Missing pairs,
    unreadable files, files without video or audio, silent audio and formats browsers cannot
    play are all collected and raised together as ``StudyProblems``; nothing is written then.
    ``attention_checks`` items need a ground-truth system (``ground_truth``, or one named
    ``gt``/``ground_truth``) and a question marked ``attention``. The folder is assembled under
    a temporary name and renamed into place, so a failed run leaves no half study.
    """
    root = Path(study_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise CmmdError(f"{root}: already exists and is not an empty folder; choose a new STUDY_DIR")
    if attention_checks < 0:
        raise CmmdError(f"--attention-checks must be >= 0, got {attention_checks}")
    if clips_per_rater is not None and clips_per_rater < 1:
        raise CmmdError(f"--clips-per-rater must be >= 1, got {clips_per_rater}")
    folders = {name: Path(folder) for name, folder in systems.items()}
    gt = _ground_truth(folders, ground_truth, attention_checks)
    if attention_checks and attention_question(questions) is None:
        raise CmmdError("attention checks need a question marked 'attention: true' (the presets mark "
                        "synchronisation / temporal alignment)")
    files, problems = _collect_files(folders)
    clips = sorted({stem for per_system in files.values() for stem in per_system})
    for clip in clips:
        # A missing or empty folder is reported once above, not once per clip.
        missing = [name for name in folders if files[name] and clip not in files[name]]
        if missing:
            problems.append(f"clip {clip!r}: missing from system(s) {', '.join(missing)}")
    for name, per_system in files.items():
        for path in per_system.values():
            problems.extend(f"{name}: {path}: {p}" for p in check_clip(path))
    if not problems and attention_checks > len(clips):
        problems.append(f"--attention-checks {attention_checks} needs at least that many clips, found {len(clips)}")
    if not problems and attention_checks and len(clips) < 2:
        problems.append("attention checks need at least 2 clips (one lends its audio to another)")
    if not clips and not problems:
        problems.append("no video files found in any system folder")
    if problems:
        raise StudyProblems(problems)

    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / MEDIA_DIR).mkdir(parents=True)
    try:
        items = [_link_item(partial, clip, name, files[name][clip]) for clip in clips for name in folders]
        rng = np.random.default_rng(seed)
        order = [clips[i] for i in rng.permutation(len(clips))]
        for k in range(attention_checks):
            video_clip, audio_clip = order[k], order[(k + 1) % len(order)]
            items.append(_attention_item(partial, video_clip, files[gt][video_clip], audio_clip, files[gt][audio_clip]))
        study = Study(partial, seed, tuple(folders), {n: str(f.resolve()) for n, f in folders.items()}, gt,
                      tuple(clips), tuple(items), questions, clips_per_rater)
        _write_study_json(study)
        db.init_db(study.db_path)
        if root.exists():
            root.rmdir()
        partial.rename(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return load_study(root)


def load_study(study_dir: str | os.PathLike) -> Study:
    """Read ``STUDY_DIR/study.json``; errors name the file and what is wrong."""
    root = Path(study_dir)
    path = root / STUDY_FILE
    if not path.is_file():
        raise CmmdError(f"{root}: not a MOS study (no {STUDY_FILE}); create one with `cmmd mos create`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != STUDY_VERSION:
            raise CmmdError(f"{path}: study format version {data['version']}, this cmmd reads {STUDY_VERSION}")
        items = tuple(Item(d["id"], d["clip"], d["system"], d["file"], d["audio_clip"]) for d in data["items"])
        study = Study(root, int(data["seed"]), tuple(data["systems"]), dict(data["sources"]), data["ground_truth"],
                      tuple(data["clips"]), items, questions_from_json(data["questions"], str(path)),
                      data["clips_per_rater"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CmmdError(f"{path}: damaged study file ({type(exc).__name__}: {exc})") from None
    if not study.db_path.is_file():
        raise CmmdError(f"{study.db_path}: ratings database is missing")
    return study


def check_clip(path: Path) -> list[str]:
    """Reasons ``path`` cannot be rated in a browser (empty when it can): unreadable, no video or
    no audio stream, a container or codec browsers do not play, or silent audio."""
    if path.suffix.lower() not in BROWSER_CONTAINERS:
        return [f"browsers cannot play {path.suffix} files; re-encode to .mp4 (H.264 + AAC) or .webm"]
    try:
        media = read_media(path, video=True, audio=True)
    except CmmdError as exc:
        return [getattr(exc, "reason", str(exc))]
    problems = _codec_problems(path)
    audio = media.audio if media.audio is not None else np.zeros(1, np.float32)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    level = 20.0 * np.log10(max(rms, 1e-12))
    if level < SILENCE_DBFS:
        problems.append(f"silent audio ({level:.0f} dBFS RMS, below {SILENCE_DBFS:.0f} dBFS)")
    return problems


def _codec_problems(path: Path) -> list[str]:
    """Codec and pixel-format problems of a file read_media could already decode."""
    with av.open(str(path), metadata_errors="ignore") as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        vcodec, acodec = video.codec_context.name, audio.codec_context.name
        pix_fmt = video.codec_context.format.name if video.codec_context.format else None
    problems = []
    if vcodec not in BROWSER_VIDEO_CODECS:
        problems.append(f"browsers cannot play {vcodec} video; re-encode to H.264 (yuv420p)")
    elif vcodec == "h264" and pix_fmt not in BROWSER_H264_PIX_FMTS:
        problems.append(f"browsers cannot play H.264 in {pix_fmt}; re-encode as yuv420p (even width and height)")
    if acodec not in BROWSER_AUDIO_CODECS:
        problems.append(f"browsers cannot play {acodec} audio; re-encode to AAC")
    return problems


def _ground_truth(folders: Mapping[str, Path], ground_truth: str | None, attention_checks: int) -> str | None:
    """The ground-truth system's name: given, or found by its conventional name."""
    if ground_truth is not None:
        if ground_truth not in folders:
            raise CmmdError(f"--ground-truth {ground_truth!r} is not one of the systems {list(folders)}")
        return ground_truth
    found = [name for name in folders if name.lower() in GROUND_TRUTH_NAMES]
    if len(found) == 1:
        return found[0]
    if attention_checks:
        raise CmmdError("attention checks are built from ground-truth clips: name the ground-truth system with "
                        "--ground-truth NAME (or call it 'gt')")
    return None


def _collect_files(folders: Mapping[str, Path]) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Video files per system keyed by stem, and the problems found on the way."""
    files: dict[str, dict[str, Path]] = {}
    problems: list[str] = []
    for name, folder in folders.items():
        files[name] = {}
        if not folder.is_dir():
            problems.append(f"{name}: {folder}: no such folder")
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES or path.name.startswith("."):
                continue
            if path.stem in files[name]:
                problems.append(f"{name}: clip {path.stem!r} has two files ({files[name][path.stem].name}, "
                                f"{path.name}); keep one")
                continue
            files[name][path.stem] = path
        if not files[name]:
            problems.append(f"{name}: {folder}: no video files ({', '.join(sorted(BROWSER_CONTAINERS))})")
    return files, problems


def _new_id() -> str:
    """An opaque, unguessable item id that says nothing about the clip or system."""
    return secrets.token_hex(8)


def _link_item(root: Path, clip: str, system: str, source: Path) -> Item:
    """Hard-link (or, across file systems, copy) ``source`` into the study under a fresh id."""
    item_id = _new_id()
    rel = f"{MEDIA_DIR}/{item_id}{source.suffix.lower()}"
    try:
        os.link(source, root / rel)
    except OSError:
        shutil.copyfile(source, root / rel)
    return Item(item_id, clip, system, rel)


def _attention_item(root: Path, clip: str, video_src: Path, audio_clip: str, audio_src: Path) -> Item:
    """Mux ``video_src``'s video with ``audio_src``'s audio (stream copy, no re-encoding)."""
    item_id = _new_id()
    suffix = video_src.suffix.lower()
    rel = f"{MEDIA_DIR}/{item_id}{suffix}"
    fmt = "webm" if suffix == ".webm" else "mp4"
    options = {} if fmt == "webm" else {"movflags": "+faststart"}
    try:
        with av.open(str(video_src)) as vin, av.open(str(audio_src)) as ain, \
                av.open(str(root / rel), "w", format=fmt, options=options) as out:
            vstream, astream = vin.streams.video[0], ain.streams.audio[0]
            end = float(vstream.duration * vstream.time_base) if vstream.duration else None
            vout = out.add_stream_from_template(vstream)
            aout = out.add_stream_from_template(astream)
            for packet in vin.demux(vstream):
                if packet.dts is not None:
                    packet.stream = vout
                    out.mux(packet)
            for packet in ain.demux(astream):
                if packet.dts is None or (end is not None and packet.pts is not None
                                          and float(packet.pts * packet.time_base) >= end):
                    continue
                packet.stream = aout
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise CmmdError(f"attention check from {video_src} (video) and {audio_src} (audio): muxing failed "
                        f"({exc}); give the ground-truth clips one container and codecs") from None
    return Item(item_id, clip, None, rel, audio_clip)


def _write_study_json(study: Study) -> None:
    """Write study.json (the only place that maps ids to systems and clips)."""
    data = {
        "version": STUDY_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": study.seed,
        "systems": list(study.systems),
        "sources": dict(study.sources),
        "ground_truth": study.ground_truth,
        "clips": list(study.clips),
        "clips_per_rater": study.clips_per_rater,
        "questions": [q.to_json() for q in study.questions],
        "items": [item.to_json() for item in study.items],
    }
    (study.root / STUDY_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# A rater who gives an attention check's (mismatched) clip this score or more on the attention
# question has not noticed that picture and sound do not belong together.
ATTENTION_FAIL_SCORE = 4


@dataclass(frozen=True)
class AttentionResult:
    """One rater's attention checks: how many they rated and how many they failed."""

    checks: int
    failed: int


def attention_results(study: Study, ratings: list[db.Rating]) -> dict[str, AttentionResult]:
    """Attention-check outcome per rater who rated at least one check (see ``ATTENTION_FAIL_SCORE``)."""
    question = attention_question(study.questions)
    if question is None:
        return {}
    items = study.items_by_id
    scores: dict[str, list[int]] = {}
    for r in ratings:
        item = items.get(r.item_id)
        if item is not None and item.is_attention and r.question == question.id:
            scores.setdefault(r.rater_id, []).append(r.score)
    return {rater: AttentionResult(len(s), sum(x >= ATTENTION_FAIL_SCORE for x in s)) for rater, s in scores.items()}
