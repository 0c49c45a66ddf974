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
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from mailgem.connections.errors import ConfigError, redact

__all__ = ["LedgerTarget", "Backend", "SqliteBackend", "PostgresBackend"]

DEFAULT_LEASE_S = 30.0


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

    error: type[Exception] | tuple[type[Exception], ...] = Exception
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

    def execute(self, db: Any, statement: str, args: tuple[Any, ...] = ()) -> Any:
        return db.execute(self.sql(statement), args)


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

    def pipeline(self, db: Any) -> contextlib.AbstractContextManager[Any]:
        # libpq pipeline mode: BEGIN, the updates, the claim and COMMIT leave together and their
        # replies come back together, instead of one network round trip each.
        return db.pipeline()


def _safe_url(url: str) -> str:
    """``url`` without any password (defence in depth: the options already refuse one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))
