"""The real-media benchmark: real videos with their own soundtracks, taken from Debian and PyPI packages.

Nothing here was made by us: game cutscenes, an open animated film, recorded demos and test films
that Debian 12 (bookworm) and PyPI packages ship. The manifest ``cmmd/assets/real_media.json``
(:data:`cmmd.assets.REAL_MEDIA`, tabled in docs/REAL_MEDIA.md) fixes, per file: its name, its
split, the package (registry, name, exact version) and the path inside it, the licence and
copyright holder from the package's copyright file, its duration and its sha256.

The split is by source file and fixed in the manifest: a file's clips are all in one split, and
files cut from one ``work`` (a film and its trailer) share a split, so no test clip's content is
trained on. ``scripts/get_real_media.sh DEST`` downloads the packages by name and version
(``apt-get download``, ``pip download``; :func:`package_lines` lists them), then
:func:`lay_out` reads each file out of its package, checks its sha256 and writes it to
``DEST/<split>/<name><suffix>``, with a copy of the manifest (licences included) beside them.

A manifest path may cross nested archives with ``!``: ``a/b.zip!c/d.mp4`` is member
``c/d.mp4`` of the zip stored at ``a/b.zip`` in the package.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cmmd.assets import REAL_MEDIA
from cmmd.errors import CmmdError

SPLITS = ("train", "validation", "test")
REGISTRIES = ("debian", "pypi-wheel", "pypi-sdist")
MEMBER_SEPARATOR = "!"
MANIFEST_COPY = "real_media.json"
"""Name of the manifest copy written beside the laid-out files (provenance and licences)."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class MediaFile:
    """One manifest entry: which file of which package, its split, licence, length and checksum."""

    name: str
    split: str
    work: str
    registry: str
    package: str
    version: str
    path: str
    licence: str
    copyright: str
    seconds: float
    bytes: int
    sha256: str

    @property
    def suffix(self) -> str:
        """Lower-case suffix of the file inside its package (``.mkv``, ``.mp4``, ...); an Ogg file
        becomes ``.ogv``, the suffix of Ogg video (RFC 5334) that ``cmmd prepare`` looks for."""
        suffix = Path(self.path.split(MEMBER_SEPARATOR)[-1]).suffix.lower()
        return ".ogv" if suffix == ".ogg" else suffix

    @property
    def target(self) -> str:
        """Where :func:`lay_out` puts it, relative to DEST: ``<split>/<name><suffix>``."""
        return f"{self.split}/{self.name}{self.suffix}"


