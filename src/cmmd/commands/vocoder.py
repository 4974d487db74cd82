"""``cmmd vocoder {train,test,fetch}``: neural vocoders (mel -> waveform).

* ``train AUDIO_DIR --out RUN``: MelGAN generator with HiFi-GAN's discriminators and loss weights
  on random 4 s segments (:mod:`cmmd.train.vocoder`); ``--init hifigan-universal``
  fine-tunes the released HiFi-GAN V1 universal generator on cmmd's 16 kHz mels instead.
  Resumable (``--resume``); Ctrl-C checkpoints before stopping. The result loads as
  ``cmmd-gan:RUN``.
* ``test AUDIO_FILE --vocoder SPEC``: resynthesise a file through a vocoder in its own mel
  configuration; prints log-mel L1, multi-resolution STFT distance and real-time factor, and
  writes the resynthesis with ``--write``.
* ``fetch``: download the HiFi-GAN universal weights into the cache (``$CMMD_CACHE``).
"""

from __future__ import annotations

import argparse
import time

from cmmd.audio.melgan import MelGanConfig
from cmmd.train.vocoder import VocoderTrainConfig

HELP = "train or test a neural vocoder (mel -> waveform)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd vocoder train|test|fetch``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = VocoderTrainConfig(audio_dir="", out_dir="")
    tr = sub.add_parser("train", help="train a GAN vocoder on a folder of audio",
                        description="Train a MelGAN vocoder with HiFi-GAN's discriminators and losses on random "
                                    "segments of every audio/video file under AUDIO_DIR (or a `cmmd prepare` output).")
    tr.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of wav/flac/mp3/mp4/... files, searched recursively")
    tr.add_argument("--out", required=True, help="run directory (checkpoints/, audio_cache/, log.csv)")
    tr.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default: {d.steps})")
    tr.add_argument("--segment-seconds", type=float, default=d.segment_seconds,
                    help=f"training segment length (default: {d.segment_seconds}, the paper's)")
    tr.add_argument("--batch-size", type=int, default=d.batch_size, help=f"segments per step (default: {d.batch_size})")
    tr.add_argument("--init", choices=("none", "hifigan-universal"), default="none",
                    help="start from the HiFi-GAN V1 universal generator (implies --generator hifigan-v1)")
    tr.add_argument("--generator", choices=("melgan", "hifigan-v1"), default=None,
                    help="generator architecture (default: melgan, or hifigan-v1 with --init hifigan-universal)")
    tr.add_argument("--mel", choices=("cmmd", "hifigan"), default=d.mel,
                    help="mel front-end: cmmd (16 kHz, the diffusion model's) or hifigan (22.05 kHz) (default: cmmd)")
    tr.add_argument("--channels", type=int, default=d.melgan.channels,
                    help=f"MelGAN width after the input conv (default: {d.melgan.channels}; MelGAN's own: 512)")
    tr.add_argument("--disc-width", type=float, default=d.disc_width,
                    help=f"discriminator widths relative to HiFi-GAN's (default: {d.disc_width})")
    tr.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default: {d.lr})")
    tr.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                    help=f"steps between checkpoints (default: {d.checkpoint_every})")
    tr.add_argument("--seed", type=int, default=d.seed, help=f"seed (default: {d.seed})")
    tr.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: auto)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    te = sub.add_parser("test", help="resynthesise an audio file through a vocoder and score it")
    te.add_argument("audio", metavar="AUDIO_FILE", help="any audio or video file")
    te.add_argument("--vocoder", required=True, help="griffinlim, cmmd-gan:<run> or hifigan-universal")
    te.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of the file")
    te.add_argument("--write", default=None, metavar="WAV", help="write the resynthesis to this .wav file")
    te.add_argument("--device", default="cpu", help="device of the vocoder (default: cpu)")

    fe = sub.add_parser("fetch", help="download the HiFi-GAN universal weights into the cache")
    fe.add_argument("--cache", default=None, help="cache directory (default: $CMMD_CACHE or ~/.cache/cmmd)")
    fe.add_argument("--force", action="store_true", help="download and convert again even if present")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; prints results, returns 0."""
    if args.action == "train":
        return _train(args)
    if args.action == "test":
        return _test(args)
    from cmmd.audio.hifigan import ensure_hifigan_universal

    print(f"cmmd vocoder fetch: {ensure_hifigan_universal(args.cache, force=args.force)}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cmmd.train.vocoder import train_vocoder

    generator = args.generator or ("hifigan-v1" if args.init == "hifigan-universal" else "melgan")
    cfg = VocoderTrainConfig(
        audio_dir=args.audio_dir, out_dir=args.out, generator=generator, init=args.init, mel=args.mel,
        melgan=MelGanConfig(channels=args.channels), disc_width=args.disc_width, steps=args.steps,
        segment_seconds=args.segment_seconds, batch_size=args.batch_size, lr=args.lr,
        checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
    )
    result = train_vocoder(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"cmmd vocoder train: step {result.step}: validation mel L1 {result.val_mel_l1:.3f} nats")
    print(f"cmmd vocoder train: vocoder spec cmmd-gan:{args.out} (checkpoint {result.checkpoint})")
    return 0


def _test(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from scipy.io import wavfile

    from cmmd.audio.vocoders import load_vocoder, log_mel_l1, multi_resolution_stft_distance
    from cmmd.data.media import read_media
    from cmmd.errors import CmmdError

    if args.write and not args.write.lower().endswith(".wav"):
        raise CmmdError(f"--write {args.write}: only .wav files are written")
    vocoder = load_vocoder(args.vocoder, args.device)
    media = read_media(args.audio, sample_rate=vocoder.sample_rate, duration=args.seconds, video=False)
    wave = torch.from_numpy(media.audio)
    start = time.perf_counter()
    out = vocoder(vocoder.mel.log_mel(wave))
    seconds = time.perf_counter() - start
    ref = wave[: out.shape[-1]]
    duration = len(ref) / vocoder.sample_rate
    print(f"cmmd vocoder test: {args.vocoder} on {args.audio} ({duration:.1f} s at {vocoder.sample_rate} Hz)")
    print(f"cmmd vocoder test: log-mel L1 {log_mel_l1(ref, out, vocoder.mel):.3f} nats, multi-resolution STFT "
          f"distance {multi_resolution_stft_distance(ref, out):.3f}, real-time factor {seconds / duration:.3f} "
          f"on {args.device}")
    if args.write:
        wavfile.write(args.write, vocoder.sample_rate, np.round(out.numpy().clip(-1, 1) * 32767).astype(np.int16))
        print(f"cmmd vocoder test: wrote {args.write}")
    return 0
