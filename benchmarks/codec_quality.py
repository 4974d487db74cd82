"""Quality and speed of cmmd's codecs: vocoders (mel -> waveform) and video codecs (frames <-> latents).

Vocoders: each resynthesises held-out audio from its mel; the figures compare the resynthesis
with the original at 16 kHz: log-mel L1 (nats, cmmd's mel) and multi-resolution STFT distance
(spectral convergence + log-magnitude L1 at n_fft 512/1024/2048, Yamamoto et al. 2020), plus
the real-time factor (synthesis seconds per audio second, CPU). Two held-out sets: synthetic
clips (impacts + dance, from a benchmark seed never used for training) and real music (General MIDI files from
Debian's ``openttd-openmsx`` rendered with ``fluidsynth`` and the ``timgm6mb-soundfont``; every
fifth file held out, 8 s from each). ``hifigan-universal`` runs in its own mel configuration
(22.05 kHz, n_fft 1024): the 16 kHz audio is resampled up for analysis and the output back down.

Video codecs: PSNR/SSIM of the round trip on held-out synthetic frames, and encode/decode
throughput (frames/s, CPU). ``sd-vae`` without ``--sd-vae`` weights is the sd-vae-ft-mse
architecture with random weights: its throughput (on the first 32 frames) is real, its quality is
not reported. ``hifigan-universal`` is skipped, with the reason, when its weights can be neither
found in the cache nor fetched.

Two stages; the trainings between them are plain ``cmmd`` commands (one core each)::

    apt-get install fluidsynth timgm6mb-soundfont openttd-openmsx
    OMP_NUM_THREADS=1 python benchmarks/codec_quality.py data --work W
    OMP_NUM_THREADS=1 cmmd vae train W/prepared --out W/vae --steps 1000
    OMP_NUM_THREADS=1 cmmd vocoder train W/vocoder_train --out W/melgan --steps 300
    OMP_NUM_THREADS=1 cmmd vocoder train W/vocoder_train --out W/hifigan-ft --init hifigan-universal \\
        --steps 100 --segment-seconds 1 --batch-size 1
    OMP_NUM_THREADS=1 python benchmarks/codec_quality.py eval --work W --markdown results.md \\
        --vocoder cmmd-gan:W/melgan --vocoder cmmd-gan:W/hifigan-ft --vae cmmd-vae:W/vae

``--markdown`` also writes the tables, each trained codec's training record (steps, segment or
batch size, from its checkpoint) and the machine (CPU, threads, load average) as Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from cmmd.audio.quality import log_mel_l1, multi_resolution_stft_distance
from cmmd.audio.vocoders import Vocoder, load_vocoder, read_generator_file, resolve_generator_file
from cmmd.data.media import read_media
from cmmd.data.prepare import PrepareSettings, prepare_dataset
from cmmd.data.synth import clip_seed, render_clip, write_benchmark
from cmmd.errors import CmmdError
from cmmd.checkpoint import read_info
from cmmd.video.codecs import PixelCodec, VideoCodec, psnr, ssim
from cmmd.video.loading import load_video_codec, parse_spec

MIDI_DIR = Path("/usr/share/games/openttd/baseset/openmsx")
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SAMPLE_RATE = 16_000
TEST_SEED = 1
"""Benchmark seed of the held-out synthetic clips (training clips: ``cmmd synth``'s default 0)."""
MUSIC_EXCERPT = 8.0
THROUGHPUT_ONLY_FRAMES = 32
"""Frames timed for a codec whose quality is not reported (random weights)."""


def render_midi(midi: Path, out: Path) -> None:
    """``fluidsynth`` render of ``midi`` to a 16 kHz wav (gain 0.3 keeps dense passages unclipped)."""
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.3", "-r", str(SAMPLE_RATE), "-F", str(out), str(SOUNDFONT), str(midi)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.is_file():
        sys.exit(f"codec_quality: fluidsynth failed on {midi} (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def music_split() -> tuple[list[Path], list[Path]]:
    """(training, held-out) MIDI files: every fifth file (sorted) is held out."""
    files = sorted(MIDI_DIR.glob("*.mid"))
    return [f for i, f in enumerate(files) if i % 5], [f for i, f in enumerate(files) if i % 5 == 0]


def check_music_tools() -> None:
    """Exit with the missing pieces named unless fluidsynth, the soundfont and the MIDI files are installed."""
    missing = [what for what, ok in (
        ("the fluidsynth program (package fluidsynth)", shutil.which("fluidsynth") is not None),
        (f"{SOUNDFONT} (package timgm6mb-soundfont)", SOUNDFONT.is_file()),
        (f"MIDI files in {MIDI_DIR} (package openttd-openmsx)", any(MIDI_DIR.glob("*.mid"))),
    ) if not ok]
    if missing:
        sys.exit("codec_quality: missing " + "; ".join(missing) +
                 ". Install with `apt-get install fluidsynth timgm6mb-soundfont openttd-openmsx`.")


def stage_data(work: Path) -> None:
    """Render training/held-out music, write synthetic training clips and prepare VAE frames."""
    check_music_tools()
    train_midi, test_midi = music_split()
    for folder, files in ((work / "vocoder_train" / "music", train_midi), (work / "music_test", test_midi)):
        folder.mkdir(parents=True, exist_ok=True)
        for midi in files:
            target = folder / f"{midi.stem}.wav"
            if not target.is_file():
                render_midi(midi, target)
    for scene in ("impacts", "dance"):
        write_benchmark(work / "synth_train" / scene, scene, 50, workers=1)
    for scene in ("impacts", "dance"):
        shutil.copytree(work / "synth_train" / scene, work / "vocoder_train" / f"synth_{scene}", dirs_exist_ok=True)
    summary = prepare_dataset(work / "synth_train", work / "prepared", PrepareSettings(size=64), workers=1,
                              progress=False)
    print(f"music: {len(train_midi)} training / {len(test_midi)} held-out MIDI files rendered; "
          f"synthetic: {summary.ok + summary.skipped} training clips prepared in {work / 'prepared'}")


def synthetic_test_set(size: int, n: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Held-out synthetic clips: ``n`` impacts + ``n`` dance (3.6 s): audio list and frames (N, size, size, 3)."""
    clips = [render_clip(scene, clip_seed(TEST_SEED, i), size=size) for scene in ("impacts", "dance") for i in range(n)]
    return [c.audio for c in clips], np.concatenate([c.frames for c in clips])


def music_test_set(work: Path) -> list[np.ndarray]:
    """One 8 s excerpt from 30 % into each held-out rendered song (16 kHz mono)."""
    out = []
    for wav in sorted((work / "music_test").glob("*.wav")):
        media = read_media(wav, sample_rate=SAMPLE_RATE, video=False)
        start = int(0.3 * max(0, len(media.audio) - MUSIC_EXCERPT * SAMPLE_RATE))
        out.append(media.audio[start:start + int(MUSIC_EXCERPT * SAMPLE_RATE)])
    return out


def resynthesise(vocoder: Vocoder, wave: np.ndarray) -> tuple[np.ndarray, float]:
    """16 kHz ``wave (S,)`` -> (16 kHz resynthesis, seconds spent in the vocoder)."""
    x = wave if vocoder.sample_rate == SAMPLE_RATE else librosa.resample(wave, orig_sr=SAMPLE_RATE,
                                                                         target_sr=vocoder.sample_rate)
    mel = vocoder.mel.log_mel(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    start = time.perf_counter()
    out = vocoder(mel).numpy()
    seconds = time.perf_counter() - start
    if vocoder.sample_rate != SAMPLE_RATE:
        out = librosa.resample(out, orig_sr=vocoder.sample_rate, target_sr=SAMPLE_RATE)
    return out, seconds


def vocoder_scores(vocoder: Vocoder, waves: list[np.ndarray]) -> dict[str, float]:
    """Mean log-mel L1 and MR-STFT distance over ``waves``, and the real-time factor."""
    l1, stft, spent, duration = [], [], 0.0, 0.0
    for wave in waves:
        out, seconds = resynthesise(vocoder, wave)
        n = min(len(out), len(wave))
        ref, hyp = torch.from_numpy(wave[:n].copy()), torch.from_numpy(out[:n].astype(np.float32))
        l1.append(log_mel_l1(ref, hyp))
        stft.append(multi_resolution_stft_distance(ref, hyp))
        spent += seconds
        duration += len(wave) / SAMPLE_RATE
    return {"log_mel_l1": float(np.mean(l1)), "mr_stft": float(np.mean(stft)), "rtf": spent / duration,
            "audio_seconds": duration}


def codec_scores(codec: VideoCodec, frames: np.ndarray, quality: bool) -> dict[str, float]:
    """PSNR/SSIM of the round trip of ``frames (N, H, W, 3)`` and encode/decode frames per second."""
    start = time.perf_counter()
    latents = codec.encode(frames[None])
    mid = time.perf_counter()
    recon = codec.decode(latents)[0]
    end = time.perf_counter()
    out = {"encode_fps": len(frames) / (mid - start), "decode_fps": len(frames) / (end - mid)}
    if quality:
        out.update(psnr=psnr(frames, recon), ssim=ssim(frames, recon))
    return out


def random_sd_vae() -> VideoCodec:
    """The sd-vae-ft-mse architecture with random weights (for throughput only)."""
    from diffusers import AutoencoderKL

    from cmmd.video.sdvae import SD_VAE_FT_MSE_CONFIG, SdVaeCodec

    torch.manual_seed(0)
    return SdVaeCodec(AutoencoderKL(**SD_VAE_FT_MSE_CONFIG), spec="sd-vae (random weights)")


def vocoder_record(spec: str) -> str:
    """How a ``cmmd-gan`` vocoder was trained, from its checkpoint; '' for the others."""
    name, path = parse_spec(spec)
    if name != "cmmd-gan":
        return ""
    _, info = read_generator_file(resolve_generator_file(path))
    cfg = info["config"]
    arch = info["extra"]["generator"]["arch"]
    width = f", {cfg['melgan']['channels']} channels" if arch == "melgan" else ""
    init = f", from {cfg['init']}" if cfg.get("init", "none") != "none" else ""
    return (f"{arch}{width}{init}: step {info['step']}, batch {cfg['batch_size']} x {cfg['segment_seconds']:g} s, "
            f"lr {cfg['lr']:g}, code {info['version']}")


def vae_record(spec: str) -> str:
    """How a ``cmmd-vae`` codec was trained, from its checkpoint."""
    info = read_info(Path(parse_spec(spec)[1]))
    vae = info.extra["vae"]
    return (f"{vae['downsampling']}x, base {vae['base_channels']} channels: step {info.step}, batch "
            f"{info.config['batch_size']}, lr {info.config['lr']:g}, code {info.version}")


def machine() -> str:
    """CPU model, cores, torch threads and the 1-minute load average."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return (f"{model}, {os.cpu_count()} cores (shared with other jobs), torch threads {torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}")


def stage_eval(work: Path, vocoders: list[str], vaes: list[str], sd_vae: str | None, size: int,
               markdown: Path | None) -> None:
    """Score every vocoder and video codec; print the tables, write ``W/results.json`` (and ``markdown``)."""
    started = datetime.datetime.now(datetime.UTC)
    host_before = machine()
    synth_audio, frames = synthetic_test_set(size)
    sets = {"synthetic": synth_audio}
    music = music_test_set(work)
    if music:
        sets["music"] = music
    else:
        print(f"music: no rendered held-out music in {work / 'music_test'} (run the data stage); synthetic only")
    held_out = ", ".join(f"{name} {sum(len(w) for w in waves) / SAMPLE_RATE:.0f} s in {len(waves)} clips"
                         for name, waves in sets.items())
    print(f"{host_before}; held-out audio: {held_out}")
    results: dict[str, Any] = {"vocoders": {}, "video": {}, "skipped": [], "records": {}}
    print(f"\n{'vocoder':<34}{'set':<11}{'log-mel L1':>11}{'MR-STFT':>9}{'RTF (CPU)':>11}")
    for spec in ["griffinlim", "hifigan-universal", *vocoders]:
        try:
            vocoder = load_vocoder(spec)
        except CmmdError as exc:
            results["skipped"].append(f"vocoder {spec}: {exc}")
            print(f"{spec:<34}skipped: {exc}")
            continue
        results["records"][spec] = vocoder_record(spec)
        for name, waves in sets.items():
            scores = vocoder_scores(vocoder, waves)
            results["vocoders"].setdefault(spec, {})[name] = scores
            print(f"{spec:<34}{name:<11}{scores['log_mel_l1']:>11.3f}{scores['mr_stft']:>9.3f}{scores['rtf']:>11.3f}")
    codecs: list[tuple[VideoCodec, bool]] = [(PixelCodec(), True)]
    for spec in vaes:
        codecs.append((load_video_codec(spec), True))
        results["records"][spec] = vae_record(spec)
    if sd_vae:
        codecs.append((load_video_codec(f"sd-vae:{sd_vae}"), True))
    else:
        reason = ("sd-vae quality: skipped, no local sd-vae-ft-mse weights (pass --sd-vae PATH); "
                  f"throughput of the architecture with random weights on {THROUGHPUT_ONLY_FRAMES} frames")
        results["skipped"].append(reason)
        print(reason)
        codecs.append((random_sd_vae(), False))
    print(f"\n{len(frames)} held-out synthetic frames {size}x{size}")
    print(f"{'video codec':<34}{'latent':>12}{'PSNR dB':>9}{'SSIM':>7}{'enc f/s':>9}{'dec f/s':>9}")
    for codec, quality in codecs:
        scores = codec_scores(codec, frames if quality else frames[:THROUGHPUT_ONLY_FRAMES], quality)
        scores["latent"] = "x".join(str(v) for v in codec.latent_shape(size, size))
        results["video"][codec.spec or codec.name] = scores
        q = f"{scores['psnr']:>9.2f}{scores['ssim']:>7.3f}" if quality else f"{'-':>9}{'-':>7}"
        print(f"{codec.spec or codec.name:<34}{scores['latent']:>12}{q}{scores['encode_fps']:>9.1f}"
              f"{scores['decode_fps']:>9.1f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    if markdown is not None:
        minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
        header = {"command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "(unset)") + " python "
                  + shlex.join(sys.argv), "date": f"{started:%Y-%m-%d %H:%M} UTC ({minutes:.1f} min)",
                  "machine": f"{host_before}; at the end: load average {os.getloadavg()[0]:.1f}",
                  "held-out audio": held_out, "held-out frames": f"{len(frames)} synthetic, {size}x{size}"}
        markdown.write_text(markdown_report(header, results))
        print(f"\nwrote {markdown}")


def markdown_report(header: dict[str, str], results: dict[str, Any]) -> str:
    """The header lines, the vocoder and video tables, training records and skips as Markdown."""
    lines = [f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}" for key, value in header.items()]
    sets = sorted({name for scores in results["vocoders"].values() for name in scores}, reverse=True)
    lines += ["", "| vocoder | " + " | ".join(f"{name} log-mel L1 | {name} MR-STFT" for name in sets)
              + " | RTF (CPU) |", "|---|" + "---:|" * (2 * len(sets) + 1)]
    for spec, by_set in results["vocoders"].items():
        cells = [f"{by_set[name]['log_mel_l1']:.3f} | {by_set[name]['mr_stft']:.3f}" for name in sets]
        rtf = (sum(s["rtf"] * s["audio_seconds"] for s in by_set.values())
               / sum(s["audio_seconds"] for s in by_set.values()))
        lines.append(f"| `{spec}` | " + " | ".join(cells) + f" | {rtf:.3f} |")
    lines += ["", "| video codec | latent (C x h x w) | PSNR dB | SSIM | encode frames/s | decode frames/s |",
              "|---|---|---:|---:|---:|---:|"]
    for spec, scores in results["video"].items():
        quality = f"{scores['psnr']:.2f} | {scores['ssim']:.3f}" if "psnr" in scores else "- | -"
        lines.append(f"| `{spec}` | {scores['latent']} | {quality} | {scores['encode_fps']:.1f} | "
                     f"{scores['decode_fps']:.1f} |")
    records = [f"- `{spec}`: {record}" for spec, record in results["records"].items() if record]
    if records:
        lines += ["", "Trained codecs (from their checkpoints):", *records]
    if results["skipped"]:
        lines += ["", "Not measured:", *(f"- {reason}" for reason in results["skipped"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("data", "eval"))
    parser.add_argument("--work", type=Path, required=True, help="working directory")
    parser.add_argument("--vocoder", action="append", default=[], help="extra vocoder spec (repeatable)")
    parser.add_argument("--vae", action="append", default=[], help="cmmd-vae:<run> to score (repeatable)")
    parser.add_argument("--sd-vae", default=None, help="local sd-vae-ft-mse folder or .safetensors to score")
    parser.add_argument("--size", type=int, default=64, help="frame size of the held-out frames (default: 64)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the results as Markdown here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "data":
        stage_data(args.work)
    else:
        stage_eval(args.work, args.vocoder, args.vae, args.sd_vae, args.size, args.markdown)


if __name__ == "__main__":
    main()
