"""The rating web app (Starlette): raters rate their assigned items one at a time.

Routes::

    GET  /                         instructions and the start form (resumes a session from its cookie)
    POST /start                    rater=ID (optional) -> a session; 303 to the rater's page
    GET  /s/{session}              the next unrated item, its questions and the progress
    GET  /s/{session}/media/{id}   an item's media, only for items in that rater's assignment
    POST /s/{session}/rate         item=ID and one 1-5 score per question; 303 back to the page
    GET  /admin                    progress per rater (needs the admin token)
    GET  /static/mos.css|mos.js    the page's only assets

The session token (secret, random) in the URL and cookie identifies a rater; the rater id is only
a label for the analysis. Responses never include system names, clip names, paths or another
rater's data. A second submission for an item already rated is refused with 409: the first one
stands. Database work runs in Starlette's thread pool with one SQLite connection per request.
"""

from __future__ import annotations

import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cmmd.errors import CmmdError
from cmmd.apps.mos import db, pages
from cmmd.apps.mos.questions import SCALE_MAX, SCALE_MIN
from cmmd.apps.mos.study import ATTENTION_FAIL_SCORE, BROWSER_CONTAINERS, Item, Study, attention_results, load_study

SESSION_COOKIE = "mos_session"
ADMIN_COOKIE = "mos_admin"
SESSION_MAX_AGE_S = 180 * 24 * 3600
MAX_BODY_BYTES = 16_384
_RATER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SCORE = re.compile(rf"^[{SCALE_MIN}-{SCALE_MAX}]$")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _HttpError(Exception):
    """An error page to answer with: status, title, text."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


def create_app(study_dir: str | Path, admin_token: str) -> Starlette:
    """The app for the study in ``study_dir``; ``/admin`` accepts ``admin_token``."""
    if len(admin_token) < 8:
        raise CmmdError("the admin token must be at least 8 characters")
    study = load_study(study_dir)
    handlers = _Handlers(study, admin_token)
    return Starlette(routes=[
        Route("/", handlers.index, methods=["GET"]),
        Route("/start", handlers.start, methods=["POST"]),
        Route("/s/{session}", handlers.rater_page, methods=["GET"]),
        Route("/s/{session}/media/{item_id}", handlers.media, methods=["GET", "HEAD"]),
        Route("/s/{session}/rate", handlers.rate, methods=["POST"]),
        Route("/admin", handlers.admin, methods=["GET"]),
        Route("/static/mos.css", lambda request: _asset(pages.CSS, "text/css"), methods=["GET"]),
        Route("/static/mos.js", lambda request: _asset(pages.JS, "text/javascript"), methods=["GET"]),
    ])


def _html(body: str, status: int = 200) -> HTMLResponse:
    """An HTML page that no cache keeps (it shows progress and the personal link)."""
    return HTMLResponse(body, status_code=status, headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})


def _error(exc: _HttpError) -> HTMLResponse:
    """The error page for ``exc``, with its status code."""
    return _html(pages.message_page(exc.title, exc.text, ("/", "Back to the start")), exc.status)


def _asset(text: str, media_type: str) -> Response:
    """The stylesheet or the script."""
    return Response(text, media_type=media_type, headers={**_SECURITY_HEADERS, "Cache-Control": "max-age=3600"})


def _redirect(url: str) -> RedirectResponse:
    """303 See Other: after a POST the browser GETs ``url`` (a reload never resubmits)."""
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


async def _form(request: Request) -> dict[str, list[str]]:
    """Parse a small ``application/x-www-form-urlencoded`` body (no multipart dependency)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _HttpError(415, "Unsupported request", "Send the form as application/x-www-form-urlencoded.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _HttpError(413, "Request too large", f"Form bodies are limited to {MAX_BODY_BYTES} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _HttpError(413, "Request too large", f"Form bodies are limited to {MAX_BODY_BYTES} bytes.")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise _HttpError(400, "Bad request", "The form could not be read.") from None


class _Handlers:
    """Route handlers sharing the loaded study; each opens its own database connection."""

    def __init__(self, study: Study, admin_token: str) -> None:
        self.study = study
        self.admin_token = admin_token
        self.items = study.items_by_id
        self._assignments: dict[str, tuple[list[Item], set[str]]] = {}

    def _assignment(self, rater_id: str) -> tuple[list[Item], set[str]]:
        """A rater's items in order and their ids, computed once per rater (it is deterministic)."""
        if rater_id not in self._assignments:
            items = self.study.assignment(rater_id)
            self._assignments[rater_id] = (items, {item.id for item in items})
        return self._assignments[rater_id]

    def _db(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` on a connection of its own (closed afterwards)."""
        conn = db.connect(self.study.db_path)
        try:
            return work(conn)
        finally:
            conn.close()

    def _rater(self, session: str) -> db.Rater:
        """The rater of a session token; 404 page for an unknown one."""
        rater = self._db(lambda conn: db.rater_by_session(conn, session)) if session else None
        if rater is None:
            raise _HttpError(404, "Unknown link", "This personal link is not valid. Start a new session.")
        return rater

    async def index(self, request: Request) -> Response:
        """Back to the session of this browser's cookie, else the welcome page."""
        session = request.cookies.get(SESSION_COOKIE, "")
        if session and await run_in_threadpool(
                self._db, lambda conn: db.rater_by_session(conn, session)) is not None:
            return _redirect(f"/s/{session}")
        return _html(pages.welcome_page(self.study.questions))

    async def start(self, request: Request) -> Response:
        """Create a session for the given (or an anonymous) rater id."""
        try:
            form = await _form(request)
        except _HttpError as exc:
            return _error(exc)
        values = form.get("rater", [""])
        rater_id = values[0].strip() if len(values) == 1 else ""
        if len(values) > 1 or (rater_id and not _RATER_ID.match(rater_id)):
            return _html(pages.welcome_page(self.study.questions, "A rater id is 1-64 letters, digits, '_', '.' "
                                                                 "or '-'."), 422)
        try:
            rater = await run_in_threadpool(self._db, lambda conn: self._new_rater(conn, rater_id))
        except db.RaterExists:
            return _html(pages.welcome_page(
                self.study.questions, f"The rater id {rater_id!r} is already in use. If it is yours, open your "
                "personal link (or use the browser you started with); otherwise choose another id."), 409)
        response = _redirect(f"/s/{rater.session}")
        _set_session_cookie(response, rater.session)
        return response

    @staticmethod
    def _new_rater(conn: sqlite3.Connection, rater_id: str) -> db.Rater:
        """Register ``rater_id``, or a fresh ``anon-<hex>`` id when it is empty."""
        if rater_id:
            return db.create_rater(conn, rater_id, anonymous=False)
        while True:
            try:
                return db.create_rater(conn, f"anon-{secrets.token_hex(4)}", anonymous=True)
            except db.RaterExists:
                continue

    def rater_page(self, request: Request) -> Response:
        """The next unrated item of the session, or the thank-you page."""
        session = request.path_params["session"]
        try:
            rater = self._rater(session)
        except _HttpError as exc:
            return _error(exc)
        items, _ = self._assignment(rater.rater_id)
        rated = self._db(lambda conn: db.rated_items(conn, rater.rater_id))
        pending = [item for item in items if item.id not in rated]
        if pending:
            body = pages.rating_page(self.study.questions, rater.rater_id, session, pending[0].id,
                                     len(items) - len(pending), len(items), str(request.url_for("rater_page",
                                                                                                session=session)))
        else:
            body = pages.finished_page(rater.rater_id, len(items))
        response = _html(body)
        _set_session_cookie(response, session)
        return response

    def media(self, request: Request) -> Response:
        """An item's media file (with range requests), for items of this rater's assignment only."""
        try:
            rater = self._rater(request.path_params["session"])
            item = self.items.get(request.path_params["item_id"])
            if item is None or item.id not in self._assignment(rater.rater_id)[1]:
                raise _HttpError(404, "Not found", "No such clip in your session.")
        except _HttpError as exc:
            return _error(exc)
        path = self.study.media_path(item)
        # Last-Modified and the default ETag would carry the source file's mtime, which can tell
        # systems apart; the item id is a stable ETag that says nothing.
        response = FileResponse(path, media_type=BROWSER_CONTAINERS[path.suffix], stat_result=path.stat(),
                                headers={**_SECURITY_HEADERS, "Cache-Control": "private, max-age=3600",
                                         "ETag": f'"{item.id}"'})
        del response.headers["last-modified"]
        return response

    async def rate(self, request: Request) -> Response:
        """Store one item's scores (see ``_rate``)."""
        try:
            form = await _form(request)
            return await run_in_threadpool(self._rate, request.path_params["session"], form)
        except _HttpError as exc:
            return _error(exc)

    def _rate(self, session: str, form: dict[str, list[str]]) -> Response:
        """Validate and store one item's scores; 303 back to the rater's page once committed."""
        rater = self._rater(session)
        question_ids = [q.id for q in self.study.questions]
        problems = [f"unknown field {name!r}" for name in form if name != "item" and name not in question_ids]
        problems += [f"field {name!r} given {len(v)} times" for name, v in form.items() if len(v) > 1]
        item_id = form.get("item", [""])[0]
        scores: dict[str, int] = {}
        for qid in question_ids:
            value = form.get(qid, [""])[0]
            if not _SCORE.match(value):
                problems.append(f"{qid}: needs a whole number from {SCALE_MIN} to {SCALE_MAX}, got {value[:20]!r}")
            else:
                scores[qid] = int(value)
        if not item_id:
            problems.append("missing field 'item'")
        if problems:
            raise _HttpError(422, "Rating not saved", "; ".join(problems))
        item = self.items.get(item_id)
        if item is None or item.id not in self._assignment(rater.rater_id)[1]:
            raise _HttpError(403, "Rating not saved", "That clip is not part of your session.")
        if not self._db(lambda conn: db.submit(conn, rater.rater_id, item_id, scores)):
            raise _HttpError(409, "Already rated", "You have already rated this clip; your first rating stands.")
        return _redirect(f"/s/{session}")

    def admin(self, request: Request) -> Response:
        """Progress per rater, behind the admin token."""
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.admin_token.encode()):
            # Trade the token in the URL (history, screen shares) for a cookie scoped to /admin.
            response = _redirect("/admin")
            response.set_cookie(ADMIN_COOKIE, self.admin_token, httponly=True, samesite="strict", path="/admin")
            return response
        cookie = request.cookies.get(ADMIN_COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), self.admin_token.encode()):
            return _html(pages.message_page("Admin token needed", "Open the admin link printed when the server "
                                            "started (/admin?token=...)."), 401)
        raters, ratings = self._db(lambda conn: (db.raters(conn), db.ratings(conn)))
        attention = attention_results(self.study, ratings)
        rated: dict[str, set[str]] = {}
        last: dict[str, float] = {}
        for r in ratings:
            rated.setdefault(r.rater_id, set()).add(r.item_id)
            last[r.rater_id] = max(last.get(r.rater_id, 0.0), r.submitted_at)
        base = str(request.base_url).rstrip("/")
        rows = [
            pages.AdminRow(
                r.rater_id, r.anonymous, len(rated.get(r.rater_id, ())), len(self._assignment(r.rater_id)[0]),
                f"{attention[r.rater_id].failed} of {attention[r.rater_id].checks}" if r.rater_id in attention else "-",
                _when(r.created_at), _when(last[r.rater_id]) if r.rater_id in last else "-", f"{base}/s/{r.session}",
            )
            for r in raters
        ]
        note = (f"An attention check is failed when its mismatched clip gets {ATTENTION_FAIL_SCORE} or more on the "
                "attention question."
                if any(item.is_attention for item in self.study.items) else "This study has no attention checks.")
        return _html(pages.admin_page(rows, sum(len(v) for v in rated.values()), note))


def _set_session_cookie(response: Response, session: str) -> None:
    """Remember the session in this browser, so a closed tab resumes from ``/``."""
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="lax", path="/")


def _when(timestamp: float) -> str:
    """Local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
