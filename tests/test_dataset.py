"""cmmd.data.dataset: windows align video, waveform and mel in time; determinism; shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd.data.dataset import ClipDataset
from cmmd.data.media import write_media
from cmmd.data.prepare import PrepareSettings, prepare_dataset, write_item
from cmmd.errors import CmmdError

SR, FPS, HOP = 16000, 10, 256


def flash_click_item(num_frames: int, event_frame: int, fps: int = FPS, size: int = 16
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Dark frames with a white flash at ``event_frame`` and faint noise with a click at the
    same instant (sample ``event_frame * SR / fps``)."""
    frames = np.full((num_frames, size, size, 3), 20, np.uint8)
    frames[event_frame] = 255
    audio = (1e-3 * np.random.default_rng(0).standard_normal(round(num_frames * SR / fps))).astype(np.float32)
    audio[round(event_frame * SR / fps)] = 0.9
    return frames, audio


def make_root(root: Path, lengths: dict[str, int], fps: int = FPS, event_frame: int = 23) -> Path:
    """A prepared-shard root with one flash/click item per ``key -> num_frames``."""
    for key, num_frames in lengths.items():
        frames, audio = flash_click_item(num_frames, min(event_frame, num_frames - 1), fps)
        write_item(root / "items" / key, frames, audio, {
            "source": f"{key}.mp4", "fps": fps, "sample_rate": SR, "size": 16, "num_frames": num_frames,
            "num_samples": len(audio), "duration": num_frames / fps})
    return root


def assert_aligned(clip: dict, event_frame: int, fps: int = FPS) -> None:
    """The flash, the click sample and the mel's energy peak sit at the same time in ``clip``."""
    k = event_frame - round(clip["start"] * fps)
    assert int(clip["video"].mean(dim=(1, 2, 3)).argmax()) == k
    click = k * SR / fps
    assert abs(int(clip["wave"].abs().argmax()) - click) <= 0.5
    # Mel frame l is centred on sample l * HOP, so the click peaks at frame click / HOP (+-1).
    energy = clip["mel"].exp().sum(dim=0)
    assert abs(int(energy.argmax()) - click / HOP) <= 1.0


def test_window_aligns_video_wave_and_mel(tmp_path: Path) -> None:
    data = ClipDataset(make_root(tmp_path, {"a": 40}), clip_frames=18, seed=0)
    assert len(data) == 2
    for frame in range(23 - 17, 40 - 18 + 1):  # every window that contains the event
        assert_aligned(data.load_clip("a", frame), 23)
    hits = 0
    for epoch in range(30):
        clip = data.get(epoch % 2, epoch)
        if 0 <= 23 - round(clip["start"] * FPS) < 18:
            assert_aligned(clip, 23)
            hits += 1
    assert hits > 5


def test_alignment_survives_encode_and_prepare(tmp_path: Path) -> None:
    # Through an AAC mp4 and `prepare`: the whole file round trip keeps sync.
    src = tmp_path / "src"
    src.mkdir()
    frames, audio = flash_click_item(40, 23, size=32)
    audio[::2] += 1e-2  # not silent under prepare's threshold after the lossy codec
    write_media(src / "flash.mp4", frames, audio, FPS, SR)
    prepare_dataset(src, tmp_path / "out", PrepareSettings(size=32), workers=1, progress=False)
    data = ClipDataset(tmp_path / "out", clip_frames=18)
    for frame in (6, 15, 22):
        clip = data.load_clip("flash.mp4", frame)
        k = 23 - frame
        assert int(clip["video"].mean(dim=(1, 2, 3)).argmax()) == k
        assert abs(int(clip["wave"].abs().argmax()) - k * 1600) <= SR // 1000  # 1 ms (AAC smears the click)


@pytest.mark.parametrize("clip_frames", [18, 17, 36, 1])
def test_shapes(tmp_path: Path, clip_frames: int) -> None:
    data = ClipDataset(make_root(tmp_path, {"a": 40, "b": 37}), clip_frames=clip_frames, seed=3)
    assert len(data) == 40 // clip_frames + 37 // clip_frames
    for index in range(min(len(data), 6)):
        clip = data[index]
        samples = clip_frames * SR // FPS
        assert clip["video"].shape == (clip_frames, 3, 16, 16) and clip["video"].dtype == torch.float32
        assert -1.0 <= float(clip["video"].min()) and float(clip["video"].max()) <= 1.0
        assert clip["wave"].shape == (samples,) and clip["wave"].dtype == torch.float32
        assert clip["mel"].shape == (80, samples // HOP) and clip["mel"].dtype == torch.float32
        assert isinstance(clip["key"], str) and isinstance(clip["start"], float)
    assert (data.fps, data.sample_rate, data.size) == (FPS, SR, 16)


def test_non_integer_samples_per_frame_keep_a_fixed_length(tmp_path: Path) -> None:
    # 16 kHz / 30 fps = 533.3 samples per frame: starts round to the nearest sample, length fixed.
    data = ClipDataset(make_root(tmp_path, {"a": 90}, fps=30, event_frame=40), clip_frames=17)
    assert data.clip_samples == round(17 * SR / 30)
    for frame in range(24, 41):
        clip = data.load_clip("a", frame)
        assert clip["wave"].shape == (data.clip_samples,)
        k = 40 - frame
        assert int(clip["video"].mean(dim=(1, 2, 3)).argmax()) == k
        assert abs(int(clip["wave"].abs().argmax()) - k * SR / 30) <= 1.0  # two roundings


def test_deterministic_under_seed_and_epoch(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"a": 200, "b": 90})
    first, again = ClipDataset(root, seed=5), ClipDataset(root, seed=5)
    other = ClipDataset(root, seed=6)
    windows = [first.window(i, e) for e in range(3) for i in range(len(first))]
    assert windows == [again.window(i, e) for e in range(3) for i in range(len(again))]
    assert windows != [other.window(i, e) for e in range(3) for i in range(len(other))]
    assert [first.window(i, 0) for i in range(len(first))] != [first.window(i, 1) for i in range(len(first))]
    assert torch.equal(first[3]["video"], again.get(3, 0)["video"])
    first.set_epoch(2)
    assert first[3]["start"] == again.get(3, 2)["start"]
    assert first[3 + len(first)]["start"] == again.get(3, 3)["start"]  # indices past len carry epochs
    # 200 frames hold 11 clips and 90 frames 5: the long item is drawn in proportion.
    assert sum(first.window(i, 0)[0] == "a" for i in range(len(first))) == 11


def test_short_items_excluded_and_keys_select(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"long": 40, "short": 10})
    data = ClipDataset(root, clip_frames=18)
    assert data.keys == ["long"] and len(data) == 2
    assert ClipDataset(root, clip_frames=5, keys=["short"]).keys == ["short"]
    with pytest.raises(CmmdError, match="no prepared item"):
        ClipDataset(root, keys=["nope"])
    with pytest.raises(CmmdError, match="as long as one clip"):
        ClipDataset(root, clip_frames=18, keys=["short"])
    with pytest.raises(CmmdError, match="cmmd prepare"):
        ClipDataset(tmp_path / "missing")
