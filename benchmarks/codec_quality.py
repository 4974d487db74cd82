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
architecture with random weights: its throughput is real, its quality is not reported.

Two stages; the trainings between them are plain ``cmmd`` commands (one core each)::

    apt-get install fluidsynth timgm6mb-soundfont openttd-openmsx
    OMP_NUM_THREADS=1 python benchmarks/codec_quality.py data --work W
    OMP_NUM_THREADS=1 cmmd vae train W/prepared --out W/vae --steps 1000
    OMP_NUM_THREADS=1 cmmd vocoder train W/vocoder_train --out W/melgan --steps 300
    OMP_NUM_THREADS=1 cmmd vocoder train W/vocoder_train --out W/hifigan-ft --init hifigan-universal \\
        --steps 100 --segment-seconds 1 --batch-size 1
    OMP_NUM_THREADS=1 python benchmarks/codec_quality.py eval --work W \\
        --vocoder cmmd-gan:W/melgan --vocoder cmmd-gan:W/hifigan-ft --vae cmmd-vae:W/vae
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import torch

from cmmd.audio.vocoders import Vocoder, load_vocoder, log_mel_l1, multi_resolution_stft_distance
from cmmd.data.media import read_media
from cmmd.data.prepare import PrepareSettings, prepare_dataset
from cmmd.data.synth import clip_seed, render_clip, write_benchmark
from cmmd.video.codecs import PixelCodec, VideoCodec, load_video_codec, psnr, ssim

MIDI_DIR = Path("/usr/share/games/openttd/baseset/openmsx")
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SAMPLE_RATE = 16_000
TEST_SEED = 1
"""Benchmark seed of the held-out synthetic clips (training clips: ``cmmd synth``'s default 0)."""
MUSIC_EXCERPT = 8.0


def render_midi(midi: Path, out: Path) -> None:
    """``fluidsynth`` render of ``midi`` to a 16 kHz wav (gain 0.3 keeps dense passages unclipped)."""
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.3", "-r", str(SAMPLE_RATE), "-F", str(out), str(SOUNDFONT), str(midi)]
    subprocess.run(cmd, check=True, capture_output=True)


def music_split() -> tuple[list[Path], list[Path]]:
    """(training, held-out) MIDI files: every fifth file (sorted) is held out."""
    files = sorted(MIDI_DIR.glob("*.mid"))
    return [f for i, f in enumerate(files) if i % 5], [f for i, f in enumerate(files) if i % 5 == 0]


def stage_data(work: Path) -> None:
    """Render training/held-out music, write synthetic training clips and prepare VAE frames."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file() or not MIDI_DIR.is_dir():
        sys.exit("needs `apt-get install fluidsynth timgm6mb-soundfont openttd-openmsx`")
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
    return {"log_mel_l1": float(np.mean(l1)), "mr_stft": float(np.mean(stft)), "rtf": spent / duration}


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


def stage_eval(work: Path, vocoders: list[str], vae: str | None, sd_vae: str | None, size: int) -> None:
    """Score every vocoder and video codec; print the tables and write ``W/results.json``."""
    synth_audio, frames = synthetic_test_set(size)
    sets = {"synthetic": synth_audio}
    music = music_test_set(work)
    if music:
        sets["music"] = music
    print(f"threads: {torch.get_num_threads()}; held-out audio: " + ", ".join(
        f"{name} {sum(len(w) for w in waves) / SAMPLE_RATE:.0f} s in {len(waves)} clips"
        for name, waves in sets.items()))
    results: dict[str, dict] = {"vocoders": {}, "video": {}}
    print(f"\n{'vocoder':<34}{'set':<11}{'log-mel L1':>11}{'MR-STFT':>9}{'RTF (CPU)':>11}")
    for spec in ["griffinlim", "hifigan-universal", *vocoders]:
        vocoder = load_vocoder(spec)
        for name, waves in sets.items():
            scores = vocoder_scores(vocoder, waves)
            results["vocoders"].setdefault(spec, {})[name] = scores
            print(f"{spec:<34}{name:<11}{scores['log_mel_l1']:>11.3f}{scores['mr_stft']:>9.3f}{scores['rtf']:>11.3f}")
    codecs: list[tuple[VideoCodec, bool]] = [(PixelCodec(), True)]
    if vae:
        codecs.append((load_video_codec(vae), True))
    codecs.append((load_video_codec(f"sd-vae:{sd_vae}"), True) if sd_vae else (random_sd_vae(), False))
    print(f"\n{len(frames)} held-out synthetic frames {size}x{size}")
    print(f"{'video codec':<34}{'latent':>12}{'PSNR dB':>9}{'SSIM':>7}{'enc f/s':>9}{'dec f/s':>9}")
    for codec, quality in codecs:
        scores = codec_scores(codec, frames, quality)
        results["video"][codec.spec or codec.name] = scores
        latent = "x".join(str(v) for v in codec.latent_shape(size, size))
        q = f"{scores['psnr']:>9.2f}{scores['ssim']:>7.3f}" if quality else f"{'-':>9}{'-':>7}"
        print(f"{codec.spec or codec.name:<34}{latent:>12}{q}{scores['encode_fps']:>9.1f}{scores['decode_fps']:>9.1f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("data", "eval"))
    parser.add_argument("--work", type=Path, required=True, help="working directory")
    parser.add_argument("--vocoder", action="append", default=[], help="extra vocoder spec (repeatable)")
    parser.add_argument("--vae", default=None, help="cmmd-vae:<run> to score")
    parser.add_argument("--sd-vae", default=None, help="local sd-vae-ft-mse folder or .safetensors to score")
    parser.add_argument("--size", type=int, default=64, help="frame size of the held-out frames (default: 64)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "data":
        stage_data(args.work)
    else:
        stage_eval(args.work, args.vocoder, args.vae, args.sd_vae, args.size)


if __name__ == "__main__":
    main()
