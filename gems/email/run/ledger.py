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

**A lease that may have lapsed stops the run.** A process paused for longer than its lease
(stopped, a frozen container or VM, a machine asleep) or a ledger too slow to renew it may have
lost its claims to a re-run meanwhile. So a message starts only while the lease was renewed
less than ``0.8 × lease_s`` ago (:meth:`SendLedger.lease_held`), a renewal extends only a
lease that has not run out by the database's clock, and an outcome is recorded only on a row
this run still owns. The lease is asked once more when the server is ready for a message's
content (``fence`` of :meth:`mailgem.connections.session.SmtpSession.send_bytes`): a message
whose commands went out before the pause is not written after it. As with a killed run, a
message whose content was being written when the pause began (or, without PIPELINING, whose
``DATA`` was: the content follows the ``354`` inside aiosmtplib) may still finish, and one
accepted within ``OUTCOME_DELAY_S`` before it still reads ``sending``: a re-run sends those
again, with the same Message-ID.

An entry counts only for its **destination**: the fabric, connection, host, port and sender
the job sends through (:meth:`mailgem.fabric.model.Fabric.destination`; for the embedded server, its
outbox). Trying a job on the embedded local server never marks the real run's messages as sent.

Writes are grouped into transactions (one commit costs more than building a message): the
sender claims a batch of messages in one transaction before any of them goes out
(:meth:`SendLedger.begin_many`), and outcomes are committed together at most
``OUTCOME_DELAY_S`` (20 ms) after the server's reply, or with the next claim
(:meth:`SendLedger.finish`). On PostgreSQL each transaction goes in libpq's pipeline mode.
Reads are grouped too: a first run looks nothing up (the claim decides), and a re-run looks its
messages up a chunk at a time (:meth:`SendLedger.prefetch`).

