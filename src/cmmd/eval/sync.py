"""Model-free audio-visual synchronisation metrics on the synthetic benchmark (METHOD.md section 7).

The *impacts* scene has exact ground truth: at each event an object (a coloured disc) touches the
floor and flashes, and a percussive tone at its class pitch starts (docs/CONTRACTS.md). This
module detects those events in generated media and scores them against the JSON sidecar:

* audio: :func:`detect_audio_events` (waveform) and :func:`detect_audio_events_mel` (a log-mel,
  e.g. straight from the model, so the score does not depend on the vocoder). Onsets come from
  an energy-weighted log-spectral flux (:func:`onset_envelope`), the class from the pitch of the
  energy that appears in the ~100 ms after the onset.
* video: :func:`detect_video_events` segments each class colour by hue (robust to blur, the
  flash and 16 px frames), tracks its vertical centroid and reports floor contacts.
* scoring: :func:`match_events` (optimal one-to-one matching within a tolerance),
  :func:`event_sync_metrics`, :func:`clip_sync_scores` for one generated clip,
  :func:`shuffled_baseline` (the same scores against a deranged ground truth, the chance level).
* :func:`av_offset` estimates the audio-video lag of any clip from the cross-correlation of the
  audio onset envelope with the visual motion energy.

Empty sets, by definition (no NaN in precision/recall/F1): with no ground-truth and no
predicted events all three are 1.0 (nothing to find, nothing invented); when exactly one side is
empty all three are 0.0. ``class_accuracy`` and ``median_offset_ms`` are NaN when nothing was
matched (there is nothing to judge); :func:`cmmd.eval.stats.bootstrap_ci` drops and counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import librosa
import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.optimize import linear_sum_assignment, nnls
from scipy.signal import find_peaks

from cmmd.data.conventions import (
    F_MAX,
    F_MIN,
    FPS,
    HOP,
    IMPACT_CLASSES,
    LOG_FLOOR,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN,
)
from cmmd.data.synth import TONE_HARMONIC_GAIN
from cmmd.errors import CmmdError

# Audio detector settings, tuned on clean synth clips and on mels blurred in time and frequency
# with log-domain noise and a raised noise floor (stand-ins for a small model's output; see
# tests/test_sync.py). Onset strength is in nats of energy-weighted log increase.
ONSET_ABS_FLOOR = 1.0  # below this no onset counts, whatever the clip (noise-only, silence)
ONSET_MAD_K = 8.0  # ... nor below median + k * MAD of the clip's own envelope
ONSET_REL_MAX = 0.2  # ... nor below this fraction of the clip's strongest onset
MIN_EVENT_GAP = 0.06  # s; two onsets closer than this are one event
CLASS_WINDOW = 0.1  # s after the onset whose new energy decides the pitch class
PRE_WINDOW = 0.05  # s before the onset taken as the background to subtract
SECONDARY_RATIO = 0.35  # a second class at one onset needs this fraction of the first's amplitude
MIN_TONAL_FIT = 0.5  # ... and the class templates must explain this share of the new energy
MIN_LEVEL_REL = 10.0 ** (-30.0 / 20.0)  # an onset's peak mel magnitude vs the clip's loudest

# Video detector settings (hue in degrees, chroma and brightness in [0, 1] pixel units).
HUE_TOLERANCE = 25.0  # class hues are >= 54 degrees apart
CHROMA_MIN = 0.1  # the background has chroma 0.04, the floor 0
CHROMA_FULL = 0.25  # a flashed disc has >= 0.26, a plain one >= 0.7
DENSITY_SIGMA_FRACTION = 0.04  # membership smoothing / frame size (at least one pixel)
MIN_DENSITY = 0.3  # smoothed membership at the disc's centre; a 2-pixel-radius disc has ~0.7
WINDOW_FRACTION = 0.2  # centroid window radius / frame size; discs have radius <= size / 8
MIN_SPAN_PIXELS = 1.0  # a track that moves less than this vertically is static: no events
FLOOR_FRACTION = 0.75  # a contact lies in the lowest quarter of the track's vertical range
MIN_PROMINENCE = 0.1  # a contact rises out of its neighbourhood by this share of the range
FLASH_MIN = 0.05  # brightness above the track's median that counts as a flash

TIME_SLACK = 1e-9  # s; float rounding of times like 1.1 - 1.0
AV_RATE = 100.0  # Hz, common rate of the envelopes cross-correlated by av_offset


@dataclass(frozen=True)
class AudioEvent:
    """An onset detected in audio: ``time`` in s, the IMPACT_CLASSES index, onset ``strength``."""

    time: float
    class_index: int
    strength: float


@dataclass(frozen=True)
class VideoEvent:
    """A floor contact detected in video: ``time`` in s, class index (= colour), ``object`` index.

    Objects are told apart by colour, and ``object`` numbers the detected colour tracks from
    left to right: the sidecar's object index, since the benchmark gives each object its own
    lane in index order and a distinct class.
    """

    time: float
    class_index: int
    object: int


# ----------------------------------------------------------------------------- audio events


def _check_wave(wave: np.ndarray, name: str) -> np.ndarray:
    """Validate a mono waveform ``(S,)`` and return it as float32."""
    w = np.asarray(wave)
    if w.ndim != 1:
        raise CmmdError(f"{name}: expected a mono waveform (S,), got shape {w.shape}")
    if w.size == 0:
        raise CmmdError(f"{name}: the waveform is empty")
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)):
        raise CmmdError(f"{name}: the waveform contains NaN or inf")
    return w


def log_mel(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Natural-log magnitude mel of ``wave (S,)``: ``(N_MELS, S // HOP)``.

    Same framing as the model's mel front-end (data/conventions.py): ``N_FFT``/``HOP``/``WIN``,
    Slaney mel bins from ``F_MIN`` to ``F_MAX``, magnitude (not power), floor ``LOG_FLOOR``,
    centred frames with the last one dropped.
    """
    w = _check_wave(wave, "log_mel")
    n = w.size // HOP
    if n == 0:
        raise CmmdError(f"log_mel: {w.size} samples is shorter than one hop ({HOP})")
    if w.size < N_FFT:  # librosa warns on inputs shorter than one window
        w = np.pad(w, (0, N_FFT - w.size))
    mel = librosa.feature.melspectrogram(
        y=w, sr=sample_rate, n_fft=N_FFT, hop_length=HOP, win_length=WIN, n_mels=N_MELS,
        fmin=F_MIN, fmax=min(F_MAX, sample_rate / 2), power=1.0, norm="slaney", htk=False,
        center=True,
    )
    return np.log(np.maximum(mel[:, :n], LOG_FLOOR))


