"""The semi-real set: real recorded drum sounds with simple visuals driven by the recordings themselves.

Reported apart from the real-media benchmark (:mod:`cmmd.data.real_media`). The sounds are the
acoustic drum kits of the Debian 12 package ``hydrogen-drumkits`` (recordings of real drums,
claps and hand percussion); the manifest ``cmmd/assets/semi_real.json`` (:data:`cmmd.assets.SEMI_REAL`)
names each kit's folder, licence, split and a digest of its samples. The split is by kit, and
kits by one author share a split, so no test clip contains a sound that training heard.

A clip (:func:`render_clip`) draws ``voices`` samples of one kit; each gets a lane (a coloured
square) and strikes at random, non-periodic times. A strike places the sample so that its own
onset (:func:`onset_index`) lands on the strike time, and the square's brightness in each video
frame is that lane's audio RMS over the frame, normalised by its loudest frame: the picture
follows the recording's attack and decay, nothing drawn is independent of the sound. The JSON
sidecar lists the lanes and the strike times (docs/REAL_MEDIA.md, "The semi-real set").
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from cmmd.assets import SEMI_REAL
from cmmd.data.media import write_media
from cmmd.data.real_media import SPLITS, deb_members, find_archive
from cmmd.data.splits import TEST, TRAIN, VALIDATION
from cmmd.data.synth import clip_seed
from cmmd.errors import CmmdError

SOUND_SUFFIXES = (".flac", ".wav", ".aiff")
SPLIT_SEEDS = {"train": TRAIN.seed, "validation": VALIDATION.seed, "test": TEST.seed}
"""Clip ``i`` of a split is rendered from ``clip_seed(SPLIT_SEEDS[split], i)`` (:mod:`cmmd.data.splits`)."""
ONSET_FRACTION = 0.1
"""A sample's onset: its first sample whose magnitude reaches this fraction of its peak."""
STRIKE_GAP_S = (0.35, 1.2)
PEAK = 0.85
BACKGROUND = np.array([18.0, 20.0, 28.0], dtype=np.float32)
PALETTE = np.array([[230, 60, 60], [60, 200, 90], [70, 120, 240], [240, 200, 50]], dtype=np.float32)
DIM = 0.15
"""Brightness of a silent lane's square: visible, so the layout never changes."""


@dataclass(frozen=True)
class Kit:
    """One manifest kit: the folder of ``package`` holding its samples, and what they may be used for."""

    name: str
    split: str
    work: str
    package: str
    version: str
    folder: str
    licence: str
    copyright: str
    samples: int
    sha256: str


@dataclass(frozen=True)
class SemiRealManifest:
    """The kits and how clips are rendered: ``clips`` per split, ``seconds`` long, ``voices`` lanes."""

    kits: list[Kit]
    clips: dict[str, int]
    seconds: float
    voices: int
    size: int
    fps: int
    sample_rate: int


