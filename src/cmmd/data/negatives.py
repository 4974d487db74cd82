"""Negative audio/video pairs for the joint contrastive loss (METHOD.md section 4, Paper Sec. 2.2).

The contrastive loss (Paper, Eq. 6) needs mismatched pairs: negative audios ``a-`` paired with
the positive video, and negative videos ``v-`` paired with the positive audio. They are made from
the batch by three augmentations (Paper, "Creating Negative Samples"), each for either modality:

1. temporal shift (:func:`temporal_shift`): move the clip forward or backward in time by a
   random few hundred milliseconds (never zero);
2. segment swap (:func:`segment_swap`): another clip of the batch and a random split point,
   concatenated as ``(other_left, own_right)`` or ``(own_left, other_right)``;
3. random swap (:func:`random_swap`): replace the clip with another one of the batch.

Time axes: video ``(B, T, C, H, W)`` (time dim 1) at ``fps``; mels ``(B, 80, L)`` (time dim -1)
at ``mel_rate(sample_rate)`` frames per second. Durations are drawn in milliseconds and converted
per modality, so a shift of ``s`` ms moves video by ``round(s * fps / 1000)`` frames and audio by
``round(s * mel_rate(sample_rate) / 1000)`` frames (both rounded half up and at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cmmd.conventions import FPS, N_MELS, SAMPLE_RATE, mel_rate
from cmmd.errors import CmmdError

NegativeKind = Literal["shift", "segment", "swap"]
KINDS: tuple[NegativeKind, ...] = ("shift", "segment", "swap")
Modalities = Literal["both", "alternate", "audio", "video"]
MODALITIES: tuple[Modalities, ...] = ("both", "alternate", "audio", "video")


def _time_axis(x: Tensor, time_dim: int) -> int:
    dim = time_dim % x.dim()
    if dim == 0:
        raise CmmdError("time_dim must not be the batch dimension 0")
    return dim


def _per_sample_view(values: Tensor, x: Tensor, dim: int) -> Tensor:
    """Reshape ``values (B, n)`` to broadcast against ``x`` with ``n`` on ``dim``."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = values.shape
    return values.view(shape)


def temporal_shift(x: Tensor, shift_frames: Tensor, time_dim: int) -> Tensor:
    """Shift each sample along time by its own number of frames, circularly (METHOD.md section 4.1).

    ``x (B, ...)`` with time on ``time_dim``; ``shift_frames (B,)`` integers, positive moves the
    content later: ``out[b, t] = x[b, (t - shift_frames[b]) mod n]``. Shape, dtype and device are
    kept; differentiable in ``x``.

    Why a circular roll rather than padding: every output frame is still a real frame of the
    clip, so the negative differs from the positive only in its timing (plus one cut where the
    end wraps to the start, like the cut of a segment swap), and not in frozen edge frames or
    silence that a model could learn to spot instead of the misalignment. A shift that is a
    multiple of ``n`` would give back the positive, so ``0 < |shift| < n`` is required.
    """
    dim = _time_axis(x, time_dim)
    batch, n = x.shape[0], x.shape[dim]
    shift = shift_frames.to(device=x.device, dtype=torch.long)
    if shift.shape != (batch,):
        raise CmmdError(f"shift_frames must have shape ({batch},), got {tuple(shift.shape)}")
    if bool(((shift == 0) | (shift.abs() >= n)).any()):
        raise CmmdError(f"temporal shifts must satisfy 0 < |shift| < {n} frames, got {shift.tolist()}")
    t = torch.arange(n, device=x.device)
    source = (t[None, :] - shift[:, None]) % n
    return torch.gather(x, dim, _per_sample_view(source, x, dim).expand_as(x))


