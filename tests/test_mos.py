"""MOS study: create (pairing, checks, opaque media, attention checks), the web app through
Starlette's test client, durability under kill -9, concurrent submissions, and analyze."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_server import CliServer, free_port

from cmmd.cli import main as cli_main
from cmmd.data.media import read_media, write_media
from cmmd.data.synth import render_clip
from cmmd.errors import CmmdError
from cmmd.apps.mos import db
from cmmd.apps.mos.analyze import analyze_study, write_reports
from cmmd.apps.mos.questions import PRESETS, load_questions
from cmmd.apps.mos.study import StudyProblems, create_study, load_study

try:
    import httpx
    import uvicorn  # noqa: F401  (the subprocess server needs it)

    with warnings.catch_warnings():  # Starlette >= 1.0 prefers the httpx2 fork but runs on httpx
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from starlette.testclient import TestClient

    from cmmd.apps.mos.app import SESSION_COOKIE, create_app
    WEB_MISSING = ""
except ImportError as exc:
    WEB_MISSING = f"the web-app tests need the 'mos' extra and httpx (pip install -e '.[test]'): {exc}"
web = pytest.mark.skipif(bool(WEB_MISSING), reason=WEB_MISSING)

ADMIN_TOKEN = "test-admin-token-0123"
SYSTEMS = ("gt", "ours", "baseline")
N_CLIPS = 4
SCORES = {"acoustic_quality": "4", "semantic_quality": "3", "synchronisation": "5"}


def write_clip_dirs(root: Path, systems: tuple[str, ...] = SYSTEMS, n_clips: int = N_CLIPS) -> dict[str, Path]:
    """One folder per system with ``n_clips`` tiny dance clips (32x32, 1 s, audible beats)."""
    dirs = {}
    for k, system in enumerate(systems):
        folder = root / system
        folder.mkdir(parents=True)
        for i in range(n_clips):
            clip = render_clip("dance", seed=100 * k + i, duration=1.0, size=32, fps=10, sample_rate=16000)
            write_media(folder / f"clip{i:02d}.mp4", clip.frames, clip.audio, 10, 16000)
        dirs[system] = folder
    return dirs


class Server(CliServer):
    """``cmmd mos serve`` of ``study_dir`` with the test's admin token."""

    def __init__(self, study_dir: Path, port: int) -> None:
        super().__init__(["mos", "serve", str(study_dir), "--admin-token", ADMIN_TOKEN], port, timeout=60)


def start_session(client: httpx.Client | TestClient, rater: str = "") -> str:
    """Start a rater session; returns its session token."""
    response = client.post("/start", data={"rater": rater}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].removeprefix("/s/")


def current_item(client: httpx.Client | TestClient, session: str) -> str | None:
    """The item id the rater page asks for next (None when finished)."""
    page = client.get(f"/s/{session}").text
    match = re.search(r'name="item" value="([0-9a-f]+)"', page)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_clip_dirs(tmp_path_factory.mktemp("mos_clips"))