def load_semi_manifest(path: str | Path = SEMI_REAL) -> SemiRealManifest:
    """Read and check the semi-real manifest (every split has a kit and a clip count; each work
    lies in one split); a :class:`CmmdError` names the problem."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        render = raw["render"]
        manifest = SemiRealManifest([Kit(**k) for k in raw["kits"]], dict(render["clips"]), float(render["seconds"]),
                                    int(render["voices"]), int(render["size"]), int(render["fps"]),
                                    int(render["sample_rate"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CmmdError(f"{path}: not a semi-real manifest ({exc!r})") from exc
    work_split: dict[str, str] = {}
    for kit in manifest.kits:
        if kit.split not in SPLITS or work_split.setdefault(kit.work, kit.split) != kit.split:
            raise CmmdError(f"{path}: kit {kit.name!r}: split {kit.split!r} must be one of {SPLITS}, and kits of "
                            f"work {kit.work!r} must share one")
    if set(manifest.clips) != set(SPLITS) or {k.split for k in manifest.kits} != set(SPLITS):
        raise CmmdError(f"{path}: every split ({', '.join(SPLITS)}) needs kits and a clip count")
    if not 1 <= manifest.voices <= len(PALETTE):
        raise CmmdError(f"{path}: voices must be 1..{len(PALETTE)}")
    return manifest


def kit_digest(samples: dict[str, bytes]) -> str:
    """sha256 over the sorted ``"<relative path> <sha256>"`` lines of a kit's sample files."""
    lines = "".join(f"{name} {hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(samples.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_kit(downloads: Path, kit: Kit) -> dict[str, bytes]:
    """The kit's sample files ``{path relative to its folder: bytes}`` from its downloaded package,
    checked against the manifest's count and digest."""
    archive = find_archive(downloads, "debian", kit.package, kit.version, f"kit {kit.name}")
    prefix = kit.folder.rstrip("/") + "/"
    samples = {name[len(prefix):]: data for name, data in deb_members(archive, prefix).items()
               if name.lower().endswith(SOUND_SUFFIXES)}
    if len(samples) != kit.samples or kit_digest(samples) != kit.sha256:
        raise CmmdError(f"kit {kit.name}: {len(samples)} sample(s) with digest {kit_digest(samples)} in {archive.name}, "
                        f"the manifest says {kit.samples} with {kit.sha256}; delete {archive} and download it again")
    return samples


def decode_sound(data: bytes, name: str, sample_rate: int) -> np.ndarray:
    """A sound file's bytes -> mono float32 ``(S,)`` at ``sample_rate`` (channels averaged)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
            chunks = [f.to_ndarray()[0] for frame in container.decode(audio=0) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    except (av.error.FFmpegError, ValueError) as exc:
        raise CmmdError(f"{name}: cannot decode ({exc})") from exc
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def onset_index(sound: np.ndarray) -> int:
    """Index of the first sample reaching :data:`ONSET_FRACTION` of the peak magnitude (0 if silent)."""
    peak = float(np.abs(sound).max()) if len(sound) else 0.0
    return int(np.argmax(np.abs(sound) >= ONSET_FRACTION * peak)) if peak > 0 else 0


def render_clip(sounds: list[np.ndarray], names: list[str], seed: int, seconds: float, voices: int, size: int,
                fps: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One clip from a kit's decoded ``sounds``: frames ``uint8 (T, size, size, 3)``, audio
    ``float32 (S,)`` with peak :data:`PEAK`, and the sidecar dict (module docstring)."""
    rng = np.random.default_rng(seed)
    n_frames, n_samples = round(seconds * fps), round(seconds * sample_rate)
    picks = rng.choice(len(sounds), size=min(voices, len(sounds)), replace=False)
    audio = np.zeros(n_samples, np.float32)
    brightness = np.zeros((len(picks), n_frames), np.float32)
    lanes, events = [], []
    for lane, k in enumerate(picks):
        sound, onset, track = sounds[k], onset_index(sounds[k]), np.zeros(n_samples, np.float32)
        t = rng.uniform(0.1, STRIKE_GAP_S[1])
        while t < seconds - 0.1:
            start = round(t * sample_rate) - onset
            piece = sound[max(0, -start): n_samples - start]
            track[max(0, start): max(0, start) + len(piece)] += piece
            events.append({"time": round(t, 6), "frame": int(t * fps), "lane": lane, "sound": names[k]})
            t += rng.uniform(*STRIKE_GAP_S)
        rms = np.sqrt(np.mean(track[: n_frames * (n_samples // n_frames)].reshape(n_frames, -1) ** 2, axis=1))
        brightness[lane] = rms / rms.max() if rms.max() > 0 else 0.0
        audio += track
        lanes.append({"lane": lane, "sound": names[k], "lane_x": (lane + 0.5) / len(picks),
                      "colour": PALETTE[lane].astype(int).tolist()})
    peak = float(np.abs(audio).max())
    audio = audio * (PEAK / peak) if peak > 0 else audio
    events.sort(key=lambda e: (e["time"], e["lane"]))
    meta = {"scene": "semi-real", "seed": seed, "duration": seconds, "fps": fps, "sample_rate": sample_rate,
            "size": size, "lanes": lanes, "events": events}
    return _draw(brightness, size), audio, meta


def _draw(brightness: np.ndarray, size: int) -> np.ndarray:
    """Lane squares ``(lanes, T)`` brightness in [0, 1] -> frames ``uint8 (T, size, size, 3)``."""
    lanes, n_frames = brightness.shape
    frames = np.broadcast_to(BACKGROUND, (n_frames, size, size, 3)).copy()
    width = size // lanes
    side = max(2, int(width * 0.7))
    top = (size - side) // 2
    for lane in range(lanes):
        left = lane * width + (width - side) // 2
        level = (DIM + (1 - DIM) * brightness[lane])[:, None, None, None]
        frames[:, top:top + side, left:left + side] = BACKGROUND + (PALETTE[lane] - BACKGROUND) * level
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def write_semi_real(manifest: SemiRealManifest, downloads: Path, dest: Path) -> dict[str, int]:
    """Render every split's clips as ``dest/<split>/semi_<i:05d>.mp4`` + ``.json`` (resumable: a
    clip whose sidecar exists is kept); clip ``i`` uses kit ``i % len(split kits)``. Returns the
    clips written per split."""
    written = {}
    for split in SPLITS:
        kits = [k for k in manifest.kits if k.split == split]
        decoded = []
        for kit in kits:
            samples = read_kit(downloads, kit)
            names = sorted(samples)
            decoded.append(([decode_sound(samples[n], f"{kit.name}/{n}", manifest.sample_rate) for n in names],
                            [f"{kit.name}/{n}" for n in names]))
        out = dest / split
        out.mkdir(parents=True, exist_ok=True)
        written[split] = 0
        for i in range(manifest.clips[split]):
            sidecar = out / f"semi_{i:05d}.json"
            if sidecar.exists():
                continue
            sounds, names = decoded[i % len(kits)]
            frames, audio, meta = render_clip(sounds, names, clip_seed(SPLIT_SEEDS[split], i), manifest.seconds,
                                              manifest.voices, manifest.size, manifest.fps, manifest.sample_rate)
            write_media(out / f"semi_{i:05d}.mp4", frames, audio, manifest.fps, manifest.sample_rate, overwrite=True)
            sidecar.write_text(json.dumps(meta, indent=1) + "\n")
            written[split] += 1
    return written
