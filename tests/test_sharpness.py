"""The frames' high-frequency energy against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from cmmd.errors import CmmdError
from cmmd.eval.sharpness import laplacian_energy, laplacian_ratio


def test_constant_and_linear_frames_have_no_laplacian_energy() -> None:
    assert laplacian_energy(np.full((2, 8, 8, 3), 77, np.uint8)) == 0.0
    ramp = np.broadcast_to((np.arange(9) * 20).astype(np.uint8)[None, :, None], (9, 9, 3)).copy()
    assert laplacian_energy(ramp) == 0.0


def test_checkerboard_has_energy_sixteen() -> None:
    board = ((np.indices((6, 7)).sum(0) % 2) * 255).astype(np.uint8)
    assert laplacian_energy(np.repeat(board[..., None], 3, -1)) == pytest.approx(16.0)


def test_noise_raises_the_ratio_and_scales_with_its_variance() -> None:
    rng = np.random.default_rng(0)
    clean = np.full((4, 32, 32, 3), 128.0)
    clean[:, 8:20, 8:20] = 220.0
    noisy = [np.clip(clean + s * rng.standard_normal(clean.shape), 0, 255).round().astype(np.uint8) for s in (4, 8)]
    ref = clean.astype(np.uint8)
    # iid noise of std s adds 20 s^2 / 255^2 (the Laplacian's weights squared sum to 20).
    for s, frames in zip((4, 8), noisy):
        added = laplacian_energy(frames) - laplacian_energy(ref)
        assert added == pytest.approx(20 * s**2 / 255**2, rel=0.1)
    assert 1.0 < laplacian_ratio(noisy[0], ref) < laplacian_ratio(noisy[1], ref)


def test_bad_input_is_refused() -> None:
    with pytest.raises(CmmdError, match="uint8"):
        laplacian_energy(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(CmmdError, match="constant"):
        laplacian_ratio(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))
