"""The send ledger: one SQLite row per message key, so re-running a job never sends twice.

Each message is recorded as ``sending`` just before it goes to the server and as ``sent`` /
``partial`` (accepted) or ``failed`` right after. A re-run with the same job and run key skips
what was accepted and sends the rest, including messages left ``sending`` by a crash: that is
the one window where a duplicate is possible (the server accepted, the reply was lost). The
Message-ID is stable per key, so such a duplicate carries the same Message-ID.

SQLite in WAL mode with a busy timeout lets several processes (Spark Python workers on one
machine) share the file. On a cluster, point ``ledger.path`` at storage every executor sees.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

__all__ = ["SendLedger", "DONE_STATUSES"]

DONE_STATUSES = ("sent", "partial")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    message_key TEXT NOT NULL,
    recipients_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    reply_code INTEGER,
    message_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    first_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job, run_key, message_key, recipients_hash)
)"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class SendLedger:
    """A ledger in the SQLite file ``path`` for one job and run key.

    Columns: job, run_key, message_key, recipients_hash, status (``sending`` | ``sent`` |
    ``partial`` | ``failed`` | ``deferred``), reply_code, message_id, attempts, error,
    first_at, updated_at (UTC ISO 8601).
    """

    def __init__(self, path: str | Path, job: str, run_key: str) -> None:
        self.path = Path(path)
        self.job = job
        self.run_key = run_key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"SendLedger(path={str(self.path)!r}, job={self.job!r}, run_key={self.run_key!r})"

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # waits up to 60 s for a lock
            # WAL is a property of the file: set it once. Switching takes a lock that the busy
            # timeout does not cover, so concurrent first opens (Spark workers) retry briefly.
            for attempt in Retrying(retry=retry_if_exception_type(sqlite3.OperationalError),
                                    stop=stop_after_attempt(50), wait=wait_random(0.01, 0.1), reraise=True):
                with attempt:
                    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def done(self, message_key: str, recipients_hash: str) -> tuple[str, str | None] | None:
        """``(status, message_id)`` if this message was already accepted in this run, else ``None``."""
        row = self._db().execute(
            "SELECT status, message_id FROM sends WHERE job=? AND run_key=? AND message_key=? AND recipients_hash=?",
            (self.job, self.run_key, message_key, recipients_hash)).fetchone()
        return (row[0], row[1]) if row and row[0] in DONE_STATUSES else None

    def begin(self, message_key: str, recipients_hash: str, message_id: str | None) -> None:
        """Record that the message is about to be sent (durably, before the first byte)."""
        now = _now()
        self._db().execute(
            "INSERT INTO sends (job, run_key, message_key, recipients_hash, status, message_id, attempts, first_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'sending', ?, 0, ?, ?)"
            " ON CONFLICT (job, run_key, message_key, recipients_hash) DO UPDATE SET status='sending', updated_at=excluded.updated_at",
            (self.job, self.run_key, message_key, recipients_hash, message_id, now, now))

    def finish(self, message_key: str, recipients_hash: str, *, status: str, attempts: int,
               reply_code: int | None, message_id: str | None, error: str | None) -> None:
        """Record the outcome."""
        self._db().execute(
            "UPDATE sends SET status=?, attempts=attempts+?, reply_code=?, message_id=COALESCE(?, message_id), error=?,"
            " updated_at=? WHERE job=? AND run_key=? AND message_key=? AND recipients_hash=?",
            (status, attempts, reply_code, message_id, error, _now(), self.job, self.run_key, message_key, recipients_hash))

    def rows(self) -> list[dict[str, object]]:
        """Every row of this job and run key (for reports and tests)."""
        cur = self._db().execute("SELECT * FROM sends WHERE job=? AND run_key=? ORDER BY first_at", (self.job, self.run_key))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
