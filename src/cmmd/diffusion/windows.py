"""Windowed sampling for inputs longer than the model should see at once (MultiDiffusion).

A long clip is cut along time into overlapping windows of ``window`` video frames. At every
sampler step each window is denoised on its own and the windows' x0 predictions are blended
into one prediction for the whole clip (Bar-Tal et al. 2023, "MultiDiffusion"), so the sampler
integrates one state of the clip's full length and no window ever starts from its own noise:
neighbouring windows agree on their overlap by construction, there is no seam to hide and no
restart of the rhythm at a window edge. Both samplers use the model only through x0, and x0 is
affine in the network's output at a fixed state, so blending x0 is blending the model outputs.
Conditioning is unchanged: the sampler's :class:`~cmmd.diffusion.guidance.GuidedDenoiser`
wraps the windowed denoiser and replaces the known modality over the whole clip.

Plan (pure functions, in frames of one axis):

* :func:`window_spans`: ``n = 1 + ceil((length - window) / (window - overlap))`` windows of
  exactly ``window`` frames, starts spread evenly from 0 to ``length - window``, so consecutive
  windows share at least ``overlap`` frames and the last one ends at ``length``; one window of
  the whole length when ``length <= window``;
* :func:`map_spans`: the same windows on the other time axis (mel frames or samples), through
  time: frame ``f`` of ``T`` maps to ``floor(f * L / T + 1/2)`` of ``L``, so a window's video and
  audio cover the same seconds up to half an audio frame (8 ms for mels at the defaults);
* :func:`blend_weights`: ``(n, length)`` weights, window ``i`` weighting position ``t`` by its
  distance to the nearer edge, ``min(t - start + 1/2, stop - t - 1/2)``, normalised to sum 1 at
  every position: a linear crossfade across each overlap of two windows, weight 1 where a
  window is alone.

Memory: windows are evaluated ``per_call`` at a time, stacked along the batch (windows whose
audio spans differ by the one frame of rounding go in separate calls), so a step holds the
activations of ``per_call`` windows whatever the clip's length (with reconstruction guidance,
``lambda > 0``, the gradient's graph spans all windows of the step). Compute: about ``n *
window / length`` times a whole-clip step, ``window / (window - overlap)`` for long clips.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cmmd.diffusion.denoiser import Denoiser

Span = tuple[int, int]


def window_spans(length: int, window: int, overlap: int) -> list[Span]:
    """``[(start, stop), ...]`` of windows of ``window`` frames covering ``range(length)`` with at
    least ``overlap`` frames shared by consecutive windows (module docstring); ``[(0, length)]``
    when ``length <= window``."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")
    if length <= window:
        return [(0, length)]
    count = 1 + math.ceil((length - window) / (window - overlap))
    starts = [(k * (length - window)) // (count - 1) for k in range(count)]
    return [(s, s + window) for s in starts]


def map_spans(spans: list[Span], length: int, other_length: int) -> list[Span]:
    """``spans`` over ``length`` frames moved to an axis of ``other_length`` frames covering the
    same duration: each edge ``f`` goes to ``floor(f * other_length / length + 1/2)``."""
    if length < 1 or other_length < 1:
        raise ValueError(f"lengths must be >= 1, got {length} and {other_length}")

    def edge(f: int) -> int:
        return (2 * f * other_length + length) // (2 * length)

    mapped = [(edge(start), edge(stop)) for start, stop in spans]
    empty = [span for span, (a, b) in zip(spans, mapped) if b <= a]
    if empty:
        raise ValueError(f"window {empty[0]} of {length} frames is empty on an axis of {other_length}")
    return mapped


def blend_weights(length: int, spans: list[Span]) -> np.ndarray:
    """Float64 ``(len(spans), length)`` crossfade weights (module docstring): zero outside each
    span, summing to 1 at every position. Raises ValueError if the spans leave a gap."""
    t = np.arange(length, dtype=np.float64) + 0.5
    raw = np.zeros((len(spans), length))
    for i, (start, stop) in enumerate(spans):
        raw[i, start:stop] = np.minimum(t[start:stop] - start, stop - t[start:stop])
    total = raw.sum(axis=0)
    if (total <= 0).any():
        raise ValueError(f"windows {spans} leave position {int(np.argmax(total <= 0))} of {length} uncovered")
    return raw / total


class WindowedDenoiser:
    """A denoiser over clips of ``num_frames`` video frames and ``audio_length`` audio frames
    that evaluates ``denoiser`` on windows of ``window`` video frames, ``per_call`` windows to a
    call, and blends them.

    Same call signature as the wrapped denoiser, for inputs of exactly those lengths; with a
    single window it is the wrapped denoiser, call for call. The wrapped denoiser must treat the
    samples of a batch independently (ours do: no batch statistics).
    """

    def __init__(self, denoiser: Denoiser, num_frames: int, audio_length: int, window: int, overlap: int,
                 per_call: int = 8):
        if per_call < 1:
            raise ValueError(f"per_call must be >= 1, got {per_call}")
        self.denoiser, self.per_call = denoiser, per_call
        self.num_frames, self.audio_length = num_frames, audio_length
        self.video_spans = window_spans(num_frames, window, overlap)
        self.audio_spans = map_spans(self.video_spans, num_frames, audio_length)
        self.video_weights = torch.from_numpy(blend_weights(num_frames, self.video_spans))
        self.audio_weights = torch.from_numpy(blend_weights(audio_length, self.audio_spans))

    def __call__(
        self, video_n: torch.Tensor, audio_n: torch.Tensor, n_video: torch.Tensor, n_audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blended x0 predictions for ``video_n`` (B, T, C, H, W) and ``audio_n`` (B, M, L)."""
        if video_n.shape[1] != self.num_frames or audio_n.shape[-1] != self.audio_length:
            raise ValueError(f"windows were planned for {self.num_frames} frames and {self.audio_length} audio "
                             f"frames, got {video_n.shape[1]} and {audio_n.shape[-1]}")
        if len(self.video_spans) == 1:
            return self.denoiser(video_n, audio_n, n_video, n_audio)
        video0 = torch.zeros_like(video_n)
        audio0 = torch.zeros_like(audio_n)
        wv = self.video_weights.to(video_n.device, video_n.dtype)
        wa = self.audio_weights.to(audio_n.device, audio_n.dtype)
        b = video_n.shape[0]
        for group in self._calls():
            k = len(group)
            out_v, out_a = self.denoiser(
                torch.cat([video_n[:, slice(*self.video_spans[i])] for i in group]),
                torch.cat([audio_n[..., slice(*self.audio_spans[i])] for i in group]),
                n_video.repeat(k), n_audio.repeat(k),
            )
            for j, i in enumerate(group):
                (v0, v1), (a0, a1) = self.video_spans[i], self.audio_spans[i]
                video0[:, v0:v1] += wv[i, v0:v1].view(1, -1, *[1] * (video_n.ndim - 2)) * out_v[j * b : (j + 1) * b]
                audio0[..., a0:a1] += wa[i, a0:a1] * out_a[j * b : (j + 1) * b]
        return video0, audio0

    def _calls(self) -> list[list[int]]:
        """Window indices per denoiser call: consecutive runs of up to ``per_call`` windows, split
        by audio span length so that each call stacks equal shapes."""
        calls: list[list[int]] = []
        for first in range(0, len(self.video_spans), self.per_call):
            by_length: dict[int, list[int]] = {}
            for i in range(first, min(first + self.per_call, len(self.video_spans))):
                a0, a1 = self.audio_spans[i]
                by_length.setdefault(a1 - a0, []).append(i)
            calls += by_length.values()
        return calls
