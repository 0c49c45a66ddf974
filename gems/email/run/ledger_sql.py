"""The send ledger's SQL (:mod:`.ledger`), written once with ``?`` placeholders for both
databases (:mod:`.ledger_db` turns them into psycopg's): its tables, a message's key, and the
statements that claim messages and record their outcomes."""

from __future__ import annotations

__all__ = ["CLAIM_CONFLICT", "COLUMNS", "KEY", "OUTCOME_COLUMNS", "SCHEMA", "SENDING", "claim_values", "outcome_row"]

# The ledger's tables, and the columns of a message's key and of a claim.
SCHEMA = [
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
KEY = "job=? AND run_key=? AND destination=? AND message_key=? AND recipients_hash=?"
COLUMNS = "job, run_key, destination, message_key, recipients_hash, status, message_id, attempts, owner, first_at, updated_at"
SENDING = "sending"
# A claim takes a row over (status sending, this owner, the new Message-ID) only where the claim's WHERE holds.
CLAIM_CONFLICT = ("ON CONFLICT (job, run_key, destination, message_key, recipients_hash) DO UPDATE SET"
                  f" status='{SENDING}', message_id=excluded.message_id, owner=excluded.owner,"
                  " updated_at=excluded.updated_at")
# What an outcome holds, in this order (SendLedger.finish).
OUTCOME_COLUMNS = ("status", "attempts", "reply_code", "message_id", "error", "connection", "maybe_delivered",
                   "message_key", "recipients_hash")


def outcome_row(greatest: str) -> str:
    """One outcome's ``UPDATE`` (``greatest``: the database's larger-of-two function); its
    values: the outcome's first seven, then updated_at, then the key (job, run key,
    destination, message key, recipients hash) and the owner. Only on a row this run still
    owns: a run that took it over meanwhile (this one's lease had lapsed) records its own."""
    return ("UPDATE sends SET status=?, attempts=attempts+?, reply_code=?, message_id=COALESCE(?, message_id), error=?,"
            f" connection=COALESCE(?, connection), maybe_delivered={greatest}(maybe_delivered, ?), updated_at=?"
            f" WHERE {KEY} AND owner=?")


def claim_values(rows: int) -> str:
    """A claim of ``rows`` messages as ``INSERT … VALUES`` (each row's values: job, run key,
    destination, message key, recipients hash, Message-ID, owner, first_at, updated_at), up to
    the ``DO UPDATE SET`` of :data:`CLAIM_CONFLICT` (its ``WHERE`` follows)."""
    values = ", ".join([f"(?, ?, ?, ?, ?, '{SENDING}', ?, 0, ?, ?, ?)"] * rows)
    return f"INSERT INTO sends ({COLUMNS}) VALUES {values} {CLAIM_CONFLICT}"