def segment_swap(x: Tensor, other: Tensor, split: Tensor, own_left: Tensor, time_dim: int) -> Tensor:
    """Splice each sample with another clip at a split point (METHOD.md section 4.2).

    ``x, other (B, ...)`` with time on ``time_dim``; ``split (B,)`` integers in ``[1, n - 1]``:
    frames ``t < split`` form the left part. Where ``own_left`` ``(B,)`` is true the result is
    ``(x_left, other_right)``, else ``(other_left, x_right)``. Shape, dtype and device are kept.
    """
    if other.shape != x.shape:
        raise CmmdError(f"segment_swap needs clips of equal shape, got {tuple(x.shape)} and {tuple(other.shape)}")
    dim = _time_axis(x, time_dim)
    batch, n = x.shape[0], x.shape[dim]
    split = split.to(device=x.device, dtype=torch.long)
    own_left = own_left.to(device=x.device, dtype=torch.bool)
    if split.shape != (batch,) or own_left.shape != (batch,):
        raise CmmdError(f"split and own_left must have shape ({batch},)")
    if bool(((split < 1) | (split > n - 1)).any()):
        raise CmmdError(f"split points must lie in [1, {n - 1}] so both parts are non-empty, got {split.tolist()}")
    left = torch.arange(n, device=x.device)[None, :] < split[:, None]
    take_own = left == own_left[:, None]
    return torch.where(_per_sample_view(take_own, x, dim), x, other.to(x.device))


def random_swap(x: Tensor, perm: Tensor) -> Tensor:
    """Replace sample ``b`` by sample ``perm[b]`` (METHOD.md section 4.3); ``x (B, ...)``.

    ``perm (B,)`` must be a derangement (no ``perm[b] == b``), e.g. from :func:`random_derangement`,
    so that no "negative" is its own positive.
    """
    perm = perm.to(device=x.device, dtype=torch.long)
    if perm.shape != (x.shape[0],) or bool((perm == torch.arange(x.shape[0], device=x.device)).any()):
        raise CmmdError(f"random_swap needs a derangement of {x.shape[0]} indices, got {perm.tolist()}")
    return x.index_select(0, perm)


def random_derangement(n: int, generator: torch.Generator) -> Tensor:
    """Uniformly random permutation of ``range(n)`` without fixed points, ``(n,)`` long on CPU.

    Rejection sampling of ``torch.randperm`` (about ``e`` draws on average), so every
    derangement is equally likely and the result is fixed by the generator's state.
    """
    if n < 2:
        raise CmmdError(f"a derangement needs at least 2 items, got {n}")
    identity = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
        if not bool((perm == identity).any()):
            return perm


def shift_ms_to_frames(shift_ms: Tensor, frame_rate: float) -> Tensor:
    """Signed shift in frames at ``frame_rate`` frames/s: ``sign * max(1, round(|ms| * rate / 1000))``.

    Rounds half up; ``shift_ms (B,)`` float, never zero -> ``(B,)`` long, never zero.
    """
    frames = torch.floor(shift_ms.abs().double() * frame_rate / 1000.0 + 0.5).long().clamp(min=1)
    return torch.sign(shift_ms).long() * frames


@dataclass
class NegativeConfig:
    """How negatives are drawn (METHOD.md section 4).

    ``kinds``: augmentations to draw from, uniformly per sample. ``shift_ms``: range of the
    shift magnitude in milliseconds (``0 < low <= high``); the direction is random. ``split``:
    range of the segment-swap split point as a fraction of the clip length (in ``(0, 1)``).
    ``num_per_step``: negatives of each modality per step, a random subset of the batch
    (Paper: "randomly draw a subset ... per gradient descent step"); ``None`` means one per sample.
    ``modalities``: which negatives a step draws: ``"both"`` (the paper: audio and video
    negatives), ``"audio"`` or ``"video"`` only, or ``"alternate"`` (audio negatives on even
    steps, video negatives on odd ones). Each negative is one more row through the network, so
    a step sees ``B + Ka + Kv`` rows; one modality per step halves the negatives' share.
    """

    kinds: tuple[NegativeKind, ...] = KINDS
    shift_ms: tuple[float, float] = (200.0, 800.0)
    split: tuple[float, float] = (0.2, 0.8)
    num_per_step: int | None = None
    modalities: Modalities = "both"

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        if not self.kinds or len(set(self.kinds)) != len(self.kinds) or not set(self.kinds) <= set(KINDS):
            raise CmmdError(f"negatives.kinds must be distinct items of {list(KINDS)}, got {list(self.kinds)}")
        low, high = self.shift_ms
        if not 0 < low <= high:
            raise CmmdError(f"negatives.shift_ms must satisfy 0 < low <= high (ms), got {list(self.shift_ms)}")
        low, high = self.split
        if not 0 < low <= high < 1:
            raise CmmdError(f"negatives.split must satisfy 0 < low <= high < 1, got {list(self.split)}")
        if self.num_per_step is not None and self.num_per_step < 1:
            raise CmmdError(f"negatives.num_per_step must be at least 1 (or null), got {self.num_per_step}")
        if self.modalities not in MODALITIES:
            raise CmmdError(f"negatives.modalities must be one of {list(MODALITIES)}, got {self.modalities!r}")

    def modalities_at(self, step: int) -> tuple[str, ...]:
        """The negative modalities drawn at training step ``step``: a subset of ``("audio", "video")``."""
        if self.modalities == "both":
            return ("audio", "video")
        if self.modalities == "alternate":
            return ("audio",) if step % 2 == 0 else ("video",)
        return (self.modalities,)


