"""Training loop: config errors, exact resume after a kill, NaN stop, DDP replicas (gloo, 2 CPUs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conftest
import torch
import yaml
from safetensors.torch import load_file, save_file

from cmmd.config import ConfigError, load_config
from cmmd.errors import CmmdError
from cmmd.checkpoint import latest_checkpoint, load_weights, read_info
from cmmd.train.config import TrainConfig
from cmmd.train.scalar_log import read_log
from cmmd.apps.preview import write_preview
from cmmd.models.presets import build_model
from cmmd.train.loop import train

@pytest.fixture
def prepared(prepared_impacts: Path) -> Path:
    return prepared_impacts


def write_config(path: Path, prepared: Path, out_dir: Path, **fields) -> Path:
    cfg = {"out_dir": str(out_dir), "steps": 6, "batch_size": 4, "log_every": 1, "checkpoint_every": 100,
           "data": {"root": str(prepared), "clip_frames": 8, "num_workers": 0}, "model": conftest.MICRO_MODEL,
           "optim": {"warmup_steps": 2, "lr": 1e-3}}
    cfg.update(fields)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_errors_name_the_key(tmp_path: Path, prepared: Path) -> None:
    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", stepz=3)
    with pytest.raises(ConfigError, match="stepz"):
        load_config(TrainConfig, path)
    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps="many")
    with pytest.raises(ConfigError, match="steps"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(TrainConfig, write_config(tmp_path / "c.yaml", prepared, tmp_path / "run"), ["optim.lr=fast"])
    cfg = load_config(TrainConfig, write_config(tmp_path / "c.yaml", prepared, tmp_path / "run"),
                      ["data.root=/nonexistent/prepared"])
    with pytest.raises(CmmdError, match="data.root"):
        train(cfg, progress=False)
    cfg = load_config(TrainConfig, write_config(tmp_path / "c.yaml", prepared, tmp_path / "run"),
                      ["model.overrides={widthz: 3}"])
    with pytest.raises(ConfigError, match="widthz"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # nothing was started


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cmmd.cli", "train", *args, "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, prepared: Path) -> None:
    steps = 8
    straight = write_config(tmp_path / "a.yaml", prepared, tmp_path / "straight", steps=steps)
    proc = _run_cli([str(straight)])
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    # The killed run loads data in a worker process and the whole process group gets SIGTERM,
    # as from a terminal or a cluster scheduler; worker count does not change the data stream.
    killed = write_config(tmp_path / "b.yaml", prepared, tmp_path / "killed", steps=steps,
                          data={"root": str(prepared), "clip_frames": 8, "num_workers": 1})
    proc = _run_cli([str(killed)], start_new_session=True)
    log = tmp_path / "killed" / "log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # at step k >= 2
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    k = read_info(latest_checkpoint(tmp_path / "killed")).step
    assert 2 <= k < steps, out
    proc = _run_cli([str(killed), "--resume"])
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert f"resumed from" in out

    a = read_log(tmp_path / "straight")
    b = read_log(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, steps + 1))  # no step lost or repeated
    assert b[-1]["loss"] == a[-1]["loss"]
    for kind in ("model", "ema"):
        wa = load_weights(tmp_path / "straight", kind)
        wb = load_weights(tmp_path / "killed", kind)
        assert all(torch.equal(wa[n], wb[n]) for n in wa), kind


def test_resume_skips_a_torn_checkpoint_and_refuses_when_none_is_intact(
        tmp_path: Path, prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cmmd.cli import main

    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps=4, checkpoint_every=2)
    assert main(["train", str(path), "--no-progress"]) == 0
    final = {k: v.clone() for k, v in load_weights(tmp_path / "run", "model").items()}  # not the mmap we truncate
    ckpts = tmp_path / "run" / "checkpoints"
    torn = ckpts / "step_00000004" / "model.safetensors"
    torn.write_bytes(torn.read_bytes()[:100])  # a copy cut short: no parseable header
    capsys.readouterr()
    assert main(["train", str(path), "--resume", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"skipping checkpoint \S*step_00000004: model.safetensors is 100 bytes", err), err
    assert re.search(r"resumed from \S*step_00000002 at step 2", out), out
    assert all(torch.equal(final[k], v) for k, v in load_weights(tmp_path / "run", "model").items())
    for ckpt in ckpts.glob("step_*"):
        (ckpt / "ema.safetensors").write_bytes(b"junk")
    assert main(["train", str(path), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint (step_00000004: ema.safetensors is 4 bytes" in err and "Traceback" not in err


def test_fitted_steps_fill_the_remaining_budget() -> None:
    from cmmd.train.loop import FIT_MARGIN, fitted_steps

    assert fitted_steps(110, 0.2, 600.0, 10_000) == 110 + int(FIT_MARGIN * 600 / 0.2)
    assert fitted_steps(110, 0.2, 600.0, 2_000) == 2_000  # never above the configured steps
    assert fitted_steps(110, 0.2, -5.0, 2_000) == 111  # out of time already: end at the next step


def test_steps_fitted_to_the_budget_end_the_schedule_and_survive_resume(
        tmp_path: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fitted step count ends the run and the cosine horizon, is recorded, and --resume keeps it."""
    import cmmd.train.loop as loop
    from cmmd.train.lr_schedule import lr_at

    monkeypatch.setattr(loop, "FIT_FROM", 1)
    monkeypatch.setattr(loop, "FIT_STEPS", 2)
    seen = []

    def fake_fit(step: int, seconds_per_step: float, seconds_left: float, max_steps: int) -> int:
        seen.append((step, seconds_per_step > 0, 0 < seconds_left <= 60, max_steps))
        return 7

    monkeypatch.setattr(loop, "fitted_steps", fake_fit)
    no_budget = write_config(tmp_path / "n.yaml", prepared, tmp_path / "none", fit_steps_to_budget=True)
    with pytest.raises(CmmdError, match="fit_steps_to_budget: needs a time budget"):
        train(load_config(TrainConfig, no_budget), progress=False)
    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "straight", steps=30, checkpoint_every=5,
                        keep_checkpoints=5, max_minutes=1.0, fit_steps_to_budget=True)
    cfg = load_config(TrainConfig, path)
    assert train(cfg, progress=False).step == 7
    assert seen == [(3, True, True, 30)]  # timed steps 1..3 of this invocation, once
    rows = read_log(tmp_path / "straight")
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert rows[-1]["lr"] == pytest.approx(lr_at(6, 1e-3, 7, 2, "cosine"))
    assert read_info(latest_checkpoint(tmp_path / "straight")).extra["fitted_steps"] == 7

    # Resume from the step-5 checkpoint of a copy: it keeps the fitted 7 steps without refitting
    # and ends bit-identical to the uninterrupted run.
    import shutil

    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    ckpts = tmp_path / "resumed" / "checkpoints"
    shutil.rmtree(ckpts / "step_00000007")
    (ckpts / "latest").write_text("step_00000005\n")
    seen.clear()
    resumed = train(load_config(TrainConfig, path, [f"out_dir={tmp_path / 'resumed'}"]), resume=True, progress=False)
    assert resumed.step == 7 and not seen
    for kind in ("model", "ema"):
        wa, wb = load_weights(tmp_path / "straight", kind), load_weights(tmp_path / "resumed", kind)
        assert all(torch.equal(wa[n], wb[n]) for n in wa), kind

    # Without fitting, --resume continues to the configured steps instead.
    longer = train(load_config(TrainConfig, path, [f"out_dir={tmp_path / 'resumed'}", "fit_steps_to_budget=false",
                                                   "steps=9"]), resume=True, progress=False)
    assert longer.step == 9 and not seen


