"""cmmd.data.splits: the frozen TRAIN / VALIDATION / TEST seed ranges and the clips they render."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from cmmd.data.splits import SPLITS, TEST, TRAIN, VALIDATION, read_clips, split_of, write_split_clips
from cmmd.data.synth import clip_seed, render_clip
from cmmd.errors import CmmdError


def test_splits_are_frozen_and_disjoint() -> None:
    # Changing these silently changes every reported figure: the demo's and study's test clips
    # (1_000_003), the validation benchmark's (2_000_003) and the training sets (0).
    assert (TRAIN.seed, VALIDATION.seed, TEST.seed) == (0, 2_000_003, 1_000_003)
    for a, b in combinations(SPLITS, 2):
        assert not set(a.set_seeds) & set(b.set_seeds), (a.name, b.name)
    assert [split_of(s.seed) for s in SPLITS] == list(SPLITS)
    with pytest.raises(CmmdError, match="belongs to no split"):
        split_of(3_000_000)


def test_default_sets_share_no_clip() -> None:
    train = set(TRAIN.clip_seeds(5000))
    validation, test = set(VALIDATION.clip_seeds(500)), set(TEST.clip_seeds(500))
    assert len(train) == 5000 and len(validation) == len(test) == 500
    assert not train & validation and not train & test and not validation & test
    assert TEST.clip_seeds(3) == [clip_seed(1_000_003, i) for i in range(3)]


def test_seed_outside_its_split_is_refused() -> None:
    VALIDATION.check(2_000_100, "--seed")
    with pytest.raises(CmmdError, match=r"--seed: seed 1000003 is a test seed \(reported figures only, never for a choice.*not a validation seed"):
        VALIDATION.check(TEST.seed, "--seed")
    with pytest.raises(CmmdError, match="seed 0 is a train seed.*not a test seed"):
        TEST.clip_seeds(2, seed=0)


def test_split_clips_are_deterministic(tmp_path: Path) -> None:
    names = write_split_clips(TEST, tmp_path / "a", 2, 1.0, 16)
    assert names == ["impacts_00000", "impacts_00001"]
    again = write_split_clips(TEST, tmp_path / "b", 2, 1.0, 16)
    assert again == names
    for name in names:
        a, b = (json.loads((tmp_path / d / f"{name}.json").read_text()) for d in ("a", "b"))
        assert a == b
    assert json.loads((tmp_path / "a" / "impacts_00001.json").read_text())["seed"] == TEST.clip_seeds(2)[1]
    clips = read_clips(tmp_path / "a", names, fps=10, sample_rate=16_000, size=16)
    assert clips.frames.shape == (2, 10, 16, 16, 3) and clips.waves.shape == (2, 16_000)
    assert clips.metas[0]["events"] == render_clip("impacts", TEST.clip_seeds(1)[0], duration=1.0, size=16).meta["events"]
    assert np.array_equal(clips.frames, read_clips(tmp_path / "b", names, 10, 16_000, 16).frames)


def test_study_training_set_must_use_train_seeds() -> None:
    from cmmd.apps.study.config import TrainingSet
    from cmmd.config import ConfigError

    TrainingSet(seed=7)
    with pytest.raises(ConfigError, match="seed 1000003 is not a TRAIN seed"):
        TrainingSet(seed=TEST.seed)
