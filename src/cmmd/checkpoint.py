"""Checkpoints in safetensors, verifiable: every file's size and sha256 in a manifest.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX/`` holding safetensors files (for the
diffusion model and the VAE ``model``, ``ema`` and ``optimizer``; the vocoder writes its own
set), ``state.json`` and ``manifest.json``. Every safetensors file embeds the full run config,
the code version and the step in its metadata, so a single file (e.g. the EMA weights shipped
with the demo) is enough to rebuild the model for sampling.

A checkpoint is written under a temporary name, its manifest last, and renamed into place, so an
interrupted write never leaves a half checkpoint that looks complete. Reading verifies it
(:func:`verify_checkpoint`): a torn or corrupt checkpoint (a bad disk, a copy cut short) is
skipped with a message naming it and why, and the newest intact one is used. Checkpoints from
before manifests are checked by parsing each safetensors header against the file's size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

import cmmd
from cmmd.digest import file_sha256
from cmmd.errors import CmmdError

STEP_PREFIX = "step_"
MANIFEST = "manifest.json"
STATE = "state.json"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header

Tensors = dict[str, torch.Tensor]


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


def checkpoint_info(config: dict[str, Any], step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every file of a checkpoint records (``state.json`` and safetensors metadata)."""
    return {"config": config, "step": step, "version": code_version(), "extra": extra or {}}


def cmmd_metadata(info: dict[str, Any], kind: str) -> dict[str, str]:
    """safetensors metadata of a cmmd file of ``kind`` (``model``, ``ema``, ``optimizer``...)."""
    return {"format": "cmmd", "kind": kind, "cmmd": json.dumps(info)}


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "state") -> tuple[Tensors, dict[str, Any]]:
    """An optimizer state dict split into tensors ``{prefix}.{param}.{name}`` (for safetensors)
    and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors: Tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: Tensors, rest: dict[str, Any], prefix: str = "state") -> dict[str, Any]:
    """Inverse of :func:`optimizer_tensors`: the state dict from the tensors named ``prefix.*``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        head, idx, name = key.split(".", 2)
        if head == prefix:
            state.setdefault(int(idx), {})[name] = value
    for idx, values in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def state_dict_cpu(module: torch.nn.Module) -> Tensors:
    """``module``'s state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself: the run config, step and code version."""

    config: dict[str, Any]
    step: int
    version: str
    extra: dict[str, Any]


# ----------------------------------------------------------------------------- writing