def test_refuses_to_overwrite_a_run(tmp_path: Path, prepared: Path) -> None:
    cfg = load_config(TrainConfig, write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps=2,
                                                preview={"every": 2, "steps": 2}))
    train(cfg, progress=False, preview=write_preview)
    assert (tmp_path / "run" / "previews" / "step_00000002.png").is_file()
    with pytest.raises(CmmdError, match="--resume"):
        train(cfg, progress=False, preview=write_preview)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, prepared: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import cmmd.train.loop as loop

    real = loop.step_objective
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, logs = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # step 4
            loss = loss * float("nan")
            logs = {**logs, "loss": loss.detach()}
        return loss, logs

    monkeypatch.setattr(loop, "step_objective", poisoned)
    cfg = load_config(TrainConfig, write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", checkpoint_every=2))
    with pytest.raises(CmmdError, match="non-finite at step 3.*step_00000002"):
        train(cfg, progress=False)
    assert read_info(latest_checkpoint(tmp_path / "run")).step == 2
    weights = load_weights(tmp_path / "run", "model")
    assert all(torch.isfinite(w).all() for w in weights.values())


def _ddp_worker(rank: int, world: int, config_path: str, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(load_config(TrainConfig, config_path), progress=False)
    for kind, module in (("model", result.model), ("ema", result.ema)):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, f"{out}/{kind}{rank}.safetensors")


def test_ddp_two_cpu_processes_keep_replicas_identical(tmp_path: Path, prepared: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps=3, checkpoint_every=2)
    mp.spawn(_ddp_worker, args=(2, str(path), port, str(tmp_path)), nprocs=2, join=True)
    for kind in ("model", "ema"):
        r0 = load_file(str(tmp_path / f"{kind}0.safetensors"))
        r1 = load_file(str(tmp_path / f"{kind}1.safetensors"))
        assert all(torch.equal(r0[k], r1[k]) for k in r0), kind
    # Rank 0 alone wrote logs and checkpoints; the replicas moved away from the initialisation.
    assert read_info(latest_checkpoint(tmp_path / "run")).step == 3
    assert len(read_log(tmp_path / "run")) == 3
    r0 = load_file(str(tmp_path / "model0.safetensors"))
    saved = load_weights(tmp_path / "run", "model")
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    torch.manual_seed(0)
    loaded = load_config(TrainConfig, path)
    init = build_model(loaded.model.preset, loaded.model.overrides).state_dict()
    assert any(not torch.equal(init[k], r0[k]) for k in r0)


def test_mmdiffusion_baseline_trains_and_samples_in_the_same_framework(tmp_path: Path, prepared: Path) -> None:
    from cmmd.pipeline import Pipeline, SamplingSettings
    from cmmd.data.synth import render_clip

    model = {"preset": "mmdiffusion-tiny", "overrides": {"base_channels": 8, "num_heads": 1, "head_dim": 8,
                                                         "norm_groups": 4}}
    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps=2, model=model)
    with pytest.raises(CmmdError, match="data.audio"):
        train(load_config(TrainConfig, path), progress=False)
    cfg = load_config(TrainConfig, path, ["data.audio=wave", "diffusion.schedule=linear",
                                          "diffusion.loss.prediction=eps"])
    train(cfg, progress=False)
    pipe = Pipeline.from_checkpoint(tmp_path / "run")
    clip = render_clip("impacts", seed=3, duration=0.8, size=16)
    v2a = pipe.generate("v2a", SamplingSettings(steps=2), frames=clip.frames[None])
    assert v2a.wave.shape == (1, 12800) and v2a.mel.shape == (1, 80, 50)
    a2v = pipe.generate("a2v", SamplingSettings(steps=2, method="dpmpp2m"), wave=clip.audio[None])
    assert a2v.frames.shape == (1, 8, 16, 16, 3)


