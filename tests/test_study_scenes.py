"""Scenes of the sync study: dance clips with tempo changes (data.synth), and the clips made
before that option exist unchanged, bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cmmd.data.synth import TEMPO_BPM, TEMPO_CHANGE_MIN, TEMPO_CHANGES, render_clip, write_benchmark
from cmmd.errors import CmmdError

# sha256 (first 16 hex digits) of frames, audio and sidecar of clips of 2.3 s at 32 px, computed
# with src/cmmd/data/synth.py as of commit fd93595, before tempo changes existed.
DIGESTS = {"impacts1-0": "d48aab4f807326c3", "impacts1-7": "76afda3df33a48b4", "impacts1-123": "746d092c7070f62b",
           "impacts3-0": "04f02aefb66275e0", "impacts3-7": "b5b64556c2fc7e63", "impacts3-123": "143c4579207d00ac",
           "dance1-0": "816ce3ebc7e85709", "dance1-7": "5cf456a92dd7dbeb", "dance1-123": "6695d3c47c4798a0"}


def test_clips_without_tempo_changes_are_unchanged() -> None:
    for key, digest in DIGESTS.items():
        scene_objects, seed = key.split("-")
        clip = render_clip(scene_objects[:-1], int(seed), duration=2.3, size=32, n_objects=int(scene_objects[-1]))
        blob = clip.frames.tobytes() + clip.audio.tobytes() + json.dumps(clip.meta, sort_keys=True).encode()
        assert hashlib.sha256(blob).hexdigest()[:16] == digest, key


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dance_tempo_changes_switch_the_beat_period_inside_the_clip(seed: int) -> None:
    fps, sample_rate, duration = 10, 16000, 6.0
    clip = render_clip("dance", seed, duration=duration, size=32, fps=fps, sample_rate=sample_rate,
                       tempo_changes=True)
    meta = clip.meta
    changes = meta["tempo_changes"]
    assert TEMPO_CHANGES[0] <= len(changes) <= TEMPO_CHANGES[1]
    tempos = [meta["tempo_bpm"]] + [c["tempo_bpm"] for c in changes]
    assert all(TEMPO_BPM[0] <= t <= TEMPO_BPM[1] for t in tempos)
    assert all(abs(60 / b - 60 / a) / (60 / a) >= TEMPO_CHANGE_MIN for a, b in zip(tempos, tempos[1:]))
    times = [c["time"] for c in changes]
    assert times == sorted(times) and all(0 < t < duration for t in times)

    # Each gap between beats is the period of the tempo in force at the earlier beat.
    beats = np.array([e["time"] for e in meta["events"]])
    in_force = np.searchsorted(times, beats[:-1], side="right")
    assert np.allclose(np.diff(beats), 60.0 / np.array(tempos)[in_force])
    assert len(set(np.round(np.diff(beats), 6))) >= 2, "the period changes inside the clip"
    assert beats[0] < 60.0 / tempos[0] and beats[-1] < duration

    # Still one pose change per beat frame and nowhere else.
    frames = np.array([e["frame"] for e in meta["events"]])
    changed = (np.diff(clip.frames.astype(np.int16), axis=0) != 0).any(axis=(1, 2, 3))
    assert np.array_equal(np.flatnonzero(changed) + 1, frames[frames > 0])
    # A kick at every beat: the audio's energy in the 20 ms after each beat is far above the floor.
    starts = np.round(beats * sample_rate).astype(int)
    energy = [float(np.mean(clip.audio[s:s + 320] ** 2)) for s in starts]
    assert min(energy) > 1e-3


def test_tempo_changes_are_for_dance_and_a_resumed_set_keeps_its_kind(tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="dance scene only"):
        render_clip("impacts", 0, tempo_changes=True)
    with pytest.raises(CmmdError, match="dance scene only"):
        write_benchmark(tmp_path / "x", "impacts", 1, tempo_changes=True)
    out = tmp_path / "dance"
    write_benchmark(out, "dance", 2, seed=5, duration=1.2, size=16, tempo_changes=True)
    assert "tempo_changes" in json.loads((out / "dance_00000.json").read_text())
    assert write_benchmark(out, "dance", 2, seed=5, duration=1.2, size=16, tempo_changes=True).skipped == 2
    with pytest.raises(CmmdError, match="other settings"):
        write_benchmark(out, "dance", 2, seed=5, duration=1.2, size=16)
    plain = tmp_path / "plain"
    write_benchmark(plain, "dance", 1, seed=5, duration=1.2, size=16)
    with pytest.raises(CmmdError, match="other settings"):
        write_benchmark(plain, "dance", 1, seed=5, duration=1.2, size=16, tempo_changes=True)
