#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with cmmd installed (editable).
# torch is pinned to the CPU build that installs quickly from this workplace's disk; an
# unpinned install would pull a multi-GB CUDA build. On a GPU machine install your CUDA torch
# first and pass --no-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
if [[ "${1:-}" != "--no-torch" ]]; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
