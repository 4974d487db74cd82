"""``cmmd vocoder {train,test,fetch}``: neural vocoders (mel -> waveform).

* ``train AUDIO_DIR [KEY=VALUE ...] --out RUN [--config YAML]``: MelGAN generator with HiFi-GAN's
  discriminators and loss weights on random 4 s segments (:mod:`cmmd.train.vocoder`);
  ``--init hifigan-universal`` (``configs/vocoder_hifigan_universal.yaml``) fine-tunes the released
  HiFi-GAN V1 universal generator on cmmd's 16 kHz mels instead. The
  :class:`~cmmd.train.vocoder.VocoderTrainConfig` comes from ``--config`` or the defaults, then the
  shortcut flags (``--steps 500`` is ``steps=500``), then dotted overrides (``melgan.channels=256``).
  Resumable (``--resume``); Ctrl-C checkpoints before stopping. The result loads as ``cmmd-gan:RUN``.
* ``test AUDIO_FILE --vocoder SPEC``: resynthesise a file through a vocoder in its own mel
  configuration; prints log-mel L1, multi-resolution STFT distance and real-time factor, and
  writes the resynthesis with ``--write``.
* ``fetch``: download the HiFi-GAN universal weights into the cache (``$CMMD_CACHE``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cmmd.commands.config_flags import Shortcut, add_config_arguments, shortcut_overrides
from cmmd.config import load_config
from cmmd.errors import CmmdError
from cmmd.train.vocoder import VocoderTrainConfig

HELP = "train or test a neural vocoder (mel -> waveform)"
SHORTCUTS = (
    Shortcut("--steps", "steps", "training steps"),
    Shortcut("--segment-seconds", "segment_seconds", "training segment length in seconds; the default is the paper's"),
    Shortcut("--batch-size", "batch_size", "segments per step"),
    Shortcut("--generator", "generator", "generator architecture, melgan or hifigan-v1 (hifigan-v1 with --init "
                                         "hifigan-universal)"),
    Shortcut("--mel", "mel", "mel front-end: cmmd (16 kHz, the diffusion model's) or hifigan (22.05 kHz)"),
    Shortcut("--channels", "melgan.channels", "MelGAN width after the input conv (MelGAN's own: 512)"),
    Shortcut("--disc-width", "disc_width", "discriminator widths relative to HiFi-GAN's"),
    Shortcut("--lr", "lr", "AdamW learning rate"),
    Shortcut("--checkpoint-every", "checkpoint_every", "steps between checkpoints"),
    Shortcut("--seed", "seed", "seed"),
    Shortcut("--device", "device", "auto, cpu, cuda or cuda:N"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd vocoder train|test|fetch``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = sub.add_parser("train", help="train a GAN vocoder on a folder of audio",
                        description="Train a MelGAN vocoder with HiFi-GAN's discriminators and losses on random "
                                    "segments of every audio/video file under AUDIO_DIR (or a `cmmd prepare` output). "
                                    "A file that cannot be used (unreadable, no audio, silent) is skipped and listed "
                                    "with its reason, here and in OUT/failures.jsonl; the exit status is non-zero "
                                    "only when no file is usable.")
    tr.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of wav/flac/mp3/mp4/... files, searched recursively")
    tr.add_argument("--out", required=True, help="run directory (checkpoints/, audio_cache/, log.csv)")
    add_config_arguments(tr, SHORTCUTS, VocoderTrainConfig(audio_dir="", out_dir=""))
    tr.add_argument("--init", choices=("none", "hifigan-universal"), default=None,
                    help="start from the HiFi-GAN V1 universal generator (= init=hifigan-universal "
                         "generator=hifigan-v1; --generator still applies)")
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


def config_from_args(args: argparse.Namespace) -> VocoderTrainConfig:
    """``--config`` (or the defaults), then AUDIO_DIR and ``--out``, ``--init`` (with the generator
    it needs), the other shortcut flags, ``KEY=VALUE``."""
    overrides = [f"audio_dir={args.audio_dir}", f"out_dir={args.out}"]
    if args.init is not None:
        overrides.append(f"init={args.init}")
    if args.init == "hifigan-universal":
        overrides.append("generator=hifigan-v1")
    return load_config(VocoderTrainConfig, args.config, overrides + shortcut_overrides(args, SHORTCUTS))


def check_train_arguments(args: argparse.Namespace, cfg: VocoderTrainConfig) -> None:
    """Refuse a train command line that cannot work, before anything is read or written."""
    cfg.validate()
    src, out = Path(args.audio_dir), Path(args.out)
    if not src.is_dir():
        raise CmmdError(f"AUDIO_DIR {src} does not exist or is not a folder")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise CmmdError(f"--out {out} is inside AUDIO_DIR {src}; choose a run folder outside your data")
    if out.exists() and not out.is_dir():
        raise CmmdError(f"--out {out} is a file, not a folder")


def _train(args: argparse.Namespace) -> int:
    from cmmd.train.vocoder import train_vocoder

    cfg = config_from_args(args)
    check_train_arguments(args, cfg)
    result = train_vocoder(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"cmmd vocoder train: step {result.step}: validation mel L1 {result.val_mel_l1:.3f} nats")
    print(f"cmmd vocoder train: vocoder spec cmmd-gan:{args.out} (checkpoint {result.checkpoint})")
    return 0


def _test(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from scipy.io import wavfile

    from cmmd.audio.quality import log_mel_l1, multi_resolution_stft_distance
    from cmmd.audio.vocoders import load_vocoder
    from cmmd.data.media import read_media

    if args.seconds is not None and not args.seconds > 0:
        raise CmmdError(f"--seconds must be > 0, got {args.seconds}")
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
