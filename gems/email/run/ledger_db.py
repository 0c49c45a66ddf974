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
from urllib.parse import urlsplit

from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from mailgem.connections.errors import ConfigError

from .ledger_sql import SENDING, claim_values, outcome_row

__all__ = ["LedgerTarget", "Backend", "SqliteBackend", "LedgerDamagedError", "damage_of", "check_postgres_url"]

log = logging.getLogger("mailgem.gems")

DEFAULT_LEASE_S = 30.0
# Outcomes (9 values each) in one SQLite statement (it takes at most 32,766 values).
SQLITE_ROWS_PER_STATEMENT = 3000
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
        if self.url is None:
            return SqliteBackend(self)
        from .ledger_pg import PostgresBackend  # psycopg only when a PostgreSQL ledger is used

        return PostgresBackend(self)


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
        """Write ``outcomes`` (:data:`.ledger_sql.OUTCOME_COLUMNS`) to the rows of ``run`` (job,
        run key, destination) that ``owner`` holds, stamped ``now``; inside the caller's
        transaction. Here one ``UPDATE`` a row: each a lookup by the primary key, whatever the
        table's statistics say."""
        self.executemany(db, outcome_row(self.greatest), [(*o[:7], now, *run, *o[7:], owner) for o in outcomes])

    def claim(self, db: Any, claims: list[tuple[str, str, str | None]], run: tuple[str, str, str], owner: str,
              now: str, where: str) -> set[tuple[str, str]]:
        """Claim each ``(message_key, recipients_hash, message_id)`` of ``run`` for ``owner``:
        insert its row ``sending``, or take the existing one over where ``where`` holds; inside
        the caller's transaction. Returns the ``(message_key, recipients_hash)`` claimed. Each
        backend claims in the way its driver does cheapest (see theirs)."""
        raise NotImplementedError

    def lookup(self, db: Any, select: str, run: tuple[str, str, str], keys: list[str]) -> list[tuple[Any, ...]]:
        """The rows ``select`` (a ``SELECT … WHERE`` of the run's rows, ``run``: its values)
        gives for the message keys ``keys``. Here with ``message_key IN (…)``."""
        return self.execute(db, f"{select} AND s.message_key IN ({', '.join('?' * len(keys))})", (*run, *keys)).fetchall()

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

    # The driver gives up the GIL for each step of a statement: in the ledger's thread, with the
    # event loop busy in the other, every step waits to get it back (measured: ~0.5 ms a row).
    # So each claim and each group of outcomes is one statement of one step where SQLite can.

    def record_outcomes(self, db: sqlite3.Connection, outcomes: list[tuple[Any, ...]], run: tuple[str, str, str],
                        owner: str, now: str) -> None:
        """As :meth:`Backend.record_outcomes`, in one ``UPDATE … FROM (VALUES …)`` per
        :data:`SQLITE_ROWS_PER_STATEMENT` outcomes (SQLite 3.33 and newer; older: one a row)."""
        if sqlite3.sqlite_version_info < (3, 33):
            super().record_outcomes(db, outcomes, run, owner, now)
            return
        for start in range(0, len(outcomes), SQLITE_ROWS_PER_STATEMENT):
            chunk = outcomes[start:start + SQLITE_ROWS_PER_STATEMENT]
            db.execute(
                # VALUES' columns are column1 ... column9, in OUTCOME_COLUMNS' order.
                "UPDATE sends SET status = v.column1, attempts = sends.attempts + v.column2, reply_code = v.column3,"
                " message_id = COALESCE(v.column4, sends.message_id), error = v.column5,"
                " connection = COALESCE(v.column6, sends.connection),"
                " maybe_delivered = MAX(sends.maybe_delivered, v.column7), updated_at = ?"
                f" FROM (VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, ?)'] * len(chunk))}) AS v"
                " WHERE sends.job = ? AND sends.run_key = ? AND sends.destination = ? AND sends.message_key = v.column8"
                " AND sends.recipients_hash = v.column9 AND sends.owner = ?",
                (now, *(value for o in chunk for value in o), *run, owner))

    def claim(self, db: sqlite3.Connection, claims: list[tuple[str, str, str | None]], run: tuple[str, str, str],
              owner: str, now: str, where: str) -> set[tuple[str, str]]:
        """As :meth:`Backend.claim`, without ``RETURNING`` (a step a row): when the statement
        changed as many rows as it claims, every one was claimed; otherwise the rows this owner
        now holds with their new Message-ID are read back."""
        claimed: set[tuple[str, str]] = set()
        for start in range(0, len(claims), SQLITE_ROWS_PER_STATEMENT // 3):  # 9 values a claim
            chunk = claims[start:start + SQLITE_ROWS_PER_STATEMENT // 3]
            args = tuple(v for key, rhash, mid in chunk for v in (*run, key, rhash, mid, owner, now, now))
            changed = db.execute(f"{claim_values(len(chunk))} WHERE {where}", args).rowcount
            if changed == len(chunk):
                claimed.update((key, rhash) for key, rhash, _ in chunk)
                continue
            mine = {(r[0], r[1], r[2]) for r in db.execute(
                f"SELECT message_key, recipients_hash, message_id FROM sends WHERE job = ? AND run_key = ? AND destination = ?"
                f" AND owner = ? AND status = '{SENDING}' AND message_key IN ({', '.join('?' * len(chunk))})",
                (*run, owner, *(key for key, _, _ in chunk))).fetchall()}
            claimed.update((key, rhash) for key, rhash, mid in chunk if (key, rhash, mid) in mine)
        return claimed

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
