"""``cmmd app``: the HTTP API through Starlette's test client with the shipped checkpoint (2-4
sampler steps, 1.8 s clips): valid mp4s back, one-line 4xx reasons for bad input, concurrent
requests queued one at a time, and the job queue on its own."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from cmmd.data.media import write_media
from cmmd.data.synth import render_clip

try:
    import python_multipart  # noqa: F401  (Starlette's form parser)
    import uvicorn  # noqa: F401

    with warnings.catch_warnings():  # Starlette >= 1.0 prefers the httpx2 fork but runs on httpx
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from starlette.testclient import TestClient

    from cmmd.apps.genapp.server import create_app
    WEB_MISSING = ""
except ImportError as exc:
    WEB_MISSING = f"the app tests need the 'app' extra and httpx (pip install -e '.[test]'): {exc}"

from cmmd.assets import DEMO_CHECKPOINT
from cmmd.apps.genapp.inputs import GenRequest
from cmmd.apps.genapp.jobs import JobQueue, QueueFull
from cmmd.pipeline import SamplingSettings

pytestmark = pytest.mark.skipif(bool(WEB_MISSING), reason=WEB_MISSING)
FPS, RATE, SIZE = 10, 16000, 32


def write_clip(path: Path, seconds: float = 1.8, video: bool = True, audio: bool = True) -> Path:
    """A synthetic impacts clip at the demo model's rate and size."""
    clip = render_clip("impacts", seed=7, duration=seconds, size=SIZE, fps=FPS, sample_rate=RATE)
    write_media(path, clip.frames if video else None, clip.audio if audio else None, FPS, RATE)
    return path