def load_manifest(path: str | Path = REAL_MEDIA) -> list[MediaFile]:
    """The manifest's entries in file order, checked by :func:`check_manifest`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CmmdError(f"{path}: cannot read the real-media manifest: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != 1 or not isinstance(raw.get("files"), list):
        raise CmmdError(f"{path}: not a real-media manifest (need {{\"format\": 1, \"files\": [...]}})")
    keys = {f.name for f in fields(MediaFile)}
    entries = []
    for i, item in enumerate(raw["files"]):
        if not isinstance(item, dict) or set(item) != keys:
            have = set(item) if isinstance(item, dict) else set()
            raise CmmdError(f"{path}: files[{i}]: need exactly the keys {sorted(keys)}; missing "
                            f"{sorted(keys - have)}, unknown {sorted(have - keys)}")
        entries.append(MediaFile(**item))
    check_manifest(entries, str(path))
    return entries


def check_manifest(entries: list[MediaFile], where: str = "manifest") -> None:
    """Raise a :class:`CmmdError` naming the entry unless names are unique, every split, registry,
    checksum and length is valid, and each ``work`` lies in exactly one split."""
    seen: set[str] = set()
    work_split: dict[str, str] = {}
    for e in entries:
        what = f"{where}: {e.name!r}"
        if not _NAME.match(e.name) or e.name in seen:
            raise CmmdError(f"{what}: names must be unique, lower-case [a-z0-9._-]")
        seen.add(e.name)
        if e.split not in SPLITS:
            raise CmmdError(f"{what}: split {e.split!r} is not one of {', '.join(SPLITS)}")
        if e.registry not in REGISTRIES:
            raise CmmdError(f"{what}: registry {e.registry!r} is not one of {', '.join(REGISTRIES)}")
        if not _SHA256.match(e.sha256) or not e.seconds > 0 or e.bytes <= 0 or not e.package or not e.version:
            raise CmmdError(f"{what}: needs a package, a version, a lower-case hex sha256, seconds > 0 and bytes > 0")
        if not e.path or e.path.startswith("/") or ".." in e.path.split("/"):
            raise CmmdError(f"{what}: path {e.path!r} must be relative to the package root, without '..'")
        if work_split.setdefault(e.work, e.split) != e.split:
            raise CmmdError(f"{what}: work {e.work!r} is in both {work_split[e.work]} and {e.split}; "
                            "files cut from one work must share a split")


def split_totals(entries: Iterable[MediaFile]) -> dict[str, tuple[int, float]]:
    """``{split: (files, seconds)}`` for every split, in :data:`SPLITS` order."""
    totals = {s: (0, 0.0) for s in SPLITS}
    for e in entries:
        n, sec = totals[e.split]
        totals[e.split] = (n + 1, sec + e.seconds)
    return totals


def package_lines(entries: Iterable[MediaFile]) -> list[str]:
    """``"<registry> <package> <version>"`` once per package, sorted: what the fetch script downloads."""
    return sorted({f"{e.registry} {e.package} {e.version}" for e in entries})


def archive_glob(registry: str, package: str, version: str) -> str:
    """The file name ``apt-get download`` / ``pip download`` gives a package, as a glob."""
    if registry == "debian":  # apt quotes the epoch colon: 1:2.0-1 -> 1%3a2.0-1
        return f"{package}_{version.replace(':', '%3a')}_*.deb"
    dist = re.sub(r"[-_.]+", "_", package).lower()
    return f"{dist}-{version}-*.whl" if registry == "pypi-wheel" else f"{dist}-{version}.tar.gz"


def fetch_hint(registry: str, package: str, version: str) -> str:
    """The command that downloads a package into DOWNLOADS."""
    if registry == "debian":
        return (f"apt-get download {package}={version} (Debian 12 'bookworm' main must be in your APT "
                "sources, then apt-get update)")
    binary = "--only-binary :all:" if registry == "pypi-wheel" else "--no-binary :all:"
    return f"pip download --no-deps {binary} {package}=={version}"


def find_archive(downloads: Path, registry: str, package: str, version: str, what: str) -> Path:
    """The downloaded package in ``downloads``; a :class:`CmmdError` naming ``what`` needs it and how to get it."""
    pattern = archive_glob(registry, package, version)
    found = sorted(downloads.glob(pattern))
    if not found:
        raise CmmdError(f"{what}: package {package} {version} ({pattern}) is not in {downloads}; run "
                        f"scripts/get_real_media.sh, or download it there yourself: {fetch_hint(registry, package, version)}")
    return found[0]


def read_member(archive: Path, path: str) -> bytes:
    """The bytes of ``path`` inside a .deb, wheel/zip or tar archive, crossing nested archives at ``!``."""
    outer, _, rest = path.partition(MEMBER_SEPARATOR)
    data = _read_one(archive.name, archive.read_bytes(), outer)
    while rest:
        inner, _, rest = rest.partition(MEMBER_SEPARATOR)
        data, outer = _read_one(outer, data, inner), inner
    return data


def _read_one(name: str, data: bytes, member: str) -> bytes:
    """Member ``member`` of the archive ``data`` (called ``name``), by its suffix."""
    try:
        if name.endswith(".deb"):
            return _tar_member(name, _deb_data_tar(name, data), member)
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return archive.read(member)
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")):
            return _tar_member(name, data, member)
    except KeyError:
        raise CmmdError(f"{name}: has no member {member!r}; is it the version the manifest names?") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise CmmdError(f"{name}: damaged archive ({exc}); delete it and download it again") from exc
    raise CmmdError(f"{name}: unknown archive type; expected .deb, .whl, .zip or .tar[.gz|.xz|.bz2]")


def deb_members(archive: Path, prefix: str) -> dict[str, bytes]:
    """Every regular file of a .deb whose path (without ``./``) starts with ``prefix``: ``{path: bytes}``."""
    data = _deb_data_tar(archive.name, archive.read_bytes())
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            return {info.name.removeprefix("./"): tar.extractfile(info).read()  # type: ignore[union-attr]
                    for info in tar if info.isfile() and info.name.removeprefix("./").startswith(prefix)}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CmmdError(f"{archive.name}: damaged archive ({exc}); delete it and download it again") from exc


def _tar_member(name: str, data: bytes, member: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for info in archive:
            if info.name.removeprefix("./") == member and info.isfile():
                extracted = archive.extractfile(info)
                assert extracted is not None  # isfile() members always have data
                return extracted.read()
    raise KeyError(member)


def _deb_data_tar(name: str, data: bytes) -> bytes:
    """The ``data.tar.*`` member of a .deb (an ``ar`` archive: 8-byte magic, 60-byte headers)."""
    if not data.startswith(b"!<arch>\n"):
        raise CmmdError(f"{name}: not a Debian package (no ar magic); delete it and download it again")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if member.startswith("data.tar"):
            if member.endswith(".zst"):
                raise CmmdError(f"{name}: zstd-compressed data ({member}) cannot be read here; use the Debian 12 "
                                "package the manifest names (xz)")
            return data[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    raise CmmdError(f"{name}: Debian package without a data.tar member; delete it and download it again")


@dataclass(frozen=True)
class LayoutResult:
    """What :func:`lay_out` did: files ``written`` now, files ``kept`` (already there, checksum right)."""

    written: list[str]
    kept: list[str]


def lay_out(entries: list[MediaFile], downloads: Path, dest: Path) -> LayoutResult:
    """Read every entry out of its package in ``downloads``, check its sha256 and write it to
    ``dest/<split>/<name><suffix>`` (under a temporary name, then renamed), plus ``dest/real_media.json``.

    Deterministic: the same manifest and packages give byte-identical files. A file already at
    its target with the right checksum is kept; one with other content is never overwritten. All
    packages are looked up before anything is written, so a missing one fails fast.
    """
    check_manifest(entries)
    archives = {e.name: find_archive(downloads, e.registry, e.package, e.version, e.name) for e in entries}
    written, kept = [], []
    for e in entries:
        target = dest / e.target
        if target.exists():
            if _sha256(target.read_bytes()) != e.sha256:
                raise CmmdError(f"{target}: exists with other content than {e.name} (sha256 {e.sha256}); not "
                                "overwriting it: move it away or choose another DEST")
            kept.append(e.target)
            continue
        data = read_member(archives[e.name], e.path)
        got = _sha256(data)
        if got != e.sha256:
            raise CmmdError(f"{e.name}: {e.path} in {archives[e.name].name} has sha256 {got}, the manifest says "
                            f"{e.sha256}; the package is not the one the benchmark was made from: delete "
                            f"{archives[e.name]} and download it again ({fetch_hint(e.registry, e.package, e.version)})")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        written.append(e.target)
    manifest = {"format": 1, "files": [asdict(e) for e in entries]}
    (dest / MANIFEST_COPY).write_text(json.dumps(manifest, indent=1) + "\n")
    return LayoutResult(written, kept)


def markdown_table(entries: Iterable[MediaFile]) -> list[str]:
    """The media table of docs/REAL_MEDIA.md: one row per file, then the totals per split."""
    entries = list(entries)
    rows = ["| split | name | package (registry) | version | file in package | licence (copyright) | seconds | sha256 |",
            "| --- | --- | --- | --- | --- | --- | ---: | --- |"]
    for e in sorted(entries, key=lambda e: (SPLITS.index(e.split), e.name)):
        rows.append(f"| {e.split} | {e.name} | {e.package} ({e.registry}) | {e.version} | `{e.path}` | "
                    f"{e.licence} ({e.copyright}) | {e.seconds:.1f} | `{e.sha256}` |")
    rows += ["", "| split | files | seconds | minutes |", "| --- | ---: | ---: | ---: |"]
    for split, (n, sec) in split_totals(entries).items():
        rows.append(f"| {split} | {n} | {sec:.1f} | {sec / 60:.1f} |")
    return rows


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
