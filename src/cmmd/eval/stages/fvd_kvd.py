"""FVD and KVD: I3D features of the reference and generated clips, pairwise rounds (METHOD.md section 6)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.errors import CmmdError
from cmmd.eval.cache import cached_entries, statistics_key
from cmmd.eval.distances import frechet_from_features, polynomial_mmd
from cmmd.eval.entries import FRECHET_METHOD, set_metric
from cmmd.eval.features import FeatureCache, cache_key, module_fingerprint
from cmmd.eval.i3d import MIN_FRAMES, InceptionI3d, i3d_features, load_i3d
from cmmd.eval.inputs import MediaFiles, progress_bar
from cmmd.eval.pairing import Pairing
from cmmd.weights import i3d_weights_path

EXTRACTOR = "i3d-kinetics-400"


def _weights_id(path: Path) -> str:
    """Identity of a converted weights file: the pinned digest of the archive it came from."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return (f.metadata() or {}).get("archive_sha256", f"{path.name}:{path.stat().st_size}")


def i3d_stage(paths: Sequence[Path], files: MediaFiles, cache: FeatureCache, model: InceptionI3d | None,
              show: bool) -> dict[Path, dict[str, np.ndarray]]:
    """I3D ``logits (400,)`` and ``pool (1024,)`` features of each file (first ``fvd_frames`` frames)."""
    s = files.settings
    weights = module_fingerprint(model) if model is not None else _weights_id(i3d_weights_path(s.cache))
    config = {"frames": s.fvd_frames, "fps": s.fps, "size": 224, "resize": "tf1-bilinear", "weights": weights}
    by_digest: dict[str, dict[str, np.ndarray]] = {}
    todo = []  # one path per content not in the cache: identical files are embedded once
    pending: set[str] = set()
    for path in dict.fromkeys(paths):
        digest = files.digest(path)
        if digest in by_digest or digest in pending:
            continue
        hit = cache.load(EXTRACTOR, cache_key(digest, EXTRACTOR, config))
        if hit is None:
            todo.append(path)
            pending.add(digest)
        else:
            by_digest[digest] = hit
    if todo and model is None:
        model = load_i3d(i3d_weights_path(s.cache))
    batches = [todo[i : i + s.batch_size] for i in range(0, len(todo), s.batch_size)]
    for batch in progress_bar(batches, f"I3D ({len(todo)} clips, {s.batch_size}/batch)", show):
        clips = []
        for path in batch:
            media = files.read(path, "FVD/KVD", video=True, audio=False, duration=(s.fvd_frames + 0.5) / s.fps)
            assert media.frames is not None
            if media.frames.shape[0] < s.fvd_frames:
                raise CmmdError(f"{path}: {media.frames.shape[0]} frame(s) at {s.fps:g} fps; FVD/KVD use the first "
                                f"{s.fvd_frames} (lower --fvd-frames, at least {MIN_FRAMES}, or drop fvd,kvd)")
            clips.append(media.frames[: s.fvd_frames])
        assert model is not None
        feats = i3d_features(model, clips, s.fvd_frames, batch_size=len(clips))
        for i, path in enumerate(batch):
            digest = files.digest(path)
            by_digest[digest] = {"logits": feats["logits"][i], "pool": feats["pool"][i]}
            cache.save(EXTRACTOR, cache_key(digest, EXTRACTOR, config), by_digest[digest])
    return {path: by_digest[files.digest(path)] for path in paths}


def fvd_kvd_metrics(pairing: Pairing, files: MediaFiles, cache: FeatureCache, model: InceptionI3d | None,
                    show: bool, timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """``fvd[i3d-<features>]`` and/or ``kvd[...]`` (as in ``settings.metrics``): generation round
    ``k`` against the reference set, averaged over the K rounds; adds ``i3d_features`` to ``timings``."""
    s = files.settings
    n, k_rounds = len(pairing.names), pairing.generations
    if n < 2:
        raise CmmdError(f"FVD/KVD need at least 2 conditions (covariances), got {n}; drop fvd,kvd")
    gen_paths = [p for name in pairing.names for p in pairing.generated[name]]
    ref_paths = [pairing.reference[name] for name in pairing.names]
    start = time.perf_counter()
    feats = i3d_stage(ref_paths + gen_paths, files, cache, model, show)
    timings["i3d_features"] = round(time.perf_counter() - start, 3)
    ref = np.stack([feats[p][s.fvd_features] for p in ref_paths]).astype(np.float64)
    gen = np.stack([[feats[p][s.fvd_features] for p in pairing.generated[name]] for name in pairing.names])
    tag = f"i3d-{s.fvd_features}"
    note = {"features": f"I3D Kinetics-400 {s.fvd_features} ({ref.shape[1]}-d), first {s.fvd_frames} frames at "
                        f"{s.fps:g} fps, 224x224"}
    if n <= ref.shape[1]:
        note["warning"] = (f"{n} conditions <= {ref.shape[1]} feature dimensions: the covariances are rank-deficient, "
                           "so FVD is biased upwards and comparable only at equal set sizes")

    def compute() -> dict[str, dict[str, Any]]:
        out = {}
        if "fvd" in s.metrics:
            out[f"fvd[{tag}]"] = set_metric(
                lambda k, idx: frechet_from_features(gen[idx, k], ref[idx], method=FRECHET_METHOD), n, k_rounds, s,
                "Frechet video distance, pairwise rounds vs reference set", **note)
        if "kvd" in s.metrics:
            out[f"kvd[{tag}]"] = set_metric(
                lambda k, idx: polynomial_mmd(gen[idx, k], ref[idx], paired=True), n, k_rounds, s,
                "kernel video distance (unbiased paired MMD^2, kernel (x.y/d + 1)^3)", **note)
        return out

    return cached_entries(cache, "set-fvd-kvd", [ref, gen], statistics_key(pairing, s), compute)
