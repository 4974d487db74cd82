"""Study systems that fine-tune another system's runs (``init_from``) and study subsets
(``only_systems``): the DPO config loads, the errors name the key, and a micro study trains a
fine-tune from the final EMA weights of its source run, after it, and reports its steps and time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MICRO_MODEL
from safetensors.torch import load_file

from cmmd.apps.study import load_study_config
from cmmd.apps.study.config import system_train_dict, train_config
from cmmd.apps.study.run import TrainPlan, build_tasks, plan_training
from cmmd.cli import main
from cmmd.config import ConfigError
from cmmd.errors import CmmdError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def micro(**changes: Any) -> dict[str, Any]:
    """A DPO fine-tune of ``ncmmd`` listed before it, with a learning rate too small to move its
    weights; 2 seeds, 4 + 2 steps, a curve every 2 steps; ``other`` is left out."""
    cfg: dict[str, Any] = {
        "title": "fine-tune micro study",
        "data": {"clips": 6, "seconds": 2.0, "size": 16},
        "test": {"clips": 4, "seconds": 1.6, "batch": 4},
        "curve": {"every": 2, "clips": 2, "seconds": 1.6, "steps": 2, "batch": 2},
        "seeds": [0, 1],
        "budget": {"steps": 4},
        "base": {"batch_size": 4, "log_every": 1, "device": "cpu", "data": {"clip_frames": 8, "num_workers": 0},
                 "model": MICRO_MODEL, "diffusion": {"loss": {"clean_condition_prob": 0.5}},
                 "optim": {"warmup_steps": 2, "lr": 1e-3}, "negatives": {"shift_ms": [100, 300]}},
        "systems": {
            "dpo": {"label": "nCMMD + DPO", "init_from": "ncmmd", "budget": {"steps": 2},
                    "train": {"diffusion.loss.contrastive": "dpo", "diffusion.loss.eta": 1.0, "optim.lr": 1e-12,
                              "optim.lr_schedule": "constant"},
                    "sampling": {"steps": 2}},
            "ncmmd": {"label": "nCMMD", "sampling": {"steps": 2}},
            "other": {"label": "never trained", "sampling": {"steps": 2}},
        },
        "only_systems": ["dpo", "ncmmd"],
        "compare": [["dpo", "ncmmd"]],
        "evaluation": {"metrics": ["sync", "offset"], "n_boot": 200, "set_boot": 10},
    }
    cfg.update(changes)
    return cfg


def load(tmp_path: Path, cfg: dict[str, Any], overrides: list[str] | None = None):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_study_config(path, overrides)


def test_dpo_config_loads_with_its_control_and_only_the_systems_it_needs() -> None:
    cfg = load_study_config(CONFIGS / "study_sync_dpo_cpu.yaml")
    base = load_study_config(CONFIGS / "study_sync_cpu.yaml")
    systems = ["ncmmd", "ncmmd-ft", "ncmmd-ft-long", "dpo"]
    assert list(cfg.systems) == systems and cfg.base == base.base and cfg.seeds == [0, 1, 2]
    assert [r.name for r in cfg.runs()] == [f"{s}-seed{k}" for s in systems for k in (0, 1, 2)]
    ft, long, dpo = (train_config(cfg, cfg.runs_of(name)[2], Path("OUT")) for name in systems[1:])
    assert ft.init == long.init == dpo.init == str(Path("OUT") / "runs" / "ncmmd-seed2") and dpo.seed == 2
    assert [t.diffusion.loss.contrastive for t in (ft, long, dpo)] == ["none", "none", "dpo"]
    assert ft.steps == dpo.steps < long.steps and ft.optim == long.optim == dpo.optim
    assert ft.negatives == dpo.negatives == train_config(base, base.runs()[0], Path("OUT")).negatives
    assert dpo.diffusion.loss.dpo_beta == 2.5 and dpo.optim.lr < base.base["optim"]["lr"]
    assert cfg.budget_text("dpo") == f"800 steps + {dpo.steps} steps fine-tune"
    assert cfg.compare == [("dpo", "ncmmd-ft"), ("dpo", "ncmmd-ft-long"), ("dpo", "ncmmd")]
    # The nCMMD runs are those of the base study: the same identity, so a shared --out reuses them.
    assert train_config(cfg, cfg.runs()[0], Path("OUT")) == train_config(base, base.runs()[0], Path("OUT"))


def test_plateau_config_continues_ncmmd_with_and_without_the_contrastive_loss_at_equal_steps_and_time() -> None:
    cfg = load_study_config(CONFIGS / "study_sync_plateau_cpu.yaml")
    dpo = load_study_config(CONFIGS / "study_sync_dpo_cpu.yaml")
    assert list(cfg.systems) == ["ncmmd", "ncmmd-ft-long", "cmmd-ft-long", "ncmmd-ft-xlong"]
    plain, cmmd, xlong = (train_config(cfg, cfg.runs_of(name)[1], Path("OUT")) for name in list(cfg.systems)[1:])
    # The DPO study's equal-time control is reused as it is: the same identity as there.
    assert plain == train_config(dpo, dpo.runs_of("ncmmd-ft-long")[1], Path("OUT"))
    assert plain.init == cmmd.init == xlong.init == str(Path("OUT") / "runs" / "ncmmd-seed1")
    assert (plain.diffusion.loss.contrastive, cmmd.diffusion.loss.contrastive, xlong.diffusion.loss.contrastive) == \
        ("none", "paper", "none") and cmmd.diffusion.loss.eta == 1.0e-4
    assert plain.optim == cmmd.optim == xlong.optim and plain.optim.lr_schedule == "constant"
    assert plain.negatives == cmmd.negatives and cmmd.steps == plain.steps
    # Equal wall-clock: a CMMD step measured at 2.48x a plain one (the config's header).
    assert xlong.steps == 2.5 * cmmd.steps
    assert cfg.compare == [("cmmd-ft-long", "ncmmd-ft-long"), ("cmmd-ft-long", "ncmmd-ft-xlong"),
                           ("ncmmd-ft-xlong", "ncmmd-ft-long")]
    # Its continuation: CMMD carried on from cmmd-ft-long to ncmmd-ft-xlong's 3,200 steps, in the same folder.
    longer = load_study_config(CONFIGS / "study_sync_plateau_long_cpu.yaml")
    assert longer.out == cfg.out and [r for r in longer.runs() if r.system != "cmmd-ft-xlong"] == cfg.runs()
    more = train_config(longer, longer.runs_of("cmmd-ft-xlong")[1], Path("OUT"))
    assert more.init == str(Path("OUT") / "runs" / "cmmd-ft-long-seed1") and cmmd.steps + more.steps == xlong.steps
    assert (more.diffusion, more.optim, more.negatives) == (cmmd.diffusion, cmmd.optim, cmmd.negatives)
    assert longer.budget_text("cmmd-ft-xlong") == "800 steps + 1280 steps fine-tune + 1920 steps fine-tune"
    assert longer.compare[:3] == cfg.compare and longer.compare[3] == ("cmmd-ft-xlong", "ncmmd-ft-xlong")


@pytest.mark.parametrize(("system", "overrides", "message"), [
    ({"init_from": "nope"}, [], r"systems\.x\.init_from: 'nope' is not a system that trains"),
    ({"init_from": "x"}, [], r"systems\.x\.init_from: x cannot start from its own runs"),
    ({"init_from": "renoised"}, [], r"'renoised' is not a system that trains \(it samples the runs of ncmmd"),
    ({"init_from": "ft"}, ["systems.ft.init_from=x"], r"init_from forms a cycle \((x -> ft -> x|ft -> x -> ft)\)"),
    ({"init_from": "ncmmd", "seeds": [0, 3]}, [], r"systems\.x\.init_from: ncmmd has no run for seed\(s\) 3 of x"),
    ({"init_from": "ncmmd", "train": {"init": "/elsewhere"}}, [], r"systems\.x\.train\.init: set by init_from"),
    ({"train": {"diffusion.loss.contrastive": "dpo"}}, [], r"systems\.x\.init_from: .*dpo fine-tunes against"),
    ({"init_from": "ncmmd", "train": {"model.overrides.base_channels": 16}}, [],
     r"systems\.x\.init_from: its model .* is not that of ncmmd"),
    ({"trained_as": "ncmmd", "init_from": "ncmmd"}, [], r"systems\.x\.init_from: the system samples the runs of"),
    ({"init_from": "other"}, ["only_systems=[x,ncmmd]"], r"only_systems: x needs the runs of other \(init_from\)"),
    ({}, ["only_systems=[x,nope]"], r"only_systems: .*unknown: nope"),
])
def test_init_from_and_only_systems_errors_name_the_key(tmp_path: Path, system: dict[str, Any],
                                                        overrides: list[str], message: str) -> None:
    cfg = micro(only_systems=[])
    cfg["systems"]["ft"] = {"init_from": "ncmmd", "sampling": {"steps": 2}}
    cfg["systems"]["renoised"] = {"trained_as": "ncmmd", "sampling": {"steps": 2, "known_level": "renoised"}}
    cfg["systems"]["x"] = {"sampling": {"steps": 2}, **system}
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, cfg, overrides)


def test_a_fine_tune_task_waits_for_its_source_training_unless_that_is_reused(tmp_path: Path) -> None:
    cfg = load(tmp_path, micro())
    cfgs = {run.name: train_config(cfg, run, tmp_path) for run in cfg.runs()}
    for source_action, after in (("train", ("train ncmmd-seed1",)), ("resume", ("train ncmmd-seed1",)),
                                 ("reuse", ())):
        plans = {run.name: TrainPlan(source_action if run.system == "ncmmd" else "train") for run in cfg.runs()}
        tasks = {t.key: t for t in build_tasks(cfg, tmp_path, plans, cfgs, [], tmp_path, [], ("sync",))}
        assert tasks["train dpo-seed1"].after == after and ("train ncmmd-seed0" in tasks) == bool(after)
        keys = list(tasks)  # the order in which ready tasks start
        assert all(keys.index(f"train dpo-seed{k}") > keys.index(f"train ncmmd-seed{k}") for k in (0, 1) if after)


def test_fine_tunes_train_after_their_source_and_report_the_steps_and_time_of_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CMMD_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(micro(), sort_keys=False))
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 systems, 4 training runs" in printed and "other" not in json.loads((out / "study.json").read_text())[
        "config"]["systems"]
    order = [line.split("start train ")[1] for line in printed.splitlines() if "start train " in line]
    assert order == ["ncmmd-seed0", "ncmmd-seed1", "dpo-seed0", "dpo-seed1"]
    runs = out / "runs"
    starts = [load_file(runs / f"ncmmd-seed{seed}" / "checkpoints" / "step_00000004" / "ema.safetensors")
              for seed in (0, 1)]
    assert max(float((starts[0][k] - starts[1][k]).abs().max()) for k in starts[0]) > 1e-3  # the seeds differ
    for seed, start in enumerate(starts):
        run = runs / f"dpo-seed{seed}"
        assert yaml.safe_load((run / "config.yaml").read_text())["init"] == str(runs / f"ncmmd-seed{seed}")
        assert json.loads((run / "study_done.json").read_text())["init"] == {
            "path": str(runs / f"ncmmd-seed{seed}"), "step": 4}
        assert "dpo_audio_margin" in (run / "log.csv").read_text().splitlines()[0]
        # A learning rate of 1e-12 leaves the start: the fine-tune's EMA is its source's final EMA.
        tuned = load_file(run / "checkpoints" / "step_00000002" / "ema.safetensors")
        assert start.keys() == tuned.keys()
        assert max(float((start[k] - tuned[k]).abs().max()) for k in start) < 1e-6
    study = json.loads((out / "study.json").read_text())
    row = study["systems"]["dpo-seed1"]
    assert row["steps"] == 2 and row["init"]["run"] == "ncmmd-seed1" and row["init"]["steps"] == 4
    source_minutes = study["systems"]["ncmmd-seed1"]["train_minutes"]
    assert row["init"]["train_minutes"] == pytest.approx(source_minutes)
    md = (out / "study.md").read_text()
    assert "| 4 + 2 ft |" in md and f"{source_minutes + row['train_minutes']:.1f} ({source_minutes:.1f} + " in md
    assert "nCMMD + DPO 4 steps + 2 steps fine-tune" in md and "starts from the final EMA weights of **nCMMD**" in md
    # Curves: the fine-tunes' points follow the source's, in steps and in training time.
    curve = study["curves"]["dpo"]["dpo-seed1"]
    assert set(curve) == {"6"} and set(study["curves"]["ncmmd"]["ncmmd-seed1"]) == {"2", "4"}
    assert curve["6"]["train_seconds"] > 60 * source_minutes
    # Reuse checks: a fine-tune whose source would change, or started from another step, is refused.
    cfg = load_study_config(path)
    assert {p.action for p in plan_training(cfg, out, resume=False).values()} == {"reuse"}
    done = runs / "dpo-seed0" / "study_done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "init": {**record["init"], "step": 3}}))
    with pytest.raises(CmmdError, match=r"dpo-seed0 was fine-tuned from step 3 of runs/ncmmd-seed0, which now ends"):
        plan_training(cfg, out, resume=False)
    done.write_text(json.dumps(record))
    shutil.rmtree(runs / "ncmmd-seed0")
    with pytest.raises(CmmdError, match=r"dpo-seed0 was fine-tuned from runs/ncmmd-seed0, which this study would "
                                        r"train"):
        plan_training(cfg, out, resume=False)


def test_joint_plateau_config_continues_each_joint_run_with_its_own_loss_to_3200_steps() -> None:
    cfg = load_study_config(CONFIGS / "study_sync_joint_plateau_cpu.yaml")
    joint = load_study_config(CONFIGS / "study_sync_joint_cpu.yaml")
    assert cfg.out == joint.out and cfg.curve.every == 400
    # The joint study's runs are the starting points, with the same identity, so its folder reuses them.
    for name in ("ncmmd-joint", "cmmd-joint"):
        assert system_train_dict(cfg, name, 1) == system_train_dict(joint, name, 1)
    plain, cmmd = (train_config(cfg, cfg.runs_of(name)[1], Path("OUT")) for name in ("ncmmd-joint-ft", "cmmd-joint-ft"))
    start = train_config(joint, joint.runs_of("cmmd-joint")[1], Path("OUT"))
    assert plain.init == str(Path("OUT") / "runs" / "ncmmd-joint-seed1")
    assert cmmd.init == str(Path("OUT") / "runs" / "cmmd-joint-seed1")
    # Both arms stay in the paper's recipe (never handed the condition clean), differ only in the loss,
    # and reach 3,200 steps.
    assert plain.diffusion.loss.clean_condition_prob == cmmd.diffusion.loss.clean_condition_prob == 0.0
    assert (plain.diffusion.loss.contrastive, cmmd.diffusion.loss.contrastive) == ("none", "paper")
    assert cmmd.diffusion.loss.eta == start.diffusion.loss.eta == 1.0e-4
    assert plain.optim == cmmd.optim and plain.optim.lr_schedule == "constant" and plain.optim.lr == 1.0e-4
    assert plain.negatives == cmmd.negatives == start.negatives
    assert start.steps + cmmd.steps == start.steps + plain.steps == 3200
    assert cfg.budget_text("cmmd-joint-ft") == "800 steps + 2400 steps fine-tune"
    # Each is sampled as in the joint study: replacement and reconstruction guidance 3.
    for ft, sampled in (("ncmmd-joint-ft", "ncmmd-joint"), ("ncmmd-joint-ft-guided", "ncmmd-joint-guided")):
        assert cfg.systems[ft].sampling == joint.systems[sampled].sampling
    assert cfg.systems["cmmd-joint-ft-guided"].trained_as == "cmmd-joint-ft"
    assert cfg.compare == [("cmmd-joint-ft", "ncmmd-joint-ft"), ("cmmd-joint-ft-guided", "ncmmd-joint-ft-guided"),
                           ("ncmmd-joint-ft-guided", "ncmmd-joint-guided")]
