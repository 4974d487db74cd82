"""Frechet Audio Distance per set and per sample (METHOD.md section 6; paper section 3.1).

FAD (Kilgour et al. 2019) is the Frechet distance between Gaussians fitted to the frame
embeddings of two sets of audio clips, all frames of all clips pooled. The paper computes it
with the FAD toolkit (Gui et al. 2024, ``fadtk``) in two ways, both here:

* per set (:func:`fad_set`): every frame of the generated set against the reference (test) set
  statistics. FAD is biased by the number of frames, so sets compared with each other must
  have the same size (the paper compares 50 samples per model; ``cmmd evaluate`` evaluates
  each generation round, one sample per test item, against the full reference set).
* per sample (:func:`fad_per_sample`, fadtk's ``score_individual``): one clip's frames (its own
  mean and covariance) against the reference set statistics; a distribution over clips (the
  boxes of the paper's Fig. 4). A single clip has few frames (36-180 for 3.6 s), so its
  covariance is rank-deficient and its FAD is large even for real clips: compare it only with
  the same statistic of reference clips (reported next to it) and of other models.

The embedder is named in every reported value, ``fad[crepe-tiny]``, because FADs from
different embedders are not comparable (``cmmd.eval.embedders``).

NaN policy: a clip with fewer than 2 frames has no covariance and its per-sample FAD is NaN
(dropped and counted by :func:`cmmd.eval.stats.bootstrap_ci`); silent clips are embedded like
any other (CREPE sees all-zero windows) and give finite values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.distances import feature_stats, frechet_distance


@dataclass(frozen=True)
class EmbeddingStats:
    """Mean ``(D,)`` and covariance ``(D, D)`` of ``n_frames`` pooled frame embeddings."""

    mu: np.ndarray
    cov: np.ndarray
    n_frames: int

    @classmethod
    def from_frames(cls, embeddings: Sequence[np.ndarray]) -> EmbeddingStats:
        """Statistics of every frame of every clip, ``embeddings[i] (frames_i, D)``."""
        if not embeddings:
            raise CmmdError("FAD: no clips to take statistics of")
        dims = {e.shape[1] for e in embeddings}
        if len(dims) != 1:
            raise CmmdError(f"FAD: clips have embeddings of different sizes {sorted(dims)}")
        frames = np.concatenate([np.asarray(e, dtype=np.float64) for e in embeddings])
        if frames.shape[0] < 2:
            raise CmmdError(f"FAD: {frames.shape[0]} frame(s) in total; a covariance needs at least 2")
        mu, cov = feature_stats(frames)
        return cls(mu, cov, frames.shape[0])


class PooledFrames:
    """The frames of a set of clips, concatenated once, for the statistics of any multiset of
    those clips (a bootstrap resample) without re-concatenating: ``O(frames * D^2)`` each."""

    def __init__(self, embeddings: Sequence[np.ndarray]) -> None:
        stats = EmbeddingStats.from_frames(embeddings)  # validates sizes and the frame count
        self.frames = np.concatenate([np.asarray(e, dtype=np.float64) for e in embeddings])
        self.clip = np.repeat(np.arange(len(embeddings)), [e.shape[0] for e in embeddings])
        self.all = stats

    def stats(self, clips: np.ndarray) -> EmbeddingStats:
        """Mean and covariance of the frames of ``clips`` (indices, repeats allowed)."""
        counts = np.bincount(np.asarray(clips, dtype=np.int64), minlength=int(self.clip.max()) + 1)
        weights = counts[self.clip].astype(np.float64)
        total = float(weights.sum())
        if total < 2:
            raise CmmdError(f"FAD: {total:g} frame(s) in the resample; a covariance needs at least 2")
        mu = weights @ self.frames / total
        centred = self.frames - mu
        cov = (centred * weights[:, None]).T @ centred / (total - 1.0)
        return EmbeddingStats(mu, cov, int(total))


def fad_set(generated: Sequence[np.ndarray], reference: EmbeddingStats | Sequence[np.ndarray],
            method: Literal["sqrtm", "eigh"] = "sqrtm") -> float:
    """FAD of a generated set (frame embeddings per clip) against the reference set
    (``method``: :func:`cmmd.eval.distances.frechet_distance`)."""
    ref = reference if isinstance(reference, EmbeddingStats) else EmbeddingStats.from_frames(reference)
    gen = EmbeddingStats.from_frames(generated)
    return frechet_distance(gen.mu, gen.cov, ref.mu, ref.cov, method=method)


def fad_per_sample(generated: Sequence[np.ndarray], reference: EmbeddingStats | Sequence[np.ndarray],
                   method: Literal["sqrtm", "eigh"] = "sqrtm") -> np.ndarray:
    """Per-sample FAD ``(N,)``: each clip's frames ``(frames_i, D)`` against the reference set
    statistics; NaN for a clip with fewer than 2 frames."""
    ref = reference if isinstance(reference, EmbeddingStats) else EmbeddingStats.from_frames(reference)
    out = np.full(len(generated), np.nan)
    for i, emb in enumerate(generated):
        e = np.asarray(emb, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != ref.mu.shape[0]:
            raise CmmdError(f"FAD: clip {i} has embeddings of shape {e.shape}, expected (frames, {ref.mu.shape[0]})")
        if e.shape[0] >= 2:
            mu, cov = feature_stats(e)
            out[i] = frechet_distance(mu, cov, ref.mu, ref.cov, method=method)
    return out
