"""Video codecs: map decoded frames to the tensors the diffusion model works on, and back.

One interface (:class:`VideoCodec`) for every representation of METHOD.md section 2:

* ``pixel``: frames scaled to [-1, 1] (:class:`PixelCodec`, no weights);
* ``cmmd-vae:<checkpoint>``: the small KL-VAE that ``cmmd vae train`` trains
  (:class:`cmmd.video.vae.CmmdVaeCodec`, 4 channels, 4x or 8x downsampling);
* ``sd-vae:<folder or .safetensors>``: Stable Diffusion's ``AutoencoderKL`` loaded from a local
  path through diffusers (:class:`cmmd.video.sdvae.SdVaeCodec`, 4 channels, 8x).

Contract, shared by all of them::

    encode(frames uint8 (B, T, H, W, 3) or (T, H, W, 3)) -> float32 (B, T, C, H / d, W / d)
    decode(latents (B, T, C, h, w))                       -> uint8 (B, T, h * d, w * d, 3)

with ``C = channels`` and ``d = downsampling``. Latent codecs return *scaled* latents, ``z *
scaling_factor`` with ``z`` the posterior mean (Rombach et al. 2022, Sec. 3; the factor brings
latents to roughly unit variance for the diffusion prior), and ``decode`` divides it out first.
The posterior mean, not a sample, so that encoding is deterministic and latents precomputed
into the shards (:mod:`cmmd.video.latents`) are the ones training would have made.
``encode`` returns a tensor on the codec's device; ``decode`` accepts latents on any device.

:meth:`VideoCodec.describe` is what a diffusion checkpoint records about its codec, and
:meth:`VideoCodec.check_compatible` refuses a codec that differs from that record.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from cmmd.errors import CmmdError

def weights_digest(state: Mapping[str, Tensor]) -> str:
    """First 16 hex digits of the sha256 of a state dict serialised as safetensors (sorted keys)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return hashlib.sha256(safetensors_bytes(tensors)).hexdigest()[:16]


