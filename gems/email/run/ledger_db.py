"""The two databases a send ledger can live in: a SQLite file, or a PostgreSQL database.

Both hold the same tables and run the same SQL, written once in :mod:`.ledger` with ``?``
placeholders; a backend supplies what differs: connecting, the placeholder style, the
database's clock (leases are measured by the database, never by the executors' clocks, which
may disagree), ``BEGIN`` and its errors.

PostgreSQL is for clusters: every executor reaches it over the network, and concurrent
inserts of one key are decided by its unique index. SQLite is for one machine (a file on
NFS/DBFS is a known way to corrupt a SQLite database). psycopg 3 talks to PostgreSQL directly
(no ORM: the ledger is four statements); it is imported only when a PostgreSQL ledger is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from mailgem.connections.errors import ConfigError, redact

__all__ = ["LedgerTarget", "Backend", "SqliteBackend", "PostgresBackend", "LedgerDamagedError", "damage_of"]

log = logging.getLogger("mailgem.gems")

DEFAULT_LEASE_S = 30.0
# What SQLite says of a file whose pages are not what it wrote (https://www.sqlite.org/rescode.html):
# a damaged b-tree page, or a header that is not a SQLite database's.
DAMAGED_SQLITE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# Problems of quick_check quoted in the message (it lists up to 100; the first few say enough).
QUOTED_PROBLEMS = 3
# The file is read through once before quick_check when it fits in this share of the memory:
# quick_check reads pages in b-tree order, 4 KiB at a time, which a cold disk serves slowly
# (1,000,000 rows, 440 MB: 8-10 s cold; 0.74 s to read the file in order, then 0.8 s to check).
READ_AHEAD_MEMORY_SHARE = 0.5
READ_AHEAD_CHUNK_BYTES = 1 << 20
READ_AHEAD_TIMEOUT_S = 120.0
_READ_AHEAD_CHILD = ("import sys\nbuffer = bytearray(int(sys.argv[2]))\n"
                     "with open(sys.argv[1], 'rb', buffering=0) as f:\n    while f.readinto(buffer):\n        pass\n")


class LedgerDamagedError(ConfigError):
    """The SQLite ledger file is damaged (or is not a SQLite database): what it recorded as sent
    cannot be trusted, so no run may use it; the message says how to restore or replace it."""


@dataclass(frozen=True)
class LedgerTarget:
    """Where a ledger lives, with the database password resolved (picklable: it travels to the
    Spark executors with the job). Exactly one of ``path`` (SQLite file) and ``url``
    (``postgresql://user@host[:port]/db``, no password in it).

    ``lease_s`` (seconds): how long a run's claim on the messages it is sending outlives the
    run when it stops without saying so (killed); a live run renews it every ``lease_s / 3``.
    """

    path: str | None = None
    url: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    lease_s: float = DEFAULT_LEASE_S

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ConfigError("a ledger needs either path (a SQLite file) or url (postgresql://user@host/db), not both")

    def __str__(self) -> str:
        return self.url if self.url is not None else str(self.path)

    def backend(self) -> Backend:
        return PostgresBackend(self) if self.url is not None else SqliteBackend(self)


def check_postgres_url(url: str) -> str:
    """``url`` when it names a PostgreSQL database without a password.

    Raises:
        ValueError: another scheme, no host, or a password written in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"ledger.url must start with postgresql:// (got {parts.scheme or 'no'} scheme); "
                         "for a SQLite file use ledger.path instead")
    if parts.password is not None:
        # Never echo it: the message names where it was, not what it was.
        raise ValueError("ledger.url contains a password: remove it (postgresql://user@host/db) and name the fabric "
                         "secret that holds it in ledger.secret")
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError("ledger.url needs a host and a database: postgresql://user@host[:port]/database")
    return url


