"""The ratings database: SQLite (standard library) in WAL mode, one short transaction per write.

Durability and concurrency: every connection sets ``busy_timeout`` (writers wait for each other
instead of failing) and ``synchronous=FULL``; a submission is committed before the server
answers, so a rating the rater saw accepted survives ``kill -9`` of the server. All SQL takes
values as parameters only.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cmmd.errors import CmmdError

DB_FILE = "ratings.sqlite"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    rater_id   TEXT PRIMARY KEY,
    session    TEXT NOT NULL UNIQUE,
    anonymous  INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    rater_id     TEXT NOT NULL REFERENCES raters(rater_id),
    item_id      TEXT NOT NULL,
    question     TEXT NOT NULL,
    score        INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    submitted_at REAL NOT NULL,
    PRIMARY KEY (rater_id, item_id, question)
);
"""


class RaterExists(CmmdError):
    """A new session asked for a rater id that already has one."""


@dataclass(frozen=True)
class Rater:
    """A rater: the id used in the analysis, the secret session token of their link and cookie."""

    rater_id: str
    session: str
    anonymous: bool
    created_at: float


@dataclass(frozen=True)
class Rating:
    """One stored score."""

    rater_id: str
    item_id: str
    question: str
    score: int
    submitted_at: float


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database for one request or job (autocommit mode; writes use ``transaction``)."""
    if not Path(path).is_file():
        raise CmmdError(f"{path}: ratings database is missing")
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def init_db(path: str | Path) -> None:
    """Create the database file with its tables and switch it to WAL mode (a persistent setting)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken up front,
    so two writers never deadlock upgrading read locks."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_rater(conn: sqlite3.Connection, rater_id: str, anonymous: bool) -> Rater:
    """Register ``rater_id`` with a fresh secret session token; ``RaterExists`` if taken."""
    rater = Rater(rater_id, secrets.token_urlsafe(18), anonymous, time.time())
    try:
        with transaction(conn):
            conn.execute("INSERT INTO raters (rater_id, session, anonymous, created_at) VALUES (?, ?, ?, ?)",
                         (rater.rater_id, rater.session, int(rater.anonymous), rater.created_at))
    except sqlite3.IntegrityError:
        raise RaterExists(f"rater id {rater_id!r} is already taken") from None
    return rater


def rater_by_session(conn: sqlite3.Connection, session: str) -> Rater | None:
    """The rater whose session token is ``session``, if any."""
    row = conn.execute("SELECT rater_id, session, anonymous, created_at FROM raters WHERE session = ?",
                       (session,)).fetchone()
    return None if row is None else Rater(row[0], row[1], bool(row[2]), row[3])


def raters(conn: sqlite3.Connection) -> list[Rater]:
    """All raters in order of arrival."""
    rows = conn.execute("SELECT rater_id, session, anonymous, created_at FROM raters ORDER BY created_at, rater_id")
    return [Rater(r[0], r[1], bool(r[2]), r[3]) for r in rows]


def rated_items(conn: sqlite3.Connection, rater_id: str) -> set[str]:
    """Ids of the items ``rater_id`` has submitted."""
    rows = conn.execute("SELECT DISTINCT item_id FROM ratings WHERE rater_id = ?", (rater_id,))
    return {r[0] for r in rows}


def submit(conn: sqlite3.Connection, rater_id: str, item_id: str, scores: Mapping[str, int]) -> bool:
    """Store all of one item's scores atomically; ``False`` (and nothing written) if the rater has
    already rated the item: the first submission stands."""
    now = time.time()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM ratings WHERE rater_id = ? AND item_id = ? LIMIT 1",
                        (rater_id, item_id)).fetchone():
            return False
        conn.executemany(
            "INSERT INTO ratings (rater_id, item_id, question, score, submitted_at) VALUES (?, ?, ?, ?, ?)",
            [(rater_id, item_id, question, int(score), now) for question, score in scores.items()],
        )
    return True


def ratings(conn: sqlite3.Connection, rater_id: str | None = None) -> list[Rating]:
    """Stored scores in submission order, of one rater or of all."""
    sql = "SELECT rater_id, item_id, question, score, submitted_at FROM ratings"
    params: tuple[str, ...] = ()
    if rater_id is not None:
        sql += " WHERE rater_id = ?"
        params = (rater_id,)
    rows = conn.execute(sql + " ORDER BY submitted_at, rater_id, item_id, question", params)
    return [Rating(*r) for r in rows]
