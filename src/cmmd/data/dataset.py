"""Random, time-aligned clips from prepared shards (docs/CONTRACTS.md, "Clip dataset").

A clip of ``T`` frames starting at video frame ``f0`` takes audio samples
``[f0 * sr / fps, (f0 + T) * sr / fps)`` (exact integers at 10 fps / 16 kHz; other rates round
to the nearest sample, keeping ``S = round(T * sr / fps)`` fixed) and computes its mel from that
waveform, so video, waveform and mel share one time axis: mel frame ``l`` is centred on time
``start + l * HOP / sr``. Shards are memory-mapped, so a worker reads only the clip it cuts.

With ``video="latents"`` the clip's video is the same window of the codec latents precomputed
into the shards (``items/<key>/latents.npy``, :mod:`cmmd.video.latents`): latent ``k`` is frame
``k`` encoded, so windows, audio and sampling are exactly those of pixel training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from cmmd.audio.mel import cmmd_mel
from cmmd.conventions import frames_to_samples
from cmmd.data.prepare import AUDIO_SCALE, load_item_metas
from cmmd.errors import CmmdError
from cmmd.video.latents import latent_shape_of, load_latent_clip, read_codec_record


@dataclass(frozen=True)
class _Item:
    """One usable item: its key, length in frames, and where its clips start in the index space."""

    key: str
    num_frames: int
    first_clip: int  # index of this item's first clip in the dataset


class ClipDataset(Dataset):
    """Clips of ``clip_frames`` frames from the items of a ``cmmd prepare`` output.

    ``len`` is the number of non-overlapping clips the items hold (``num_frames // clip_frames``
    each), so long items are drawn proportionally more often; index ``i`` belongs to one item and
    draws its window start uniformly over that whole item from ``(seed, epoch, i)``, so every epoch
    sees fresh, reproducible windows. Items shorter than one clip are left out. ``keys`` restricts
    the dataset to those items (a split).

    An item is a dict: ``video`` float32 ``(T, 3, H, W)`` in [-1, 1] (``video="pixels"``) or
    ``(T, C, h, w)`` scaled codec latents (``video="latents"``; the root's ``codec.json`` is
    ``codec_record``), ``wave`` float32 ``(S,)`` with ``S = frames_to_samples(T)``, ``mel``
    float32 ``(80, S // HOP)`` un-normalised log-mel computed by ``mel``, ``key`` str, ``start``
    float seconds. ``video_shape`` is ``(C, H, W)`` of one video frame as the dataset returns it;
    ``mel`` is the :class:`~cmmd.audio.mel.MelConfig` of the clips' mels, which training records.
    """

    def __init__(self, root: str | Path, clip_frames: int = 18, seed: int = 0,
                 keys: Sequence[str] | None = None, video: Literal["pixels", "latents"] = "pixels") -> None:
        self.root = Path(root)
        if video not in ("pixels", "latents"):
            raise CmmdError(f"video must be 'pixels' or 'latents', got {video!r}")
        if clip_frames < 1:
            raise CmmdError(f"clip_frames must be positive, got {clip_frames}")
        if not (self.root / "items").is_dir():
            raise CmmdError(f"{self.root} has no items/ folder; is it a `cmmd prepare` output?")
        metas = load_item_metas(self.root)
        if keys is not None:
            unknown = sorted(set(keys) - set(metas))
            if unknown:
                raise CmmdError(f"{self.root}: no prepared item(s) named {', '.join(unknown[:5])}")
            metas = {k: metas[k] for k in sorted(set(keys))}
        if not metas:
            raise CmmdError(f"{self.root} holds no complete items; run `cmmd prepare SRC {self.root}`")
        settings = {(m["fps"], m["sample_rate"], m["size"]) for m in metas.values()}
        if len(settings) > 1:
            raise CmmdError(f"{self.root}: items were prepared with different fps/sample rate/size: {sorted(settings)}")
        (self.fps, self.sample_rate, self.size), = settings
        self.mel = cmmd_mel(self.sample_rate)
        self.clip_frames = int(clip_frames)
        self.clip_samples = frames_to_samples(self.clip_frames, self.fps, self.sample_rate)
        self.seed = int(seed)
        self.epoch = 0
        self.items: list[_Item] = []
        total = 0
        for key, meta in metas.items():
            clips = meta["num_frames"] // self.clip_frames
            if clips:
                self.items.append(_Item(key, meta["num_frames"], total))
                total += clips
        if not total:
            raise CmmdError(f"{self.root}: no item is as long as one clip of {clip_frames} frames")
        self._num_clips = total
        self._firsts = np.array([item.first_clip for item in self.items])
        self.video = video
        self.codec_record: dict[str, Any] | None = None
        self.video_shape: tuple[int, int, int] = (3, self.size, self.size)
        if video == "latents":
            self.codec_record = read_codec_record(self.root)
            if self.codec_record is None:
                raise CmmdError(f"{self.root} has no codec.json, so no precomputed latents; encode them with "
                                f"`cmmd vae encode {self.root} --codec SPEC` (or `cmmd prepare SRC {self.root} "
                                "--codec SPEC`)")
            self.video_shape = latent_shape_of(self.root, {item.key: item.num_frames for item in self.items})

    @property
    def keys(self) -> list[str]:
        """Keys of the items in the dataset (those at least one clip long)."""
        return [item.key for item in self.items]

    def __len__(self) -> int:
        return self._num_clips

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``__getitem__`` for indices below ``len``."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Clip ``index % len`` of epoch ``self.epoch + index // len``.

        Indices past ``len`` carry their epoch, so a sampler can advance epochs inside
        persistent DataLoader workers, whose copies of the dataset never see ``set_epoch``.
        """
        epoch, clip = divmod(int(index), self._num_clips)
        return self.get(clip, self.epoch + epoch)

    def window(self, index: int, epoch: int) -> tuple[str, int]:
        """``(key, first frame)`` of clip ``index`` in ``epoch``; a pure function of
        ``(seed, epoch, index)``."""
        if not 0 <= index < self._num_clips:
            raise IndexError(f"clip index {index} out of range for {self._num_clips} clips")
        item = self.items[int(np.searchsorted(self._firsts, index, side="right")) - 1]
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        return item.key, int(rng.integers(0, item.num_frames - self.clip_frames + 1))

    def get(self, index: int, epoch: int) -> dict[str, Any]:
        """Clip ``index`` of ``epoch`` (see ``window``)."""
        return self.load_clip(*self.window(index, epoch))

    def load_clip(self, key: str, frame: int) -> dict[str, Any]:
        """The clip of item ``key`` starting at video frame ``frame`` (e.g. an ``index.csv`` row's
        ``start * fps``)."""
        item_dir = self.root / "items" / key
        frames = np.load(item_dir / "video.npy", mmap_mode="r")
        samples = np.load(item_dir / "audio.npy", mmap_mode="r")
        if not 0 <= frame <= len(frames) - self.clip_frames:
            raise CmmdError(f"{item_dir}: a {self.clip_frames}-frame clip cannot start at frame {frame} "
                            f"of {len(frames)}")
        first = frames_to_samples(frame, self.fps, self.sample_rate)
        audio = samples[first:first + self.clip_samples]
        if len(audio) < self.clip_samples:
            raise CmmdError(f"{item_dir}: audio.npy holds {len(samples)} samples, too few for its {len(frames)} frames")
        if self.video == "latents":
            video = load_latent_clip(item_dir, frame, self.clip_frames)
        else:
            video = torch.from_numpy(np.array(frames[frame:frame + self.clip_frames]))  # copy out of the map
            video = video.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        wave = torch.from_numpy(audio.astype(np.float32)).div_(AUDIO_SCALE)
        return {"video": video, "wave": wave, "mel": self.mel.log_mel(wave), "key": key,
                "start": frame / self.fps}
