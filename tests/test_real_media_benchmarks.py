"""The real-media benchmark scripts' own functions: the visual-cue predictor
(``benchmarks/visual_onset_cues.py``) finds flashes at their frames and writes clicks there, and
the learning curve (``benchmarks/real_media_curve.py``) sums training time over resumed runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from cmmd.eval.onsets import detect_onsets
from conftest import load_benchmark

@pytest.fixture(scope="module")
def cues() -> Iterator[ModuleType]:
    yield from load_benchmark("visual_onset_cues")


@pytest.fixture(scope="module")
def curve() -> Iterator[ModuleType]:
    yield from load_benchmark("real_media_curve")


def test_cues_are_at_the_flashes_and_the_clicks_are_heard_there(cues: ModuleType) -> None:
    rng = np.random.default_rng(0)
    still = (rng.random((8, 8, 3)) * 60).astype(np.uint8)  # a textured still picture, 4 s at 10 fps
    frames = np.repeat(still[None], 40, axis=0)
    flashes = [5, 17, 30]
    frames[flashes] = 250
    times = cues.cue_times(frames, 10.0, prominence=0.5)
    np.testing.assert_allclose(times, np.array(flashes) / 10.0)
    wave = cues.click_track(times, 4.0, 16000)
    assert wave.shape == (64000,)
    onsets = detect_onsets(wave, 16000)
    assert len(onsets) == len(flashes)
    assert np.all(np.abs(np.asarray(onsets) - times) < 0.03)


def test_training_seconds_continue_across_a_resume(curve: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(
        "step,seconds\n50,10.0\n100,20.0\n"  # first invocation, stopped after step 100
        "150,9.0\n200,19.0\n")                # resumed: its clock restarts
    assert curve.train_seconds(tmp_path) == {50: 10.0, 100: 20.0, 150: 29.0, 200: 39.0}