@dataclass
class Negatives:
    """Negative pairs for one step.

    ``audio (Ba, 80, L)`` negative audios, each paired with ``video_for_audio (Ba, T, C, H, W)``,
    the positive video of batch row ``audio_index[i]``; ``video (Bv, T, C, H, W)`` negative
    videos, each paired with ``audio_for_video (Bv, 80, L)`` of row ``video_index[i]``.
    ``audio_kinds`` / ``video_kinds`` name the augmentation behind each negative.
    """

    audio: Tensor
    video_for_audio: Tensor
    audio_index: Tensor
    audio_kinds: list[NegativeKind]
    video: Tensor
    audio_for_video: Tensor
    video_index: Tensor
    video_kinds: list[NegativeKind]


def _rand(n: int, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).cpu()


def _build(
    x: Tensor,
    rows: Tensor,
    kind_ids: Tensor,
    kinds: tuple[NegativeKind, ...],
    shift_frames: Tensor,
    split_frames: Tensor,
    own_left: Tensor,
    perm: Tensor | None,
    time_dim: int,
) -> Tensor:
    """Negatives of ``x`` for batch rows ``rows`` (CPU long), each by its row's drawn kind.

    "segment" and "swap" both take the other clip of a row from ``random_swap(x, perm)``;
    ``perm`` is ``None`` only when ``kinds`` is ``("shift",)``.
    """
    out = torch.empty((len(rows), *x.shape[1:]), dtype=x.dtype, device=x.device)
    if len(rows) == 0:
        return out
    swapped = random_swap(x, perm) if perm is not None else None
    for k, kind in enumerate(kinds):
        pos = torch.nonzero(kind_ids[rows] == k).squeeze(1)
        if len(pos) == 0:
            continue
        r = rows[pos]
        if kind == "shift":
            neg = temporal_shift(x.index_select(0, r.to(x.device)), shift_frames[r], time_dim)
        elif swapped is None:
            raise CmmdError(f"negative kind {kind!r} needs a batch of at least 2 clips")
        elif kind == "swap":
            neg = swapped.index_select(0, r.to(x.device))
        else:
            own, other = x.index_select(0, r.to(x.device)), swapped.index_select(0, r.to(x.device))
            neg = segment_swap(own, other, split_frames[r], own_left[r], time_dim)
        out[pos.to(x.device)] = neg
    return out


