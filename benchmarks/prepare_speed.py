"""How fast `cmmd prepare` turns video into shards, as a multiple of real time per CPU core.

Writes two synthetic source sets with ``write_media`` (H.264 + AAC at 25 fps / 48 kHz, moving
shapes and noisy tones, so the codecs do real work): small 64x64 clips and a 1280x720 clip. Each
set is then prepared with one worker while the process is pinned to one core (``--cores``), and
the script prints seconds of media per second for the whole pipeline (decode + resample +
crop/resize + shard writing + mel statistics), per wall-clock second and per CPU second (the
per-core figure, which other load on a shared machine does not distort), and for decoding alone.
One-off imports (torch, librosa) happen before timing.

    python benchmarks/prepare_speed.py                 # target: >= 50x per core on 64x64
    python benchmarks/prepare_speed.py --cores 2 --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cmmd.audio.mel import log_mel
from cmmd.data.media import read_media, write_media
from cmmd.data.prepare import PrepareSettings, prepare_dataset

SOURCE_FPS = 25
SOURCE_RATE = 48000


def source_clip(seconds: float, height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving bars and a bouncing square over a gradient, ``uint8 (T, H, W, 3)``, and tone
    bursts in noise, ``float32 (S,)`` at ``SOURCE_RATE``."""
    rng = np.random.default_rng(seed)
    num = round(seconds * SOURCE_FPS)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    frames = np.empty((num, height, width, 3), np.uint8)
    side = max(height // 6, 2)
    for t in range(num):
        phase = t / SOURCE_FPS
        frames[t, ..., 0] = (127 + 120 * np.sin(2 * np.pi * (x * 3 + phase))).astype(np.uint8)
        frames[t, ..., 1] = (127 + 120 * np.sin(2 * np.pi * (y * 2 - 0.7 * phase))).astype(np.uint8)
        frames[t, ..., 2] = (255 * (x * y)).astype(np.uint8)
        top = int((height - side) * abs(np.sin(phase * 1.3 + seed)))
        left = int((width - side) * abs(np.sin(phase * 0.7 + seed)))
        frames[t, top:top + side, left:left + side] = 255
    n = round(seconds * SOURCE_RATE)
    t = np.arange(n) / SOURCE_RATE
    gate = (np.sin(2 * np.pi * 2 * t + seed) > 0.3).astype(np.float32)
    audio = 0.3 * gate * np.sin(2 * np.pi * (220 + 110 * seed % 4) * t) + 0.02 * rng.standard_normal(n)
    return frames, audio.astype(np.float32)


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(src: Path, out: Path, settings: PrepareSettings, workers: int) -> dict[str, float]:
    """Media seconds of one folder and realtime factors of ``prepare`` (per wall-clock second
    and per CPU second) and of decoding alone (per CPU second)."""
    cpu = cpu_seconds()
    seconds = sum(read_media(p, settings.fps, settings.sample_rate, settings.size).duration
                  for p in sorted(src.glob("*.mp4")))
    decode_cpu = cpu_seconds() - cpu
    cpu = cpu_seconds()
    summary = prepare_dataset(src, out, settings, workers=workers, progress=False)
    prepare_cpu = cpu_seconds() - cpu
    if summary.failures:
        raise RuntimeError(f"benchmark sources failed to prepare: {summary.failures}")
    wall = summary.wall_seconds + summary.stats_seconds
    return {"media": summary.media_seconds, "wall": summary.media_seconds / wall,
            "cpu": summary.media_seconds / prepare_cpu, "decode_cpu": seconds / decode_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-seconds", type=float, default=240.0, help="total media of the 64x64 set "
                        "(8 clips; default: 240)")
    parser.add_argument("--hd-seconds", type=float, default=8.0, help="length of the 1280x720 clip (default: 8)")
    parser.add_argument("--cores", type=int, default=1, help="CPU cores to pin this process to (default: 1)")
    parser.add_argument("--workers", type=int, default=1, help="prepare workers (default: 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="where sources and shards go (default: a "
                        "temporary folder, removed afterwards)")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    log_mel(torch.zeros(16000))  # one-off imports (librosa, scipy.signal) happen here, untimed
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cmmd-prepare-bench-"))
    try:
        sets = {"64x64": (8, args.small_seconds / 8, 64, 64), "1280x720": (1, args.hd_seconds, 720, 1280)}
        rows = []
        for name, (count, seconds, height, width) in sets.items():
            src = work / f"src_{name}"
            src.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                path = src / f"clip{i}.mp4"
                if not path.exists():
                    write_media(path, *source_clip(seconds, height, width, seed=i), SOURCE_FPS, SOURCE_RATE)
            shutil.rmtree(work / f"out_{name}", ignore_errors=True)
            rows.append((name, measure(src, work / f"out_{name}", PrepareSettings(), args.workers)))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"cmmd prepare speed: H.264 + AAC sources at {SOURCE_FPS} fps / {SOURCE_RATE} Hz -> 64x64, 10 fps, "
          f"16 kHz; {len(cores)} core(s), {args.workers} worker(s). Factors are media seconds per second.")
    print(f"{'source':>10} {'media s':>8} {'prepare/wall s':>15} {'prepare/CPU s':>14} {'decode/CPU s':>13}")
    for name, r in rows:
        print(f"{name:>10} {r['media']:8.1f} {r['wall']:15.1f} {r['cpu']:14.1f} {r['decode_cpu']:13.1f}")
    print("prepare/CPU s is the realtime factor per core, independent of other load on the machine; "
          "prepare/wall s equals it on an idle machine with one worker.")

if __name__ == "__main__":
    main()
