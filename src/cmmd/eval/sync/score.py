"""Scores of detected against ground-truth events: matching, precision/recall/F1, chance level.

Empty sets, by definition (no NaN in precision/recall/F1): with no ground-truth and no
predicted events all three are 1.0 (nothing to find, nothing invented); when exactly one side is
empty all three are 0.0. ``class_accuracy`` and ``median_offset_ms`` are NaN when nothing was
matched (there is nothing to judge); :func:`cmmd.eval.stats.bootstrap_ci` drops and counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from cmmd.conventions import FPS, HOP, SAMPLE_RATE
from cmmd.errors import CmmdError
from cmmd.eval.sync.audio import AudioEvent, as_log_mel, detect_audio_events_mel, magnitude_flux
from cmmd.eval.sync.offset import av_offset_from_envelopes
from cmmd.eval.sync.video import VideoEvent, detect_video_events, motion_energy

TIME_SLACK = 1e-9  # s; float rounding of times like 1.1 - 1.0


def match_events(
    pred_times: Sequence[float] | np.ndarray,
    gt_times: Sequence[float] | np.ndarray,
    tolerance: float,
    pred_classes: Sequence[int] | None = None,
    gt_classes: Sequence[int] | None = None,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Optimal one-to-one matching of predicted to ground-truth event times (seconds).

    A pair can match only if ``|pred - gt| <= tolerance`` (plus ``TIME_SLACK``, so times on
    a frame grid exactly one tolerance apart match despite float rounding). Among all
    matchings the one with the most pairs wins, ties broken by the smallest total distance
    (``linear_sum_assignment`` on the distances, with out-of-tolerance pairs priced above any
    sum of in-tolerance ones). With
    classes given, a pair of different classes costs ``tolerance`` more, so when two objects hit
    close together each sound is paired with its own object's impact if that keeps the count.

    Returns ``matches`` ``[(pred_idx, gt_idx), ...]`` sorted by ``gt_idx`` and ``offsets``
    ``(len(matches),)`` = ``pred - gt`` in seconds (positive: the prediction is late).
    """
    if not tolerance > 0:
        raise CmmdError(f"match_events: tolerance must be > 0 seconds, got {tolerance}")
    pred = np.asarray(pred_times, dtype=np.float64).ravel()
    gt = np.asarray(gt_times, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
        raise CmmdError("match_events: event times must be finite")
    if pred.size == 0 or gt.size == 0:
        return [], np.zeros(0)
    dist = np.abs(pred[:, None] - gt[None, :])
    cost = dist.copy()
    if pred_classes is not None and gt_classes is not None:
        pc = np.asarray(pred_classes).ravel()
        gc = np.asarray(gt_classes).ravel()
        if pc.size != pred.size or gc.size != gt.size:
            raise CmmdError("match_events: one class per event time is needed")
        cost += tolerance * (pc[:, None] != gc[None, :])
    valid = dist <= tolerance + TIME_SLACK
    big = 2.0 * tolerance * (min(pred.size, gt.size) + 1)
    rows, cols = linear_sum_assignment(np.where(valid, cost, big))
    keep = valid[rows, cols]
    order = np.argsort(cols[keep], kind="stable")
    rows, cols = rows[keep][order], cols[keep][order]
    return list(zip(rows.tolist(), cols.tolist())), pred[rows] - gt[cols]


EventLike = AudioEvent | VideoEvent | Mapping[str, object] | float


def _times_classes(events: Sequence[EventLike], name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Times ``(N,)`` and class indices ``(N,)`` (or None when unknown) of a list of events.

    Accepts :class:`AudioEvent`/:class:`VideoEvent`, sidecar dicts (``time``, ``class_index``)
    or bare times (then classes are unknown and class accuracy is NaN).
    """
    times, classes = [], []
    for e in events:
        if isinstance(e, (AudioEvent, VideoEvent)):
            times.append(e.time)
            classes.append(e.class_index)
        elif isinstance(e, Mapping):
            if "time" not in e:
                raise CmmdError(f"event_sync_metrics: {name} event {dict(e)} has no 'time'")
            times.append(float(e["time"]))  # type: ignore[arg-type]
            classes.append(e.get("class_index"))
        else:
            times.append(float(e))
            classes.append(None)
    known = bool(classes) and all(c is not None for c in classes)
    return np.asarray(times, dtype=np.float64), (np.asarray(classes, dtype=np.int64) if known else None)


def event_sync_metrics(
    pred: Sequence[EventLike], gt: Sequence[EventLike], tolerance: float = 0.1
) -> dict[str, float]:
    """Detection scores of predicted against ground-truth events within ``+-tolerance`` s.

    Returns ``precision``, ``recall``, ``f1`` (one-to-one matches by :func:`match_events`),
    ``class_accuracy`` (share of matched pairs whose classes agree), ``median_offset_ms``
    (median of ``pred - gt`` over matches), ``n_pred``, ``n_gt``, ``n_matched``. Empty sets:
    both empty -> precision = recall = f1 = 1; exactly one empty -> all three 0.
    ``class_accuracy`` and ``median_offset_ms`` are NaN without matches, ``class_accuracy`` also
    when either side has no classes (bare times).
    """
    pt, pc = _times_classes(pred, "predicted")
    gt_t, gc = _times_classes(gt, "ground-truth")
    matches, offsets = match_events(pt, gt_t, tolerance, pc, gc)
    n_pred, n_gt, n_match = pt.size, gt_t.size, len(matches)
    if n_pred == 0 and n_gt == 0:
        precision = recall = f1 = 1.0
    else:
        precision = n_match / n_pred if n_pred else 0.0
        recall = n_match / n_gt if n_gt else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    nan = float("nan")
    if n_match and pc is not None and gc is not None:
        class_accuracy = float(np.mean([pc[i] == gc[j] for i, j in matches]))
    else:
        class_accuracy = nan
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "class_accuracy": class_accuracy,
        "median_offset_ms": float(np.median(offsets) * 1000.0) if n_match else nan,
        "n_pred": float(n_pred),
        "n_gt": float(n_gt),
        "n_matched": float(n_match),
    }


def _audio_events(audio: np.ndarray, sample_rate: int) -> tuple[list[AudioEvent], np.ndarray]:
    """Events and :func:`magnitude_flux` of a waveform ``(S,)`` or a log-mel ``(N_MELS, L)``."""
    mel = as_log_mel(audio, sample_rate, "clip_sync_scores")
    return detect_audio_events_mel(mel, sample_rate, HOP), magnitude_flux(mel)


def _gt_events(meta: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The ground-truth events of an impacts sidecar, checked."""
    if meta.get("scene") != "impacts":
        raise CmmdError(
            f"clip_sync_scores: the sync metrics need an 'impacts' clip, got scene {meta.get('scene')!r} "
            "(dance clips are scored with cmmd.eval.beats)"
        )
    events = meta.get("events")
    if not isinstance(events, list):
        raise CmmdError("clip_sync_scores: the sidecar has no 'events' list")
    return events


def clip_sync_scores(
    audio: np.ndarray | None,
    frames: np.ndarray | None,
    meta: Mapping[str, object],
    mode: Literal["v2a", "a2v"] = "v2a",
    tolerance: float = 0.1,
    gt_meta: Mapping[str, object] | None = None,
) -> dict[str, float]:
    """Sync scores of one generated clip of the impacts scene against its sidecar ``meta``.

    ``mode="v2a"``: ``audio`` was generated from the clip's video; its events (a waveform
    ``(S,)`` or a log-mel ``(N_MELS, L)``, the latter scored without a vocoder) are scored
    against the sidecar events. ``mode="a2v"``: ``frames (T, H, W, 3)`` were generated from
    the clip's audio; their floor contacts are scored. Returns :func:`event_sync_metrics` plus
    ``av_offset_ms`` (:func:`av_offset_from_envelopes` of ``audio`` against ``frames``, NaN
    when either is None). ``meta`` gives the sample rate and fps; ``gt_meta`` (default
    ``meta``) gives the events scored against, for baselines that score one clip's output
    against another clip's ground truth.
    """
    if mode not in ("v2a", "a2v"):
        raise CmmdError(f"clip_sync_scores: mode must be 'v2a' or 'a2v', got {mode!r}")
    gt = _gt_events(meta if gt_meta is None else gt_meta)
    sample_rate = int(meta.get("sample_rate", SAMPLE_RATE))  # type: ignore[call-overload]
    fps = float(meta.get("fps", FPS))  # type: ignore[arg-type]
    envelope = None
    if mode == "v2a":
        if audio is None:
            raise CmmdError("clip_sync_scores: mode 'v2a' scores generated audio, but audio is None")
        pred, envelope = _audio_events(audio, sample_rate)
    else:
        if frames is None:
            raise CmmdError("clip_sync_scores: mode 'a2v' scores generated frames, but frames is None")
        pred = detect_video_events(frames, fps)
    scores = event_sync_metrics(pred, gt, tolerance)
    offset = float("nan")
    if audio is not None and frames is not None:
        if envelope is None:
            _, envelope = _audio_events(audio, sample_rate)
        offset = av_offset_from_envelopes(envelope, sample_rate / HOP, motion_energy(frames), fps)
    scores["av_offset_ms"] = offset
    return scores


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded random permutation ``(n,)`` with no fixed point (rejection sampling, n >= 2)."""
    if n < 2:
        raise CmmdError(f"derangement: needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def shuffled_partners(names: Sequence[str], seed: int = 0) -> dict[str, str]:
    """Each name mapped to another name by :func:`derangement` (the shuffled-pairs baseline's
    pairing: item ``names[i]`` scored against the reference of ``names[perm[i]]``); empty below 2 names."""
    if len(names) < 2:
        return {}
    return {name: names[j] for name, j in zip(names, derangement(len(names), seed).tolist())}


def shuffled_baseline(
    audios: Sequence[np.ndarray | None],
    frames: Sequence[np.ndarray | None],
    metas: Sequence[Mapping[str, object]],
    mode: Literal["v2a", "a2v"] = "v2a",
    tolerance: float = 0.1,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Chance level of :func:`clip_sync_scores`: each generated clip scored against another
    clip's ground truth, chosen by a seeded :func:`derangement`.

    Same inputs as one :func:`clip_sync_scores` call per clip (lists of equal length >= 2);
    returns one score dict per clip plus ``gt_index`` (the clip whose events were used).
    ``av_offset_ms`` pairs each clip's audio with the deranged clip's frames, which is chance
    alignment too. A generated clip beats this baseline only by following its own condition.
    """
    n = len(metas)
    if len(audios) != n or len(frames) != n:
        raise CmmdError(f"shuffled_baseline: {len(audios)} audios, {len(frames)} frame sets and {n} sidecars differ")
    perm = derangement(n, seed)
    out = []
    for i, j in enumerate(perm.tolist()):
        if mode == "v2a":
            scores = clip_sync_scores(audios[i], frames[j], metas[i], mode, tolerance, gt_meta=metas[j])
        else:
            scores = clip_sync_scores(audios[j], frames[i], metas[i], mode, tolerance, gt_meta=metas[j])
        scores["gt_index"] = float(j)
        out.append(scores)
    return out