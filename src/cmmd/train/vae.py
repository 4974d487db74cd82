"""``cmmd vae train``: fit the small KL-VAE (:mod:`cmmd.video.vae`) to the frames of prepared shards.

Objective (per-element means): ``L1(x_hat, x) + grad_weight * L1(sobel(x_hat), sobel(x)) +
kl_weight * KL(q(z | x) || N(0, I))``. The Sobel term is an LPIPS-free stand-in for the
perceptual loss of the LDM autoencoder (Rombach et al. 2022): plain L1 lets the decoder blur
edges, a gradient-domain L1 penalises exactly that. The KL weight is small so that the latents
keep detail; the scale it leaves is removed by the scaling factor, ``1 / std`` of the posterior
means over training frames (the recipe behind SD's 0.18215), recomputed at every checkpoint.

Frames: every frame of every complete item; the last ``max(1, 10 %)`` of the items (sorted keys)
are held out for the PSNR/SSIM report (with a single item, its last 10 % of frames). Batches are
drawn uniformly from the training frames from ``(seed, step)`` alone, with random horizontal
flips, so a resumed run sees the batches an uninterrupted one would. Checkpoints (weights, EMA
weights, optimizer; :mod:`cmmd.checkpoint`) go to ``RUN/checkpoints/step_*``; the EMA file
alone is a loadable codec (``cmmd-vae:RUN``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from cmmd.checkpoint import load_training_state, read_info, save_checkpoint
from cmmd.device import resolve_device
from cmmd.errors import CmmdError
from cmmd.train.core import Ema, LoopSettings, TrainingLoop, check_finite, open_run
from cmmd.train.ema import make_ema
from cmmd.video.codecs import frames_to_unit, round_trip_quality
from cmmd.video.vae import CmmdVaeCodec, KlVae, VaeConfig, kl_divergence


@dataclass
class VaeTrainConfig:
    """Everything ``cmmd vae train`` needs; stored in every checkpoint."""

    data: str
    out_dir: str
    vae: VaeConfig = field(default_factory=VaeConfig)
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    kl_weight: float = 1e-6
    grad_weight: float = 0.5
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    eval_frames: int = 64
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise CmmdError for values no run could use."""
        self.vae.validate()
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.eval_frames < 1:
            raise CmmdError("vae train needs steps >= 1, batch size >= 1, lr > 0 and eval frames >= 1")
        if self.kl_weight < 0 or self.grad_weight < 0 or not 0 <= self.ema_decay < 1:
            raise CmmdError("vae train needs kl/grad weights >= 0 and 0 <= ema decay < 1")


@dataclass
class VaeTrainResult:
    """End of a run: the codec (EMA weights), held-out quality, the last checkpoint."""

    codec: CmmdVaeCodec
    psnr: float
    ssim: float
    step: int
    checkpoint: Path


