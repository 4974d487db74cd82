"""Codec latents precomputed into prepared shards, so training never re-encodes frames.

Layout added to a ``cmmd prepare`` output (docs/CONTRACTS.md, "Prepared shards")::

    OUT/codec.json                 the codec's describe() dict; written first, claims OUT
    OUT/items/<key>/latents.npy    float16 (N, C, h, w): frame k of video.npy, encoded and scaled

One codec per directory: a second codec (or the same name with other weights) is refused,
since a training run mixing latents from two codecs would learn nothing consistent. Every
``latents.npy`` is written under a temporary name and renamed, so an interrupted run resumes
where it stopped. float16 keeps about 3 significant digits, far below the codecs' own
reconstruction error, at half the disk and read bandwidth of float32.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cmmd.errors import CmmdError
from cmmd.video.codecs import VideoCodec

CODEC_FILE = "codec.json"
LATENTS_FILE = "latents.npy"


@dataclass
class EncodeSummary:
    """What :func:`encode_prepared_dataset` did: items encoded now, skipped (already done), frames."""

    encoded: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One human-readable line, e.g. ``6 item(s) encoded (120 frames, 1.2 s), 0 already done``."""
        return (f"{self.encoded} item(s) encoded ({self.frames} frames, {self.seconds:.1f} s), "
                f"{self.skipped} already done")


def read_codec_record(root: str | Path) -> dict[str, Any] | None:
    """The ``codec.json`` of a prepared directory, or None when it holds no latents."""
    path = Path(root) / CODEC_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CmmdError(f"{path} is unreadable ({exc}); delete it and every items/*/{LATENTS_FILE} "
                        "to re-encode") from None
    if not isinstance(record, dict) or "name" not in record:
        raise CmmdError(f"{path} is not a codec description (no 'name')")
    return record


def check_codec_record(out: str | Path, codec: VideoCodec) -> None:
    """Raise CmmdError if ``out`` already holds latents of a codec other than ``codec``; writes nothing."""
    out = Path(out)
    record = read_codec_record(out)
    if record is not None:
        try:
            codec.check_compatible(record)
        except CmmdError as exc:
            raise CmmdError(f"{out} already holds latents of another codec ({exc}); encode into a fresh "
                            f"copy, or delete {out / CODEC_FILE} and items/*/{LATENTS_FILE} first") from None


def _claim(out: Path, codec: VideoCodec) -> None:
    """Write ``codec.json`` on the first run; refuse a different codec on later ones."""
    check_codec_record(out, codec)
    if not (out / CODEC_FILE).is_file():
        tmp = out / f".{CODEC_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(codec.describe(), indent=2) + "\n")
        os.replace(tmp, out / CODEC_FILE)


def encode_prepared_dataset(root: str | Path, codec: VideoCodec, out: str | Path | None = None,
                            progress: bool = True) -> EncodeSummary:
    """Encode every complete item's ``video.npy`` under ``root`` into ``latents.npy`` under ``out``.

    ``out`` defaults to ``root`` (latents sit next to the frames, where training reads them).
    Items that already have ``latents.npy`` are skipped, so the call resumes. Frames go through
    ``codec.encode`` in chunks of ``codec.max_batch`` on the codec's device; nothing of ``root``
    but the items' ``video.npy`` and ``meta.json`` is read. Raises CmmdError if ``root`` is not a
    prepared directory, its frames are not divisible by the codec's downsampling, or ``out``
    holds another codec's latents.
    """
    root = Path(root)
    out = root if out is None else Path(out)
    metas = sorted(root.glob("items/*/meta.json"))
    if not metas:
        raise CmmdError(f"{root} holds no prepared items (items/<key>/meta.json); run `cmmd prepare SRC {root}`")
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, codec)
    summary = EncodeSummary()
    start = time.perf_counter()
    for meta in tqdm(metas, desc=f"encode ({codec.name})", unit="item", file=sys.stderr, disable=not progress):
        key = meta.parent.name
        target = out / "items" / key / LATENTS_FILE
        if target.is_file():
            summary.skipped += 1
            continue
        frames = np.load(meta.parent / "video.npy", mmap_mode="r")
        chunks = [codec.encode(np.ascontiguousarray(frames[i:i + codec.max_batch]))[0].cpu()
                  for i in range(0, len(frames), codec.max_batch)]
        latents = torch.cat(chunks).numpy().astype(np.float16)
        if not np.isfinite(latents).all():
            raise CmmdError(f"{meta.parent}: codec {codec.name} produced latents outside the float16 range")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{LATENTS_FILE}.{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.save(fh, latents)
        os.replace(tmp, target)
        summary.encoded += 1
        summary.frames += len(frames)
    summary.seconds = time.perf_counter() - start
    return summary


def latent_shape_of(root: str | Path, num_frames: Mapping[str, int]) -> tuple[int, int, int]:
    """``(C, h, w)`` of the latents of the items ``key -> number of frames`` under ``root``.

    Raises CmmdError naming the items whose ``latents.npy`` is missing, does not hold one latent
    per frame, or differs in shape from the others, and how to (re-)encode them.
    """
    root = Path(root)
    record = read_codec_record(root)
    spec = (record.get("spec") or record["name"]) if record else "SPEC"
    missing, wrong, shapes = [], [], set()
    for key, frames in num_frames.items():
        path = root / "items" / key / LATENTS_FILE
        if not path.is_file():
            missing.append(key)
            continue
        latents = np.load(path, mmap_mode="r")
        if latents.ndim != 4 or len(latents) != frames:
            wrong.append(f"{key} {tuple(latents.shape)} for {frames} frames")
        else:
            shapes.add(tuple(int(v) for v in latents.shape[1:]))
    if missing:
        raise CmmdError(f"{root}: {len(missing)} item(s) have no {LATENTS_FILE} (e.g. {', '.join(missing[:3])}); "
                        f"encode them with `cmmd vae encode {root} --codec {spec}` (it skips finished items)")
    if wrong:
        raise CmmdError(f"{root}: {LATENTS_FILE} of {len(wrong)} item(s) is not one (C, h, w) latent per frame: "
                        f"{'; '.join(wrong[:3])}; delete those files and run `cmmd vae encode {root} --codec {spec}`")
    if len(shapes) != 1:
        raise CmmdError(f"{root}: items hold latents of different shapes {sorted(shapes)}; re-encode them all "
                        "with one codec")
    return shapes.pop()


def load_latent_clip(item_dir: str | Path, frame: int, clip_frames: int) -> torch.Tensor:
    """float32 ``(clip_frames, C, h, w)`` latents of ``item_dir`` from video frame ``frame`` on."""
    path = Path(item_dir) / LATENTS_FILE
    if not path.is_file():
        raise CmmdError(f"{path} does not exist; encode the dataset with `cmmd vae encode` first")
    latents = np.load(path, mmap_mode="r")
    if not 0 <= frame <= len(latents) - clip_frames:
        raise CmmdError(f"{path}: a {clip_frames}-frame clip cannot start at frame {frame} of {len(latents)}")
    return torch.from_numpy(np.array(latents[frame:frame + clip_frames], dtype=np.float32))


__all__ = ["CODEC_FILE", "LATENTS_FILE", "EncodeSummary", "check_codec_record", "encode_prepared_dataset",
           "latent_shape_of", "load_latent_clip", "read_codec_record"]
