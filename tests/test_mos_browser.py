"""End to end in a real headless browser: Debian's chromium driven by Playwright opens the study,
plays a clip with sound, submits ratings, reloads and resumes in a new tab.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (``scripts/setup_browser_tests.sh``
installs both); skipped with the reason otherwise. Playwright's own browser downloads are never
used: the test launches the system chromium by path.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cmmd.apps.mos import db
from cmmd.apps.mos.questions import PRESETS
from cmmd.apps.mos.study import create_study

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # The test starts playback from script, which a real rater does with a click.
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 30_000


def _missing() -> str:
    """Why the browser test cannot run here ('' when it can)."""
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} is not installed (run scripts/setup_browser_tests.sh)"
    for module in ("playwright", "starlette", "uvicorn", "httpx"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} is not installed (run scripts/setup_browser_tests.sh)"
    return ""


def _clip_state(page: Page) -> dict[str, Any]:
    """The <video> element's playback state, as the browser reports it."""
    return page.evaluate(
        """() => { const v = document.getElementById("clip");
                   return {ended: v.ended, duration: v.duration, width: v.videoWidth, muted: v.muted,
                           volume: v.volume, error: v.error ? v.error.code : null,
                           audioBytes: v.webkitAudioDecodedByteCount, controls: v.controls}; }"""
    )


def test_rate_play_reload_and_resume_in_chromium(tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    from test_mos import Server, free_port, write_clip_dirs

    dirs = write_clip_dirs(tmp_path / "clips", systems=("gt", "ours"), n_clips=2)
    study = create_study(tmp_path / "study", dirs, PRESETS["a2v"], attention_checks=1, seed=1)
    total = len(study.items)
    server = Server(study.root, free_port())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
            try:
                context = browser.new_context()
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.goto(server.url + "/")
                page.fill("input[name=rater]", "browser-rater")
                page.click("#start")
                page.wait_for_url(re.compile(r"/s/[A-Za-z0-9_-]+$"))
                assert page.text_content("#progress-text") == f"Clip 1 of {total} (0 rated)"
                assert page.is_disabled("#submit"), "rating must wait until the clip has been played"

                page.evaluate("() => document.getElementById('clip').play()")
                page.wait_for_function("() => document.getElementById('clip').ended")
                state = _clip_state(page)
                assert state["error"] is None and state["controls"] and state["width"] == 32
                assert abs(state["duration"] - 1.0) < 0.15
                assert not state["muted"] and state["volume"] > 0 and state["audioBytes"] > 0
                assert page.is_enabled("#submit")

                first = page.get_attribute("input[name=item]", "value")
                page.check("input[name=video_quality][value='4']")
                page.check("input[name=temporal_alignment][value='2']")
                with page.expect_navigation():
                    page.click("#submit")
                assert page.text_content("#progress-text") == f"Clip 2 of {total} (1 rated)"
                second = page.get_attribute("input[name=item]", "value")
                assert second != first

                page.reload()
                assert page.text_content("#progress-text") == f"Clip 2 of {total} (1 rated)"
                assert page.get_attribute("input[name=item]", "value") == second

                page.close()  # a closed tab: the cookie leads a new one back to the session
                tab = context.new_page()
                tab.goto(server.url + "/")
                assert tab.text_content("#progress-text") == f"Clip 2 of {total} (1 rated)"
                assert tab.get_attribute("input[name=item]", "value") == second
            finally:
                browser.close()
    finally:
        server.stop()
    conn = db.connect(study.db_path)
    try:
        rows = {(r.rater_id, r.item_id, r.question, r.score) for r in db.ratings(conn)}
    finally:
        conn.close()
    assert rows == {("browser-rater", first, "video_quality", 4), ("browser-rater", first, "temporal_alignment", 2)}
