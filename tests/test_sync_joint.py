"""Joint samples' self-consistency (cmmd.eval.sync.joint) on clips whose sync is known."""

from __future__ import annotations

import numpy as np
import pytest

from cmmd.data.synth import FPS, SAMPLE_RATE, render_clip
from cmmd.errors import CmmdError
from cmmd.eval.sync.joint import self_consistency


def test_real_pairs_are_self_consistent_and_shuffled_pairs_are_not() -> None:
    clips = [render_clip("impacts", seed=300 + i, duration=3.6, size=32) for i in range(4)]
    sc = self_consistency([c.frames for c in clips], [c.audio for c in clips], FPS, SAMPLE_RATE)
    assert sc["n"] == 4 and sc["own"]["mean"] >= 0.95
    assert sc["shuffled"]["mean"] < sc["own"]["mean"] - 0.4
    assert sc["video_events_per_sample"] == pytest.approx(sc["audio_events_per_sample"], abs=0.5)
    # A sample whose audio is delayed by 0.4 s (beyond the 0.1 s tolerance) loses its own match.
    late = np.concatenate([np.zeros(int(0.4 * SAMPLE_RATE), np.float32), clips[0].audio])[: clips[0].audio.size]
    shifted = self_consistency([c.frames for c in clips], [late, *(c.audio for c in clips[1:])], FPS, SAMPLE_RATE)
    assert shifted["own_per_sample"][0] < 0.5 and shifted["own_per_sample"][1:] == sc["own_per_sample"][1:]


def test_self_consistency_needs_two_complete_samples() -> None:
    clip = render_clip("impacts", seed=1, duration=1.0, size=16)
    with pytest.raises(CmmdError, match="2 or more samples"):
        self_consistency([clip.frames], [clip.audio], FPS, SAMPLE_RATE)
    with pytest.raises(CmmdError, match="2 or more samples"):
        self_consistency([clip.frames, clip.frames], [clip.audio], FPS, SAMPLE_RATE)


def test_folder_self_consistency_reads_the_samples_as_written(tmp_path) -> None:
    from cmmd.data.media import write_media
    from cmmd.eval.sync.joint import folder_self_consistency

    clips = [render_clip("impacts", seed=310 + i, duration=3.6, size=32) for i in range(3)]
    for i, c in enumerate(clips):
        write_media(tmp_path / f"joint_{i:04d}.mp4", c.frames, c.audio, FPS, SAMPLE_RATE)
    sc = folder_self_consistency(tmp_path)
    assert sc["n"] == 3 and sc["own"]["mean"] >= 0.9 and sc["shuffled"]["mean"] < sc["own"]["mean"]
    with pytest.raises(CmmdError, match="no joint samples"):
        folder_self_consistency(tmp_path / "empty")
