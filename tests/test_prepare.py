"""cmmd prepare: shard layout, bad inputs reported by kind, resume, settings lock, SRC untouched."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd.audio.mel import MelStats, log_mel
from cmmd.cli import main
from cmmd.data.media import write_media
from cmmd.data.prepare import PrepareSettings, item_key, prepare_dataset
from cmmd.errors import CmmdError

EXPECTED_KINDS = {
    "zero_byte.mp4": "empty",
    "corrupt.mp4": "unreadable",
    "truncated.mp4": "truncated",
    "no_audio.mp4": "no_audio",
    "no_video.mp4": "no_video",
    "unknown_codec.mkv": "no_decoder",
    "silent.mp4": "silent",
    "too_short.mp4": "too_short",
}


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha1 of content, plus modification times, for every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def src_dir(tmp_path: Path, bad_media: dict[str, Path], noise_clip) -> Path:
    """Two good clips (one with a synth sidecar, one in a subfolder) and one file per bad kind."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    frames, audio = noise_clip(3.6, size=48, seed=1)
    write_media(src / "good.mp4", frames, audio, 10, 16000)
    (src / "good.json").write_text(json.dumps({"scene": "impacts", "seed": 7}))
    frames, audio = noise_clip(4.0, size=40, seed=2)
    write_media(src / "sub" / "other.mkv", frames, audio, 10, 16000)
    (src / "notes.txt").write_text("not a video")
    for path in bad_media.values():
        shutil.copy(path, src / path.name)
    return src