def _check_mel(mel: np.ndarray, name: str) -> np.ndarray:
    """Validate a single log-mel ``(N_MELS, L)`` and return it as float64."""
    m = np.asarray(mel, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != N_MELS:
        raise CmmdError(f"{name}: expected a log-mel ({N_MELS}, L), got shape {m.shape}")
    if m.shape[1] == 0:
        raise CmmdError(f"{name}: the log-mel has no frames")
    if not np.all(np.isfinite(m)):
        raise CmmdError(f"{name}: the log-mel contains NaN or inf")
    return m


def as_log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, name: str = "as_log_mel") -> np.ndarray:
    """Log-mel ``(N_MELS, L)`` of a waveform ``(S,)``, or a given log-mel checked and as float64.

    Lets every metric take generated audio either as a waveform or straight from the model as
    a log-mel (scored without a vocoder); ``name`` prefixes error messages.
    """
    a = np.asarray(audio)
    if a.ndim == 1:
        return log_mel(a, sample_rate)
    if a.ndim == 2 and a.shape[0] == N_MELS:
        return _check_mel(a, name)
    raise CmmdError(f"{name}: expected a waveform (S,) or a log-mel ({N_MELS}, L), got shape {a.shape}")


def onset_envelope(log_mel_: np.ndarray, lag: int = 2) -> np.ndarray:
    """Energy-weighted log-spectral flux of a log-mel ``(N_MELS, L)``: ``(L,)``, nats.

    ``o[l] = sum_b w[b, l] * max(0, M[b, l] - M[b, l - lag])`` with ``w[:, l]`` the share of
    frame ``l``'s mel energy in bin ``b`` (the first ``lag`` frames are 0). The log difference
    makes it gain-invariant; the energy weight makes a narrow-band tone over a noise floor count
    as much as a broadband click, while the flicker of near-empty bins (noise, vocoder
    artefacts) counts little. ``lag=2`` spans the whole rise of an onset that falls between two
    frame centres (a video frame is 6.25 hops, so most do), where ``lag=1`` splits it in two.
    On clean synth clips (-50 dBFS noise floor) a tone scores 1.6-9 (median 5.4) and the
    floor alone at most ~0.9.
    """
    m = _check_mel(log_mel_, "onset_envelope")
    if lag < 1:
        raise CmmdError(f"onset_envelope: lag must be >= 1, got {lag}")
    energy = np.exp(m)
    weight = energy / energy.sum(axis=0, keepdims=True)
    rise = np.maximum(0.0, m[:, lag:] - m[:, :-lag])
    return np.concatenate([np.zeros(min(lag, m.shape[1])), (weight[:, lag:] * rise).sum(axis=0)])


