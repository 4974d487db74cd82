"""Impact events in video: floor contacts of the coloured discs, tracked by hue.

Frames are ``(T, H, W, 3)``, uint8 or float in [0, 1]; :func:`motion_energy` is the visual
envelope that :mod:`cmmd.eval.sync.offset` aligns with the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import find_peaks

from cmmd.conventions import FPS, IMPACT_CLASSES
from cmmd.errors import CmmdError

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