Where: ``ledger: {path: FILE}`` is a SQLite file (WAL mode, busy timeout) for the processes of
one machine; ``ledger: {url: postgresql://user@host/db, secret: NAME}`` a PostgreSQL database
every executor of a cluster reaches (:mod:`.ledger_db`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailgem.connections.errors import ConfigError, MailgemError

from .ledger_db import LedgerDamagedError, LedgerTarget, damage_of
from .status import FINAL, DeliveryStatus

__all__ = ["SendLedger", "PriorSend", "LedgerTarget", "LeaseLapsedError", "LedgerDamagedError", "DONE_STATUSES",
           "check_ledger", "open_ledger"]

log = logging.getLogger("mailgem.gems")

# FINAL (accepted: a re-run does not send these again) in a fixed order, as plain strs for SQL.
DONE_STATUSES = tuple(status.value for status in DeliveryStatus if status in FINAL)
_DONE_SQL = "(" + ", ".join(f"'{status}'" for status in DONE_STATUSES) + ")"
_SENDING = DeliveryStatus.SENDING.value
# Outcomes wait at most this long (seconds) to be committed together; a claim commits them too.
# Longer means fewer commits (each a round trip to PostgreSQL) and a wider window in which a
# killed run's accepted messages still read `sending` (a re-run resends them, same Message-ID).
OUTCOME_DELAY_S = 0.02
# A message starts only while its run's lease was renewed less than this share of lease_s ago.
# Renewals come every third of it: a late one has nearly half the lease to arrive, and a fifth is
# still left when a message starts (its first byte goes out within milliseconds).
LEASE_HELD_SHARE = 0.8

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sends (
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
    owner TEXT,
    PRIMARY KEY (job, run_key, destination, message_key, recipients_hash)
)""",
    """CREATE TABLE IF NOT EXISTS ledger_owners (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    alive_until DOUBLE PRECISION NOT NULL
)"""]
_KEY = "job=? AND run_key=? AND destination=? AND message_key=? AND recipients_hash=?"
_COLUMNS = "job, run_key, destination, message_key, recipients_hash, status, message_id, attempts, owner, first_at, updated_at"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def _lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (``CLOCK_BOOTTIME`` on
    Linux; elsewhere the monotonic clock): a lease runs out by the database's clock meanwhile."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


class LeaseLapsedError(MailgemError):
    """This run's lease in the ledger ran out, or may have: another run may have taken over the
    messages it claimed, so no further message may start (the message says why and what to do)."""


@dataclass(frozen=True)
class PriorSend:
    """What the ledger holds for one message. ``holder``: the live run (host, pid, start) that
    is sending it now, when another run is; ``mine``: this ledger's run is sending it."""

    status: str
    message_id: str | None
    maybe_delivered: bool
    holder: str | None = None
    mine: bool = False

    @property
    def done(self) -> bool:
        """The server accepted it (for some or all recipients)."""
        return self.status in FINAL

    @property
    def possibly_delivered(self) -> bool:
        """The server may hold it: a resend must keep its Message-ID."""
        return self.status == DeliveryStatus.SENDING or self.maybe_delivered


def open_ledger(target: LedgerTarget, job: str, run_key: str, destination: str) -> SendLedger:
    """The ledger at ``target`` for this job, run key and destination (its tables created),
    checked that a SQLite file is not damaged (:meth:`SendLedger.verify`).

    Raises:
        LedgerDamagedError: the SQLite file is damaged, or is not a SQLite database.
        ConfigError: it cannot be opened (see :class:`SendLedger`); backend errors.
    """
    try:
        ledger = SendLedger(target, job, run_key, destination)
        try:
            ledger.verify()
        except BaseException:
            ledger.close()
            raise
        return ledger
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the database's own reason, for the user
        damage = damage_of(target, exc)
        if damage is not None:
            raise damage from None
        raise ConfigError(f"cannot open the ledger {target}: {type(exc).__name__}: {exc}") from None


def check_ledger(target: LedgerTarget) -> None:
    """Open the ledger at ``target`` and close it again (:func:`open_ledger`). The run's
    preflight calls it on the driver, before Spark starts: a damaged ledger is reported in
    seconds, with what to do.

    Raises:
        LedgerDamagedError, ConfigError: see :func:`open_ledger`.
    """
    open_ledger(target, "", "", "").close()


class SendLedger:
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
        self._flush_scheduled = False
        self._heartbeat: threading.Thread | None = None
        self._renewed_at: float | None = None  # _lease_clock() before the statement that last set the lease
        self._stop = threading.Event()
        self.failure: Exception | None = None  # a group commit or lease renewal that failed (see check())
        self._had_rows: bool | None = None  # rows for this job, run key and destination when first asked
        # prefetch(): the message keys last looked up together, and their rows by (key, recipients hash)
        self._prefetched_keys: set[str] = set()
        self._prefetched: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._backend.create(self._db(), _SCHEMA)
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

    def prefetch(self, message_keys: Sequence[str]) -> None:
        """Look these messages up in one query, for :meth:`prior` with ``live=False`` to answer
        from (a re-run then costs one round trip per batch, not per message). Replaces what an
        earlier call fetched; nothing is fetched when the run had no rows when first asked."""
        self._prefetched_keys, self._prefetched = set(), {}
        if not message_keys or not self._has_rows():
            return
        keys = list(dict.fromkeys(message_keys))
        rows = self._backend.execute(
            self._db(),
            f"SELECT s.message_key, s.recipients_hash, {self._prior_select} WHERE s.job=? AND s.run_key=? AND s.destination=?"
            f" AND s.message_key IN ({', '.join('?' * len(keys))})",
            (self.job, self.run_key, self.destination, *keys)).fetchall()
        self._prefetched = {(r[0], r[1]): tuple(r[2:]) for r in rows}
        self._prefetched_keys = set(keys)

    def prior(self, message_key: str, recipients_hash: str, *, live: bool = True) -> PriorSend | None:
        """What the ledger holds for this message at this destination, or ``None``.

        With ``live=False`` the answer may be from when this ledger was first asked: a run whose
        job, run key and destination had no rows then skips the per-message query (a round trip
        to PostgreSQL), and a message :meth:`prefetch` looked up is answered from that. That is
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
            f"SELECT {self._prior_select} WHERE {_KEY.replace('job=', 's.job=')}", self._key(message_key, recipients_hash)).fetchone())

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
        now = _now()
        seen: set[tuple[str, str]] = set()
        rows: list[tuple[Any, ...]] = []
        for key, rhash, message_id in items:
            if (key, rhash) not in seen:  # one row may be claimed once per statement
                seen.add((key, rhash))
                rows.append((*self._key(key, rhash), message_id, self.owner, now, now))
        claimed: set[tuple[str, str]] = set()
        for start in range(0, len(rows), 500):  # a statement's placeholders are limited (SQLite: 32,766)
            chunk = rows[start:start + 500]
            values = ", ".join([f"(?, ?, ?, ?, ?, '{_SENDING}', ?, 0, ?, ?, ?)"] * len(chunk))
            statement = (f"INSERT INTO sends ({_COLUMNS}) VALUES {values}"
                         " ON CONFLICT (job, run_key, destination, message_key, recipients_hash) DO UPDATE SET"
                         f" status='{_SENDING}', message_id=excluded.message_id, owner=excluded.owner,"
                         f" updated_at=excluded.updated_at WHERE {self._claim_where}"
                         " RETURNING message_key, recipients_hash")
            claimed |= self._transaction(statement, chunk)
        return claimed

    def _start_lease(self) -> None:
        """List this owner with a lease, committed on its own before its first claim (a claim in
        the same transaction would be invisible to a racing PostgreSQL statement's snapshot), and
        start renewing it."""
        if self._heartbeat is not None:
            return
        db = self._db()
        b = self._backend
        asked_at = _lease_clock()
        b.execute(db, b.begin)
        try:
            b.execute(db, f"DELETE FROM ledger_owners WHERE alive_until < {b.now} - 86400")  # long-dead runs
            b.execute(db, f"INSERT INTO ledger_owners (owner, host, pid, started_at, alive_until) VALUES"
                          f" (?, ?, ?, ?, {b.now} + ?)",
                      (self.owner, socket.gethostname(), os.getpid(), _now(), self.target.lease_s))
            b.execute(db, "COMMIT")
        except BaseException:
            with contextlib.suppress(b.error):
                b.execute(db, "ROLLBACK")
            raise
        self._renewed_at = asked_at
        self._heartbeat = threading.Thread(target=self._renew, name="mailgem-ledger-lease", daemon=True)
        self._heartbeat.start()

    def _renew(self) -> None:
        """The lease thread: renew every ``lease_s / 3`` s, only while the lease has not run out
        by the database's clock. A renewal that fails or comes too late stops the run (another
        run could take over this run's messages once the lease runs out)."""
        b = self._backend
        try:
            while not self._stop.wait(self.target.lease_s / 3):
                asked_at = _lease_clock()
                renewed = b.execute(self._db(), f"UPDATE ledger_owners SET alive_until = {b.now} + ?"
                                                f" WHERE owner = ? AND alive_until > {b.now}",
                                    (self.target.lease_s, self.owner)).rowcount
                if renewed != 1:
                    unrenewed = _lease_clock() - (self._renewed_at or asked_at)
                    self._lapsed(f"had run out by the database's clock when it was renewed, {unrenewed:.1f} s after "
                                 "the renewal before")
                    return
                self._renewed_at = asked_at
        except Exception as exc:  # noqa: BLE001 - kept for the sender, which stops the run
            log.error("ledger %s: the lease of this run could not be renewed: %s", self.target, exc)
            self.failure = self.failure or exc
        finally:
            self._close_db()

    def _lapsed(self, what: str) -> None:
        error = LeaseLapsedError(
            f"this run's lease in ledger {self.target} {what} (lease_s {self.target.lease_s:g} s): the process was "
            "paused (stopped, frozen or asleep) or the ledger answered too slowly, so another run may have taken "
            "over the messages this run claimed, and no further message was started. Re-run with the same run key "
            "to send what was not accepted; if the ledger is slow, raise ledger.lease_s")
        log.error("%s", error)
        self.failure = self.failure or error

    def lease_held(self) -> bool:
        """Whether a message may start now: no lease yet (nothing claimed), or one renewed less
        than ``LEASE_HELD_SHARE × lease_s`` ago. When not, :attr:`failure` says why (the run
        must stop). One clock read: cheap enough for every message."""
        if isinstance(self.failure, LeaseLapsedError):
            return False
        if self._renewed_at is None:
            return True
        age = _lease_clock() - self._renewed_at
        if age < LEASE_HELD_SHARE * self.target.lease_s:
            return True
        self._lapsed(f"was last renewed {age:.1f} s ago")
        return False

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
        self._finishes.append((str(status), attempts, reply_code, message_id, error, connection, int(maybe_delivered),
                               _now(), *self._key(message_key, recipients_hash), self.owner))
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
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - kept for the sender, which stops the run
            self.failure = self.failure or exc

    def flush(self) -> None:
        """Commit every outcome recorded so far.

        Raises:
            Backend errors: the ledger could not be written.
        """
        self._flush_scheduled = False  # a timer left by a closed event loop must not block the next one
        if self._finishes:
            self._transaction(None, [])

    def check(self) -> None:
        """Raise the failure of an earlier group commit or lease renewal, if any (the run must
        stop: without its ledger, a re-run could send twice)."""
        if self.failure is not None:
            raise self.failure

    def _transaction(self, claim: str | None, rows: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """One transaction: the outcomes recorded so far, then the ``claim`` statement for
        ``rows`` (one tuple of values per message); returns the keys it claimed."""
        finishes, self._finishes = self._finishes, []
        b = self._backend
        claimed: set[tuple[str, str]] = set()
        try:
            db = self._db()
            try:
                with b.pipeline(db):
                    b.execute(db, b.begin)
                    if finishes:
                        b.executemany(
                            db,
                            "UPDATE sends SET status=?, attempts=attempts+?, reply_code=?, message_id=COALESCE(?, message_id),"
                            f" error=?, connection=COALESCE(?, connection), maybe_delivered={b.greatest}(maybe_delivered, ?),"
                            # Only on a row this run still owns: a run that took it over meanwhile
                            # (this one's lease had lapsed) records its own outcome.
                            f" updated_at=? WHERE {_KEY} AND owner=?", finishes)
                    if claim is not None:
                        args = tuple(v for row in rows for v in row)
                        claimed = {(r[0], r[1]) for r in b.execute(db, claim, args).fetchall()}
                    b.execute(db, "COMMIT")
            except BaseException:
                with contextlib.suppress(b.error):
                    b.execute(db, "ROLLBACK")
                raise
        except BaseException:
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
