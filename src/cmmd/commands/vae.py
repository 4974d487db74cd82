"""``cmmd vae {train,test,encode}``: the small video VAE and latent codecs on prepared shards.

* ``train DATA --out RUN``: fit the cmmd-vae (:mod:`cmmd.train.vae`) on the frames of a
  ``cmmd prepare`` output; held-out PSNR/SSIM are printed at each checkpoint and at the end.
  Resumable (``--resume``); Ctrl-C checkpoints before stopping.
* ``test DATA --codec SPEC``: PSNR/SSIM of any codec's round trip on held-out frames, plus
  encode/decode throughput.
* ``encode DATA --codec SPEC``: precompute ``items/*/latents.npy`` (:mod:`cmmd.video.latents`)
  so that training on latents never re-encodes (``cmmd prepare --codec`` calls the same function).

Codec specs: ``pixel``, ``cmmd-vae:<run or checkpoint>``, ``sd-vae:<diffusers folder or .safetensors>``.
"""

from __future__ import annotations

import argparse
import time

from cmmd.video.vae import VaeConfig
from cmmd.train.vae import VaeTrainConfig

HELP = "train or test the small video VAE (latent codec)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd vae train|test|encode``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    d, v = VaeTrainConfig(data="", out_dir=""), VaeConfig()
    tr = sub.add_parser("train", help="train the cmmd-vae on prepared frames",
                        description="Train the small KL-VAE (4 latent channels) on the frames of a `cmmd prepare` "
                                    "output; prints held-out PSNR/SSIM.")
    tr.add_argument("data", metavar="DATA", help="a `cmmd prepare` output directory")
    tr.add_argument("--out", required=True, help="run directory (checkpoints/ inside)")
    tr.add_argument("--downsample", type=int, choices=(4, 8), default=v.downsampling,
                    help=f"spatial downsampling factor (default: {v.downsampling})")
    tr.add_argument("--base-channels", type=int, default=v.base_channels,
                    help=f"width of the finest level (default: {v.base_channels})")
    tr.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default: {d.steps})")
    tr.add_argument("--batch-size", type=int, default=d.batch_size, help=f"frames per step (default: {d.batch_size})")
    tr.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    tr.add_argument("--kl-weight", type=float, default=d.kl_weight, help=f"KL weight (default: {d.kl_weight})")
    tr.add_argument("--grad-weight", type=float, default=d.grad_weight,
                    help=f"weight of the Sobel-gradient L1 term (default: {d.grad_weight})")
    tr.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                    help=f"steps between checkpoints (default: {d.checkpoint_every})")
    tr.add_argument("--seed", type=int, default=d.seed, help=f"seed (default: {d.seed})")
    tr.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: auto)")
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


def _train(args: argparse.Namespace) -> int:
    from cmmd.train.vae import train_vae

    cfg = VaeTrainConfig(
        data=args.data, out_dir=args.out, vae=VaeConfig(downsampling=args.downsample, base_channels=args.base_channels),
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, kl_weight=args.kl_weight,
        grad_weight=args.grad_weight, checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
    )
    result = train_vae(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"cmmd vae train: step {result.step}: held-out PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.3f}, "
          f"scaling factor {result.codec.scaling_factor:.4f}")
    print(f"cmmd vae train: codec spec cmmd-vae:{args.out} (checkpoint {result.checkpoint})")
    return 0


def _test(args: argparse.Namespace) -> int:
    from cmmd.video.codecs import psnr, ssim
    from cmmd.video.loading import load_video_codec
    from cmmd.train.vae import FramePool

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