def make_negatives(
    video: Tensor,
    audio: Tensor,
    cfg: NegativeConfig,
    generator: torch.Generator,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    step: int = 0,
) -> Negatives:
    """Draw one step's negative audios and videos from a batch (METHOD.md section 4, Paper Eq. 6).

    ``video (B, T, C, H, W)`` (pixels or codec latents) at ``fps``; ``audio (B, 80, L)`` mels.
    For each batch row one kind (uniform over ``cfg.kinds``), one signed shift in ms, one split
    fraction, one side and, through a shared derangement, one other row are drawn; the row's
    audio negative and video negative both use them, so they agree in time (a shift of ``s`` ms
    is ``s`` ms in both modalities; a split at fraction ``f`` is at ``round(f * T)`` and
    ``round(f * L)``, clamped to ``[1, n - 1]``). Then ``cfg.num_per_step`` rows (all if ``None``
    or more than ``B``) are picked at random, independently for audio and video negatives, and
    a modality that ``cfg.modalities_at(step)`` leaves out gets none (its tensors have 0 rows;
    the random draws are the same, so ``"both"`` does not depend on ``step``).

    "segment" and "swap" need another clip, so with ``B == 1`` only "shift" is used (an error if
    it is not enabled). Every random number comes from ``generator`` (CPU recommended: the same
    generator state then gives the same negatives on every device); outputs keep the inputs'
    device and dtype.
    """
    if video.dim() != 5 or audio.dim() != 3 or audio.shape[1] != N_MELS:
        raise CmmdError(
            f"make_negatives expects video (B, T, C, H, W) and audio (B, {N_MELS}, L), "
            f"got {tuple(video.shape)} and {tuple(audio.shape)}"
        )
    batch = video.shape[0]
    if audio.shape[0] != batch or batch < 1:
        raise CmmdError(f"video and audio batch sizes differ or are empty: {video.shape[0]} vs {audio.shape[0]}")
    kinds = cfg.kinds
    if batch == 1:
        if "shift" not in kinds:
            raise CmmdError(
                f"negative kinds {list(kinds)} need another clip in the batch; use a batch size of "
                "at least 2 or enable 'shift'"
            )
        kinds = ("shift",)
    lengths = {"video": (video.shape[1], float(fps)), "audio": (audio.shape[-1], mel_rate(sample_rate))}
    for name, (n, rate) in lengths.items():
        if n < 2:
            raise CmmdError(f"{name} clips of {n} frame(s) are too short for negatives")
        longest = int(shift_ms_to_frames(torch.tensor([cfg.shift_ms[1]]), rate))
        if "shift" in kinds and longest >= n:
            raise CmmdError(
                f"negatives.shift_ms up to {cfg.shift_ms[1]} ms is {longest} {name} frames, not less "
                f"than the clip's {n} frames; lower negatives.shift_ms"
            )

    kind_ids = torch.randint(len(kinds), (batch,), generator=generator, device=generator.device).cpu()
    low, high = cfg.shift_ms
    magnitude = low + (high - low) * _rand(batch, generator)
    sign = torch.where(_rand(batch, generator) < 0.5, -1.0, 1.0).double()
    shift_ms = sign * magnitude
    fraction = cfg.split[0] + (cfg.split[1] - cfg.split[0]) * _rand(batch, generator)
    own_left = _rand(batch, generator) < 0.5
    perm = random_derangement(batch, generator) if batch >= 2 else None

    def split_frames(n: int) -> Tensor:
        return torch.floor(fraction * n + 0.5).long().clamp(1, n - 1)

    def subset() -> Tensor:
        count = batch if cfg.num_per_step is None else min(cfg.num_per_step, batch)
        order = torch.randperm(batch, generator=generator, device=generator.device).cpu()
        return order[:count].sort().values

    audio_rows, video_rows = subset(), subset()
    drawn = cfg.modalities_at(step)
    if "audio" not in drawn:
        audio_rows = audio_rows[:0]
    if "video" not in drawn:
        video_rows = video_rows[:0]
    neg_audio = _build(
        audio, audio_rows, kind_ids, kinds, shift_ms_to_frames(shift_ms, mel_rate(sample_rate)),
        split_frames(audio.shape[-1]), own_left, perm, time_dim=-1,
    )
    neg_video = _build(
        video, video_rows, kind_ids, kinds, shift_ms_to_frames(shift_ms, float(fps)),
        split_frames(video.shape[1]), own_left, perm, time_dim=1,
    )
    return Negatives(
        audio=neg_audio,
        video_for_audio=video.index_select(0, audio_rows.to(video.device)),
        audio_index=audio_rows,
        audio_kinds=[kinds[int(i)] for i in kind_ids[audio_rows]],
        video=neg_video,
        audio_for_video=audio.index_select(0, video_rows.to(audio.device)),
        video_index=video_rows,
        video_kinds=[kinds[int(i)] for i in kind_ids[video_rows]],
    )
