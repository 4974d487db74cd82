"""The sync study (issue 14): seeds per system pooled per clip, paired tests with their power,
validation learning curves, several samplings of one trained system, 2-object impacts and dance
scenes, latent video; the configs load and the micro config runs end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cmmd.apps.study import load_study_config
from cmmd.apps.study.config import curve_points, system_train_dict, train_config
from cmmd.apps.study.tables import chance_tests, min_detectable_difference, paired_tests, pool_seeds
from cmmd.cli import main
from cmmd.config import ConfigError
from cmmd.data.splits import TEST, VALIDATION
from cmmd.data.synth import clip_seed

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_min_detectable_difference_closed_form() -> None:
    # z_0.975 = 1.959964, z_0.8 = 0.841621: (1.959964 + 0.841621) * 1 / sqrt(16)
    assert min_detectable_difference(1.0, 16) == pytest.approx(0.700396, abs=1e-6)
    assert min_detectable_difference(0.2, 25, alpha=0.05 / 4) == pytest.approx((2.497705 + 0.841621) * 0.2 / 5,
                                                                               abs=1e-6)
    # At that difference a two-sided z test has 80 % power (the far tail adds ~1e-6).
    d = min_detectable_difference(3.0, 40)
    z = d / (3.0 / math.sqrt(40))
    power = 1 - 0.5 * (1 + math.erf((1.959964 - z) / math.sqrt(2)))
    assert power == pytest.approx(0.8, abs=1e-5)
    assert math.isnan(min_detectable_difference(1.0, 1)) and math.isnan(min_detectable_difference(math.nan, 10))


def _run(seed: int, values: dict[str, float]) -> dict[str, Any]:
    return {"seed": seed, "metrics": {"v2a": {"k": {"point": float(np.nanmean(list(values.values()))),
                                                    "per_item": values}}}}


def test_pool_seeds_averages_each_clip_over_seeds_and_reports_the_spread() -> None:
    runs = [_run(0, {"a": 0.2, "b": 0.4, "c": math.nan}), _run(1, {"a": 0.6, "b": 0.8, "c": math.nan}),
            _run(2, {"a": 0.4, "b": math.nan, "c": math.nan})]
    pooled = pool_seeds(runs, {"v2a": "k", "a2v": None}, n_boot=200)
    entry = pooled["metrics"]["v2a"]["k"]
    assert entry["per_item"]["a"] == pytest.approx(0.4) and entry["per_item"]["b"] == pytest.approx(0.6)
    assert math.isnan(entry["per_item"]["c"]) and entry["n"] == 2 and entry["n_dropped"] == 1
    assert entry["point"] == pytest.approx(0.5)
    assert pooled["per_seed"]["v2a"] == pytest.approx([0.3, 0.7, 0.4])
    assert pooled["seed_sd"]["v2a"] == pytest.approx(np.std([0.3, 0.7, 0.4], ddof=1))
    assert pooled["seeds"] == [0, 1, 2] and "a2v" not in pooled["metrics"]


def test_chance_tests_pool_each_systems_shuffled_scores_per_clip_and_test_against_them() -> None:
    names = [f"c{i}" for i in range(12)]
    rng = np.random.default_rng(5)
    chance = rng.uniform(0.1, 0.3, (2, 12))                # two seeds' outputs against shuffled pairs

    def run(seed: int, own: np.ndarray, shuffled: np.ndarray | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"point": float(own.mean()), "per_item": dict(zip(names, own.tolist()))}
        if shuffled is not None:
            entry["baseline"] = {"label": "shuffled pairs (chance level)", "values": shuffled.tolist()}
        return {"seed": seed, "metrics": {"v2a": {"k": entry}}}

    learned = [run(s, chance[s] + 0.4, chance[s]) for s in (0, 1)]   # every clip 0.4 above its shuffled score
    at_chance = [run(s, chance[s] + np.tile([0.05, -0.05], 6), chance[s]) for s in (0, 1)]  # as often above as below
    per_generation = [run(0, chance[0], np.concatenate([chance[0], chance[0]]))]  # one baseline per generation
    pooled = {name: pool_seeds(runs, {"v2a": "k", "a2v": None}, n_boot=200)
              for name, runs in (("learned", learned), ("chance", at_chance), ("old", per_generation))}
    entry = pooled["learned"]["metrics"]["v2a"]["k"]
    assert entry["shuffled_per_item"]["c3"] == pytest.approx(chance[:, 3].mean())
    assert "shuffled_per_item" not in pooled["old"]["metrics"]["v2a"]["k"]
    tests = chance_tests(pooled, {"v2a": "k", "a2v": None}, n_boot=200)
    assert [(t["a"], t["b"]) for t in tests] == [("learned", "learned shuffled"), ("chance", "chance shuffled")]
    assert tests[0]["mean_diff"] == pytest.approx(0.4) and tests[0]["p_holm"] < 0.01
    assert tests[1]["mean_diff"] == pytest.approx(0.0, abs=1e-12) and tests[1]["p_holm"] > 0.5
    assert tests[0]["alpha_level"] == pytest.approx(0.025)


def test_paired_tests_on_a_chosen_metric_carry_their_power() -> None:
    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(20)]

    def row(values: np.ndarray) -> dict[str, Any]:
        per = dict(zip(names, values.tolist()))
        return {"metrics": {"v2a": {"beat": {"per_item": per}}, "a2v": {"offset": {"per_item": per}}}}

    a = rng.uniform(0, 1, 20)
    b = a - rng.normal(0.1, 0.05, 20)
    tests = paired_tests({"a": row(a), "b": row(b)}, [("a", "b")], n_boot=200, keys={"v2a": "beat", "a2v": "offset"})
    assert [(t["mode"], t["metric"]) for t in tests] == [("v2a", "beat"), ("a2v", "offset")]
    d = a - b
    for t in tests:
        assert t["sd_diff"] == pytest.approx(np.std(d, ddof=1)) and t["alpha_level"] == pytest.approx(0.025)
        assert t["mde"] == pytest.approx(min_detectable_difference(np.std(d, ddof=1), 20, 0.025))
    assert tests[0]["p_holm"] < 0.05


def _micro(**changes: Any) -> dict[str, Any]:
    cfg = yaml.safe_load((CONFIGS / "study_sync_micro.yaml").read_text())
    cfg.update(changes)
    return cfg


def _load(tmp_path: Path, cfg: dict[str, Any], overrides: list[str] | None = None):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_study_config(path, overrides)


def test_seeds_expand_into_runs_and_curve_checkpoints(tmp_path: Path) -> None:
    cfg = _load(tmp_path, _micro(), ["systems.ncmmd.seeds=[4]"])
    assert [(r.name, r.system, r.seed) for r in cfg.runs()] == [
        ("cmmd-seed0", "cmmd", 0), ("cmmd-seed1", "cmmd", 1), ("ncmmd-seed4", "ncmmd", 4)]
    assert [r.name for r in cfg.runs_of("ncmmd-renoised")] == ["ncmmd-seed4"]
    run = cfg.runs()[1]
    train = train_config(cfg, run, tmp_path)
    assert train.seed == 1 and train.out_dir == str(tmp_path / "runs" / "cmmd-seed1")
    assert train.checkpoint_every == 2 and train.keep_checkpoints == 3 and train.data.video == "latents"
    assert train.negatives.shift_ms == (40.0, 200.0)
    assert curve_points(cfg, 4) == [2, 4] and curve_points(cfg, 5) == [2, 4, 5]
    assert cfg.primary("v2a").key == "sync_v2a_f1"
    dance = _load(tmp_path, _micro(data={**_micro()["data"], "scene": "dance", "objects": 1, "tempo_changes": True},
                                   evaluation={"metrics": ["beat", "offset"]}))
    assert dance.primary("v2a").key == "beat_hit_rate_100ms[sidecar]" and dance.primary("a2v").lower_is_better
    plain = _load(tmp_path, _micro(seeds=[]))
    assert [r.name for r in plain.runs()] == ["cmmd", "ncmmd"] and train_config(plain, plain.runs()[0], tmp_path).seed == 0


@pytest.mark.parametrize(("change", "message"), [
    ({"data": {"scene": "impacts", "objects": 5}}, r"data: objects: the impacts scene takes 1 to 4"),
    ({"data": {"scene": "dance", "objects": 2}}, r"data: objects: the dance scene has one figure"),
    ({"data": {"scene": "impacts", "tempo_changes": True}}, r"data: tempo_changes: applies to the dance scene"),
    ({"data": {"codec": "nope:x"}}, r"data: codec: 'nope:x' is not pixel"),
    ({"data": {"codec": "pixel"}}, r"data.codec: systems.cmmd trains on latents"),
    ({"test": {"scene": "dance"}}, r"test.objects: the dance scene has one figure"),
    ({"seeds": [0, 0]}, r"seeds: training seeds must be distinct"),
    ({"systems": {"cmmd": {"train": {"seed": 3}}}}, r"systems.cmmd.train.seed: set by seeds"),
    ({"systems": {"x": {"trained_as": "ncmmd-renoised"}}}, r"systems.x.trained_as: 'ncmmd-renoised' is not a system"),
    ({"systems": {"x": {"trained_as": "cmmd", "seeds": [1]}}}, r"systems.x.seeds: the system samples the runs of cmmd"),
    ({"systems": {"cmmd-seed1": {"train": {}, "seeds": []}}}, r"run folder name\(s\) cmmd-seed1"),
    ({"data": {"scene": "dance", "objects": 1}}, r"evaluation: metrics must include beat"),
    ({"curve": {"every": -1}}, r"curve: need every >= 0"),
])
def test_sync_study_config_errors_name_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    cfg = _micro()
    for key, value in change.items():
        if key == "systems":
            for name, spec in value.items():
                cfg["systems"][name] = {**cfg["systems"].get(name, {}), **spec}
        elif isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, cfg)


def test_sync_study_configs_load() -> None:
    cpu = load_study_config(CONFIGS / "study_sync_cpu.yaml")
    assert cpu.data.objects == 2 and cpu.data.codec == "demo-vae" and cpu.seeds == [0, 1, 2]
    assert cpu.base["negatives"]["shift_ms"] == [40, 200] and cpu.curve.every > 0 and cpu.parallel == 2
    assert {cpu.budget_of(n).steps for n in cpu.systems} == {cpu.budget.steps}
    assert len(cpu.runs()) == 4 * 3 and cpu.base["diffusion"]["loss"]["clean_condition_prob"] > 0
    gpu = load_study_config(CONFIGS / "study_sync_gpu.yaml")
    paper = [n for n, s in gpu.systems.items() if s.trained_as or
             s.train.get("diffusion.loss.clean_condition_prob") == 0]
    assert paper and any(gpu.systems[n].sampling.guidance_scale > 0 for n in paper)
    assert any(gpu.systems[n].sampling.known_level == "renoised" and gpu.systems[n].sampling.guidance_scale == 0
               for n in paper)
    dance = load_study_config(CONFIGS / "study_sync_gpu_dance.yaml")
    assert dance.data.scene == "dance" and dance.data.tempo_changes and dance.out != gpu.out
    # nCMMD trains without negatives (not as eta 0, which would still run them through the network at
    # CMMD's cost and spoil the equal-wall-clock reading); CMMD with them, on both scenes.
    for cfg in (cpu, gpu, dance):
        for name, system in cfg.systems.items():
            if name.startswith("ncmmd") and not system.trained_as:
                assert system.train["diffusion.loss.contrastive"] == "none", (cfg.title, name)
    assert load_study_config(CONFIGS / "study_sync_micro.yaml").curve.every == 2
    guided = load_study_config(CONFIGS / "study_sync_guidance_cpu.yaml")  # reuses the CPU study's runs
    assert guided.runs() == cpu.runs() and guided.systems["ncmmd-syncguide"].trained_as == "ncmmd"
    assert guided.systems["ncmmd-syncguide"].sampling.sync_guidance == 1.0
    infonce = load_study_config(CONFIGS / "study_sync_infonce_cpu.yaml")
    assert {r.name for r in infonce.runs()} == {r.name for r in cpu.runs()} | {f"infonce-seed{k}" for k in (0, 1, 2)}
    # The CPU recipe on the other scenes: same base, budget, seeds and negatives, only the data differ.
    for name, scene, objects, systems in (("study_sync_dance_cpu.yaml", "dance", 1, ["ncmmd", "cmmd", "cmmd-bounded"]),
                                          ("study_sync_impacts4_cpu.yaml", "impacts", 4, ["ncmmd", "cmmd"])):
        other = load_study_config(CONFIGS / name)
        assert (other.data.scene, other.data.objects, other.data.tempo_changes) == (scene, objects, scene == "dance")
        assert other.base == cpu.base and other.budget == cpu.budget and other.seeds == cpu.seeds
        assert list(other.systems) == systems and other.out != cpu.out
        assert all(other.systems[n].train == cpu.systems[n].train for n in systems)
        assert ("cmmd", "ncmmd") in other.compare


def test_mmdiffusion_study_configs_train_the_port_on_the_sync_data_and_the_ablation_changes_only_the_shift() -> None:
    cpu = load_study_config(CONFIGS / "study_sync_cpu.yaml")
    faithful = load_study_config(CONFIGS / "study_sync_mmdiffusion_cpu.yaml")
    aligned = load_study_config(CONFIGS / "study_sync_mmdiffusion_aligned_cpu.yaml")
    assert faithful.data == cpu.data == aligned.data and faithful.budget == cpu.budget == aligned.budget
    port = system_train_dict(faithful, "mmdiffusion", 0)
    assert port["model"] == {"preset": "mmdiffusion-tiny", "overrides": {}} and port["steps"] == 800
    assert (port["data"]["video"], port["data"]["audio"], port["diffusion"]["loss"]["prediction"]) == ("pixels", "wave", "eps")
    # The ablation reuses the faithful run (same identity) and differs from it in one field.
    assert system_train_dict(aligned, "mmdiffusion", 0) == port
    ablated = system_train_dict(aligned, "mmdiffusion-aligned", 0)
    assert ablated["model"]["overrides"] == {"rsmma_random_shift": False}
    assert {**ablated, "model": port["model"]} == port
    assert aligned.systems["mmdiffusion-aligned"].sampling == faithful.systems["mmdiffusion"].sampling
    assert ("mmdiffusion-aligned", "mmdiffusion") in aligned.compare
    assert [r.name for r in aligned.runs()] == [r.name for r in faithful.runs()] + ["mmdiffusion-aligned-seed0"]
    # The objective ablation: the aligned port with v-prediction on the cosine schedule, nothing else.
    vpred = load_study_config(CONFIGS / "study_sync_mmdiffusion_vpred_cpu.yaml")
    assert vpred.out == aligned.out and system_train_dict(vpred, "mmdiffusion-aligned", 0) == ablated
    objective = system_train_dict(vpred, "mmdiffusion-aligned-v", 0)
    assert (objective["diffusion"]["schedule"], objective["diffusion"]["loss"]["prediction"]) == ("cosine", "v")
    assert {**objective, "diffusion": ablated["diffusion"]} == ablated
    assert vpred.systems["mmdiffusion-aligned-v"].sampling == aligned.systems["mmdiffusion-aligned"].sampling
    assert vpred.compare[0] == ("mmdiffusion-aligned-v", "mmdiffusion-aligned")
    # The GPU counterpart: the three ports at their AIST++ size, differing as on CPU, beside the GPU
    # sync study's nCMMD runs (same folder and identity, so reused).
    gpu, gpu_ports = load_study_config(CONFIGS / "study_sync_gpu.yaml"), load_study_config(
        CONFIGS / "study_sync_mmdiffusion_gpu.yaml")
    reference = system_train_dict(gpu, "ncmmd-joint", 2)
    assert gpu_ports.out == gpu.out and system_train_dict(gpu_ports, "ncmmd-joint", 2) == reference
    big = {name: system_train_dict(gpu_ports, name, 2)
           for name in ("mmdiffusion", "mmdiffusion-aligned", "mmdiffusion-aligned-v")}
    assert big["mmdiffusion"]["model"] == {"preset": "mmdiffusion-aist", "overrides": {}}
    rest = ("model", "diffusion", "data")
    for name, ablation in (("mmdiffusion", aligned), ("mmdiffusion-aligned", aligned), ("mmdiffusion-aligned-v", vpred)):
        small = system_train_dict(ablation, name, 0)
        assert big[name]["model"]["overrides"] == small["model"]["overrides"]
        assert (big[name]["diffusion"], big[name]["data"]["video"], big[name]["data"]["audio"]) == \
            (small["diffusion"], "pixels", "wave")
        assert gpu_ports.systems[name].sampling == ablation.systems[name].sampling
        assert {k: v for k, v in big[name].items() if k not in rest} == \
            {k: v for k, v in reference.items() if k not in rest}
    assert ("ncmmd-joint-guided", "mmdiffusion") in gpu_ports.compare and len(gpu_ports.runs()) == 15


def test_short_window_mmdiffusion_config_changes_only_the_window_length_for_every_system() -> None:
    """The 1.0-s config is the v-prediction port study with 10-frame windows for nCMMD and the port
    alike (same clips, steps, batch, sampler), scored on 1.0-s TEST clips, in its own folder."""
    vpred = load_study_config(CONFIGS / "study_sync_mmdiffusion_vpred_cpu.yaml")
    short = load_study_config(CONFIGS / "study_sync_mmdiffusion_short_cpu.yaml")
    assert short.data == vpred.data and short.budget == vpred.budget and short.out != vpred.out
    assert (short.test.seconds, short.curve.seconds, short.test.clips) == (1.0, 1.0, 64)
    assert [r.name for r in short.runs()] == ["ncmmd-seed0", "ncmmd-seed1", "ncmmd-seed2", "mmdiffusion-aligned-v-seed0"]
    for name in ("ncmmd", "mmdiffusion-aligned-v"):
        long, cut = system_train_dict(vpred, name, 0), system_train_dict(short, name, 0)
        assert cut["data"]["clip_frames"] == 10 and long["data"]["clip_frames"] == 18
        assert {**cut, "data": long["data"]} == long
        assert short.systems[name].sampling == vpred.systems[name].sampling
    assert short.compare == [("ncmmd", "mmdiffusion-aligned-v")]


def test_joint_eps_config_changes_only_the_objective_of_the_joint_ncmmd() -> None:
    joint = load_study_config(CONFIGS / "study_sync_joint_cpu.yaml")
    eps = load_study_config(CONFIGS / "study_sync_joint_eps_cpu.yaml")
    reference = system_train_dict(joint, "ncmmd-joint", 2)
    assert system_train_dict(eps, "ncmmd-joint", 2) == reference
    changed = system_train_dict(eps, "ncmmd-joint-eps", 2)
    assert (changed["diffusion"]["schedule"], changed["diffusion"]["loss"]["prediction"]) == ("linear", "eps")
    assert {**changed, "diffusion": reference["diffusion"]} == reference
    assert eps.systems["ncmmd-joint-eps-guided"].trained_as == "ncmmd-joint-eps"
    for new, old in (("ncmmd-joint-eps", "ncmmd-joint"), ("ncmmd-joint-eps-guided", "ncmmd-joint-guided")):
        assert eps.systems[new].sampling == joint.systems[old].sampling and (new, old) in eps.compare


def test_micro_sync_study_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CMMD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["study", str(CONFIGS / "study_sync_micro.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 systems, 4 training runs" in printed and "Learning curves (validation)" in printed
    study = json.loads((out / "study.json").read_text())
    assert list(study["systems"]) == ["cmmd-seed0", "cmmd-seed1", "ncmmd-seed0", "ncmmd-seed1",
                                      "ncmmd-renoised-seed0", "ncmmd-renoised-seed1"]
    renoised = study["systems"]["ncmmd-renoised-seed1"]
    assert renoised["run"] == "ncmmd-seed1" and renoised["known_level"] == {"v2a": "renoised", "a2v": "renoised"}
    assert study["systems"]["ncmmd-seed1"]["known_level"] == {"v2a": "clean", "a2v": "clean"}
    for run, seed in (("cmmd-seed0", 0), ("ncmmd-seed1", 1)):
        saved = yaml.safe_load((out / "runs" / run / "config.yaml").read_text())
        assert saved["seed"] == seed and saved["data"]["video"] == "latents"
        # The curve scored steps 2 and 4, then removed every checkpoint but the newest.
        assert sorted(p.name for p in (out / "runs" / run / "checkpoints").glob("step_*")) == ["step_00000004"]
        curve = study["curves"][run.split("-")[0]][run]
        assert set(curve) == {"2", "4"} and 0 < curve["2"]["train_seconds"] < curve["4"]["train_seconds"]
    assert (out / "prepared" / "codec.json").is_file() and (out / "curves.png").stat().st_size > 1000
    pooled = study["pooled"]["cmmd"]
    assert pooled["seeds"] == [0, 1] and len(pooled["per_seed"]["v2a"]) == 2
    tests = study["paired_tests"]
    assert [(t["a"], t["b"], t["mode"]) for t in tests] == [
        ("cmmd", "ncmmd", "v2a"), ("cmmd", "ncmmd", "a2v"), ("ncmmd", "ncmmd-renoised", "v2a"),
        ("ncmmd", "ncmmd-renoised", "a2v")]
    assert all(t["n"] == 6 and t["alpha_level"] == pytest.approx(0.0125) and "mde" in t for t in tests)
    chance = study["chance_tests"]  # each system against its own outputs scored on shuffled pairs
    assert [(t["a"], t["b"], t["mode"]) for t in chance][:2] == [("cmmd", "cmmd shuffled", "v2a"),
                                                                ("cmmd", "cmmd shuffled", "a2v")]
    assert len(chance) == 6 and all(t["n"] == 6 for t in chance)
    md = (out / "study.md").read_text()
    assert "## Seeds" in md and "MDE (80% power)" in md and "![learning curves](curves.png)" in md
    assert "## Against shuffled pairs (seeds pooled per clip)" in md and "CMMD - shuffled pairs" in md
    assert "Training wall time per 1000 steps" in md
    # A second invocation reuses the runs and their curves (their checkpoints are gone).
    assert main(["study", str(CONFIGS / "study_sync_micro.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cmmd-seed0: reuse" in printed and "done  curve cmmd-seed0: 2 points" in printed
    assert json.loads((out / "study.json").read_text())["curves"] == study["curves"]
    assert "without a checkpoint" not in (out / "study.md").read_text()
    # Other curve settings: the new curve has only the newest checkpoint's point; the old one is kept.
    assert main(["study", str(CONFIGS / "study_sync_micro.yaml"), "--out", str(out), "curve.steps=3"]) == 0
    kept = json.loads((out / "runs" / "cmmd-seed0" / "curve.previous-1.json").read_text())
    assert set(kept["points"]) == {"2", "4"}
    assert set(json.loads((out / "runs" / "cmmd-seed0" / "curve.json").read_text())["points"]) == {"4"}
    # Held-out clips: TEST seeds for the tables, VALIDATION seeds for the curves.
    for folder, split in (("test_clips", TEST), ("curve_clips", VALIDATION)):
        meta = json.loads((out / folder / "impacts_00001.json").read_text())
        assert meta["seed"] == clip_seed(split.seed, 1) and len(meta["objects"]) == 2


def test_train_seconds_adds_up_resumed_segments(tmp_path: Path) -> None:
    from cmmd.apps.study.tasks import train_seconds

    (tmp_path / "log.csv").write_text("step,loss,seconds\n25,1.0,10.0\n50,0.9,20.0\n75,0.8,5.0\n100,0.7,15.0\n")
    assert train_seconds(tmp_path) == {25: 10.0, 50: 20.0, 75: 25.0, 100: 35.0}
    assert train_seconds(tmp_path / "none") == {}
