"""Exponential moving average of model weights (the weights we sample from)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` to hold the average."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d * ema + (1 - d) * model`` with warm-up ``d = min(decay, (1 + step) / (10 + step))``.

    The warm-up keeps early averages from being dominated by the random initialisation, which
    matters for the short CPU runs this toolkit is also used for.
    """
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