def test_prepare_layout_failures_and_untouched_source(src_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = tree_digest(src_dir)
    summary = prepare_dataset(src_dir, out, PrepareSettings(), workers=1, progress=False)
    assert tree_digest(src_dir) == before

    assert (summary.ok, summary.skipped) == (2, 0)
    assert {f.source: f.kind for f in summary.failures} == EXPECTED_KINDS
    assert all(f.reason for f in summary.failures)
    lines = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {line["source"]: line["kind"] for line in lines} == EXPECTED_KINDS
    text = "\n".join(summary.lines())
    assert all(name in text for name in EXPECTED_KINDS) and "real time" in text
    assert summary.media_seconds == pytest.approx(7.6)

    assert json.loads((out / "prepare.json").read_text())["settings"] == {
        "size": 64, "fps": 10, "sample_rate": 16000, "clip_seconds": 1.8, "codec": "pixel"}
    assert sorted(p.name for p in (out / "items").iterdir()) == ["good.mp4", "sub__other.mkv"]
    item = out / "items" / "good.mp4"
    video = np.load(item / "video.npy", mmap_mode="r")
    audio = np.load(item / "audio.npy", mmap_mode="r")
    assert isinstance(video, np.memmap) and video.dtype == np.uint8 and video.shape == (36, 64, 64, 3)
    assert audio.dtype == np.int16 and audio.shape == (57600,)
    assert 0.05 < np.std(audio / 32767.0) < 0.2  # the 0.1-RMS noise survived AAC and int16
    meta = json.loads((item / "meta.json").read_text())
    assert meta["synth"] == {"scene": "impacts", "seed": 7}
    assert {k: meta[k] for k in ("source", "fps", "sample_rate", "size", "num_frames", "num_samples", "duration")} == {
        "source": "good.mp4", "fps": 10, "sample_rate": 16000, "size": 64, "num_frames": 36, "num_samples": 57600,
        "duration": 3.6}
    assert "synth" not in json.loads((out / "items" / "sub__other.mkv" / "meta.json").read_text())
    assert not list(out.rglob("*.tmp"))

    with open(out / "index.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["key"], r["source"], float(r["start"]), float(r["length"])) for r in rows] == [
        ("good.mp4", "good.mp4", 0.0, 1.8), ("good.mp4", "good.mp4", 1.8, 1.8),
        ("sub__other.mkv", "sub/other.mkv", 0.0, 1.8), ("sub__other.mkv", "sub/other.mkv", 1.8, 1.8)]
    assert summary.clips == 4

    stats = MelStats.load(out / "mel_stats.json")
    raw = json.loads((out / "mel_stats.json").read_text())
    assert len(raw["mean"]) == 80 and len(raw["std"]) == 80
    mels = [log_mel(torch.from_numpy(np.load(out / "items" / k / "audio.npy") / np.float32(32767.0)))
            for k in ("good.mp4", "sub__other.mkv")]
    expected = MelStats.compute(mels)
    assert torch.allclose(stats.mean, expected.mean, atol=1e-4) and torch.allclose(stats.std, expected.std, atol=1e-4)
    assert stats.count == (57600 + 64000) // 256
    assert bool(torch.all(stats.std > 0.1))  # noise: every bin varies


def test_resume_skips_done_items_and_redoes_unfinished(src_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(src_dir, out, workers=1, progress=False)
    done = out / "items" / "good.mp4" / "video.npy"
    stamp = done.stat().st_mtime_ns
    (out / "items" / "sub__other.mkv" / "meta.json").unlink()  # as if killed before the item finished
    summary = prepare_dataset(src_dir, out, workers=1, progress=False)
    assert (summary.ok, summary.skipped, len(summary.failures)) == (1, 1, len(EXPECTED_KINDS))
    assert done.stat().st_mtime_ns == stamp
    assert (out / "items" / "sub__other.mkv" / "meta.json").is_file()
    again = prepare_dataset(src_dir, out, workers=1, progress=False)
    assert (again.ok, again.skipped) == (0, 2) and again.clips == 4


def test_a_full_disk_while_writing_a_shard_is_a_clear_error_and_leaves_no_half_item(
        src_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import cmmd.data.prepare as prepare

    real_save, calls = np.save, []

    def save_then_fill_the_disk(fh, array) -> None:
        calls.append(1)
        if len(calls) == 2:  # the first item's audio.npy, half written
            fh.write(b"\x93NUMPY" + bytes(100))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(fh, array)

    monkeypatch.setattr(prepare.np, "save", save_then_fill_the_disk)
    out = tmp_path / "out"
    with pytest.raises(CmmdError, match=r"no space left on device while writing .*audio.npy"):
        prepare_dataset(src_dir, out, workers=1, progress=False)
    assert not list((out / "items").iterdir())  # the half item is gone, no temporary file left
    monkeypatch.undo()
    summary = prepare_dataset(src_dir, out, workers=1, progress=False)
    assert (summary.ok, summary.skipped) == (2, 0)
    clean = prepare_dataset(src_dir, tmp_path / "clean", workers=1, progress=False).out_dir
    contents = [{str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
                for root in (out / "items", clean / "items")]
    assert contents[0] == contents[1]


def test_refuses_other_settings_and_out_inside_src(src_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    good_only = tmp_path / "good_only"
    good_only.mkdir()
    shutil.copy(src_dir / "good.mp4", good_only / "good.mp4")
    prepare_dataset(good_only, out, PrepareSettings(size=32), workers=1, progress=False)
    with pytest.raises(CmmdError, match="size: 32 there, 64 now"):
        prepare_dataset(good_only, out, PrepareSettings(size=64), workers=1, progress=False)
    with pytest.raises(CmmdError, match="inside the source directory"):
        prepare_dataset(src_dir, src_dir / "shards", workers=1, progress=False)
    with pytest.raises(CmmdError, match="inside the source directory"):
        prepare_dataset(src_dir, src_dir, workers=1, progress=False)
    assert not (src_dir / "shards").exists()


def test_no_usable_item_is_an_error(bad_media: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "bad_only"
    src.mkdir()
    shutil.copy(bad_media["silent"], src)
    with pytest.raises(CmmdError, match="no usable items"):
        prepare_dataset(src, tmp_path / "out", workers=1, progress=False)
    assert json.loads((tmp_path / "out" / "failures.jsonl").read_text())["kind"] == "silent"


def test_cli_parallel_workers(src_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["prepare", str(src_dir), str(out), "--workers", "2", "--size", "32", "--clip-seconds", "2",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "prepared 2 item(s)" in printed and "8 failed" in printed and "index.csv: 3 clip(s)" in printed
    assert np.load(out / "items" / "sub__other.mkv" / "video.npy", mmap_mode="r").shape == (40, 32, 32, 3)
    assert main(["prepare", str(src_dir), str(out), "--size", "64", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_item_keys_are_stable_unique_and_safe() -> None:
    sources = ["a.mp4", "a.mkv", "dir/b c.mp4", "dir/b_c.mp4", "x__y.mp4", "x/y.mp4"]
    keys = [item_key(s) for s in sources]
    assert len(set(keys)) == len(keys)
    assert keys[:2] == ["a.mp4", "a.mkv"] and keys[3] == "dir__b_c.mp4" and keys[5] == "x__y.mp4"
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", k) for k in keys)


def _fill_the_disk_in_index(monkeypatch: pytest.MonkeyPatch) -> None:
    import cmmd.data.prepare as prepare

    real_writer = prepare.csv.writer

    class HalfWriter:
        def __init__(self, fh) -> None:
            self.inner = real_writer(fh)

        def writerow(self, row) -> None:
            self.inner.writerow(row)

        def writerows(self, rows) -> None:
            self.inner.writerows(list(rows)[:1])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare.csv, "writer", HalfWriter)


def _fill_the_disk_in_mel_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    def half_save(self, path) -> None:
        Path(path).write_text('{"mean": [0.1, ')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MelStats, "save", half_save)


@pytest.mark.parametrize("target", ["index.csv", "mel_stats.json"])
def test_a_full_disk_while_writing_the_index_or_mel_stats_leaves_nothing_a_rerun_would_trust(
        target: str, src_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = tmp_path / "few", tmp_path / "out"
    src.mkdir()
    shutil.copy(src_dir / "good.mp4", src / "good.mp4")
    prepare_dataset(src, out, workers=1, progress=False)  # a previous run's index and stats, of one item
    shutil.copy(src_dir / "sub" / "other.mkv", src / "other.mkv")
    {"index.csv": _fill_the_disk_in_index, "mel_stats.json": _fill_the_disk_in_mel_stats}[target](monkeypatch)
    with pytest.raises(CmmdError, match=rf"no space left on device while writing \S*{re.escape(target)}; free space"):
        prepare_dataset(src, out, workers=1, progress=False)
    assert not (out / target).exists() and not (out / "mel_stats.json").exists()  # neither stale nor half written
    assert not list(out.glob("*.tmp"))
    monkeypatch.undo()
    summary = prepare_dataset(src, out, workers=1, progress=False)
    assert (summary.ok, summary.skipped, summary.clips) == (0, 2, 4)
    clean = prepare_dataset(src, tmp_path / "clean", workers=1, progress=False).out_dir
    for name in ("index.csv", "mel_stats.json"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
