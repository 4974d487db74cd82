"""The objectives beyond the paper inside the training loop: K negative draws, the sync term, DPO from init."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

import conftest
from cmmd.config import load_config
from cmmd.errors import CmmdError
from cmmd.train.config import TrainConfig
from cmmd.train.loop import train
from cmmd.train.scalar_log import read_log

NEGATIVES = {"kinds": ["shift"], "shift_ms": [100.0, 300.0]}


def _config(tmp_path: Path, prepared: Path, loss: dict, **fields) -> TrainConfig:
    cfg = {"out_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 2, "log_every": 1, "checkpoint_every": 100,
           "data": {"root": str(prepared), "clip_frames": 8, "num_workers": 0}, "model": conftest.MICRO_MODEL,
           "optim": {"warmup_steps": 1, "lr": 1e-3}, "negatives": NEGATIVES, "diffusion": {"loss": loss}}
    cfg.update(fields)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(TrainConfig, path)


def test_infonce_with_sync_term_trains(tmp_path: Path, prepared_impacts: Path) -> None:
    cfg = _config(tmp_path, prepared_impacts, {"contrastive": "infonce", "num_negatives": 2, "eta": 0.1,
                                               "sync_weight": 0.1})
    train(cfg, progress=False)
    rows = read_log(tmp_path / "run")
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and r["sync"] > 0 for r in rows)
    assert all(r["neg_audio_gap"] == r["neg_audio_gap"] for r in rows)


def test_dpo_starts_at_log_two_from_its_init_checkpoint(tmp_path: Path, prepared_impacts: Path,
                                                         micro_run: Path) -> None:
    eta = 0.5
    cfg = _config(tmp_path, prepared_impacts, {"contrastive": "dpo", "eta": eta}, init=str(micro_run))
    train(cfg, progress=False)
    first = read_log(tmp_path / "run")[0]
    # step 0: model == reference == init weights, so each kind's DPO term is exactly log 2
    assert first["contrast"] == pytest.approx(2 * eta * math.log(2), rel=1e-5)
    assert first["dpo_audio_margin"] == 0.0 and first["dpo_video_margin"] == 0.0


def test_dpo_and_init_errors_name_the_key(tmp_path: Path, prepared_impacts: Path, micro_run: Path) -> None:
    with pytest.raises(CmmdError, match="^init: .*dpo"):
        train(_config(tmp_path, prepared_impacts, {"contrastive": "dpo"}), progress=False)
    with pytest.raises(CmmdError, match="^init: .* does not exist"):
        train(_config(tmp_path, prepared_impacts, {}, init=str(tmp_path / "nope")), progress=False)
    wider = {**conftest.MICRO_MODEL, "overrides": {**conftest.MICRO_MODEL["overrides"], "base_channels": 16}}
    with pytest.raises(CmmdError, match="^init: the weights"):
        train(_config(tmp_path, prepared_impacts, {}, init=str(micro_run), model=wider), progress=False)
    with pytest.raises(CmmdError, match="sync_weight"):
        train(_config(tmp_path, prepared_impacts, {"sync_weight": 0.1}, data={
            "root": str(prepared_impacts), "clip_frames": 8, "num_workers": 0, "audio": "wave"}), progress=False)
