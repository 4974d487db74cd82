"""``cmmd app`` in a real headless browser: Debian's chromium driven by Playwright uploads a
synthetic clip, runs video->audio with 3 steps on the shipped checkpoint, watches the progress
line, and plays the result; the mp4 it got is checked for an audio track with PyAV.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (``scripts/setup_browser_tests.sh``);
skipped with the reason otherwise. With ``CMMD_APP_SCREENSHOT=PATH`` it also saves a screenshot
of the page with its result there (how ``docs/app_screenshot.png`` was made).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import av
import pytest
from cli_server import CliServer, free_port

from test_app import write_clip
from test_mos_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS


def _missing() -> str:
    """Why the browser test cannot run here ('' when it can)."""
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} is not installed (run scripts/setup_browser_tests.sh)"
    for module in ("playwright", "starlette", "uvicorn", "httpx", "python_multipart"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} is not installed (run scripts/setup_browser_tests.sh)"
    return ""


def test_upload_generate_and_play_in_chromium(tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    clip = write_clip(tmp_path / "impacts.mp4")
    server = CliServer(["app"], free_port(), timeout=120)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 900, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                outside: list[str] = []
                page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
                page.goto(server.url + "/")
                assert page.is_hidden("#seconds-field") and page.is_visible("#file-field")
                page.select_option("#mode", "v2a")
                page.set_input_files("#file", str(clip))
                page.fill("input[name=steps]", "3")
                page.fill("input[name=seed]", "4")
                page.click("#generate")
                page.wait_for_function("() => /^Done in/.test(document.getElementById('status').textContent)",
                                       timeout=120_000)
                page.wait_for_function("() => { const v = document.querySelector('video.result-video');"
                                       " return v && v.readyState >= 1 && v.duration > 0; }")
                page.evaluate("() => document.querySelector('video.result-video').play()")
                page.wait_for_function("() => document.querySelector('video.result-video').ended")
                state = page.evaluate("""() => { const v = document.querySelector('video.result-video');
                    return {duration: v.duration, width: v.videoWidth, error: v.error ? v.error.code : null,
                            audioBytes: v.webkitAudioDecodedByteCount, src: v.src}; }""")
                assert state["error"] is None and state["width"] == 32
                assert abs(state["duration"] - 1.8) < 0.15 and state["audioBytes"] > 0
                assert page.is_visible("#results img") and page.is_visible("text=Download mp4")
                assert page.is_visible("#results td:text-is('version')")
                assert not outside, f"requests left the machine: {outside}"
                body = page.request.get(state["src"]).body()
                if os.environ.get("CMMD_APP_SCREENSHOT"):
                    page.screenshot(path=os.environ["CMMD_APP_SCREENSHOT"], full_page=True)
            finally:
                browser.close()
    finally:
        server.stop()
    (tmp_path / "result.mp4").write_bytes(body)
    with av.open(str(tmp_path / "result.mp4")) as container:
        assert container.streams.audio and container.streams.video
        audio = container.streams.audio[0]
        assert sum(frame.samples for frame in container.decode(audio)) >= 1.7 * audio.rate
