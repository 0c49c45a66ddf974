"""The send ledger: one row per message key and destination, so re-running a job never sends
twice, and runs racing on the same keys never send one message twice.

Each message is *claimed* (recorded ``sending``, with its owner) just before it goes to the
server, and recorded ``sent`` / ``partial`` (accepted) or ``failed`` (refused, or never reached
the server) right after. A row stays ``sending`` only when the message may have reached the
server: the run was killed while sending it, or the connection was lost after its content was
sent (``maybe_delivered``); or when the run stopped before the recorded message started (its
Message-ID was never used). A re-run with the same job and run key skips what was accepted and
sends the rest; a message that may have been delivered is sent again *with the same
Message-ID*, so mail clients that de-duplicate by it (Gmail does) show it once. Every other
message gets a new Message-ID.

**Claims.** The claim is one statement: insert the row, or take over an existing one, only when
nothing accepted it yet and no live run holds it (``INSERT … ON CONFLICT … DO UPDATE … WHERE …
RETURNING``), so of several processes racing on one key exactly one gets it; the database's
unique key decides. A run that holds claims is listed in ``ledger_owners`` with a lease
(``alive_until``, by the database's clock) that it renews every ``lease_s / 3`` seconds from
a thread and drops when it closes. A killed run stops renewing: ``lease_s`` later its
``sending`` rows may be claimed again. A message another live run holds is not sent: the run
waits for that run's outcome (at most ``3 × lease_s`` seconds) and reports
``already_sent`` when it was accepted, or sends it when it was not.

A run's lease is :mod:`.lease`'s: a message starts only while it holds.

An entry counts only for its **destination**: the fabric, connection, host, port and sender
the job sends through (:meth:`mailgem.fabric.model.Fabric.destination`; for the embedded server, its
outbox). Trying a job on the embedded local server never marks the real run's messages as sent.

Writes are grouped into transactions (one commit costs more than building a message): the
sender claims a batch of messages in one transaction before any of them goes out
(:meth:`SendLedger.begin_many`), and outcomes are committed together at most
``OUTCOME_DELAY_S`` (20 ms) after the server's reply, or with the next claim
(:meth:`SendLedger.finish`). On PostgreSQL each transaction goes in libpq's pipeline mode.
Reads are grouped too: a first run looks nothing up (the claim decides), and a re-run looks its
messages up a chunk at a time (:meth:`SendLedger.lookup`).

Inside a run the claims, the outcome commits and the look-ups go through the ledger's own thread
and connection (:mod:`.ledger_thread`), ahead of the messages that need them: a round trip to
the database never stops the event loop that drives the SMTP sessions.

Where: ``ledger: {path: FILE}`` is a SQLite file (WAL mode, busy timeout) for the processes of
one machine; ``ledger: {url: postgresql://user@host/db, secret: NAME}`` a PostgreSQL database
every executor of a cluster reaches (:mod:`.ledger_db`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lease import LeaseLapsedError, OwnerLease, _now
from .ledger_db import LedgerDamagedError, LedgerTarget
from .ledger_sql import KEY, SCHEMA
from .ledger_thread import LedgerThread
from .prior import PriorSend
from .status import FINAL, DeliveryStatus

__all__ = ["SendLedger", "PriorSend", "LedgerTarget", "LeaseLapsedError", "LedgerDamagedError", "DONE_STATUSES"]

log = logging.getLogger("mailgem.gems")

# FINAL (accepted: a re-run does not send these again) in a fixed order, as plain strs for SQL.
DONE_STATUSES = tuple(status.value for status in DeliveryStatus if status in FINAL)
_DONE_SQL = "(" + ", ".join(f"'{status}'" for status in DONE_STATUSES) + ")"
_SENDING = DeliveryStatus.SENDING.value
# Outcomes wait at most this long (seconds) to be committed together; a claim commits them too.
# Longer means fewer commits (each a round trip to PostgreSQL) and a wider window in which a
# killed run's accepted messages still read `sending` (a re-run resends them, same Message-ID).
OUTCOME_DELAY_S = 0.02
# Rows of one look-up: what lookup() returns, by (message key, recipients hash).
Found = dict[tuple[str, str], tuple[Any, ...]]


class SendLedger(OwnerLease):
    """The ledger at ``target`` (a :class:`LedgerTarget`, or a SQLite file path) for one job, run
    key and destination; each instance is one *owner* of claims.

    Table ``sends``: job, run_key, destination (:meth:`mailgem.fabric.model.Fabric.destination`),
    message_key, recipients_hash (primary key), status (``sending`` | ``sent`` | ``partial`` |
    ``failed`` | ``deferred``), maybe_delivered (0/1), reply_code, message_id, connection (the one
    that carried it: the fallback's when used), attempts, error, first_at, updated_at (UTC ISO
    8601), owner. Table ``ledger_owners``: owner, host, pid, started_at, alive_until (seconds
    since the epoch, database clock).

    Raises:
        ConfigError: the SQLite file holds a ledger from an earlier mailgem without
            destinations; the PostgreSQL database cannot be reached (the message names the URL,
            never the password); psycopg is not installed.
    """

    def __init__(self, target: LedgerTarget | str | Path, job: str, run_key: str, destination: str) -> None:
        self.target = target if isinstance(target, LedgerTarget) else LedgerTarget(path=str(target))
        self.job = job
        self.run_key = run_key
        self.destination = destination
        self.owner = secrets.token_hex(8)
        self._backend = self.target.backend()
        self._local = threading.local()
        self._finishes: list[tuple[Any, ...]] = []  # outcomes not yet committed
        self._finishes_lock = threading.Lock()  # finish() adds on the event loop, the ledger's thread takes
        self.thread = LedgerThread(self._close_db)  # the run's writes and look-ups, off the event loop
        self._flush_scheduled = False
        self._heartbeat: threading.Thread | None = None
        self._renewed_at: float | None = None  # _lease_clock() before the statement that last set the lease
        self._stop = threading.Event()
        self.failure: Exception | None = None  # a group commit or lease renewal that failed (see check())
        self._had_rows: bool | None = None  # rows for this job, run key and destination when first asked
        # use_lookup(): the message keys last looked up together, and their rows by (key, recipients hash)
        self._prefetched_keys: set[str] = set()
        self._prefetched: Found = {}
        self._backend.create(self._db(), SCHEMA)
        n = self._backend.now
        # What prior() reads of a row (s: sends, o: its owner's lease), in PriorSend's order.
        self._prior_select = (f"s.status, s.message_id, s.maybe_delivered, s.owner, o.host, o.pid, o.started_at,"
                              f" o.alive_until > {n} FROM sends s LEFT JOIN ledger_owners o ON o.owner = s.owner")
        self._claim_where = (
            f"sends.status NOT IN {_DONE_SQL}"
            # ...held by no live run (an owner without a lease row is gone: killed, or closed)
            f" AND (sends.status <> '{_SENDING}' OR sends.owner IS NULL OR NOT EXISTS (SELECT 1 FROM ledger_owners o"
            f" WHERE o.owner = sends.owner AND o.alive_until > {n}))"
            # ...and a message the server may hold goes again only with its Message-ID
            f" AND ((sends.status <> '{_SENDING}' AND sends.maybe_delivered = 0) OR sends.message_id = excluded.message_id)")

    @property
    def path(self) -> Path | None:
        """The SQLite file, for a SQLite ledger."""
        return Path(self.target.path) if self.target.path is not None else None

    def __repr__(self) -> str:
        return (f"SendLedger(target={str(self.target)!r}, job={self.job!r}, run_key={self.run_key!r}, "
                f"destination={self.destination!r})")

    def verify(self) -> None:
        """Check that the ledger's stored pages are sound (SQLite: ``PRAGMA quick_check``, about
        a second per million rows; PostgreSQL: nothing to do, see :meth:`.ledger_db.Backend.verify`).

        Only :func:`open_ledger` asks, on the driver: before Spark starts (``mailgem run``'s
        checks) and when the gem opens the run's ledger (``apply`` from Python has no other
        check; a CLI run pays twice, about a second per million rows). Opening a ledger does
        not by itself. The Spark executors open the same file again for each partition: each
        would read every page of it once more, for an answer the driver had seconds before, and
        damage that appears during the run still stops it (the statement that meets a damaged page
        fails; the sender stops on a ledger it cannot write).

        Raises:
            LedgerDamagedError: the file is damaged, or is not a SQLite database.
        """
        self._backend.verify(self._db())

    def _db(self) -> Any:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._backend.connect()
        return db

    def _key(self, message_key: str, recipients_hash: str) -> tuple[str, ...]:
        return self.job, self.run_key, self.destination, message_key, recipients_hash

    def _has_rows(self) -> bool:
        if self._had_rows is None:
            self._had_rows = self._backend.execute(
                self._db(), "SELECT 1 FROM sends WHERE job=? AND run_key=? AND destination=? LIMIT 1",
                (self.job, self.run_key, self.destination)).fetchone() is not None
        return self._had_rows

    def lookup(self, message_keys: Sequence[str]) -> Found:
        """What the ledger holds for these messages (one query; none when the run had no rows
        when first asked), for :meth:`use_lookup`. Safe in the ledger's thread (its own
        connection), ahead of the messages that need it.

        Raises:
            Backend errors: the ledger could not be read.
        """
        if not message_keys or not self._has_rows():
            return {}
        select = f"SELECT s.message_key, s.recipients_hash, {self._prior_select} WHERE s.job=? AND s.run_key=? AND s.destination=?"
        rows = self._backend.lookup(self._db(), select, (self.job, self.run_key, self.destination),
                                    list(dict.fromkeys(message_keys)))
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}

    def use_lookup(self, message_keys: Sequence[str], found: Found) -> None:
        """Answer :meth:`prior` (``live=False``) for ``message_keys`` from ``found`` (:meth:`lookup`'s
        rows for them); replaces what an earlier look-up gave."""
        self._prefetched = found
        self._prefetched_keys = set(message_keys) if self._had_rows else set()

    def prior(self, message_key: str, recipients_hash: str, *, live: bool = True) -> PriorSend | None:
        """What the ledger holds for this message at this destination, or ``None``.

        With ``live=False`` the answer may be from when this ledger was first asked: a run whose
        job, run key and destination had no rows then skips the per-message query (a round trip
        to PostgreSQL), and a message :meth:`lookup` looked up is answered from that. That is
        safe because the claim decides (:meth:`begin_many`): a message another run recorded
        meanwhile is not claimed, and is looked at again, live.
        """
        if not live:
            if not self._has_rows():
                return None
            if message_key in self._prefetched_keys:
                return self._prior(self._prefetched.get((message_key, recipients_hash)))
        return self._prior(self._backend.execute(
            self._db(),
            f"SELECT {self._prior_select} WHERE {KEY.replace('job=', 's.job=')}", self._key(message_key, recipients_hash)).fetchone())

    def _prior(self, row: tuple[Any, ...] | None) -> PriorSend | None:
        if row is None:
            return None
        status, message_id, maybe, owner, host, pid, started, alive = row
        held = status == DeliveryStatus.SENDING and owner is not None and bool(alive)
        mine = held and owner == self.owner
        holder = f"{host} pid {pid}, started {started}" if held and not mine else None
        return PriorSend(status, message_id, bool(maybe), holder, mine)

    def elsewhere(self) -> list[str]:
        """Other destinations this job and run key sent to (they do not count here)."""
        rows = self._backend.execute(
            self._db(),
            "SELECT DISTINCT destination FROM sends WHERE job=? AND run_key=? AND destination<>? AND status IN (?, ?)",
            (self.job, self.run_key, self.destination, *DONE_STATUSES)).fetchall()
        return sorted(r[0] for r in rows)

    def begin_many(self, items: Sequence[tuple[str, str, str | None]]) -> set[tuple[str, str]]:
        """Claim ``(message_key, recipients_hash, message_id)`` for each message about to be sent,
        and commit every outcome not yet committed, in one transaction; on disk when it returns.

        Returns:
            The ``(message_key, recipients_hash)`` claimed: only those may be sent. A message
            missing from it is accepted already, held by another live run, or known to the
            server under another Message-ID (:meth:`prior` says which).

        Raises:
            Backend errors (``sqlite3.Error``, ``psycopg.Error``): the ledger could not be
            written (nothing of this batch may be sent).
        """
        self._start_lease()
        seen: set[tuple[str, str]] = set()
        claims: list[tuple[str, str, str | None]] = []
        for key, rhash, message_id in items:
            if (key, rhash) not in seen:  # one row may be claimed once per statement
                seen.add((key, rhash))
                claims.append((key, rhash, message_id))
        return self._transaction(claims)

    def finish(self, message_key: str, recipients_hash: str, *, status: str, attempts: int,
               reply_code: int | None, message_id: str | None, error: str | None, connection: str | None = None,
               maybe_delivered: bool = False) -> None:
        """Record the outcome. A message that failed but may have reached the server stays
        ``sending`` (see the module docstring); ``maybe_delivered`` is never cleared.

        Inside an event loop the outcome is committed with the others that arrive within
        ``OUTCOME_DELAY_S``, or with the next claim (a failed commit is kept in :attr:`failure`,
        see :meth:`check`); outside one, at once.
        """
        if status == DeliveryStatus.FAILED and maybe_delivered:
            status = DeliveryStatus.SENDING
        # Stamped (updated_at) when committed: one clock read a transaction, not one a message.
        outcome = (str(status), attempts, reply_code, message_id, error, connection, int(maybe_delivered),
                   message_key, recipients_hash)
        with self._finishes_lock:
            self._finishes.append(outcome)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_later(OUTCOME_DELAY_S, self._flush_soon)

    def _flush_soon(self) -> None:
        """The timer's commit: queued in the ledger's thread, so the event loop goes on."""
        self._flush_scheduled = False
        self.thread.submit(self._flush_quietly)

    def _flush_quietly(self) -> None:
        try:
            self._flush_here()
        except Exception as exc:  # noqa: BLE001 - kept for the sender, which stops the run
            self.failure = self.failure or exc

    def flush(self) -> None:
        """Commit every outcome recorded so far, after the ledger thread's queued work (claims,
        commits) when it has any.

        Raises:
            Backend errors: the ledger could not be written.
        """
        self._flush_scheduled = False  # a timer left by a closed event loop must not block the next one
        if self.thread.started:
            self.thread.call(self._flush_here)
        else:
            self._flush_here()

    def _flush_here(self) -> None:
        if self._finishes:
            self._transaction(None)

    def check(self) -> None:
        """Raise the failure of an earlier group commit or lease renewal, if any (the run must
        stop: without its ledger, a re-run could send twice)."""
        if self.failure is not None:
            raise self.failure

    def _transaction(self, claims: list[tuple[str, str, str | None]] | None) -> set[tuple[str, str]]:
        """One transaction: the outcomes recorded so far, then the claim of ``claims`` (message
        key, recipients hash, Message-ID; each once) if any; returns the keys it claimed."""
        with self._finishes_lock:
            finishes, self._finishes = self._finishes, []
        b = self._backend
        claimed: set[tuple[str, str]] = set()
        try:
            db = self._db()
            try:
                with b.pipeline(db):
                    b.execute(db, b.begin)
                    if finishes:
                        # Only on rows this run still owns: a run that took one over meanwhile
                        # (this one's lease had lapsed) records its own outcome.
                        b.record_outcomes(db, finishes, (self.job, self.run_key, self.destination), self.owner, _now())
                    if claims:
                        claimed = b.claim(db, claims, (self.job, self.run_key, self.destination), self.owner,
                                          _now(), self._claim_where)
                    b.execute(db, "COMMIT")
            except BaseException:
                with contextlib.suppress(b.error):
                    b.execute(db, "ROLLBACK")
                raise
        except BaseException:
            with self._finishes_lock:
                self._finishes = finishes + self._finishes  # not written: kept for the next try
            raise
        return claimed

    def rows(self) -> list[dict[str, object]]:
        """Every row of this job, run key and destination (for reports and tests)."""
        self.flush()
        cur = self._backend.execute(
            self._db(), "SELECT * FROM sends WHERE job=? AND run_key=? AND destination=? ORDER BY first_at",
            (self.job, self.run_key, self.destination))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        """Commit the outcomes recorded so far (the sender already did, unless it failed), drop
        this run's lease (its ``sending`` rows may be claimed by a re-run at once), then close."""
        try:
            self.flush()
        except self._backend.error as exc:
            log.error("ledger %s: %d outcome(s) could not be recorded (%s); those messages stay 'sending' and a "
                      "re-run sends them again with the same Message-ID", self.target, len(self._finishes), exc)
        finally:
            self.thread.close()
            if self._heartbeat is not None:
                self._stop.set()
                self._heartbeat.join(timeout=10)
                with contextlib.suppress(self._backend.error):
                    self._backend.execute(self._db(), "DELETE FROM ledger_owners WHERE owner = ?", (self.owner,))
            self._close_db()

    def _close_db(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            with contextlib.suppress(self._backend.error):
                db.close()
            self._local.db = None
