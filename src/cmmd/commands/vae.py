"""``cmmd vae {train,test,encode}``: the small video VAE and latent codecs on prepared shards.

* ``train DATA [KEY=VALUE ...] --out RUN [--config YAML]``: fit the cmmd-vae (:mod:`cmmd.train.vae`)
  on the frames of a ``cmmd prepare`` output; held-out PSNR/SSIM are printed at each checkpoint and
  at the end. The :class:`~cmmd.train.vae.VaeTrainConfig` comes from ``--config`` (e.g.
  ``configs/vae_tiny.yaml``) or the defaults, then the shortcut flags (``--steps 500`` is
  ``steps=500``), then dotted overrides (``vae.downsampling=4``). Resumable (``--resume``); Ctrl-C
  checkpoints before stopping.
* ``test DATA --codec SPEC``: PSNR/SSIM of any codec's round trip on held-out frames, plus
  encode/decode throughput.
* ``encode DATA --codec SPEC``: precompute ``items/*/latents.npy`` (:mod:`cmmd.video.latents`)
  so that training on latents never re-encodes (``cmmd prepare --codec`` calls the same function).

Codec specs: ``pixel``, ``cmmd-vae:<run or checkpoint>``, ``sd-vae:<diffusers folder or .safetensors>``.
"""

from __future__ import annotations

import argparse
import time

from cmmd.commands.config_flags import Shortcut, add_config_arguments, shortcut_overrides
from cmmd.config import load_config
from cmmd.errors import CmmdError
from cmmd.train.vae import VaeTrainConfig

HELP = "train or test the small video VAE (latent codec)"
SHORTCUTS = (
    Shortcut("--downsample", "vae.downsampling", "spatial downsampling factor, 4 or 8"),
    Shortcut("--base-channels", "vae.base_channels", "width of the finest level"),
    Shortcut("--steps", "steps", "optimizer steps"),
    Shortcut("--batch-size", "batch_size", "frames per step"),
    Shortcut("--lr", "lr", "Adam learning rate"),
    Shortcut("--kl-weight", "kl_weight", "KL weight"),
    Shortcut("--grad-weight", "grad_weight", "weight of the Sobel-gradient L1 term"),
    Shortcut("--checkpoint-every", "checkpoint_every", "steps between checkpoints"),
    Shortcut("--seed", "seed", "seed"),
    Shortcut("--device", "device", "auto, cpu, cuda or cuda:N"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd vae train|test|encode``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = sub.add_parser("train", help="train the cmmd-vae on prepared frames",
                        description="Train the small KL-VAE (4 latent channels) on the frames of a `cmmd prepare` "
                                    "output; prints held-out PSNR/SSIM.")
    tr.add_argument("data", metavar="DATA", help="a `cmmd prepare` output directory")
    tr.add_argument("--out", required=True, help="run directory (checkpoints/ inside)")
    add_config_arguments(tr, SHORTCUTS, VaeTrainConfig(data="", out_dir=""))
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    te = sub.add_parser("test", help="PSNR/SSIM and throughput of a codec on held-out frames")
    te.add_argument("data", metavar="DATA", help="a `cmmd prepare` output directory")
    te.add_argument("--codec", required=True, help="pixel, cmmd-vae:<run> or sd-vae:<local path>")
    te.add_argument("--frames", type=int, default=256, help="held-out frames to test (default: 256)")
    te.add_argument("--device", default="cpu", help="device of the codec (default: cpu)")

    en = sub.add_parser("encode", help="precompute codec latents into prepared shards")
    en.add_argument("data", metavar="DATA", help="a `cmmd prepare` output directory (latents are written into it)")
    en.add_argument("--codec", required=True, help="cmmd-vae:<run>, sd-vae:<local path> or pixel")
    en.add_argument("--device", default="cpu", help="device of the codec (default: cpu)")
    en.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; prints results, returns 0."""
    if args.action == "train":
        return _train(args)
    if args.action == "test":
        return _test(args)
    return _encode(args)


def config_from_args(args: argparse.Namespace) -> VaeTrainConfig:
    """``--config`` (or the defaults), then DATA and ``--out``, the shortcut flags, ``KEY=VALUE``."""
    overrides = [f"data={args.data}", f"out_dir={args.out}", *shortcut_overrides(args, SHORTCUTS)]
    return load_config(VaeTrainConfig, args.config, overrides)


def _train(args: argparse.Namespace) -> int:
    from cmmd.train.vae import train_vae

    cfg = config_from_args(args)
    result = train_vae(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"cmmd vae train: step {result.step}: held-out PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.3f}, "
          f"scaling factor {result.codec.scaling_factor:.4f}")
    print(f"cmmd vae train: codec spec cmmd-vae:{args.out} (checkpoint {result.checkpoint})")
    return 0


def _test(args: argparse.Namespace) -> int:
    from cmmd.video.codecs import psnr, ssim
    from cmmd.video.loading import load_video_codec
    from cmmd.train.vae import FramePool

    if args.frames < 1:
        raise CmmdError(f"--frames must be >= 1, got {args.frames}")
    codec = load_video_codec(args.codec, args.device)
    frames = FramePool(args.data, codec.downsampling).held_out_frames(args.frames)
    start = time.perf_counter()
    latents = codec.encode(frames[None])
    mid = time.perf_counter()
    recon = codec.decode(latents)[0]
    end = time.perf_counter()
    print(f"cmmd vae test: {args.codec}: {len(frames)} held-out frames {frames.shape[2]}x{frames.shape[1]} -> "
          f"latents {tuple(latents.shape[2:])}")
    print(f"cmmd vae test: PSNR {psnr(frames, recon):.2f} dB, SSIM {ssim(frames, recon):.4f}")
    print(f"cmmd vae test: encode {len(frames) / (mid - start):.1f} frames/s, decode "
          f"{len(frames) / (end - mid):.1f} frames/s on {args.device}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from cmmd.video.loading import load_video_codec
    from cmmd.video.latents import encode_prepared_dataset

    codec = load_video_codec(args.codec, args.device)
    summary = encode_prepared_dataset(args.data, codec, progress=not args.no_progress)
    print(f"cmmd vae encode: {summary.line()} -> {args.data}")
    return 0