def test_training_learns_held_out_denoising(tmp_path: Path, prepared: Path) -> None:
    """End to end: 60 micro steps cut the denoising loss on held-out clips below the untrained model's."""
    from cmmd.audio.mel import MelStats, log_mel
    from cmmd.data.synth import render_clip
    from cmmd.diffusion.losses import DiffusionLossConfig, joint_diffusion_loss
    from cmmd.diffusion.schedules import make_schedule

    path = write_config(tmp_path / "c.yaml", prepared, tmp_path / "run", steps=60,
                        optim={"warmup_steps": 5, "lr": 3e-3}, ema_decay=0.9)
    cfg = load_config(TrainConfig, path)
    trained = train(cfg, progress=False).ema
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg.model.preset, cfg.model.overrides).eval()
    stats = MelStats.load(prepared / "mel_stats.json")
    clips = [render_clip("impacts", seed=100 + i, duration=0.8, size=16) for i in range(8)]  # held out
    video = torch.stack([torch.from_numpy(c.frames).permute(0, 3, 1, 2).float() / 127.5 - 1 for c in clips])
    audio = stats.normalize(log_mel(torch.stack([torch.from_numpy(c.audio) for c in clips])))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (8,), generator=g)
    nv, na = torch.randn(video.shape, generator=g), torch.randn(audio.shape, generator=g)
    schedule = make_schedule("cosine", 1000)
    with torch.no_grad():
        after = joint_diffusion_loss(trained, video, audio, t, nv, na, schedule, DiffusionLossConfig())[0].mean()
        before = joint_diffusion_loss(untrained, video, audio, t, nv, na, schedule, DiffusionLossConfig())[0].mean()
    assert after < 0.9 * before, (float(before), float(after))  # measured: 1.74 -> 1.43


def test_one_device_resolver_for_every_command() -> None:
    from cmmd.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CmmdError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CmmdError, match="CUDA is not available; use --device cpu"):
            resolve_device("cuda:1")
