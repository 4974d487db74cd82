"""High-frequency energy of frames: the mean squared Laplacian, to tell clean frames from noisy ones.

Generated frames covered in pixel noise have far more energy in the discrete Laplacian
``4 f(i, j) - f(i-1, j) - f(i+1, j) - f(i, j-1) - f(i, j+1)`` than the ground truth's smooth
discs on a flat background; a ratio near 1 means the model's frames are as clean as real ones.
Computed on the interior pixels only (no padding), per colour channel, on values in [0, 1].
"""

from __future__ import annotations

import numpy as np

from cmmd.errors import CmmdError


def laplacian_energy(frames: np.ndarray) -> float:
    """Mean over interior pixels, channels and frames of the squared 5-point Laplacian.

    ``frames``: uint8 ``(..., H, W, 3)`` with ``H, W >= 3``. A constant or linear ramp gives 0;
    a one-pixel checkerboard of 0 and 255 gives 16.
    """
    x = np.asarray(frames)
    if x.dtype != np.uint8 or x.ndim < 3 or x.shape[-1] != 3 or min(x.shape[-3:-1]) < 3:
        raise CmmdError(f"laplacian_energy takes uint8 frames (..., H >= 3, W >= 3, 3), got {x.dtype} {x.shape}")
    f = x.astype(np.int64)  # exact integer Laplacian, scaled to [0, 1] values at the end
    lap = (4 * f[..., 1:-1, 1:-1, :] - f[..., :-2, 1:-1, :] - f[..., 2:, 1:-1, :]
           - f[..., 1:-1, :-2, :] - f[..., 1:-1, 2:, :])
    return float(np.mean(lap.astype(np.float64) ** 2) / 255.0**2)


def laplacian_ratio(generated: np.ndarray, reference: np.ndarray) -> float:
    """``laplacian_energy(generated) / laplacian_energy(reference)``: 1 means as sharp (or as
    noisy) as the reference; the issue's target for clean a->v frames is <= 1.5."""
    ref = laplacian_energy(reference)
    if ref == 0.0:
        raise CmmdError("laplacian_ratio: the reference frames are constant (no Laplacian energy)")
    return laplacian_energy(generated) / ref
