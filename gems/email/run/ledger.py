"""The send ledger: one SQLite row per message key and destination, so re-running a job never
sends twice.

Each message is recorded as ``sending`` just before it goes to the server and as ``sent`` /
``partial`` (accepted) or ``failed`` (refused, or never reached the server) right after. A row
stays ``sending`` only when the message may have reached the server: the run was killed while
sending it, or the connection was lost after its content was sent (``maybe_delivered``); or
when the run stopped before the recorded message started (its Message-ID was never used). A
re-run with the same job and run key skips what was accepted and sends the rest; a message
that may have been delivered is sent again *with the same Message-ID*, so mail clients that
de-duplicate by it (Gmail does) show it once. Every other message gets a new Message-ID.

An entry counts only for its **destination**: the fabric, connection, host, port and sender
the job sends through (:meth:`fabric.model.Fabric.destination`; for the embedded server, its
outbox). Trying a job on the embedded local server never marks the real run's messages as sent.

Writes are grouped into transactions (one commit costs more than building a message): the
sender records a batch of messages as ``sending`` in one transaction before any of them goes out
(:meth:`SendLedger.begin_many`), and outcomes are committed together at the end of the event
loop's current step (:meth:`SendLedger.finish`), so an outcome is on disk within moments of the
server's reply, as before, at a fraction of the commits.

SQLite in WAL mode with a busy timeout lets several processes (Spark Python workers on one
machine) share the file. On a cluster, point ``ledger.path`` at storage every executor sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from connections.errors import ConfigError

__all__ = ["SendLedger", "PriorSend", "DONE_STATUSES"]

log = logging.getLogger("mailgem.gems")

DONE_STATUSES = ("sent", "partial")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    message_key TEXT NOT NULL,
    recipients_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    maybe_delivered INTEGER NOT NULL DEFAULT 0,
    reply_code INTEGER,
    message_id TEXT,
    connection TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    first_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job, run_key, destination, message_key, recipients_hash)
)"""
_KEY = "job=? AND run_key=? AND destination=? AND message_key=? AND recipients_hash=?"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class PriorSend:
    """What an earlier run recorded for one message."""

    status: str
    message_id: str | None
    maybe_delivered: bool

    @property
    def done(self) -> bool:
        """The server accepted it (for some or all recipients)."""
        return self.status in DONE_STATUSES

    @property
    def possibly_delivered(self) -> bool:
        """The server may hold it: a resend must keep its Message-ID."""
        return self.status == "sending" or self.maybe_delivered


