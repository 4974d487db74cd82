"""How much do a clip's own frames say about when its sound has onsets? A non-learned predictor.

For every clip in REFERENCE, this reads the frames as the model sees them (10 fps, centre-cropped
and resized to ``--size`` pixels), finds the peaks of the motion energy
(:func:`cmmd.eval.sync.video.motion_energy`: cuts, flashes, impacts) and writes a click track
with one click per peak, ``OUT/<name>.wav``. It then scores those tracks with ``cmmd evaluate``'s
onset and beat stages, against each clip's own audio and against shuffled pairs.

Read it as a rough ceiling on the v2a onset metric of a benchmark, not as a model: if audio onsets
follow visual change in the clips, these click tracks beat the shuffled pairs; if they do not
(music laid over pictures, speech), no v2a model can beat the shuffled pairs on this metric by
much either, since it has no more information than the frames. Usage::

    python benchmarks/visual_onset_cues.py REFERENCE OUT [--size 32] [--prominence 0.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import find_peaks

from cmmd.conventions import FPS, SAMPLE_RATE
from cmmd.data.media import VIDEO_SUFFIXES, read_media
from cmmd.eval.evaluate import evaluate, write_metrics
from cmmd.eval.settings import EvalSettings
from cmmd.eval.sync.video import motion_energy

CLICK_SECONDS = 0.01


def cue_times(frames: np.ndarray, fps: float, prominence: float) -> np.ndarray:
    """Times (s) of the motion-energy peaks of ``frames (T, H, W, 3)`` that stand out by at least
    ``prominence`` times the clip's median absolute deviation above its median."""
    energy = motion_energy(frames)
    level = np.median(energy)
    spread = np.median(np.abs(energy - level)) + 1e-6
    peaks, _ = find_peaks(energy, prominence=prominence * spread, height=level)
    return peaks / fps


def click_track(times: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    """A mono track of ``seconds`` with a decaying 10 ms noise click at each of ``times``."""
    wave = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
    n = int(CLICK_SECONDS * sample_rate)
    click = np.random.default_rng(0).standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (n / 4))
    for t in times:
        start = int(round(t * sample_rate))
        end = min(len(wave), start + n)
        wave[start:end] += 0.5 * click[: end - start]
    return wave


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="folder of clips with video and audio")
    parser.add_argument("out", type=Path, help="folder for the click tracks and the evaluation")
    parser.add_argument("--size", type=int, default=32, help="frame size the cues are read at (the model's)")
    parser.add_argument("--prominence", type=float, default=0.5,
                        help="peak prominence in median absolute deviations of the motion energy")
    args = parser.parse_args()
    clips = sorted(p for p in args.reference.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise SystemExit(f"{args.reference}: no media files")
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for path in clips:
        media = read_media(path, FPS, SAMPLE_RATE, size=args.size)
        seconds = len(media.audio) / SAMPLE_RATE
        times = cue_times(media.frames, FPS, args.prominence)
        counts[path.stem] = len(times)
        target = args.out / f"{path.stem}.wav"
        if target.exists():
            raise SystemExit(f"{target}: already exists; choose an empty OUT")
        sf.write(target, click_track(times, seconds, SAMPLE_RATE), SAMPLE_RATE)
    print(f"{len(clips)} click tracks, {np.mean(list(counts.values())):.1f} cues per clip on average")
    result = evaluate(args.out, args.reference, EvalSettings(metrics=("onset", "beat")), explicit_metrics=True, progress=False)
    write_metrics(result, args.out / "evaluation" / "metrics.json")
    (args.out / "evaluation" / "cues.json").write_text(json.dumps(
        {"size": args.size, "prominence": args.prominence, "cues_per_clip": counts}, indent=1))
    for key in ("onset_f1", "beat_hit_rate_100ms"):
        m = result["metrics"][key]
        b, d = m["baseline"], m["vs_baseline"]
        print(f"{key}: own {m['point']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]  shuffled {b['point']:.3f}  "
              f"diff {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]  p {d['p']:.3g}  n {d['n']}")


if __name__ == "__main__":
    main()