class FramePool:
    """Memory-mapped frames of a prepared directory split into training and held-out frames.

    ``train`` and ``held_out`` are lists of ``(video.npy memmap, frame index array)``.
    """

    def __init__(self, root: str | Path, downsampling: int) -> None:
        self.root = Path(root)
        items = sorted(p.parent for p in self.root.glob("items/*/meta.json"))
        if not items:
            raise CmmdError(f"{self.root} holds no prepared items (items/<key>/meta.json); run "
                            f"`cmmd prepare SRC {self.root}` first")
        videos = [np.load(p / "video.npy", mmap_mode="r") for p in items]
        sizes = {v.shape[1:] for v in videos}
        if len(sizes) != 1:
            raise CmmdError(f"{self.root}: items have different frame shapes {sorted(sizes)}")
        (self.height, self.width, _), = sizes
        if self.height % downsampling or self.width % downsampling:
            raise CmmdError(f"{self.root}: frames are {self.width}x{self.height}, not divisible by the VAE's "
                            f"downsampling {downsampling}")
        if len(videos) >= 2:
            n_hold = max(1, round(0.1 * len(videos)))
            self.train = [(v, np.arange(len(v))) for v in videos[:-n_hold]]
            self.held_out = [(v, np.arange(len(v))) for v in videos[-n_hold:]]
        else:
            v = videos[0]
            cut = max(1, int(0.9 * len(v)))
            if cut >= len(v):
                raise CmmdError(f"{self.root}: one item of {len(v)} frame(s) cannot be split into training and "
                                "held-out frames; prepare more data")
            self.train, self.held_out = [(v, np.arange(cut))], [(v, np.arange(cut, len(v)))]
        self._offsets = np.cumsum([0] + [len(ix) for _, ix in self.train])

    @property
    def num_train(self) -> int:
        """Number of training frames."""
        return int(self._offsets[-1])

    def _frames(self, pool: list[tuple[np.ndarray, np.ndarray]], flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = []
        for i in flat:
            item = int(np.searchsorted(offsets, i, side="right")) - 1
            video, index = pool[item]
            out.append(video[index[i - offsets[item]]])
        return np.stack(out)

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        """uint8 ``(size, H, W, 3)`` training frames of ``step``, randomly flipped left-right."""
        rng = np.random.default_rng([seed, step])
        frames = self._frames(self.train, rng.integers(0, self.num_train, size), self._offsets)
        flip = rng.random(size) < 0.5
        frames[flip] = frames[flip][:, :, ::-1]
        return frames

    def held_out_frames(self, count: int) -> np.ndarray:
        """Up to ``count`` held-out frames, evenly spaced over the held-out set: uint8 ``(N, H, W, 3)``."""
        offsets = np.cumsum([0] + [len(ix) for _, ix in self.held_out])
        flat = np.unique(np.linspace(0, offsets[-1] - 1, min(count, int(offsets[-1]))).round().astype(int))
        return self._frames(self.held_out, flat, offsets)

    def spread_train_frames(self, count: int) -> np.ndarray:
        """Up to ``count`` training frames evenly spaced over the training set: uint8 ``(N, H, W, 3)``."""
        flat = np.unique(np.linspace(0, self.num_train - 1, min(count, self.num_train)).round().astype(int))
        return self._frames(self.train, flat, self._offsets)


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(images: Tensor) -> Tensor:
    """Horizontal and vertical Sobel gradients per channel: ``(N, C, H, W) -> (N, 2 C, H - 2, W - 2)``."""
    c = images.shape[1]
    kernel = torch.stack([_SOBEL, _SOBEL.T]).to(images)[:, None].repeat(c, 1, 1, 1)
    return F.conv2d(images, kernel, groups=c)


def vae_loss(model: KlVae, x: Tensor, cfg: VaeTrainConfig,
             generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """The objective of the module docstring on images ``x (N, 3, H, W)`` in [-1, 1]; returns ``(loss, logs)``."""
    recon, mu, logvar = model(x, generator)
    l1 = (recon - x).abs().mean()
    grad = (sobel(recon) - sobel(x)).abs().mean()
    kl = kl_divergence(mu, logvar)
    loss = l1 + cfg.grad_weight * grad + cfg.kl_weight * kl
    return loss, {name: float(v.detach()) for name, v in (("loss", loss), ("l1", l1), ("grad", grad), ("kl", kl))}


@torch.no_grad()
def latent_scaling_factor(model: KlVae, frames: np.ndarray, device: torch.device) -> float:
    """``1 / std`` of the posterior means of ``frames (N, H, W, 3)`` uint8 (all elements pooled)."""
    x = frames_to_unit(frames)[0].to(device)
    mu = torch.cat([model.posterior(chunk)[0] for chunk in x.split(32)])
    std = float(mu.float().std())
    if not math.isfinite(std) or std <= 0:
        raise CmmdError(f"the VAE's latents have std {std}; training diverged (lower --lr)")
    return 1.0 / std


def _evaluate(ema: KlVae, pool: FramePool, cfg: VaeTrainConfig,
              device: torch.device) -> tuple[CmmdVaeCodec, dict[str, float]]:
    """The EMA model as a codec (scaling factor from training frames) and its held-out PSNR/SSIM."""
    scale = latent_scaling_factor(ema, pool.spread_train_frames(256), device)
    codec = CmmdVaeCodec(ema, scale, spec=f"cmmd-vae:{cfg.out_dir}")
    return codec, round_trip_quality(codec, pool.held_out_frames(cfg.eval_frames))


class _VaeCheckpoints:
    """Writes a checkpoint with the EMA codec's held-out quality; keeps the last one written."""

    def __init__(self, run_dir: Path, model: KlVae, ema: KlVae, opt: torch.optim.Optimizer, pool: FramePool,
                 cfg: VaeTrainConfig, device: torch.device) -> None:
        self.run_dir, self.model, self.ema, self.opt, self.pool = run_dir, model, ema, opt, pool
        self.cfg, self.device, self.config = cfg, device, asdict(cfg)
        self.last: tuple[int, CmmdVaeCodec, dict[str, float]] | None = None

    def __call__(self, step: int) -> Path:
        codec, quality = _evaluate(self.ema, self.pool, self.cfg, self.device)
        extra = {"codec": codec.describe(), "vae": asdict(self.cfg.vae), "scaling_factor": codec.scaling_factor,
                 "psnr": quality["psnr"], "ssim": quality["ssim"], "frame_size": [self.pool.height, self.pool.width]}
        path = save_checkpoint(self.run_dir, step, self.model, self.ema, self.opt, self.config, extra)
        tqdm.write(f"cmmd vae train: step {step}: held-out PSNR {quality['psnr']:.2f} dB, SSIM {quality['ssim']:.3f}, "
                   f"scaling factor {codec.scaling_factor:.4f} -> {path}")
        self.last = step, codec, quality
        return path


def train_vae(cfg: VaeTrainConfig, resume: bool = False, progress: bool = True) -> VaeTrainResult:
    """Train (or resume) a cmmd-vae run; see the module docstring. Raises CmmdError for bad input."""
    cfg.validate()
    device = resolve_device(cfg.device)
    pool = FramePool(cfg.data, cfg.vae.downsampling)
    run_dir = Path(cfg.out_dir)
    existing = open_run(run_dir, resume, "--out", "cmmd vae train")
    torch.manual_seed(cfg.seed)
    model = KlVae(cfg.vae).to(device)
    ema = make_ema(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    step = 0
    if existing is not None:
        recorded = read_info(existing).config.get("vae")
        if recorded != asdict(cfg.vae):
            raise CmmdError(f"{existing}: the run was started with VAE {recorded}, not {asdict(cfg.vae)}; "
                            "resume with the same architecture flags")
        step = load_training_state(existing, model, ema, opt).step

    def step_fn(step: int) -> dict[str, float]:
        x = frames_to_unit(pool.batch(cfg.seed, step, cfg.batch_size))[0].to(device)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
        model.train()
        loss, logs = vae_loss(model, x, cfg, gen)
        check_finite(logs, step, run_dir, "Lower --lr.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return logs

    saver = _VaeCheckpoints(run_dir, model, ema, opt, pool, cfg, device)
    settings = LoopSettings("cmmd vae train", run_dir, cfg.steps, cfg.checkpoint_every, progress=progress,
                            show=("l1", "kl"))
    end = TrainingLoop(settings, step, existing).run(step_fn, saver, Ema(ema, model, cfg.ema_decay))
    assert end.checkpoint is not None  # a fresh run takes at least one step, which is saved
    if saver.last is not None and saver.last[0] == end.step:
        codec, quality = saver.last[1:]
    else:  # resumed an already finished run
        codec, quality = _evaluate(ema, pool, cfg, device)
    if progress:
        print(f"cmmd vae train: {end.step} steps in {end.seconds:.0f} s", file=sys.stderr)
    return VaeTrainResult(codec, quality["psnr"], quality["ssim"], end.step, end.checkpoint)


__all__ = ["FramePool", "VaeTrainConfig", "VaeTrainResult", "latent_scaling_factor", "sobel",
           "train_vae", "vae_loss"]