class SendLedger:
    """A ledger in the SQLite file ``path`` for one job, run key and destination.

    Columns: job, run_key, destination (:meth:`fabric.model.Fabric.destination`), message_key,
    recipients_hash, status (``sending`` | ``sent`` | ``partial`` | ``failed`` | ``deferred``),
    maybe_delivered (0/1), reply_code, message_id, connection (the one that carried it: the
    fallback's when used), attempts, error, first_at, updated_at (UTC ISO 8601).

    Raises:
        ConfigError: the file holds a ledger from an earlier mailgem without destinations.
    """

    def __init__(self, path: str | Path, job: str, run_key: str, destination: str) -> None:
        self.path = Path(path)
        self.job = job
        self.run_key = run_key
        self.destination = destination
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._finishes: list[tuple[Any, ...]] = []  # outcomes not yet committed
        self._flush_scheduled = False
        self.failure: Exception | None = None  # a group commit that failed (raised by check())
        db = self._db()
        db.execute(_SCHEMA)
        if "destination" not in {row[1] for row in db.execute("PRAGMA table_info(sends)")}:
            raise ConfigError(
                f"ledger {self.path} was written by an earlier mailgem that did not record where messages "
                "went, so its entries cannot be matched to a destination: move the file aside to start a new "
                "ledger (what it recorded as sent would then be sent again), or point ledger.path elsewhere")

    def __repr__(self) -> str:
        return f"SendLedger(path={str(self.path)!r}, job={self.job!r}, run_key={self.run_key!r}, destination={self.destination!r})"

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

    def _key(self, message_key: str, recipients_hash: str) -> tuple[str, ...]:
        return self.job, self.run_key, self.destination, message_key, recipients_hash

    def prior(self, message_key: str, recipients_hash: str) -> PriorSend | None:
        """What an earlier run recorded for this message at this destination, or ``None``."""
        row = self._db().execute(f"SELECT status, message_id, maybe_delivered FROM sends WHERE {_KEY}",
                                 self._key(message_key, recipients_hash)).fetchone()
        return PriorSend(row[0], row[1], bool(row[2])) if row else None

    def elsewhere(self) -> list[str]:
        """Other destinations this job and run key sent to (they do not count here)."""
        rows = self._db().execute(
            "SELECT DISTINCT destination FROM sends WHERE job=? AND run_key=? AND destination<>? AND status IN (?, ?)",
            (self.job, self.run_key, self.destination, *DONE_STATUSES)).fetchall()
        return sorted(r[0] for r in rows)

    def begin_many(self, items: Sequence[tuple[str, str, str | None]]) -> None:
        """Record ``(message_key, recipients_hash, message_id)`` for each message about to be
        sent, and every outcome not yet committed, in one transaction; on disk when it returns.

        Raises:
            sqlite3.Error: the ledger could not be written (nothing of this batch may be sent).
        """
        now = _now()
        self._transaction(
            "INSERT INTO sends (job, run_key, destination, message_key, recipients_hash, status, message_id, attempts,"
            " first_at, updated_at) VALUES (?, ?, ?, ?, ?, 'sending', ?, 0, ?, ?)"
            " ON CONFLICT (job, run_key, destination, message_key, recipients_hash) DO UPDATE SET status='sending',"
            " message_id=excluded.message_id, updated_at=excluded.updated_at",
            [(*self._key(key, rhash), message_id, now, now) for key, rhash, message_id in items])

    def finish(self, message_key: str, recipients_hash: str, *, status: str, attempts: int,
               reply_code: int | None, message_id: str | None, error: str | None, connection: str | None = None,
               maybe_delivered: bool = False) -> None:
        """Record the outcome. A message that failed but may have reached the server stays
        ``sending`` (see the module docstring); ``maybe_delivered`` is never cleared.

        Inside an event loop the outcome is committed with the others of the loop's current step
        (a failed commit is kept in :attr:`failure`, see :meth:`check`); outside one, at once.
        """
        if status == "failed" and maybe_delivered:
            status = "sending"
        self._finishes.append((status, attempts, reply_code, message_id, error, connection, int(maybe_delivered),
                               _now(), *self._key(message_key, recipients_hash)))
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - kept for the sender, which stops the run
            self.failure = self.failure or exc

    def flush(self) -> None:
        """Commit every outcome recorded so far.

        Raises:
            sqlite3.Error: the ledger could not be written.
        """
        if self._finishes:
            self._transaction(None, [])

    def check(self) -> None:
        """Raise the failure of an earlier group commit, if any (the run must stop: without its
        ledger, a re-run could send twice)."""
        if self.failure is not None:
            raise self.failure

    def _transaction(self, insert: str | None, rows: list[tuple[Any, ...]]) -> None:
        """One transaction: ``insert`` for ``rows``, and the outcomes recorded so far."""
        finishes, self._finishes = self._finishes, []
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if finishes:
                    db.executemany(
                        "UPDATE sends SET status=?, attempts=attempts+?, reply_code=?, message_id=COALESCE(?, message_id),"
                        " error=?, connection=COALESCE(?, connection), maybe_delivered=MAX(maybe_delivered, ?),"
                        f" updated_at=? WHERE {_KEY}", finishes)
                if insert is not None and rows:
                    db.executemany(insert, rows)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except BaseException:
            self._finishes = finishes + self._finishes  # not written: kept for the next try
            raise

    def rows(self) -> list[dict[str, object]]:
        """Every row of this job, run key and destination (for reports and tests)."""
        self.flush()
        cur = self._db().execute("SELECT * FROM sends WHERE job=? AND run_key=? AND destination=? ORDER BY first_at",
                                 (self.job, self.run_key, self.destination))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        """Commit the outcomes recorded so far (the sender already did, unless it failed), then close."""
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error("ledger %s: %d outcome(s) could not be recorded (%s); those messages stay 'sending' and a "
                      "re-run sends them again with the same Message-ID", self.path, len(self._finishes), exc)
        finally:
            db = getattr(self._local, "db", None)
            if db is not None:
                db.close()
                self._local.db = None