def _write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync ``data``: a checkpoint counts as written only once it is on disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_checkpoint(run_dir: Path, step: int, info: dict[str, Any], files: dict[str, tuple[Tensors, dict[str, str]]],
                     keep: int = 3) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` holding ``files`` (name -> tensors, metadata),
    ``state.json`` (``info``) and the manifest, atomically; point ``latest`` at it and prune
    older ones beyond ``keep``. Raises CmmdError when the disk is full, leaving the previous
    checkpoints as they were."""
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"{STEP_PREFIX}{step:08d}"
    tmp = ckpt_root / f".tmp_{STEP_PREFIX}{step:08d}_{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        blobs = {name: save(tensors, metadata=metadata) for name, (tensors, metadata) in files.items()}
        blobs[STATE] = json.dumps(info, indent=2).encode()
        for name, data in blobs.items():
            _write_bytes(tmp / name, data)
        manifest = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for name, data in blobs.items()}
        _write_bytes(tmp / MANIFEST, json.dumps({"files": manifest}, indent=1).encode())
        if final.exists():  # re-saving the same step (e.g. signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = ckpt_root / f".latest.{os.getpid()}"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, ckpt_root / "latest")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise CmmdError(f"no space left on device while writing checkpoint {final}; the previous checkpoints "
                            "are intact: free space and continue with --resume") from None
        raise CmmdError(f"cannot write checkpoint {final}: {exc}") from None
    _prune(ckpt_root, keep)
    return final


def _prune(ckpt_root: Path, keep: int) -> None:
    """Drop checkpoints beyond the newest ``keep`` and temporary directories of killed writers."""
    steps = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))
    stale = [p for p in ckpt_root.glob(f".tmp_{STEP_PREFIX}*") if p.is_dir()]
    for old in (steps[:-keep] if keep > 0 else []) + stale:
        shutil.rmtree(old, ignore_errors=True)


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
    """A model/EMA/optimizer checkpoint (the diffusion model, the VAE) via :func:`write_checkpoint`."""
    info = checkpoint_info(config, step, extra)
    opt_tensors, opt_rest = optimizer_tensors(optimizer)
    return write_checkpoint(run_dir, step, info, {
        "model.safetensors": (state_dict_cpu(model), cmmd_metadata(info, "model")),
        "ema.safetensors": (state_dict_cpu(ema), cmmd_metadata(info, "ema")),
        "optimizer.safetensors": (opt_tensors, {**cmmd_metadata(info, "optimizer"), "optimizer": json.dumps(opt_rest)}),
    }, keep)


# ----------------------------------------------------------------------------- verifying


def safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a whole safetensors file (header unreadable, size not the one its
    header describes), or None. Reads only the header."""
    size = file.stat().st_size
    if size < 8:
        return f"{file.name} is {size} bytes, too short for a safetensors file"
    with open(file, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > min(_MAX_HEADER, size - 8):
            return f"{file.name} is truncated or not a safetensors file (header of {n} bytes, file of {size})"
        try:
            header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{file.name} has no readable safetensors header"
    if 8 + n + end != size:
        return f"{file.name} is {size} bytes but its header describes {8 + n + end} (truncated?)"
    return None


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint directory or single safetensors file ``path`` cannot be trusted, or
    None if it is intact. Checks sizes and sha256 against the manifest; without one (older
    checkpoints, exported files), the safetensors headers against the file sizes."""
    path = Path(path)
    if path.is_file():
        return safetensors_problem(path)
    if not path.is_dir():
        return "it does not exist"
    if not (path / MANIFEST).is_file():
        return _unlisted_problem(path)
    try:
        listed = json.loads((path / MANIFEST).read_text())["files"]
        records = {str(name): (int(rec["bytes"]), str(rec["sha256"])) for name, rec in listed.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"{MANIFEST} is unreadable"
    for name, (size, sha) in records.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, the manifest says {size} (truncated?)"
        if file_sha256(file) != sha:
            return f"{name} does not match the sha256 in its manifest (corrupt)"
    return None


def _unlisted_problem(ckpt: Path) -> str | None:
    """Checks of a checkpoint written before manifests: state.json and whole safetensors files."""
    if not (ckpt / STATE).is_file():
        return f"{STATE} is missing"
    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        return "it holds no safetensors file"
    return next((p for p in map(safetensors_problem, files) if p is not None), None)


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    """A run's checkpoint directories, newest first, intact or not (never temporary ones)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint of a run, None if it has no checkpoint.

    Torn or corrupt ones are skipped with a message on stderr naming them and why; a CmmdError
    when the run has checkpoints but none is intact.
    """
    problems = []
    for ckpt in _checkpoint_dirs(run_dir):
        reason = verify_checkpoint(ckpt)
        if reason is None:
            return ckpt
        print(f"cmmd: skipping checkpoint {ckpt}: {reason}", file=sys.stderr)
        problems.append(f"{ckpt.name}: {reason}")
    if problems:
        raise CmmdError(f"{run_dir}: no intact checkpoint ({'; '.join(problems)}); restore one from a backup, or "
                        "move the run aside and start afresh")
    return None


# ----------------------------------------------------------------------------- reading


def read_tensors(file: Path) -> tuple[Tensors, dict[str, str]]:
    """The tensors and metadata of a safetensors file; a one-line CmmdError naming it if unreadable."""
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a bad file
        raise CmmdError(f"{file}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def _info_from(file: Path, meta: dict[str, str]) -> CheckpointInfo:
    if meta.get("format") != "cmmd" or "cmmd" not in meta:
        raise CmmdError(f"{file}: not a cmmd checkpoint (no cmmd metadata)")
    info = json.loads(meta["cmmd"])
    return CheckpointInfo(info["config"], int(info["step"]), info["version"], info.get("extra", {}))


def read_info(path: Path) -> CheckpointInfo:
    """Metadata of a run directory (its newest intact checkpoint), a checkpoint directory or of a
    single cmmd safetensors file."""
    file = _weights_file(path, prefer="ema")
    try:
        with safe_open(str(file), framework="pt") as f:
            return _info_from(file, f.metadata() or {})
    except CmmdError:
        raise
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CmmdError(f"{file}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def _weights_file(path: Path, prefer: str) -> Path:
    """The verified ``{prefer}.safetensors`` of a run dir (newest intact checkpoint) or a
    checkpoint dir, or ``path`` itself when it is a file; CmmdError naming what is wrong."""
    path = Path(path)
    if path.is_dir():
        if (path / "checkpoints").is_dir():  # a run directory
            latest = latest_checkpoint(path)
            if latest is None:
                raise CmmdError(f"{path}: run directory has no complete checkpoint")
            path = latest
        else:
            reason = verify_checkpoint(path)
            if reason is not None:
                raise CmmdError(f"checkpoint {path} is damaged: {reason}")
        file = path / f"{prefer}.safetensors"
        if not file.is_file():
            raise CmmdError(f"{path}: no {prefer}.safetensors in checkpoint directory")
        return file
    if not path.is_file():
        raise CmmdError(f"checkpoint {path} does not exist")
    reason = safetensors_problem(path)
    if reason is not None:
        raise CmmdError(f"checkpoint {path} is damaged: {reason}")
    return path


def load_weights(path: Path, prefer: str = "ema") -> Tensors:
    """Weights from a run dir, a checkpoint dir (``prefer`` = "ema" or "model") or one file."""
    return read_tensors(_weights_file(path, prefer))[0]


def load_training_state(
    ckpt_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> CheckpointInfo:
    """Restore model, EMA and optimizer in place from a verified checkpoint directory (``--resume``)."""
    model.load_state_dict(read_tensors(ckpt_dir / "model.safetensors")[0])
    ema_tensors, ema_meta = read_tensors(ckpt_dir / "ema.safetensors")
    ema.load_state_dict(ema_tensors)
    tensors, meta = read_tensors(ckpt_dir / "optimizer.safetensors")
    optimizer.load_state_dict(optimizer_state(tensors, json.loads(meta["optimizer"])))
    return _info_from(ckpt_dir / "ema.safetensors", ema_meta)