class Backend:
    """What differs between the databases. ``error``: the driver's exception base class."""

    error: type[Exception] = Exception
    now: str = ""  # SQL: the database clock in seconds since the epoch
    greatest: str = ""  # SQL: the larger of two values
    begin: str = "BEGIN"

    def __init__(self, target: LedgerTarget) -> None:
        self.target = target

    def connect(self) -> Any:
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        """``statement`` with this driver's placeholders."""
        return statement

    def create(self, db: Any, statements: list[str]) -> None:
        """Create the tables (concurrent first opens from several executors are expected)."""
        raise NotImplementedError

    def executemany(self, db: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        db.executemany(self.sql(statement), rows)

    def pipeline(self, db: Any) -> contextlib.AbstractContextManager[Any]:
        """Statements inside are sent without waiting for each reply (one round trip)."""
        return contextlib.nullcontext()

    def record_outcomes(self, db: Any, outcomes: list[tuple[Any, ...]], run: tuple[str, str, str], owner: str,
                        now: str) -> None:
        """Write ``outcomes`` (status, attempts, reply_code, message_id, error, connection,
        maybe_delivered, message_key, recipients_hash) to the rows of ``run`` (job, run key,
        destination) that ``owner`` holds, stamped ``now``; inside the caller's transaction.
        Here one ``UPDATE`` a row (the driver loops in C)."""
        db.executemany(self.sql(
            "UPDATE sends SET status=?, attempts=attempts+?, reply_code=?, message_id=COALESCE(?, message_id), error=?,"
            f" connection=COALESCE(?, connection), maybe_delivered={self.greatest}(maybe_delivered, ?), updated_at=?"
            f" WHERE {_KEY} AND owner=?"), [(*o[:7], now, *run, *o[7:], owner) for o in outcomes])

    def claim(self, db: Any, claims: list[tuple[str, str, str | None]], run: tuple[str, str, str], owner: str,
              now: str, where: str) -> set[tuple[str, str]]:
        """Claim each ``(message_key, recipients_hash, message_id)`` of ``run`` for ``owner``:
        insert its row ``sending``, or take the existing one over where ``where`` holds; inside
        the caller's transaction. Returns the ``(message_key, recipients_hash)`` claimed. Here
        one ``INSERT … VALUES`` per 500 (SQLite takes 32,766 placeholders a statement)."""
        claimed: set[tuple[str, str]] = set()
        for start in range(0, len(claims), 500):
            chunk = claims[start:start + 500]
            values = ", ".join([f"(?, ?, ?, ?, ?, '{_SENDING}', ?, 0, ?, ?, ?)"] * len(chunk))
            args = tuple(v for key, rhash, mid in chunk for v in (*run, key, rhash, mid, owner, now, now))
            claimed |= {(r[0], r[1]) for r in self.execute(
                db, f"INSERT INTO sends ({_COLUMNS}) VALUES {values} {_CLAIM_CONFLICT} WHERE {where} {_CLAIM_RETURNING}",
                args).fetchall()}
        return claimed

    def execute(self, db: Any, statement: str, args: tuple[Any, ...] = ()) -> Any:
        return db.execute(self.sql(statement), args)

    def verify(self, db: Any) -> None:
        """Check that the stored pages are sound (see :meth:`SqliteBackend.verify`). Nothing to do
        here for a database server: PostgreSQL checks its own pages as it reads them, and reports
        damage as the error of the statement that met it.

        Raises:
            LedgerDamagedError: the ledger is damaged.
        """


class SqliteBackend(Backend):
    """A SQLite file in WAL mode with a busy timeout, shared by the processes of one machine."""

    error = sqlite3.Error
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    greatest = "MAX"
    begin = "BEGIN IMMEDIATE"  # take the write lock at once: no upgrade deadlocks between processes

    def connect(self) -> sqlite3.Connection:
        path = Path(self.target.path or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60, isolation_level=None)  # waits up to 60 s for a lock
        # WAL is a property of the file: set it once. Switching takes a lock that the busy
        # timeout does not cover, so concurrent first opens (Spark workers) retry briefly.
        for attempt in Retrying(retry=retry_if_exception_type(sqlite3.OperationalError),
                                stop=stop_after_attempt(50), wait=wait_random(0.01, 0.1), reraise=True):
            with attempt:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def create(self, db: sqlite3.Connection, statements: list[str]) -> None:
        for statement in statements:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(sends)")}
        if "destination" not in columns:
            raise ConfigError(
                f"ledger {self.target.path} was written by an earlier mailgem that did not record where messages "
                "went, so its entries cannot be matched to a destination: move the file aside to start a new "
                "ledger (what it recorded as sent would then be sent again), or point ledger.path elsewhere")
        if "owner" not in columns:  # a ledger from before claims: its rows have no owner, and may be claimed
            db.execute("ALTER TABLE sends ADD COLUMN owner TEXT")

    def verify(self, db: sqlite3.Connection) -> None:
        """``PRAGMA quick_check``: every page of every table and index is read and its b-tree
        structure checked (what ``integrity_check`` does, less the comparison of each index with
        its table, which costs four times as much). Measured on a ledger of 1,000,000 rows
        (440 MB, SQLite 3.40, 2 cores): 0.65-1.0 s with the file in the page cache, and about
        1.6 s from a cold disk when the file is read through in order first (8-10 s without).

        Raises:
            LedgerDamagedError: SQLite found damage (or could not read a page: its own error).
        """
        started = time.monotonic()
        self._read_ahead()
        try:
            problems = [line for (row,) in db.execute("PRAGMA quick_check") for line in str(row).splitlines()
                        if line and not line.startswith("*** in database")]
        except sqlite3.DatabaseError as exc:
            damage = damage_of(self.target, exc, "SQLite's quick_check")
            if damage is None:
                raise
            raise damage from None
        if problems != ["ok"]:
            more = f" (and {len(problems) - QUOTED_PROBLEMS} more)" if len(problems) > QUOTED_PROBLEMS else ""
            raise _damaged(self.target, f"is damaged: SQLite's quick_check found "
                                        f"{'; '.join(problems[:QUOTED_PROBLEMS])}{more}")
        log.debug("ledger %s: quick_check ok in %.2f s", self.target, time.monotonic() - started)

    def _read_ahead(self) -> None:
        """Read the file through once, in order, so quick_check's reads (in b-tree order) come
        from the page cache; skipped for a file too large to stay there (or not yet created)."""
        path = Path(self.target.path or "")
        try:
            size = path.stat().st_size
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError, AttributeError):  # no file yet; no sysconf (Windows)
            return
        if size > READ_AHEAD_MEMORY_SHARE * memory:
            return
        # In a child process: closing a descriptor of the database file in this one would drop
        # the POSIX locks SQLite holds for this process's connections (fcntl locks belong to the
        # process, https://www.sqlite.org/howtocorrupt.html §2.2). Another process closing its
        # connection would then take itself for the last one, checkpoint and remove the
        # write-ahead log under this run, and this run's later commits would be lost.
        try:
            subprocess.run([sys.executable, "-c", _READ_AHEAD_CHILD, str(path), str(READ_AHEAD_CHUNK_BYTES)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=READ_AHEAD_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):  # only a speed-up: quick_check reads the file anyway
            log.debug("ledger %s: reading the file ahead of quick_check failed or took too long", path)


class PostgresBackend(Backend):
    """A PostgreSQL database reached with psycopg 3 (autocommit off only inside ``BEGIN``)."""

    now = "extract(epoch from clock_timestamp())::double precision"
    greatest = "GREATEST"

    def __init__(self, target: LedgerTarget) -> None:
        super().__init__(target)
        try:
            import psycopg
        except ImportError:
            raise ConfigError("ledger.url names a PostgreSQL database, but psycopg is not installed: "
                              "pip install 'mailgem[postgres]'") from None
        self._psycopg = psycopg
        self.error = psycopg.Error

    def connect(self) -> Any:
        password = self.target.password.get_secret_value() if self.target.password is not None else None
        assert self.target.url is not None  # this backend is chosen for a ledger with a url
        try:
            db = self._psycopg.connect(self.target.url, password=password, autocommit=True, connect_timeout=10,
                                       application_name="mailgem")
            # A transaction left open by a process that stopped midway (paused, frozen) would hold
            # its rows' locks, and so every other run's claims on them, until it resumed. The
            # server ends it after lease_s instead, as the lease itself runs out (this ledger's
            # own transactions take milliseconds).
            db.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                       (str(max(1000, int(self.target.lease_s * 1000))),))
            return db
        except self._psycopg.Error as exc:
            reason = redact(str(exc).strip(), password)  # libpq does not echo it; make sure
            hint = ("check ledger.url, the server, and the password in the secret ledger.secret names"
                    if "password" in reason or "authentication" in reason else
                    "check that the server runs and ledger.url names its host, port and database")
            raise ConfigError(f"cannot open the ledger database {_safe_url(self.target.url or '')}: {reason}; "
                              f"{hint}") from None

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def create(self, db: Any, statements: list[str]) -> None:
        # CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL (a unique violation in its
        # catalogue); one transaction-scoped advisory lock makes concurrent first opens take turns.
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(hashtext('mailgem ledger schema'))")
            for statement in statements:
                db.execute(statement)

    def executemany(self, db: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        with db.cursor() as cur:
            cur.executemany(self.sql(statement), rows)

    def record_outcomes(self, db: Any, outcomes: list[tuple[Any, ...]], run: tuple[str, str, str], owner: str,
                        now: str) -> None:
        """As :meth:`Backend.record_outcomes`, in one ``UPDATE … FROM unnest(arrays)``: a short
        statement that psycopg prepares once, where one statement a row, or one with a
        placeholder per value, costs psycopg 100-200 µs of CPU a message (parsing the query
        again each time)."""
        columns = [list(column) for column in zip(*outcomes, strict=True)]
        db.execute(
            "UPDATE sends SET status = v.status, attempts = sends.attempts + v.attempts, reply_code = v.reply_code,"
            " message_id = COALESCE(v.message_id, sends.message_id), error = v.error,"
            " connection = COALESCE(v.connection, sends.connection),"
            " maybe_delivered = GREATEST(sends.maybe_delivered, v.maybe_delivered), updated_at = %s"
            " FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[],"
            " %s::text[]) AS v(status, attempts, reply_code, message_id, error, connection, maybe_delivered, message_key,"
            " recipients_hash)"
            " WHERE sends.job = %s AND sends.run_key = %s AND sends.destination = %s AND sends.owner = %s"
            " AND sends.message_key = v.message_key AND sends.recipients_hash = v.recipients_hash",
            (now, *columns, *run, owner))

    def claim(self, db: Any, claims: list[tuple[str, str, str | None]], run: tuple[str, str, str], owner: str,
              now: str, where: str) -> set[tuple[str, str]]:
        """As :meth:`Backend.claim`, in one ``INSERT … SELECT … FROM unnest(arrays)`` (see
        :meth:`record_outcomes`)."""
        keys, hashes, message_ids = ([list(c) for c in zip(*claims, strict=True)] if claims else ([], [], []))
        rows = db.execute(
            f"INSERT INTO sends ({_COLUMNS}) SELECT %s, %s, %s, v.k, v.h, '{_SENDING}', v.m, 0, %s, %s, %s"
            f" FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(k, h, m) {_CLAIM_CONFLICT} WHERE {where}"
            f" {_CLAIM_RETURNING}", (*run, owner, now, now, keys, hashes, message_ids)).fetchall()
        return {(r[0], r[1]) for r in rows}


def damage_of(target: LedgerTarget, exc: BaseException, found_by: str = "SQLite") -> LedgerDamagedError | None:
    """The ledger error for SQLite's ``exc`` when it says the file is damaged or is not a SQLite
    database (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``); ``None`` for any other error (a lock, a
    missing folder, a PostgreSQL error). ``found_by`` names the check that met it."""
    name = getattr(exc, "sqlite_errorname", None)
    if target.path is None or not isinstance(exc, sqlite3.DatabaseError) or name not in DAMAGED_SQLITE_ERRORS:
        return None
    if name == "SQLITE_NOTADB":
        return _damaged(target, f"is not a SQLite database, or its header is damaged ({exc}); if it is another "
                                "file, point ledger.path elsewhere")
    return _damaged(target, f"is damaged: {found_by} found {exc}")


def _damaged(target: LedgerTarget, what: str) -> LedgerDamagedError:
    name = Path(target.path or "").name
    return LedgerDamagedError(
        f"ledger {target.path} {what}. What it recorded as sent cannot be trusted, so nothing was sent. While no run "
        f"uses it, restore the file from a backup, or move it aside to start a new ledger (what it recorded as sent "
        f"may then be sent again); either way, move its {name}-wal and {name}-shm files, if any, aside with it")


def _safe_url(url: str) -> str:
    """``url`` without any password (defence in depth: the options already refuse one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


# The ledger's tables, and the columns of a message's key and of a claim.
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
_SENDING = "sending"
# A claim takes a row over (status sending, this owner, the new Message-ID) only where the claim's WHERE holds.
_CLAIM_CONFLICT = ("ON CONFLICT (job, run_key, destination, message_key, recipients_hash) DO UPDATE SET"
                   f" status='{_SENDING}', message_id=excluded.message_id, owner=excluded.owner,"
                   " updated_at=excluded.updated_at")
_CLAIM_RETURNING = "RETURNING message_key, recipients_hash"
