"""Video codecs: map decoded frames to the tensors the diffusion model works on, and back.

Only the ``pixel`` codec lives here for now (frames scaled to [-1, 1]); latent codecs share the
same interface: ``encode(frames uint8 (B, T, H, W, 3)) -> (B, T, C, h, w)`` and ``decode``.
"""

from __future__ import annotations

import numpy as np
import torch


class PixelCodec:
    """Identity codec in pixel space: uint8 frames <-> float tensors in [-1, 1]."""

    name = "pixel"
    channels = 3
    downsampling = 1
    scaling_factor = 1.0

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, H, W, 3)`` (or ``(T, H, W, 3)``) -> float32 ``(B, T, 3, H, W)`` in [-1, 1]."""
        x = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
        if x.ndim == 4:
            x = x[None]
        return x.permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)

    def decode(self, video: torch.Tensor) -> np.ndarray:
        """float ``(B, T, 3, H, W)`` in [-1, 1] -> uint8 ``(B, T, H, W, 3)`` (values clipped)."""
        x = video.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
        return x.permute(0, 1, 3, 4, 2).to(torch.uint8).cpu().numpy()