@lru_cache(maxsize=8)
def _class_templates(sample_rate: int) -> np.ndarray:
    """Mel magnitude ``(N_MELS, n_classes)`` of each class's unit-amplitude tone, sustained.

    The tone is the benchmark's (fundamental plus a ``TONE_HARMONIC_GAIN`` 2nd harmonic below
    Nyquist), so a red tone's harmonic (784 Hz, the green pitch) is explained by red rather than
    read as a green event. Smoothed by one mel bin so slightly detuned generated tones still fit.
    """
    t = np.arange(sample_rate // 4) / sample_rate
    columns = []
    for c in IMPACT_CLASSES:
        tone = np.sin(2 * np.pi * c.pitch_hz * t)
        if 2 * c.pitch_hz < sample_rate / 2:
            tone += TONE_HARMONIC_GAIN * np.sin(4 * np.pi * c.pitch_hz * t)
        mel = np.exp(log_mel(tone.astype(np.float32), sample_rate))
        columns.append(np.median(mel[:, 2:-2], axis=1))
    return gaussian_filter1d(np.stack(columns, axis=1), sigma=1.0, axis=0, mode="constant")


def _classes_of_spectrum(spectrum: np.ndarray, freqs: np.ndarray, sample_rate: int) -> list[int]:
    """Classes sounding in a new-energy mel spectrum ``(N_MELS,)``, the dominant one first.

    The dominant class is the pitch nearest (in octaves) to the spectral peak, searched within
    half an octave of the class pitches so rumble or hiss cannot win. Further classes (two
    objects hitting in the same frame) come from a non-negative least-squares fit of the class
    templates: any other class whose amplitude is at least ``SECONDARY_RATIO`` of the largest
    counts too (benchmark amplitudes differ by at most 0.6x), but only if the templates explain
    at least ``MIN_TONAL_FIT`` of the spectrum's energy: tones fit at 0.77-0.93 (clean and
    degraded), broadband noise or clicks at 0.0-0.2, and those would spread over every class.
    """
    pitches = np.array([c.pitch_hz for c in IMPACT_CLASSES])
    band = (freqs >= pitches.min() / np.sqrt(2)) & (freqs <= pitches.max() * np.sqrt(2))
    peak = freqs[band][np.argmax(spectrum[band])]
    dominant = int(np.argmin(np.abs(np.log2(pitches / peak))))
    amplitudes, residual = nnls(_class_templates(sample_rate), spectrum)
    if residual**2 > (1.0 - MIN_TONAL_FIT) * float(spectrum @ spectrum):
        return [dominant]
    others = [
        c for c in np.argsort(-amplitudes).tolist()
        if c != dominant and amplitudes[c] >= SECONDARY_RATIO * amplitudes.max()
    ]
    return [dominant, *others]


def detect_audio_events_mel(
    log_mel_: np.ndarray, sample_rate: int = SAMPLE_RATE, hop: int = HOP
) -> list[AudioEvent]:
    """Impact events in a log-mel ``(N_MELS, L)`` (frame ``l`` centred on sample ``l * hop``).

    Onsets are peaks of :func:`onset_envelope` at least ``MIN_EVENT_GAP`` apart and above an
    adaptive threshold ``max(ONSET_ABS_FLOOR, median + ONSET_MAD_K * MAD, ONSET_REL_MAX * max)``:
    relative to the clip's own statistics (generated audio is smeared and noisy, so its onsets
    are weaker and its floor higher than clean ones) but never below an absolute floor, so
    silence and stationary noise give no events. An onset must also reach ``MIN_LEVEL_REL`` of
    the clip's loudest frame (peak mel magnitude: a tone stands 60 dB above the benchmark's
    noise floor by this measure, while summed over bins the wide high-frequency bins make a
    3 kHz tone look only 28 dB louder) within ``CLASS_WINDOW``: the log flux is gain-invariant,
    so without this a noise floor starting after digital silence would count as an event. The
    onset time is the frame, of the peak and the one before, with the larger one-frame flux
    (lag-2 detects, lag-1 locates: +-8 ms on clean clips). The classes come from the energy that appears in the ``CLASS_WINDOW`` after
    the onset (mean mel magnitude after minus before), see :func:`_classes_of_spectrum`; two
    classes at one onset give two events at the same time.
    """
    m = _check_mel(log_mel_, "detect_audio_events_mel")
    env = onset_envelope(m, lag=2)
    if env.size < 3 or env.max() < ONSET_ABS_FLOOR:
        return []
    med = float(np.median(env))
    mad = float(np.median(np.abs(env - med)))
    threshold = max(ONSET_ABS_FLOOR, med + ONSET_MAD_K * mad, ONSET_REL_MAX * float(env.max()))
    frame_rate = sample_rate / hop
    peaks, _ = find_peaks(env, height=threshold, distance=max(1, round(MIN_EVENT_GAP * frame_rate)))
    step = onset_envelope(m, lag=1)
    freqs = librosa.mel_frequencies(N_MELS + 2, fmin=F_MIN, fmax=min(F_MAX, sample_rate / 2))[1:-1]
    energy = np.exp(m)
    level = energy.max(axis=0)
    n_after = max(1, round(CLASS_WINDOW * frame_rate))
    n_before = max(1, round(PRE_WINDOW * frame_rate))
    events = []
    for p in peaks.tolist():
        onset = p - 1 if step[p - 1] > step[p] else p
        if level[onset : onset + n_after].max() < MIN_LEVEL_REL * level.max():
            continue
        after = energy[:, onset : onset + n_after].mean(axis=1)
        before = energy[:, max(0, onset - n_before) : onset].mean(axis=1) if onset > 0 else np.zeros(N_MELS)
        new = np.maximum(0.0, after - before)
        for c in _classes_of_spectrum(new, freqs, sample_rate):
            events.append(AudioEvent(onset / frame_rate, c, float(env[p])))
    return events


def detect_audio_events(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[AudioEvent]:
    """Impact events in a waveform ``(S,)``: :func:`detect_audio_events_mel` of its :func:`log_mel`."""
    return detect_audio_events_mel(log_mel(wave, sample_rate), sample_rate, HOP)


# ----------------------------------------------------------------------------- video events


def _frames_float(frames: np.ndarray, name: str, min_frames: int) -> np.ndarray:
    """Validate ``frames (T, H, W, 3)`` (uint8, or float in [0, 1]) and return float32 in [0, 1]."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise CmmdError(f"{name}: expected frames (T, H, W, 3), got shape {f.shape}")
    if f.shape[0] < min_frames:
        raise CmmdError(f"{name}: needs at least {min_frames} frames, got {f.shape[0]}")
    if f.shape[1] == 0 or f.shape[2] == 0:
        raise CmmdError(f"{name}: frames have no pixels (shape {f.shape})")
    if f.dtype == np.uint8:
        return f.astype(np.float32) / 255.0
    if not np.issubdtype(f.dtype, np.floating):
        raise CmmdError(f"{name}: frames must be uint8 or float in [0, 1], got dtype {f.dtype}")
    f = f.astype(np.float32, copy=False)
    if not np.all(np.isfinite(f)):
        raise CmmdError(f"{name}: frames contain NaN or inf")
    if f.min() < -0.01 or f.max() > 1.01:
        raise CmmdError(
            f"{name}: float frames must lie in [0, 1], got [{f.min():.3g}, {f.max():.3g}]; "
            "map model outputs in [-1, 1] with (x + 1) / 2"
        )
    return np.clip(f, 0.0, 1.0)


def _hue_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and chroma in [0, 1] of ``rgb (..., 3)`` in [0, 1].

    Opponent-colour form (``r - (g + b) / 2``, ``sqrt(3) / 2 * (g - b)``): smooth, and a blend of
    a colour with grey (anti-aliasing, blur, the flash's mix towards white) keeps its hue.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    a = r - 0.5 * (g + b)
    o = (np.sqrt(3.0) / 2.0) * (g - b)
    return np.degrees(np.arctan2(o, a)) % 360.0, np.hypot(a, o)


def _class_weights(frames: np.ndarray) -> np.ndarray:
    """Soft membership ``(n_classes, T, H, W)`` in [0, 1] of each pixel in each class colour.

    A pixel belongs to the class of nearest hue if within ``HUE_TOLERANCE``; its weight ramps
    with chroma from ``CHROMA_MIN`` to ``CHROMA_FULL``, so the grey floor, the near-grey
    background (whose hue is close to blue's) and compression noise weigh nothing, while a disc
    edge blended with the background still counts partly.
    """
    hue, chroma = _hue_chroma(frames)
    palette = np.array([c.rgb for c in IMPACT_CLASSES], dtype=np.float32) / 255.0
    palette_hue, _ = _hue_chroma(palette)
    dist = np.abs((hue[None] - palette_hue[:, None, None, None] + 180.0) % 360.0 - 180.0)
    nearest = np.argmin(dist, axis=0)
    strength = np.clip((chroma - CHROMA_MIN) / (CHROMA_FULL - CHROMA_MIN), 0.0, 1.0)
    classes = np.arange(len(IMPACT_CLASSES))[:, None, None, None]
    return np.where((nearest[None] == classes) & (dist <= HUE_TOLERANCE), strength[None], 0.0)


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Fill the NaNs of a track ``values (T,)`` from its finite values.

    Linear interpolation (ends held), except that inside a gap with two known frames on each
    side the fill is raised to where the lines extrapolated from both sides meet, when that is
    above the chord: a bounce is a V in the vertical centroid, and a missing contact frame
    interpolated linearly would flatten the V and lose the event. Where the track curves the
    other way (an arc's apex) the chord is kept.
    """
    ok = np.isfinite(values)
    t = np.arange(values.size)
    filled = np.interp(t, t[ok], values[ok])
    missing = np.flatnonzero(~ok)
    if missing.size == 0:
        return filled
    for run in np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1):
        a, b = int(run[0]), int(run[-1])
        if a < 2 or b + 2 >= values.size or not ok[[a - 2, a - 1, b + 1, b + 2]].all():
            continue
        left = values[a - 1] + (run - (a - 1)) * (values[a - 1] - values[a - 2])
        right = values[b + 1] + (run - (b + 1)) * (values[b + 2] - values[b + 1])
        filled[run] = np.maximum(filled[run], np.minimum(left, right))
    return filled


def _track_class(weights: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Track one class's disc through ``weights (T, H, W)``; ``value (T, H, W)`` is brightness.

    The disc is located per frame at the peak of the membership density (weights smoothed by a
    Gaussian of ``DENSITY_SIGMA_FRACTION`` of the frame size, at least one pixel: a disc is
    dense, scattered noise pixels are not) and measured by the
    weighted centroid and mean brightness within ``WINDOW_FRACTION`` of the frame size around
    that peak. Frames whose peak density is below ``MIN_DENSITY`` count as missing and are
    filled by interpolation. Returns ``(x, y, brightness)``, each ``(T,)`` in pixels (pixel
    centres at ``i + 0.5``), or None when the disc is visible in fewer than half the frames.
    """
    n_frames, height, width = weights.shape
    sigma = max(1.0, DENSITY_SIGMA_FRACTION * max(height, width))
    density = gaussian_filter(weights, sigma=(0.0, sigma, sigma), mode="constant")
    flat = density.reshape(n_frames, -1)
    best = flat.argmax(axis=1)
    seen = flat[np.arange(n_frames), best] >= MIN_DENSITY
    if seen.mean() < 0.5:
        return None
    rows = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    cols = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    peak_y = (best // width)[:, None, None] + 0.5
    peak_x = (best % width)[:, None, None] + 0.5
    radius = WINDOW_FRACTION * max(height, width)
    w = weights * (((rows - peak_y) ** 2 + (cols - peak_x) ** 2) <= radius**2)
    mass = np.maximum(w.sum(axis=(1, 2)), 1e-12)
    track = []
    for q in ((w * cols).sum(axis=(1, 2)), (w * rows).sum(axis=(1, 2)), (w * value).sum(axis=(1, 2))):
        track.append(_fill_gaps(np.where(seen, q / mass, np.nan)))
    return track[0], track[1], track[2]


def detect_video_events(frames: np.ndarray, fps: float = FPS) -> list[VideoEvent]:
    """Floor contacts of the coloured discs in ``frames (T, H, W, 3)`` (uint8 or float in [0, 1]).

    Per class colour: soft pixel membership by hue (:func:`_class_weights`) and a track of the
    disc's centroid (:func:`_track_class`, robust to noise pixels and missing frames). Events
    are local maxima of the vertical centroid (lowest points) with a prominence of
    ``MIN_PROMINENCE`` of the track's vertical range, in the lowest ``1 - FLOOR_FRACTION`` of
    that range; the flash (brightness peak of the disc's pixels, ``FLASH_MIN`` above the track's
    median) moves an event to itself when within one frame, since in generated video the lowest
    point may be smeared over two frames but the flash is one frame's. A track moving less than
    ``MIN_SPAN_PIXELS`` vertically is static and has no events, so blank or frozen video gives
    none. ``object`` numbers the tracks left to right (the sidecar's lane order). Needs at
    least 3 frames (a contact is a frame lower than both neighbours).
    """
    if not fps > 0:
        raise CmmdError(f"detect_video_events: fps must be > 0, got {fps}")
    f = _frames_float(frames, "detect_video_events", min_frames=3)
    n_frames = f.shape[0]
    weights = _class_weights(f)  # (C, T, H, W)
    value = f.max(axis=-1)  # (T, H, W)
    tracks = []
    for c in range(len(IMPACT_CLASSES)):
        track = _track_class(weights[c], value)
        if track is not None:
            x, y, brightness = track
            tracks.append((float(x.mean()), c, y, brightness))
    events = []
    for obj, (_, c, y, brightness) in enumerate(sorted(tracks, key=lambda track: track[:2])):
        span = float(y.max() - y.min())
        if span < MIN_SPAN_PIXELS:
            continue
        peaks, _ = find_peaks(y, height=y.min() + FLOOR_FRACTION * span, prominence=MIN_PROMINENCE * span)
        flash_level = float(np.median(brightness)) + FLASH_MIN
        for p in peaks.tolist():
            lo, hi = max(0, p - 1), min(n_frames, p + 2)
            flash = lo + int(np.argmax(brightness[lo:hi]))
            events.append(VideoEvent((flash if brightness[flash] > flash_level else p) / fps, c, obj))
    return sorted(events, key=lambda e: (e.time, e.object))


# ----------------------------------------------------------------------------- matching, metrics


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


# ----------------------------------------------------------------------------- AV offset


def motion_energy(frames: np.ndarray) -> np.ndarray:
    """Visual change at each frame of ``frames (T, H, W, 3)``: ``(T,)``, mean absolute pixel
    difference in [0, 1].

    Central difference: frame ``k`` gets the mean of its differences to frames ``k - 1`` and
    ``k + 1`` (one side at the ends), so a symmetric event such as a bounce with a one-frame
    flash peaks on its own frame. A one-sided change (a pose switch first shown at frame ``k``)
    peaks half a frame early, which is the frame rate's resolution.
    """
    f = _frames_float(frames, "motion_energy", min_frames=2)
    diff = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    energy = np.zeros(f.shape[0])
    energy[:-1] += diff
    energy[1:] += diff
    energy[1:-1] /= 2.0
    return energy


def magnitude_flux(log_mel_: np.ndarray) -> np.ndarray:
    """Spectral flux of the mel magnitude ``exp(M)`` of a log-mel ``(N_MELS, L)``: ``(L,)``.

    ``sum_b max(0, P[b, l] - P[b, l - 1])``. Unlike :func:`onset_envelope` it is dominated by
    loud onsets, which is what :func:`av_offset` wants: quiet ones (hi-hats between the beats,
    vocoder artefacts) have no visual counterpart and would only blur the correlation.
    """
    energy = np.exp(_check_mel(log_mel_, "magnitude_flux"))
    return np.concatenate([[0.0], np.maximum(0.0, np.diff(energy, axis=1)).sum(axis=0)])


def _zscore(x: np.ndarray) -> np.ndarray | None:
    """``(x - mean) / std``, or None for a constant signal."""
    std = float(x.std())
    return None if std == 0.0 else (x - x.mean()) / std


def av_offset_from_envelopes(
    audio_env: np.ndarray, env_rate: float, motion: np.ndarray, fps: float, max_offset: float = 1.0
) -> float:
    """Lag in ms that best aligns an audio onset envelope with the visual motion energy.

    ``audio_env (L,)`` (:func:`magnitude_flux`) has frame ``l`` at ``l / env_rate`` s,
    ``motion (T,)`` (:func:`motion_energy`) frame ``k`` at ``k / fps``. Both are resampled to
    ``AV_RATE`` Hz and z-scored; the score of a lag is ``sum_t a(t + lag) v(t) / N`` over the
    overlap, i.e. the correlation damped by the overlap fraction, a mild prior for small lags
    that keeps short overlaps at large lags from winning by chance. The best lag within
    ``+-max_offset`` s is returned. Positive: the audio lags the video. NaN when either
    envelope is constant (silence, a blank or frozen video): no lag is observable. Periodic
    content (the dance scene) is ambiguous modulo its period.
    """
    if not max_offset > 0:
        raise CmmdError(f"av_offset: max_offset must be > 0 seconds, got {max_offset}")
    if audio_env.size == 0 or motion.size == 0:
        raise CmmdError("av_offset: an envelope is empty")
    a_times = np.arange(audio_env.size) / env_rate
    v_times = np.arange(motion.size) / fps
    grid = np.arange(0.0, max(a_times[-1], v_times[-1]) + 0.5 / AV_RATE, 1.0 / AV_RATE)
    audio = _zscore(np.interp(grid, a_times, audio_env, left=0.0, right=0.0))
    video = _zscore(np.interp(grid, v_times, motion, left=0.0, right=0.0))
    if audio is None or video is None:
        return float("nan")
    n = grid.size
    lags = np.arange(-min(round(max_offset * AV_RATE), n - 1), min(round(max_offset * AV_RATE), n - 1) + 1)
    scores = [float(audio[max(0, lag) : n + min(0, lag)] @ video[max(0, -lag) : n - max(0, lag)]) for lag in lags]
    return float(lags[int(np.argmax(scores))] * 1000.0 / AV_RATE)


def av_offset(
    wave: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float, max_offset: float = 1.0
) -> float:
    """Audio-video offset in ms of any clip: ``wave (S,)`` against ``frames (T, H, W, 3)``.

    Cross-correlates the audio :func:`magnitude_flux` with the visual :func:`motion_energy`
    (:func:`av_offset_from_envelopes`). Positive = audio lags video (the sound comes late);
    NaN when either stream shows no change. Needs at least 2 frames. On clean impacts clips
    it reads 0 ms (+-10), and exactly +-300 ms for the audio shifted by +-300 ms.
    """
    if not fps > 0:
        raise CmmdError(f"av_offset: fps must be > 0, got {fps}")
    env = magnitude_flux(log_mel(wave, sample_rate))
    return av_offset_from_envelopes(env, sample_rate / HOP, motion_energy(frames), fps, max_offset)


# ----------------------------------------------------------------------------- per-clip scores


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
