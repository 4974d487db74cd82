#!/usr/bin/env bash
# Install what tests/test_mos_browser.py needs on top of scripts/setup.sh: Debian's chromium
# (system package, launched by path) and, in .venv, the mos extra, httpx and Playwright's Python
# package. Playwright's own browser builds are never downloaded (no `playwright install`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  echo "setup_browser_tests.sh: no .venv here; run scripts/setup.sh first" >&2
  exit 1
fi
if [[ ! -x /usr/bin/chromium ]]; then
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/pip install -q --disable-pip-version-check -e '.[test,mos]' 'playwright>=1.40'
/usr/bin/chromium --version 2>/dev/null  # the Debian wrapper prints a harmless shell warning on big-memory hosts
