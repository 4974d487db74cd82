"""The one place a device name (``auto``, ``cpu``, ``cuda``, ``cuda:1``...) becomes a torch device."""

from __future__ import annotations

import torch

from cmmd.errors import CmmdError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (CmmdError if unavailable)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CmmdError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CmmdError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device