def mp4_streams(data: bytes, path: Path) -> dict[str, float]:
    """Duration in seconds of each stream kind of an mp4 given as bytes (decoding every packet)."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        durations = {}
        for stream in container.streams:
            frames = list(container.decode(stream))
            assert frames, f"{stream.type} stream decodes to nothing"
            durations[stream.type] = float(stream.duration * stream.time_base) if stream.duration else 0.0
            container.seek(0)
    return durations


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app_clips")
    (root / "notes.txt").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    whole = write_clip(root / "whole.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    return {"cut": root / "cut.mp4", "long": write_clip(root / "long.mp4", seconds=2.5), "av": write_clip(root / "clip.mp4"), "silent": write_clip(root / "silent.mp4", audio=False),
            "sound": write_clip(root / "beat.mkv", video=False), "text": root / "notes.txt",
            "empty": root / "empty.mp4"}


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Any]:
    from cmmd.apps.genapp.work import load_pipelines

    return load_pipelines(DEMO_CHECKPOINT, [], "cpu")


@pytest.fixture(scope="module")
def client(pipelines: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(pipelines, "demo-tiny", tmp_path_factory.mktemp("app_work"), max_upload_mb=1.0, max_seconds=2.0)
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, path: Path | None, url: str = "/api/generate", **fields: str) -> Any:
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")} if path else None
    return client.post(url, data=fields, files=files)


def test_page_offers_the_controls_and_no_outside_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("mode", "file", "sampler", "steps", "guidance", "seed", "variations", "seconds", "vocoder"):
        assert f'name="{name}"' in page.text
    assert "http" not in page.text.replace('http-equiv', '') and "//" not in page.text
    assert "http" not in client.get("/static/app.js").text


@pytest.mark.parametrize("mode,clip", [("v2a", "av"), ("v2a", "silent"), ("a2v", "sound"), ("a2v", "av"),
                                       ("joint", None)])
def test_generate_answers_an_mp4_with_video_and_sound(client: TestClient, clips: dict[str, Path], mode: str,
                                                      clip: str | None, tmp_path: Path) -> None:
    answer = post(client, clips[clip] if clip else None, mode=mode, steps="2", seed="3")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "video/mp4"
    durations = mp4_streams(answer.content, tmp_path / "out.mp4")
    assert set(durations) == {"video", "audio"}
    assert abs(durations["video"] - 1.8) < 0.15 and abs(durations["audio"] - 1.8) < 0.2


def test_jobs_report_progress_settings_and_files(client: TestClient) -> None:
    answer = client.post("/api/jobs", data={"mode": "joint", "steps": "3", "seed": "5", "variations": "2",
                                            "seconds": "1.0", "sampler": "dpmpp2m"})
    assert answer.status_code == 202, answer.text
    url = answer.json()["status"]
    while (job := client.get(url).json())["state"] in ("queued", "running"):
        time.sleep(0.05)
    assert job["state"] == "done", job["error"]
    assert (job["step"], job["steps"], job["variation"], job["variations"]) == (3, 3, 2, 2)
    assert [r["settings"]["seed"] for r in job["results"]] == [5, 6]
    settings = job["results"][0]["settings"]
    assert settings["method"] == "dpmpp2m" and settings["seconds"] == 1.0 and settings["vocoder"] == "griffinlim"
    assert settings["version"] and settings["checkpoint_step"] > 0
    for result in job["results"]:
        assert client.get(f"{url}/files/{result['video']}").headers["content-type"] == "video/mp4"
        assert client.get(f"{url}/files/{result['spectrogram']}").content.startswith(b"\x89PNG")
    assert client.get(f"{url}/files/../../etc/passwd").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404


@pytest.mark.parametrize("clip,fields,status,reason", [
    ("text", {"mode": "v2a"}, 422, "notes.txt: not a readable media file"),
    ("empty", {"mode": "v2a"}, 422, "empty.mp4: empty file (0 bytes)"),
    ("sound", {"mode": "v2a"}, 422, "beat.mkv: no video stream"),
    ("cut", {"mode": "v2a"}, 422, "cut.mp4: truncated or damaged"),
    ("long", {"mode": "a2v"}, 422, "long.mp4: 2.5 s long; the app takes at most 2 s"),
    ("silent", {"mode": "a2v"}, 422, "silent.mp4: no audio stream"),
    (None, {"mode": "v2a"}, 422, "mode v2a needs a 'file'"),
    ("av", {"mode": "joint"}, 422, "joint mode is unconditional"),
    ("av", {"mode": "x2y"}, 422, "mode must be one of v2a, a2v, joint"),
    ("av", {"mode": "v2a", "steps": "0"}, 422, "steps must be from 1 to 1000, got 0"),
    ("av", {"mode": "v2a", "steps": "many"}, 422, "steps must be a whole number"),
    ("av", {"mode": "v2a", "guidance": "nan"}, 422, "guidance must be from 0 to 100"),
    ("av", {"mode": "v2a", "vocoder": "hifigan-universal"}, 422, "vocoder must be one of griffinlim"),
    ("av", {"mode": "v2a", "colour": "red"}, 422, "unknown field(s) colour"),
])
def test_bad_requests_get_a_one_line_reason(client: TestClient, clips: dict[str, Path], clip: str | None,
                                            fields: dict[str, str], status: int, reason: str) -> None:
    answer = post(client, clips[clip] if clip else None, **fields)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error.startswith(reason) and "\n" not in error and "/tmp" not in error


def test_oversized_and_foreign_requests_are_refused_before_reading(client: TestClient, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (1024 * 1024 + 10))
    answer = post(client, big, mode="v2a")
    assert answer.status_code == 413 and "the limit is 1 MB" in answer.json()["error"]
    answer = client.post("/api/generate", content=b"{}", headers={"content-type": "application/json"})
    assert answer.status_code == 415
    answer = client.post("/api/jobs", data={"mode": "joint"}, headers={"origin": "http://evil.example"})
    assert answer.status_code == 403
    assert client.get("/").status_code == 200  # still serving


def test_concurrent_requests_are_queued_and_all_answered(client: TestClient, clips: dict[str, Path]) -> None:
    queue: JobQueue = client.app.state.queue
    answers: list[Any] = [None] * 3

    def request(k: int) -> None:
        answers[k] = post(client, clips["av"], mode="v2a", steps="4", seed=str(k))

    threads = [threading.Thread(target=request, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a.status_code for a in answers] == [200] * 3
    jobs = [queue.get(a.headers["x-job"].rsplit("/", 1)[1]) for a in answers]
    spans = sorted((job.started, job.finished) for job in jobs)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), "jobs overlapped"
    assert not any((queue.root / "uploads").iterdir()), "uploads are deleted once decoded"


def test_cli_refuses_a_bad_port_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    from cmmd.cli import main

    assert main(["app", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == "cmmd app: error: --port must be 1-65535, got 0"


def _request() -> GenRequest:
    return GenRequest("joint", SamplingSettings(steps=1), 1, 2, "griffinlim")


def test_queue_runs_one_job_at_a_time_in_order_and_survives_failures(tmp_path: Path) -> None:
    release = threading.Event()
    running: list[int] = []
    order: list[str] = []

    def work(job: Any, folder: Path, progress: Any) -> list[Any]:
        running.append(1)
        assert len(running) == 1
        release.wait(10)
        order.append(job.id)
        running.pop()
        if len(order) == 2:
            raise RuntimeError("boom")
        return []

    queue = JobQueue(work, tmp_path, max_waiting=2, keep=1)
    queue.start()
    try:
        first = queue.submit(_request())
        while first.state == "queued":
            time.sleep(0.01)
        second, third = queue.submit(_request()), queue.submit(_request())
        assert [queue.position(j) for j in (first, second, third)] == [0, 1, 2]
        with pytest.raises(QueueFull):
            queue.submit(_request())
        release.set()
        assert third.done.wait(10)
    finally:
        queue.close()
    assert order == [first.id, second.id, third.id]
    assert [j.state for j in (first, second, third)] == ["done", "failed", "done"]
    assert second.error == "internal error (RuntimeError: boom)"
    assert queue.get(first.id) is None and not first.folder.exists() and third.folder.is_dir()  # only `keep` kept


@pytest.mark.parametrize("host,local", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                        ("0.0.0.0", False), ("192.168.1.5", False), ("myhost", False)])
def test_apps_warn_when_listening_beyond_this_machine(host: str, local: bool) -> None:
    from cmmd.apps.serve import exposure_warning, is_loopback, url

    assert is_loopback(host) is local
    assert (exposure_warning("cmmd app", host, "use the app") is None) is local
    assert url("::1", 80) == "http://[::1]:80/"
