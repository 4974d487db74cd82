"""Checkpoints that can be verified: manifests, torn and corrupt files, fallback, a full disk."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
import torch

import cmmd.checkpoint as ckpt
from cmmd.assets import DEMO_CHECKPOINT, DEMO_VAE
from cmmd.checkpoint import (
    MANIFEST,
    latest_checkpoint,
    load_training_state,
    load_weights,
    read_info,
    save_checkpoint,
    verify_checkpoint,
)
from cmmd.errors import CmmdError
from cmmd.train.ema import make_ema
from cmmd.train.vae import VaeTrainConfig, train_vae
from cmmd.video.vae import VaeConfig



def save_steps(run: Path, *steps: int) -> torch.nn.Module:
    """Checkpoints of a tiny network at ``steps`` (weights differ per step); returns the network."""
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    for step in steps:
        with torch.no_grad():
            net.weight.fill_(step)
        net(torch.ones(1, 3)).sum().backward()
        opt.step()
        save_checkpoint(run, step, net, make_ema(net), opt, {"name": "tiny"}, {"step_was": step}, keep=5)
    return net


def truncate(file: Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def test_a_written_checkpoint_lists_every_file_and_verifies(tmp_path: Path) -> None:
    save_steps(tmp_path, 1)
    step = tmp_path / "checkpoints" / "step_00000001"
    assert {p.name for p in step.iterdir()} == {"model.safetensors", "ema.safetensors", "optimizer.safetensors",
                                                "state.json", MANIFEST}
    assert verify_checkpoint(step) is None
    assert latest_checkpoint(tmp_path) == step


@pytest.mark.parametrize("damage, reason", [
    (lambda d: truncate(d / "model.safetensors"), r"model.safetensors is \d+ bytes, the manifest says \d+"),
    (lambda d: (d / "optimizer.safetensors").unlink(), "optimizer.safetensors is missing"),
    (lambda d: (d / MANIFEST).write_text("{not json"), "manifest.json is unreadable"),
])
def test_damaged_checkpoints_are_named_with_the_reason(tmp_path: Path, damage, reason: str) -> None:
    save_steps(tmp_path, 1)
    step = tmp_path / "checkpoints" / "step_00000001"
    damage(step)
    assert re.search(reason, verify_checkpoint(step))
    with pytest.raises(CmmdError, match=f"step_00000001 is damaged: {reason}"):
        load_weights(step, "model")


def test_a_flipped_byte_fails_the_sha256(tmp_path: Path) -> None:
    save_steps(tmp_path, 1)
    file = tmp_path / "checkpoints" / "step_00000001" / "ema.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # same size, the header still parses: only the hash can tell
    file.write_bytes(bytes(data))
    assert verify_checkpoint(file.parent) == "ema.safetensors does not match the sha256 in its manifest (corrupt)"
    assert ckpt.safetensors_problem(file) is None


def test_resume_and_loading_skip_a_torn_checkpoint_for_the_newest_intact_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_steps(tmp_path, 1, 2, 3)
    intact = load_weights(tmp_path / "checkpoints" / "step_00000002", "model")
    truncate(tmp_path / "checkpoints" / "step_00000003" / "model.safetensors")
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert re.search(r"skipping checkpoint .*step_00000003: model.safetensors is \d+ bytes",
                     capsys.readouterr().err)
    assert read_info(tmp_path).step == 2
    assert all(torch.equal(intact[k], v) for k, v in load_weights(tmp_path, "model").items())
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    assert load_training_state(latest_checkpoint(tmp_path), net, make_ema(net), opt).step == 2
    assert torch.equal(net.weight.detach(), intact["weight"])


def test_no_intact_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    save_steps(tmp_path, 1, 2)
    truncate(tmp_path / "checkpoints" / "step_00000001" / "model.safetensors")
    (tmp_path / "checkpoints" / "step_00000002" / "state.json").unlink()
    with pytest.raises(CmmdError, match="no intact checkpoint .*step_00000002: state.json is missing; "
                                        "step_00000001: model.safetensors is"):
        latest_checkpoint(tmp_path)
    with pytest.raises(CmmdError, match="no intact checkpoint"):
        load_weights(tmp_path)


def test_checkpoints_without_a_manifest_fall_back_to_the_safetensors_headers(tmp_path: Path) -> None:
    save_steps(tmp_path, 1)
    step = tmp_path / "checkpoints" / "step_00000001"
    (step / MANIFEST).unlink()  # as written before manifests
    assert verify_checkpoint(step) is None
    model = step / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-4])  # cut in the tensor data
    assert re.search(r"model.safetensors is \d+ bytes but its header describes \d+", verify_checkpoint(step))
    truncate(model, keep=0.5)  # cut in the header
    assert "truncated or not a safetensors file" in verify_checkpoint(step)


def test_the_shipped_single_file_checkpoints_load() -> None:
    """The demo model and the VAE it generates in: intact, and the model records that very VAE."""
    from cmmd.video.loading import load_video_codec

    assert verify_checkpoint(DEMO_CHECKPOINT) is None and verify_checkpoint(DEMO_VAE) is None
    record = read_info(DEMO_CHECKPOINT).extra["codec"]
    assert record["name"] == "cmmd-vae" and record["weights"] == load_video_codec(f"cmmd-vae:{DEMO_VAE}").weights
    assert load_weights(DEMO_CHECKPOINT)


@pytest.mark.parametrize("content", [b"", b"junk", b"\xff" * 64, None])
def test_a_junk_or_truncated_single_file_is_a_one_line_error_naming_it(tmp_path: Path, content: bytes | None) -> None:
    file = tmp_path / "model.safetensors"
    if content is None:
        file.write_bytes(DEMO_CHECKPOINT.read_bytes()[:5000])  # a real checkpoint cut short
    else:
        file.write_bytes(content)
    for load in (read_info, load_weights):
        with pytest.raises(CmmdError) as err:
            load(file)
        assert str(file) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CmmdError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")


def failing_write(after_bytes: int):
    """A ``_write_bytes`` that writes until ``after_bytes`` in all, then fails as a full disk does."""
    written = {"n": 0}

    def write(path: Path, data: bytes) -> None:
        room = after_bytes - written["n"]
        with open(path, "wb") as fh:
            fh.write(data[: max(0, room)])
        written["n"] += min(len(data), max(0, room))
        if room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return write


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_steps(tmp_path, 1)
    before = load_weights(tmp_path, "model")
    monkeypatch.setattr(ckpt, "_write_bytes", failing_write(after_bytes=600))
    with pytest.raises(CmmdError, match=r"no space left on device while writing checkpoint .*step_00000002"):
        save_steps(tmp_path, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()] == ["step_00000001"]
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    assert all(torch.equal(before[k], v) for k, v in load_weights(tmp_path, "model").items())


# -- through a trainer: the VAE's, the quickest --------------------------------------------------
def vae_cfg(data: Path, out: Path, steps: int) -> VaeTrainConfig:
    return VaeTrainConfig(data=str(data), out_dir=str(out), vae=VaeConfig(downsampling=4, base_channels=8,
                          norm_groups=4), steps=steps, batch_size=2, lr=2e-3, checkpoint_every=2, eval_frames=4,
                          device="cpu")


def test_training_resumes_from_the_newest_intact_checkpoint_and_survives_a_full_disk(
        prepared_impacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train_vae(vae_cfg(prepared_impacts, tmp_path / "a", steps=4), progress=False)
    run = tmp_path / "b"
    train_vae(vae_cfg(prepared_impacts, run, steps=4), progress=False)
    truncate(run / "checkpoints" / "step_00000004" / "model.safetensors")
    # A full disk at the first checkpoint after resuming from step 2: a clear error, step 2 intact.
    monkeypatch.setattr(ckpt, "_write_bytes", failing_write(after_bytes=2000))
    with pytest.raises(CmmdError, match=r"no space left on device while writing checkpoint .*step_00000004"):
        train_vae(vae_cfg(prepared_impacts, run, steps=4), resume=True, progress=False)
    assert not list((run / "checkpoints").glob(".tmp*"))
    monkeypatch.undo()
    assert latest_checkpoint(run).name == "step_00000002"  # the torn step 4 is still skipped
    resumed = train_vae(vae_cfg(prepared_impacts, run, steps=4), resume=True, progress=False)
    assert resumed.step == 4 and resumed.codec.weights == straight.codec.weights
