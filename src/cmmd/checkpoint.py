"""Checkpoints in safetensors: weights, EMA weights and optimizer state in separate files.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX/`` holding ``model.safetensors``,
``ema.safetensors``, ``optimizer.safetensors`` and ``state.json``. Every safetensors file embeds
the full run config, the code version and the step in its metadata, so a single file (e.g. the
EMA weights shipped with the demo) is enough to rebuild the model for sampling. Directories are
written under a temporary name and renamed, so an interrupted write never leaves a half
checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import cmmd
from cmmd.errors import CmmdError

STEP_PREFIX = "step_"


def code_version() -> str:
    """cmmd's version plus the git commit (with ``-dirty``) when run from a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    return f"{cmmd.__version__}+{sha}"


def _metadata(info: dict[str, Any], kind: str) -> dict[str, str]:
    return {"format": "cmmd", "kind": kind, "cmmd": json.dumps(info)}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def _state_dict_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself: the run config, step and code version."""

    config: dict[str, Any]
    step: int
    version: str
    extra: dict[str, Any]


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` atomically and prune older ones beyond ``keep``."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{STEP_PREFIX}{step:08d}"
    tmp = ckpt_root / f".tmp_{STEP_PREFIX}{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    info = {"config": config, "step": step, "version": code_version(), "extra": extra or {}}
    save_file(_state_dict_cpu(model), str(tmp / "model.safetensors"), metadata=_metadata(info, "model"))
    save_file(_state_dict_cpu(ema), str(tmp / "ema.safetensors"), metadata=_metadata(info, "ema"))
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    opt_meta = _metadata(info, "optimizer")
    opt_meta["optimizer"] = json.dumps(opt_rest)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"), metadata=opt_meta)
    (tmp / "state.json").write_text(json.dumps(info, indent=2))
    if final.exists():  # re-saving the same step (e.g. signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(ckpt_root, final.name)
    _prune(ckpt_root, keep)
    return final


def _write_latest(ckpt_root: Path, name: str) -> None:
    tmp = ckpt_root / f".latest.{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, ckpt_root / "latest")


def _prune(ckpt_root: Path, keep: int) -> None:
    steps = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def read_info(path: Path) -> CheckpointInfo:
    """Metadata of a checkpoint directory or of a single cmmd safetensors file."""
    file = _weights_file(path, prefer="ema")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CmmdError(f"{file}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != "cmmd" or "cmmd" not in meta:
        raise CmmdError(f"{file}: not a cmmd checkpoint (no cmmd metadata)")
    info = json.loads(meta["cmmd"])
    return CheckpointInfo(info["config"], int(info["step"]), info["version"], info.get("extra", {}))


def _weights_file(path: Path, prefer: str) -> Path:
    path = Path(path)
    if path.is_dir():
        if (path / "checkpoints").is_dir():  # a run directory: take its latest checkpoint
            latest = latest_checkpoint(path)
            if latest is None:
                raise CmmdError(f"{path}: run directory has no complete checkpoint")
            path = latest
        file = path / f"{prefer}.safetensors"
        if not file.is_file():
            raise CmmdError(f"{path}: no {prefer}.safetensors in checkpoint directory")
        return file
    if not path.is_file():
        raise CmmdError(f"checkpoint {path} does not exist")
    return path


def load_weights(path: Path, prefer: str = "ema") -> dict[str, torch.Tensor]:
    """Weights from a run dir, a checkpoint dir (``prefer`` = "ema" or "model") or one file."""
    file = _weights_file(path, prefer)
    with safe_open(str(file), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_training_state(
    ckpt_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> CheckpointInfo:
    """Restore model, EMA and optimizer in place from a checkpoint directory, for ``--resume``."""
    model.load_state_dict(load_weights(ckpt_dir, "model"))
    ema.load_state_dict(load_weights(ckpt_dir, "ema"))
    file = ckpt_dir / "optimizer.safetensors"
    with safe_open(str(file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        rest = json.loads((f.metadata() or {})["optimizer"])
    optimizer.load_state_dict(_unflatten_optimizer(tensors, rest))
    return read_info(ckpt_dir)