def frames_tensor(frames: np.ndarray | Tensor, who: str) -> Tensor:
    """uint8 frames ``(B, T, H, W, 3)``, or one clip ``(T, H, W, 3)`` as ``B = 1``, as a tensor
    (the array's memory where it can); a CmmdError naming ``who`` for any other shape or dtype."""
    if torch.is_tensor(frames):
        x = frames
    else:
        array = np.asarray(frames)
        x = torch.from_numpy(array if array.flags.writeable else array.copy())  # memmaps are read-only
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[-1] != 3:
        raise CmmdError(f"{who} takes frames (B, T, H, W, 3) or (T, H, W, 3), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise CmmdError(f"{who} takes uint8 frames (0-255), got {x.dtype}")
    return x


def frames_to_unit(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 ``(B, T, H, W, 3)`` or ``(T, H, W, 3)`` -> float32 ``(B, T, 3, H, W)`` in [-1, 1] (CPU)."""
    return frames_tensor(frames, "a video codec").permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)


def unit_to_frames(video: Tensor) -> np.ndarray:
    """float ``(B, T, 3, H, W)`` in [-1, 1] -> uint8 ``(B, T, H, W, 3)`` (values clipped)."""
    x = video.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.permute(0, 1, 3, 4, 2).to(torch.uint8).cpu().numpy()


class VideoCodec(ABC):
    """Frames <-> diffusion tensors; subclasses implement the per-image transforms.

    Attributes: ``name`` (the spec prefix), ``channels`` ``C``, ``downsampling`` ``d`` (spatial
    factor), ``scaling_factor`` (multiplies the posterior mean), ``max_batch`` (images per
    network call, bounding memory), ``spec`` (how it was loaded, e.g. ``"cmmd-vae:run/"``).
    """

    name: str
    channels: int
    downsampling: int
    scaling_factor: float
    max_batch: int = 32
    spec: str = ""

    @property
    def device(self) -> torch.device:
        """Where ``encode`` puts its output and the networks run."""
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> VideoCodec:
        """Move the codec's networks to ``device``; returns ``self``."""
        return self

    @property
    def weights(self) -> str | None:
        """Digest of the codec's weights (:func:`weights_digest`), None for weight-free codecs."""
        return None

    @abstractmethod
    def encode_images(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` float in [-1, 1] on ``device`` -> unscaled latents ``(N, C, H / d, W / d)``."""

    @abstractmethod
    def decode_images(self, latents: Tensor) -> Tensor:
        """Unscaled latents ``(N, C, h, w)`` on ``device`` -> images ``(N, 3, h * d, w * d)`` ~[-1, 1]."""

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C, h, w)`` of one frame of ``height x width``; CmmdError if ``d`` does not divide them."""
        d = self.downsampling
        if height % d or width % d:
            raise CmmdError(f"codec {self.name} downsamples by {d}: frames of {width}x{height} are not a "
                            f"multiple of {d}; prepare the data with a size divisible by {d}")
        return self.channels, height // d, width // d

    @torch.no_grad()
    def encode(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 ``(B, T, H, W, 3)`` (or ``(T, H, W, 3)``) -> float32 ``(B, T, C, H / d, W / d)``
        on ``device``, scaled by ``scaling_factor``."""
        x = frames_to_unit(frames)
        b, t = x.shape[:2]
        self.latent_shape(*x.shape[-2:])
        images = x.reshape(b * t, *x.shape[2:])
        out = [self.encode_images(chunk.to(self.device)).float() * self.scaling_factor
               for chunk in images.split(self.max_batch)]
        z = torch.cat(out)
        return z.reshape(b, t, *z.shape[1:])

    @torch.no_grad()
    def decode(self, latents: Tensor) -> np.ndarray:
        """Scaled latents ``(B, T, C, h, w)`` -> uint8 frames ``(B, T, h * d, w * d, 3)``."""
        if latents.ndim != 5 or latents.shape[2] != self.channels:
            raise CmmdError(f"codec {self.name} decodes latents (B, T, {self.channels}, h, w), "
                            f"got shape {tuple(latents.shape)}")
        b, t = latents.shape[:2]
        z = latents.detach().float().reshape(b * t, *latents.shape[2:]) / self.scaling_factor
        out = [self.decode_images(chunk.to(self.device)).float().cpu() for chunk in z.split(self.max_batch)]
        images = torch.cat(out)
        return unit_to_frames(images.reshape(b, t, *images.shape[1:]))

    def describe(self) -> dict[str, Any]:
        """What a diffusion checkpoint records about its codec (JSON-able)."""
        return {
            "kind": "video", "name": self.name, "channels": self.channels, "downsampling": self.downsampling,
            "scaling_factor": float(self.scaling_factor), "weights": self.weights, "spec": self.spec,
        }

    def check_compatible(self, recorded: Mapping[str, Any] | str) -> None:
        """Raise CmmdError unless this codec is the one ``recorded`` (a :meth:`describe` dict, or
        the bare name older checkpoints stored) describes; ``spec`` (the path) may differ."""
        rec = {"name": recorded} if isinstance(recorded, str) else dict(recorded)
        if rec.get("name") == "pixel" and "channels" not in rec:
            rec.update(PixelCodec().describe())
        mine = self.describe()
        diffs = []
        for key in ("name", "channels", "downsampling", "weights"):
            if key in rec and rec[key] != mine[key]:
                diffs.append(f"{key} {rec[key]!r} there, {mine[key]!r} here")
        if "scaling_factor" in rec and not math.isclose(float(rec["scaling_factor"]), mine["scaling_factor"],
                                                        rel_tol=1e-6):
            diffs.append(f"scaling_factor {rec['scaling_factor']!r} there, {mine['scaling_factor']!r} here")
        if diffs:
            where = f" (it was loaded as {rec['spec']!r})" if rec.get("spec") else ""
            raise CmmdError(f"video codec mismatch: the model was trained with codec {rec.get('name')!r}{where} "
                            f"but codec {self.spec or self.name!r} was given: {'; '.join(diffs)}. "
                            "Load the codec the model was trained with.")


class NetworkCodec(VideoCodec):
    """A codec around one frozen network ``model``: it runs where the model's parameters are,
    and its weights digest is taken once, at construction."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)
        self._weights = weights_digest(model.state_dict())

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> NetworkCodec:
        """Move the model; returns ``self``."""
        self.model.to(device)
        return self

    @property
    def weights(self) -> str:
        """Digest of the model's state dict."""
        return self._weights


class PixelCodec(VideoCodec):
    """Identity codec in pixel space: uint8 ``(B, T, H, W, 3)`` <-> float32 ``(B, T, 3, H, W)`` in
    [-1, 1] (decoding clips to that range)."""

    name = "pixel"
    channels = 3
    downsampling = 1
    scaling_factor = 1.0
    spec = "pixel"
    max_batch = 1 << 30  # no network: one chunk

    def encode_images(self, images: Tensor) -> Tensor:
        """Identity: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``."""
        return images

    def decode_images(self, latents: Tensor) -> Tensor:
        """Identity: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``."""
        return latents


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images, MSE pooled over all pixels (inf if equal)."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of uint8 images ``(..., H, W, 3)``: 11x11 Gaussian window with
    sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, per RGB channel over the valid region, averaged."""
    def planes(a: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
        return x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).reshape(-1, 1, *x.shape[-3:-1])

    x, y = planes(reference), planes(test)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5.0) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None]
    if min(x.shape[-2:]) < 11:
        raise CmmdError(f"SSIM needs images of at least 11x11 pixels, got {tuple(reference.shape)}")

    def blur(t: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(t, window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def round_trip_quality(codec: VideoCodec, frames: np.ndarray) -> dict[str, float]:
    """``{"psnr", "ssim"}`` of ``codec.decode(codec.encode(frames))`` against uint8 ``frames (N, H, W, 3)``."""
    recon = codec.decode(codec.encode(frames[None]))[0]
    return {"psnr": psnr(frames, recon), "ssim": ssim(frames, recon)}


__all__ = [
    "PixelCodec",
    "VideoCodec",
    "frames_to_unit",
    "psnr",
    "round_trip_quality",
    "ssim",
    "unit_to_frames",
    "weights_digest",
]
