"""`cmmd study`: a micro study end to end, reuse of completed runs, resume, the paired tests
against scipy, config errors before any work, a lambda sweep."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import MICRO_MODEL
from scipy import stats as sps

from cmmd.cli import main
from cmmd.config import ConfigError
from cmmd.errors import CmmdError
from cmmd.apps.study import load_study_config
from cmmd.apps.study.tables import paired_test, paired_tests

MICRO_MMDIFFUSION = {"preset": "mmdiffusion-tiny",
                     "overrides": {"base_channels": 8, "num_heads": 1, "head_dim": 8, "norm_groups": 4}}


def micro_study(**changes: Any) -> dict[str, Any]:
    """Three micro systems (CMMD, nCMMD, MM-Diffusion), 4 steps each, 3 test clips of 1.6 s at 16 px."""
    cfg: dict[str, Any] = {
        "title": "micro study",
        "data": {"clips": 6, "seconds": 2.0, "size": 16},
        "test": {"clips": 3, "seconds": 1.6, "batch": 3},
        "budget": {"steps": 4},
        "base": {"batch_size": 4, "log_every": 2, "checkpoint_every": 0, "device": "cpu",
                 "data": {"clip_frames": 8, "num_workers": 0}, "model": MICRO_MODEL,
                 "diffusion": {"loss": {"clean_condition_prob": 0.5}},
                 "optim": {"warmup_steps": 2, "lr": 1e-3}, "negatives": {"shift_ms": [100, 300]}},
        "systems": {
            "cmmd": {"label": "CMMD", "train": {"diffusion.loss.contrastive": "paper", "diffusion.loss.eta": 1e-4},
                     "sampling": {"steps": 2}},
            "ncmmd": {"label": "nCMMD", "train": {"diffusion.loss.contrastive": "paper", "diffusion.loss.eta": 0.0},
                      "sampling": {"steps": 2}},
            "mmd": {"label": "MM-Diffusion",
                    "train": {"model": MICRO_MMDIFFUSION, "data.audio": "wave", "diffusion.schedule": "linear",
                              "diffusion.loss": {"prediction": "eps"}},
                    "sampling": {"method": "dpmpp2m", "steps": 2}},
        },
        "compare": [["cmmd", "ncmmd"]],
        "evaluation": {"metrics": ["fad", "fvd", "beat", "sync", "offset"], "n_boot": 200, "set_boot": 10},
    }
    cfg.update(changes)
    return cfg


def write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture()
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cmmd cache: FAD/FVD must be skipped with a reason, features cached in tmp."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CMMD_CACHE", str(cache))
    return cache


def mtimes(folder: Path, pattern: str) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.glob(pattern))}


def test_micro_study_end_to_end_reuse_resume_and_lambda_sweep(
        tmp_path: Path, no_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "micro.yaml", micro_study())
    out = tmp_path / "out"
    assert main(["study", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "equal training steps: 4 steps x batch 4" in printed and "FAD skipped" in printed

    study = json.loads((out / "study.json").read_text())
    md = (out / "study.md").read_text()
    names = json.loads((out / "test_clips" / "study_test.json").read_text())["names"]
    assert len(names) == 3 and all((out / "generated" / "mmd" / m / f"{n}.mp4").is_file()
                                   for m in ("v2a", "a2v") for n in names)
    assert list(study["systems"]) == ["cmmd", "ncmmd", "mmd"]
    for name, row in study["systems"].items():
        assert row["steps"] == 4 and row["train_minutes"] > 0
        assert set(row["per_clip_f1"]["v2a"]) == set(names) == set(row["per_clip_f1"]["a2v"])
        assert row["metrics"]["v2a"]["sync_v2a_f1"]["baseline"]["label"].startswith("shuffled")
        assert "beat_hit_rate_100ms" in row["metrics"]["v2a"] and "sync_a2v_f1" not in row["metrics"]["v2a"]
        assert not any(k.startswith(("fad", "fvd")) for m in ("v2a", "a2v") for k in row["metrics"][m])
        assert f"| {row['label']} |" in md
    assert study["systems"]["mmd"]["known_level"] == {"v2a": "renoised", "a2v": "renoised"}
    assert study["systems"]["cmmd"]["known_level"] == {"v2a": "clean", "a2v": "clean"}
    for header in ("v2a sync F1 [95% CI]", "chance", "class acc.", "beat hit @100ms", "FAD", "a2v sync F1 [95% CI]",
                   "FVD", "steps", "train min", "sampling s/clip v2a / a2v", "real clips (detector ceiling)"):
        assert header in md
    assert "Command: `cmmd study" in md and "Hardware:" in md and "**Budget:**" in md
    tests = study["paired_tests"]
    assert [(t["a"], t["b"], t["mode"]) for t in tests] == [("cmmd", "ncmmd", "v2a"), ("cmmd", "ncmmd", "a2v")]
    assert all(t["p_value"] is None and "at least 6" in t["reason"] for t in tests)
    assert any("FVD/KVD skipped" in n for n in study["notes"]) and any("FAD skipped" in n for n in study["notes"])

    # A second invocation with one more system trains only that one; the rest is reused.
    runs_before = mtimes(out / "runs", "*/checkpoints/*/model.safetensors")
    generated_before = mtimes(out / "generated", "*/*/done.json")
    bigger = micro_study(parallel=2)
    bigger["systems"]["cmmd-eta1e-3"] = {**bigger["systems"]["cmmd"], "label": "CMMD eta=1e-3",
                                         "train": {"diffusion.loss.contrastive": "paper", "diffusion.loss.eta": 1e-3}}
    assert main(["study", str(write(tmp_path / "bigger.yaml", bigger)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cmmd: reuse, ncmmd: reuse, mmd: reuse, cmmd-eta1e-3: train" in printed
    assert "start train cmmd-eta1e-3" in printed and "start train cmmd\n" not in printed
    assert {k: v for k, v in mtimes(out / "runs", "*/checkpoints/*/model.safetensors").items()
            if not k.startswith("cmmd-eta")} == runs_before
    assert {k: v for k, v in mtimes(out / "generated", "*/*/done.json").items()
            if not k.startswith("cmmd-eta")} == generated_before
    study = json.loads((out / "study.json").read_text())
    assert study["eta_sweep"] == ["ncmmd", "cmmd", "cmmd-eta1e-3"]
    assert "Contrastive weight (eta) sweep" in (out / "study.md").read_text()

    # An OUT made with another base is refused before any work.
    with pytest.raises(CmmdError, match=r"another training set or base config \(base.optim.lr"):
        from cmmd.apps.study import run_study
        run_study(load_study_config(config, ["base.optim.lr=0.002"]), out)

    # An interrupted run (no done marker) needs --resume, then completes without retraining.
    (out / "runs" / "ncmmd" / "study_done.json").unlink()
    assert main(["study", str(config), "--out", str(out)]) == 2
    assert "ncmmd" in capsys.readouterr().err
    assert main(["study", str(config), "--out", str(out), "--resume", "--lambda-sweep", "0,2"]) == 0
    printed = capsys.readouterr().out
    assert "ncmmd: resume" in printed and "generate ncmmd v2a: reused" in printed
    assert json.loads((out / "runs" / "ncmmd" / "study_done.json").read_text())["steps"] == 4

    # The lambda sweep re-sampled CMMD at each strength with re-noised conditioning, no training.
    study = json.loads((out / "study.json").read_text())
    sweep = study["lambda_sweep"]
    assert sweep["system"] == "cmmd" and sweep["known_level"] == "renoised"
    assert [r["lambda"] for r in sweep["rows"]] == [0.0, 2.0]
    assert all(r["known_level"] == {"v2a": "renoised", "a2v": "renoised"} for r in sweep["rows"])
    assert all((out / "generated" / "cmmd" / f"lambda_{v}" / "v2a" / f"{names[0]}.mp4").is_file() for v in (0, 2))
    md = (out / "study.md").read_text()
    assert "Reconstruction guidance (lambda) sweep: CMMD" in md and "| 2 |" in md


def _rows(a: dict[str, float], b: dict[str, float]) -> dict[str, dict[str, Any]]:
    def row(values: dict[str, float]) -> dict[str, Any]:
        return {"metrics": {m: {f"sync_{m}_f1": {"per_item": values}} for m in ("v2a", "a2v")}}

    return {"a": row(a), "b": row(b)}


def test_paired_test_matches_scipy_and_pairs_by_name() -> None:
    rng = np.random.default_rng(0)
    names = [f"clip{i}" for i in range(12)]
    a = {n: float(x) for n, x in zip(names, rng.uniform(0, 1, 12))}
    b = {n: float(x) for n, x in zip(reversed(names), rng.uniform(0, 1, 12))}  # other order: paired by name
    a["clip3"], b["clip5"] = math.nan, None  # dropped pairs
    a["only_a"], b["only_b"] = 0.5, 0.5
    kept = [n for n in names if n not in ("clip3", "clip5")]
    d = np.array([a[n] - b[n] for n in kept])
    res = paired_test(a, b, n_boot=500)
    ref = sps.wilcoxon(d, zero_method="pratt")
    assert res["n"] == 10 and res["n_dropped"] == 2 and res["unpaired"] == 2 and res["reason"] == ""
    assert res["p_value"] == pytest.approx(ref.pvalue) and res["statistic"] == pytest.approx(ref.statistic)
    assert res["mean_diff"] == pytest.approx(d.mean()) and res["lo"] <= d.mean() <= res["hi"]
    assert res["median_diff"] == pytest.approx(np.median(d))


def test_paired_test_undefined_cases_give_nan_with_a_reason() -> None:
    names = [f"c{i}" for i in range(8)]
    tied = paired_test({n: 0.5 for n in names}, {n: 0.5 for n in names})
    assert math.isnan(tied["p_value"]) and "tie" in tied["reason"] and tied["mean_diff"] == 0
    few = paired_test({n: float(i) for i, n in enumerate(names[:5])}, {n: 0.0 for n in names[:5]})
    assert math.isnan(few["p_value"]) and "5 complete pair(s)" in few["reason"] and few["mean_diff"] == 2.0
    none = paired_test({"x": math.nan}, {"x": 1.0})
    assert none["n"] == 0 and math.isnan(none["mean_diff"]) and "0 complete pair(s)" in none["reason"]


def test_paired_tests_holm_over_the_defined_tests_only() -> None:
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(10)]
    rows = {**_rows({n: float(x) for n, x in zip(names, rng.uniform(0.3, 1, 10))},
                    {n: float(x) for n, x in zip(names, rng.uniform(0, 0.7, 10))}),
            "tied": _rows({}, {})["a"]}
    rows["tied"]["metrics"] = rows["b"]["metrics"]
    tests = paired_tests(rows, [("a", "b"), ("tied", "b")], n_boot=200)
    assert [(t["a"], t["mode"]) for t in tests] == [("a", "v2a"), ("a", "a2v"), ("tied", "v2a"), ("tied", "a2v")]
    p = [t["p_value"] for t in tests[:2]]
    # Holm over the two defined tests (identical here): min(1, 2 p); the tied ones stay NaN.
    assert [t["p_holm"] for t in tests[:2]] == pytest.approx([min(1.0, 2 * max(p))] * 2)
    assert all(math.isnan(t["p_value"]) and math.isnan(t["p_holm"]) for t in tests[2:])


@pytest.mark.parametrize(("change", "overrides", "message"), [
    ({"systems": {"cmmd": {"trian": {}}}}, [], r"systems\.cmmd\.trian"),
    ({"budget": None}, [], r"systems\.cmmd\.budget: no budget"),
    ({}, ["systems.cmmd.train.diffusion.loss.etaa=1e-3"], r"systems\.cmmd\.train: .*etaa"),
    ({}, ["budget.minuts=3"], r"budget\.minuts"),
    ({}, ["budget.minutes=3"], r"budget: set exactly one of steps and minutes"),
    ({}, ["test.clips"], r"override 'test.clips' is not of the form key=value"),
    ({}, ["systems.nope.train.steps=3"], r"no system 'nope'"),
    ({}, ["systems.cmmd.train.steps=3"], r"systems\.cmmd\.train\.steps: set by the study"),
    ({}, ["base.out_dir=x"], r"base\.out_dir: set by the study"),
    ({}, ["systems.mmd.train.model.overrides.base_channel=8"], r"systems\.mmd\.train: .*base_channel"),
    ({}, ["systems.mmd.vocoder=griffinlim"], r"systems\.mmd\.vocoder: the system generates waveforms"),
    ({"compare": [["cmmd", "ncmdd"]]}, [], r"compare: unknown system 'ncmdd'"),
    ({"lambda_sweep": {"system": "cmd", "values": [0, 1]}}, [], r"lambda_sweep\.system: unknown system 'cmd'"),
])
def test_config_errors_name_the_key_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    change: dict[str, Any], overrides: list[str],
                                                    message: str) -> None:
    cfg = micro_study()
    for key, value in change.items():
        if key == "systems":
            for name, spec in value.items():
                cfg["systems"][name].update(spec)
        else:
            cfg[key] = value
    path = write(tmp_path / "bad.yaml", cfg)
    with pytest.raises(ConfigError, match=message):
        load_study_config(path, overrides)
    out = tmp_path / "out"
    assert main(["study", str(path), *overrides, "--out", str(out)]) == 2
    assert "cmmd study: error:" in capsys.readouterr().err and not out.exists()


def test_extends_adds_systems_and_overrides_parse_exponents(tmp_path: Path) -> None:
    write(tmp_path / "main.yaml", micro_study())
    write(tmp_path / "sweep.yaml", {"extends": "main.yaml", "title": "sweep", "systems": {
        "cmmd-eta1e-5": {"train": {"diffusion.loss.contrastive": "paper", "diffusion.loss.eta": 1e-5}}}})
    cfg = load_study_config(tmp_path / "sweep.yaml", ["systems.cmmd.train.diffusion.loss.eta=1e-3"])
    assert list(cfg.systems) == ["cmmd", "ncmmd", "mmd", "cmmd-eta1e-5"] and cfg.title == "sweep"
    assert cfg.systems["cmmd"].train["diffusion.loss.eta"] == 1e-3
    assert cfg.systems["mmd"].train["model"] == MICRO_MMDIFFUSION and cfg.budget_of("cmmd-eta1e-5").steps == 4


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    main_cfg = load_study_config(root / "study_cpu.yaml")
    sweep = load_study_config(root / "study_eta_sweep_cpu.yaml")
    gpu = load_study_config(root / "study_gpu.yaml")
    assert list(main_cfg.systems) == ["cmmd", "ncmmd", "mmdiffusion"] and main_cfg.budget_of("cmmd").minutes == 13
    assert set(sweep.systems) > set(main_cfg.systems) and sweep.out == main_cfg.out and sweep.base == main_cfg.base
    assert gpu.budget_of("cmmd").steps is not None and gpu.base["precision"] == "bf16"
    wide = load_study_config(root / "study_contrastive_cpu.yaml")
    assert list(wide.systems) == ["cmmd", "ncmmd"] and wide.budget_of("ncmmd").steps == 700
    assert wide.base["model"]["overrides"]["audio_width_mult"] == 2


def test_a_study_system_resumes_past_a_torn_checkpoint(prepared_impacts: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`cmmd study --resume` trains a system on from its newest intact checkpoint, naming the torn one."""
    from cmmd.apps.study.config import Budget
    from cmmd.apps.study.tasks import TrainJob, train_system
    from cmmd.checkpoint import latest_checkpoint, read_info
    from cmmd.config import from_dict
    from cmmd.train.config import TrainConfig
    from cmmd.train.loop import train

    def config(steps: int) -> TrainConfig:
        return from_dict(TrainConfig, {"out_dir": str(tmp_path / "run"), "steps": steps, "batch_size": 4,
                                       "log_every": 2, "checkpoint_every": 2, "keep_checkpoints": 3,
                                       "data": {"root": str(prepared_impacts), "clip_frames": 8, "num_workers": 0},
                                       "model": MICRO_MODEL, "optim": {"warmup_steps": 2, "lr": 1e-3}})

    train(config(4), progress=False)
    torn = latest_checkpoint(tmp_path / "run")
    assert torn.name == "step_00000004"
    model = torn / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    job = TrainJob("cmmd", config(6), Budget(steps=6), {"system": "cmmd"}, resume=True)
    done = train_system(job)
    printed = capsys.readouterr()
    assert "from step 2" in printed.out and "step_00000004" in printed.err
    assert done["steps"] == 6 and read_info(latest_checkpoint(tmp_path / "run")).step == 6


def test_a_second_study_in_a_folder_in_use_is_refused_naming_the_holder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `cmmd study` in one OUT would re-prepare the training set under the first one's runs: the
    second is refused before any work while the first holds OUT, and runs once it has ended."""
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom cmmd.apps.study.run import holding\n"
         "with holding(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        path = write(tmp_path / "study.yaml", micro_study())
        assert main(["study", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by another `cmmd study` (pid {holder.pid}, since " in err
        assert sorted(p.name for p in out.iterdir()) == ["study.lock"]
    finally:
        holder.kill()
        holder.wait()
    from cmmd.apps.study.run import holding
    with holding(out):  # released when its holder ended, however it ended
        assert f"pid {os.getpid()}," in (out / "study.lock").read_text()
