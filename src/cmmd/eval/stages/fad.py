"""FAD per set and per sample of the generated audio (METHOD.md section 6, :mod:`cmmd.eval.fad`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # installed with librosa (via scikit-learn)

from cmmd.eval.cache import cached, cached_entries, statistics_key
from cmmd.eval.embedders import AudioEmbedder
from cmmd.eval.distances import frechet_distance
from cmmd.eval.entries import FRECHET_METHOD, baseline, item_metric, set_metric
from cmmd.eval.fad import EmbeddingStats, PooledFrames, fad_per_sample
from cmmd.eval.features import FeatureCache
from cmmd.eval.inputs import MediaFiles, progress_bar, with_file
from cmmd.eval.pairing import Pairing


def _frechet_of_stats(a: EmbeddingStats, b: EmbeddingStats) -> float:
    return frechet_distance(a.mu, a.cov, b.mu, b.cov, method=FRECHET_METHOD)


def embed_stage(paths: Sequence[Path], files: MediaFiles, cache: FeatureCache, embedder: AudioEmbedder,
                show: bool) -> dict[Path, np.ndarray]:
    """Frame embeddings ``(frames, D)`` of each file's audio."""
    config = dict(embedder.settings)
    out = {}
    for path in progress_bar(list(dict.fromkeys(paths)), f"FAD embeddings ({embedder.name})", show):
        def compute(path: Path = path) -> dict[str, np.ndarray]:
            media = files.read(path, f"FAD ({embedder.name})", video=False, audio=True,
                               sample_rate=embedder.sample_rate)
            assert media.audio is not None
            return {"frames": with_file(path, lambda: embedder.embed(media.audio))}

        out[path] = cached(cache, f"audio-{embedder.name}", files.digest(path), config, compute)["frames"]
    return out


def fad_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache, embedder: AudioEmbedder,
                show: bool, timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """``fad[<embedder>]`` (each round vs the reference set, averaged) and
    ``fad_per_sample[<embedder>]`` (reference clips as baseline); adds ``fad_embeddings`` to ``timings``."""
    s = files.settings
    n, k_rounds = len(pairing.names), pairing.generations
    ref_paths = [pairing.reference[name] for name in pairing.names]
    gen_paths = [p for name in pairing.names for p in pairing.generated[name]]
    start = time.perf_counter()
    emb = embed_stage(ref_paths + gen_paths, files, cache, embedder, show)
    timings["fad_embeddings"] = round(time.perf_counter() - start, 3)
    ref = [emb[p] for p in ref_paths]
    gen = [[emb[p] for p in pairing.generated[name]] for name in pairing.names]
    note = {"embedder": embedder.name, "embedder_settings": dict(embedder.settings)}

    def compute() -> dict[str, dict[str, Any]]:
        ref_pool = PooledFrames(ref)
        gen_pools = [PooledFrames([row[k] for row in gen]) for k in range(k_rounds)]
        with threadpool_limits(limits=1, user_api="blas"):
            per_sample = fad_per_sample([e for row in gen for e in row], ref_pool.all, FRECHET_METHOD)
            ref_per_sample = fad_per_sample(ref, ref_pool.all, FRECHET_METHOD)
        return {
            f"fad[{embedder.name}]": set_metric(
                lambda k, idx: _frechet_of_stats(gen_pools[k].stats(idx), ref_pool.stats(idx)),
                n, k_rounds, s, "FAD per set: each generation round vs the reference set", **note),
            f"fad_per_sample[{embedder.name}]": item_metric(
                {name: per_sample.reshape(n, k_rounds)[i].tolist() for i, name in enumerate(pairing.names)},
                pairing.names, s, "FAD per sample: each clip's frames vs the reference set statistics", True,
                baseline=baseline(ref_per_sample, s, "reference clips vs reference set"), **note),
        }

    arrays = [*ref, *(e for row in gen for e in row), np.array([e.shape[0] for row in [ref, *gen] for e in row])]
    return cached_entries(cache, f"set-fad-{embedder.name}", arrays, statistics_key(pairing, s), compute)