@pytest.fixture(scope="module")
def built_study(clip_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mos_study") / "study"
    create_study(root, clip_dirs, PRESETS["v2a-sound"], attention_checks=2, seed=7)
    return root


@pytest.fixture
def study_dir(built_study: Path, tmp_path: Path) -> Path:
    """A private copy of the built study, so each test starts with an empty database."""
    return Path(shutil.copytree(built_study, tmp_path / "study"))


@pytest.fixture
def client(study_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(study_dir, ADMIN_TOKEN), base_url="http://127.0.0.1:8765") as c:
        yield c


def stored(study_dir: Path) -> list[db.Rating]:
    conn = db.connect(study_dir / db.DB_FILE)
    try:
        return db.ratings(conn)
    finally:
        conn.close()


# --- questions -------------------------------------------------------------------------------

def test_presets_match_the_paper() -> None:
    assert [q.id for q in PRESETS["v2a-music"]] == ["acoustic_quality", "musical_quality", "synchronisation"]
    assert [q.id for q in PRESETS["v2a-sound"]] == ["acoustic_quality", "semantic_quality", "synchronisation"]
    assert [q.id for q in PRESETS["a2v"]] == ["video_quality", "temporal_alignment"]
    for questions in PRESETS.values():
        assert sum(q.attention for q in questions) == 1


def test_custom_questions_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("questions:\n  - {id: realism, label: Realism, prompt: 'How real is it?'}\n"
                    "  - {id: sync, label: Sync, prompt: 'In time?', attention: true}\n")
    assert [(q.id, q.attention) for q in load_questions(str(path))] == [("realism", False), ("sync", True)]
    path.write_text("- {id: realism, label: Realism, prompt: Real, scale: 7}\n")
    with pytest.raises(CmmdError, match="unknown key.*scale"):
        load_questions(str(path))
    path.write_text("- {id: a, label: A, prompt: A}\n- {id: a, label: B, prompt: B}\n")
    with pytest.raises(CmmdError, match="duplicate question id"):
        load_questions(str(path))
    with pytest.raises(CmmdError, match="not a preset"):
        load_questions("v2a-speech")


# --- create ----------------------------------------------------------------------------------

def test_create_writes_opaque_media_study_json_and_wal_db(built_study: Path, clip_dirs: dict[str, Path]) -> None:
    study = load_study(built_study)
    data = json.loads((built_study / "study.json").read_text())
    assert data["systems"] == list(SYSTEMS) and data["seed"] == 7 and data["ground_truth"] == "gt"
    assert len(study.clips) == N_CLIPS and len(study.items) == N_CLIPS * len(SYSTEMS) + 2
    media = sorted(p.name for p in (built_study / "media").iterdir())
    assert len(media) == len(study.items)
    assert all(re.fullmatch(r"[0-9a-f]{16}\.mp4", name) for name in media)
    for item in study.items:
        if not item.is_attention:  # hard-linked (same file system), byte-identical to the source
            source = clip_dirs[item.system] / f"{item.clip}.mp4"
            assert study.media_path(item).read_bytes() == source.read_bytes()
    conn = sqlite3.connect(built_study / db.DB_FILE)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_attention_check_is_gt_video_with_another_clips_audio(built_study: Path, clip_dirs: dict[str, Path]) -> None:
    study = load_study(built_study)
    checks = [item for item in study.items if item.is_attention]
    assert len(checks) == 2
    for item in checks:
        assert item.audio_clip != item.clip
        muxed = read_media(study.media_path(item))
        video = read_media(clip_dirs["gt"] / f"{item.clip}.mp4")
        audio = read_media(clip_dirs["gt"] / f"{item.audio_clip}.mp4")
        np.testing.assert_array_equal(muxed.frames, video.frames)
        np.testing.assert_allclose(muxed.audio, audio.audio, atol=1e-6)
        assert np.abs(muxed.audio - video.audio).max() > 0.1


def test_create_lists_every_problem_at_once(tmp_path: Path, clip_dirs: dict[str, Path],
                                            bad_media: dict[str, Path]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("clip00", "clip01"):  # clip02 and clip03 are missing
        shutil.copy(clip_dirs["ours"] / f"{name}.mp4", bad / f"{name}.mp4")
    shutil.copy(bad_media["corrupt"], bad / "clip00.mp4")
    shutil.copy(bad_media["silent"], bad / "clip01.mp4")
    extra = tmp_path / "extra"
    shutil.copytree(clip_dirs["gt"], extra)
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    write_media(extra / "clip04.mkv", frames, 0.1 * np.ones(16000, np.float32), 10, 16000)
    with pytest.raises(StudyProblems) as info:
        create_study(tmp_path / "study", {"gt": clip_dirs["gt"], "bad": bad, "extra": extra}, PRESETS["a2v"])
    text = "\n".join(info.value.problems)
    assert "clip 'clip02': missing from system(s) bad" in text
    assert "clip 'clip04': missing from system(s) gt, bad" in text
    assert re.search(r"bad: .*clip00\.mp4: not a readable media file", text)
    assert re.search(r"bad: .*clip01\.mp4: silent audio", text)
    assert re.search(r"extra: .*clip04\.mkv: browsers cannot play \.mkv", text)
    assert len(info.value.problems) == 6  # clip02, clip03, clip04 missing; corrupt, silent, mkv
    assert not (tmp_path / "study").exists() and not list(tmp_path.glob(".study.partial*"))


def test_create_rejects_bad_arguments(tmp_path: Path, clip_dirs: dict[str, Path], built_study: Path) -> None:
    with pytest.raises(CmmdError, match="not an empty folder"):
        create_study(built_study, clip_dirs, PRESETS["a2v"])
    with pytest.raises(CmmdError, match="--ground-truth"):
        create_study(tmp_path / "s", {"ours": clip_dirs["ours"], "baseline": clip_dirs["baseline"]},
                     PRESETS["a2v"], attention_checks=1)
    code = cli_main(["mos", "create", str(tmp_path / "s"), "--systems", "ours", "--questions", "a2v"])
    assert code == 2


def test_assignment_is_seeded_per_rater_and_keeps_clips_paired(tmp_path: Path, clip_dirs: dict[str, Path]) -> None:
    study = create_study(tmp_path / "s", clip_dirs, PRESETS["v2a-music"], attention_checks=1, clips_per_rater=2)
    alice = study.assignment("alice")
    assert [i.id for i in alice] == [i.id for i in load_study(tmp_path / "s").assignment("alice")]
    assert [i.id for i in alice] != [i.id for i in study.assignment("bob")]
    rated = [i for i in alice if not i.is_attention]
    assert len(rated) == 2 * len(SYSTEMS) and sum(i.is_attention for i in alice) == 1
    for clip in {i.clip for i in rated}:
        assert sorted(i.system for i in rated if i.clip == clip) == sorted(SYSTEMS)


# --- web app -----------------------------------------------------------------------------------

@web
def test_rating_page_hides_systems_and_paths(client: TestClient, study_dir: Path, clip_dirs: dict[str, Path]) -> None:
    assert "Start" in client.get("/").text
    session = start_session(client, "alice")
    page = client.get(f"/s/{session}")
    assert page.status_code == 200 and "Clip 1 of 14 (0 rated)" in page.text
    assert "<video" in page.text and "controls" in page.text
    visible = page.text.replace(session, "<session>")  # the random token could contain "gt" by chance
    for name in SYSTEMS:
        assert not re.search(rf"\b{name}\b", visible), name
    for text in ("clip0", ".mp4", str(study_dir), str(clip_dirs["gt"].parent)):
        assert text not in visible, text
    item = current_item(client, session)
    media = client.get(f"/s/{session}/media/{item}")
    assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
    assert "last-modified" not in media.headers and "content-disposition" not in media.headers
    partial = client.get(f"/s/{session}/media/{item}", headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and len(partial.content) == 100


@web
def test_media_only_for_the_raters_assignment(tmp_path: Path, clip_dirs: dict[str, Path]) -> None:
    study = create_study(tmp_path / "s", clip_dirs, PRESETS["a2v"], clips_per_rater=1)
    with TestClient(create_app(study.root, ADMIN_TOKEN)) as c:
        session = start_session(c, "carol")
        mine = {i.id for i in study.assignment("carol")}
        other = next(i.id for i in study.items if i.id not in mine)
        assert c.get(f"/s/{session}/media/{other}").status_code == 404
        assert c.get(f"/s/{session}/media/{'0' * 16}").status_code == 404
        assert c.get(f"/s/not-a-session/media/{next(iter(mine))}").status_code == 404
        response = c.post(f"/s/{session}/rate", data={"item": other, "video_quality": "3",
                                                      "temporal_alignment": "3"}, follow_redirects=False)
        assert response.status_code == 403
    assert stored(study.root) == []


@web
def test_rating_is_saved_progress_advances_and_duplicates_are_refused(client: TestClient, study_dir: Path) -> None:
    session = start_session(client, "alice")
    item = current_item(client, session)
    response = client.post(f"/s/{session}/rate", data={"item": item, **SCORES}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/s/{session}"
    assert {(r.rater_id, r.item_id, r.question, r.score) for r in stored(study_dir)} == {
        ("alice", item, q, int(v)) for q, v in SCORES.items()}
    assert "Clip 2 of 14 (1 rated)" in client.get(f"/s/{session}").text
    assert current_item(client, session) != item
    again = client.post(f"/s/{session}/rate", data={"item": item, **{q: "1" for q in SCORES}}, follow_redirects=False)
    assert again.status_code == 409
    assert {r.score for r in stored(study_dir)} == {4, 3, 5}


@web
@pytest.mark.parametrize("change", [
    {"synchronisation": "6"}, {"synchronisation": "0"}, {"synchronisation": "3.5"}, {"synchronisation": " 3"},
    {"synchronisation": ""}, {"unknown_question": "3"},
])
def test_invalid_scores_are_rejected(client: TestClient, study_dir: Path, change: dict[str, str]) -> None:
    session = start_session(client)
    form = {"item": current_item(client, session), **SCORES, **change}
    response = client.post(f"/s/{session}/rate", data=form, follow_redirects=False)
    assert response.status_code == 422
    assert stored(study_dir) == []


@web
def test_malformed_submissions(client: TestClient, study_dir: Path) -> None:
    session = start_session(client)
    item = current_item(client, session)
    missing = {k: v for k, v in SCORES.items() if k != "semantic_quality"}
    assert client.post(f"/s/{session}/rate", data={"item": item, **missing}).status_code == 422
    doubled = f"item={item}&acoustic_quality=4&acoustic_quality=5&semantic_quality=3&synchronisation=5"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post(f"/s/{session}/rate", content=doubled, headers=headers).status_code == 422
    assert client.post(f"/s/{session}/rate", json={"item": item, **SCORES}).status_code == 415
    assert client.post(f"/s/{session}/rate", content="x=" + "a" * 20_000, headers=headers).status_code == 413
    assert client.post("/s/nobody/rate", data={"item": item, **SCORES}).status_code == 404
    sneaky = {"item": "' OR 1=1 --", **SCORES}
    assert client.post(f"/s/{session}/rate", data=sneaky).status_code == 403
    assert stored(study_dir) == []


@web
def test_rater_ids_sessions_and_resume_after_restart(client: TestClient, study_dir: Path) -> None:
    session = start_session(client, "alice")
    item = current_item(client, session)
    client.post(f"/s/{session}/rate", data={"item": item, **SCORES})
    assert client.post("/start", data={"rater": "alice"}).status_code == 409  # id taken, no second session
    assert client.post("/start", data={"rater": "bad id!"}).status_code == 422
    anon = start_session(client)
    assert client.cookies.get(SESSION_COOKIE) == anon
    # A closed tab: the cookie brings the browser back to its session.
    with TestClient(create_app(study_dir, ADMIN_TOKEN)) as restarted:  # a server restart: new app, same folder
        restarted.cookies.set(SESSION_COOKIE, session)
        response = restarted.get("/", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/s/{session}"
        page = restarted.get(f"/s/{session}").text
        assert "Clip 2 of 14 (1 rated)" in page and "alice" in page and item not in page
        assert current_item(restarted, session) == current_item(client, session)


@web
def test_a_rater_sees_nothing_of_other_raters(client: TestClient) -> None:
    alice = start_session(client, "alice")
    client.post(f"/s/{alice}/rate", data={"item": current_item(client, alice), **SCORES})
    bob = start_session(client, "bob")
    page = client.get(f"/s/{bob}").text
    assert "alice" not in page and alice not in page and "(0 rated)" in page
    assert client.get("/admin").status_code == 401
    assert client.get("/admin", params={"token": "wrong-token-123"}).status_code == 401


@web
def test_admin_view_shows_progress_per_rater(client: TestClient) -> None:
    alice = start_session(client, "alice")
    client.post(f"/s/{alice}/rate", data={"item": current_item(client, alice), **SCORES})
    start_session(client, "bob")
    login = client.get("/admin", params={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/admin"
    page = client.get("/admin")
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>(\w+)</td><td>\w+</td><td>(\d+)</td><td>(\d+)</td>", page.text)
    assert rows == [("alice", "1", "14"), ("bob", "0", "14")]


@web
def test_completed_session_shows_thanks(tmp_path: Path, clip_dirs: dict[str, Path]) -> None:
    study = create_study(tmp_path / "s", {"gt": clip_dirs["gt"]}, PRESETS["a2v"], clips_per_rater=1)
    with TestClient(create_app(study.root, ADMIN_TOKEN)) as c:
        session = start_session(c, "dora")
        item = current_item(c, session)
        c.post(f"/s/{session}/rate", data={"item": item, "video_quality": "2", "temporal_alignment": "5"})
        page = c.get(f"/s/{session}").text
        assert "Thank you" in page and "1 of 1" in page and current_item(c, session) is None


# --- real server: durability and concurrency -----------------------------------------------------

@web
def test_rating_survives_kill_9(study_dir: Path) -> None:
    port = free_port()
    server = Server(study_dir, port)
    try:
        with httpx.Client(base_url=server.url, follow_redirects=True) as c:
            session = start_session(c, "erin")
            item = current_item(c, session)
            response = c.post(f"/s/{session}/rate", data={"item": item, **SCORES})
            assert response.status_code == 200 and "(1 rated)" in response.text
    finally:
        server.kill()
    server = Server(study_dir, port)
    try:
        with httpx.Client(base_url=server.url, follow_redirects=True) as c:
            assert "Clip 2 of 14 (1 rated)" in c.get(f"/s/{session}").text
            assert c.post(f"/s/{session}/rate", data={"item": item, **SCORES}).status_code == 409
    finally:
        server.stop()
    assert len(stored(study_dir)) == len(SCORES)
    conn = sqlite3.connect(study_dir / db.DB_FILE)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


@web
def test_concurrent_submissions_lose_nothing(study_dir: Path) -> None:
    n_threads, per_thread = 20, 10
    server = Server(study_dir, free_port())
    errors: list[str] = []
    try:
        with httpx.Client(base_url=server.url, follow_redirects=True) as c:
            sessions = [start_session(c, f"r{k:02d}") for k in range(n_threads)]
        study = load_study(study_dir)
        barrier = threading.Barrier(n_threads)

        def rate_all(k: int) -> None:
            items = study.assignment(f"r{k:02d}")[:per_thread]
            with httpx.Client(base_url=server.url, timeout=60) as tc:
                barrier.wait()
                for item in items:
                    response = tc.post(f"/s/{sessions[k]}/rate", data={"item": item.id, **SCORES},
                                       follow_redirects=False)
                    if response.status_code != 303:
                        errors.append(f"{k}: {response.status_code}")

        threads = [threading.Thread(target=rate_all, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        server.stop()
    assert errors == []
    rows = stored(study_dir)
    assert len(rows) == n_threads * per_thread * len(SCORES)
    assert len({(r.rater_id, r.item_id) for r in rows}) == n_threads * per_thread


# --- analyze -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def effect_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 clips x systems gt/good/bad/same rated by 14 raters: good = bad + 1 point; same is drawn
    like bad but independently; one rater fails both attention checks."""
    root = tmp_path_factory.mktemp("mos_effect")
    clip = render_clip("dance", seed=1, duration=1.0, size=32, fps=10, sample_rate=16000)
    source = root / "source.mp4"
    write_media(source, clip.frames, clip.audio, 10, 16000)
    systems = {}
    for name in ("gt", "good", "bad", "same"):
        folder = root / name
        folder.mkdir()
        for i in range(12):
            os.link(source, folder / f"c{i:02d}.mp4")
        systems[name] = folder
    study = create_study(root / "study", systems, PRESETS["a2v"], attention_checks=2, seed=3)
    rng = np.random.default_rng(0)
    conn = db.connect(study.db_path)
    for k in range(14):
        rater = f"rater{k:02d}"
        db.create_rater(conn, rater, anonymous=False)
        base = {c: int(rng.integers(1, 5)) for c in study.clips}
        for item in study.assignment(rater):
            if item.is_attention:
                score = 5 if k == 0 else 1
            elif item.system == "good":
                score = min(5, base[item.clip] + 1)
            elif item.system == "gt":
                score = 5
            else:
                score = int(np.clip(base[item.clip] + rng.integers(-1, 2), 1, 5))
            db.submit(conn, rater, item.id, {"video_quality": score, "temporal_alignment": score})
    conn.close()
    return study.root


def test_analyze_finds_a_one_point_effect_and_no_false_one(effect_study: Path) -> None:
    analysis = analyze_study(effect_study)
    tests = {(t.question, t.system_a, t.system_b): t for t in analysis.tests}
    good_bad = tests[("video_quality", "good", "bad")]
    assert good_bad.n == 14 * 12 and good_bad.p_adjusted < 0.05 and good_bad.significant
    assert 0.6 < good_bad.mean_diff < 1.2
    bad_same = tests[("video_quality", "bad", "same")]
    assert bad_same.p_value > 0.05 and not bad_same.significant
    assert good_bad.p_adjusted >= good_bad.p_value  # Holm never lowers a p-value
    stats = {(s.question, s.system): s for s in analysis.stats}
    gt = stats[("video_quality", "gt")]
    assert (gt.n, gt.mean, gt.median, gt.iqr, gt.minimum, gt.maximum) == (168, 5.0, 5.0, 0.0, 5.0, 5.0)
    good = stats[("video_quality", "good")]
    assert good.ci_lo < good.mean < good.ci_hi and good.q1 <= good.median <= good.q3
    assert analysis.attention["rater00"].failed == 2 and analysis.attention["rater01"].failed == 0
    assert analysis.excluded_raters == []


def test_analyze_corrections_and_exclusion(effect_study: Path) -> None:
    none = {(t.question, t.system_a, t.system_b): t for t in analyze_study(effect_study, "none").tests}
    bonf = {(t.question, t.system_a, t.system_b): t for t in analyze_study(effect_study, "bonferroni").tests}
    key = ("temporal_alignment", "bad", "same")
    assert none[key].p_adjusted == none[key].p_value
    assert bonf[key].p_adjusted == pytest.approx(min(1.0, 6 * none[key].p_value))
    excluded = analyze_study(effect_study, exclude_failed_attention=True)
    assert excluded.excluded_raters == ["rater00"] and "rater00" not in excluded.included_raters
    assert {(s.system, s.n) for s in excluded.stats if s.question == "video_quality"} == {
        (name, 13 * 12) for name in ("gt", "good", "bad", "same")}


def test_analyze_writes_reports_csv_and_box_plots(effect_study: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "analysis"
    assert cli_main(["mos", "analyze", str(effect_study), "--out", str(out), "--exclude-failed-attention"]) == 0
    assert "raters failing attention checks: rater00 (excluded)" in capsys.readouterr().out
    assert (out / "boxplots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "ratings.csv").read_text().splitlines()
    assert lines[0].startswith("rater_id,anonymous,item_id,clip,system") and len(lines) == 1 + 14 * 50 * 2
    markdown = (out / "report.md").read_text()
    assert "good vs bad" in markdown and "![Box plots](boxplots.png)" in markdown
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Wilcoxon" in html
    analysis = analyze_study(effect_study)
    assert set(write_reports(analysis, tmp_path / "again")) == {"ratings_csv", "stats_csv", "boxplots", "markdown",
                                                                 "html"}


def test_analyze_without_ratings_is_a_user_error(study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["mos", "analyze", str(study_dir)]) == 2
    assert "no ratings yet" in capsys.readouterr().err
