"""A damaged SQLite ledger (issue 21 §2) is reported before Spark starts, as a ledger error that
says what to do, by ``mailgem validate`` and ``mailgem run``: never a ``sqlite3.DatabaseError``
traceback after Spark has started.

The damage is real: rows are written by the real :class:`SendLedger`, the file is closed (its
write-ahead log checkpointed into it), then bytes of one of the ``sends`` table's leaf pages are
overwritten, as a lost or torn write would leave them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailgem.gems.email.run.ledger import SendLedger

ROOT = Path(__file__).resolve().parents[1]
# SQLite's file format (https://www.sqlite.org/fileformat2.html): the page size is the big-endian
# 16-bit number at offset 16 of the header; byte 0 of a b-tree page (of page 1: byte 100) is its
# type, 13 (0x0D) for a table's leaf page; the header is the first 100 bytes of page 1.
PAGE_SIZE_OFFSET = 16
TABLE_LEAF = 0x0D
HEADER_BYTES = 100

JOB = """name: sales
source: {path: data/sales.csv}
email:
  connection: local
  mode: per_row
  to_column: email
  subject: "{{ row.city }}"
  text_body: "{{ row.city }} sold {{ row.sales }}"
  ledger: {path: ledger.sqlite}
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def _write_rows(path: Path, n: int) -> None:
    """``n`` messages claimed and recorded ``sent`` by the real ledger, as a run records them."""
    async def run() -> None:  # inside a loop, outcomes are committed together, as the sender's are
        ledger = SendLedger(path, "sales", "2026-12-07", "outbox")
        items = [(f"row:[{i}]", hashlib.sha256(f"user{i}@example.com".encode()).hexdigest()[:16],
                  f"<{i:032x}.mailgem@example.com>") for i in range(n)]
        ledger.begin_many(items)
        for key, rhash, message_id in items:
            ledger.finish(key, rhash, status="sent", attempts=1, reply_code=250, message_id=message_id, error=None)
        ledger.close()

    asyncio.run(run())


def _table_leaf_page(path: Path) -> tuple[int, int]:
    """(offset in bytes, page size) of a leaf page of a table in the middle of the file."""
    data = path.read_bytes()
    page_size = int.from_bytes(data[PAGE_SIZE_OFFSET:PAGE_SIZE_OFFSET + 2], "big")
    leaves = [p for p in range(1, len(data) // page_size) if data[p * page_size] == TABLE_LEAF]  # page 1 excluded
    assert len(leaves) > 10, leaves
    return leaves[len(leaves) // 2] * page_size, page_size


def _damage(path: Path, how: str) -> None:
    with path.open("r+b") as f:
        if how == "header":
            f.write(b"\xff" * HEADER_BYTES)
            return
        offset, page_size = _table_leaf_page(path)
        if how == "cells":  # rows in the middle of the page: SQLite's check lists what it found
            f.seek(offset + page_size // 2)
            f.write(b"\xff" * 512)
        else:  # a page of zeros: its b-tree header too (SQLite's check itself fails on it)
            f.seek(offset)
            f.write(b"\0" * page_size)


def _quick_check(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return "\n".join(r[0] for r in db.execute("PRAGMA quick_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()


@pytest.fixture
def damaged(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A job folder whose ledger was damaged as ``request.param`` says, and that word."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("city,sales,email\nOslo,10,oslo@example.com\n")
    (tmp_path / "job.yaml").write_text(JOB)
    ledger = tmp_path / "ledger.sqlite"
    _write_rows(ledger, 2000)
    assert not Path(f"{ledger}-wal").exists()  # every row is in the file itself
    assert _quick_check(ledger) == "ok"
    _damage(ledger, request.param)
    assert _quick_check(ledger) != "ok"
    if request.param != "header":
        # What the damage does to a run that reads those rows (the old path: after Spark started).
        ledger_then = SendLedger(ledger, "sales", "2026-12-07", "outbox")
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            ledger_then.rows()
        ledger_then.close()
    return tmp_path, request.param


@pytest.mark.parametrize("damaged", ["cells", "zeroed_page", "header"], indirect=True)
@pytest.mark.parametrize("command", [("validate", "job.yaml", "--local"),
                                     ("run", "job.yaml", "--local", "--outbox", "out")], ids=["validate", "run"])
def test_a_damaged_ledger_is_a_ledger_error_before_spark(damaged: tuple[Path, str], command: tuple[str, ...]):
    folder, how = damaged
    started = time.monotonic()
    done = _cli(*command, cwd=folder)
    took = time.monotonic() - started
    assert done.returncode == 2, (done.stdout, done.stderr)
    err = " ".join(done.stderr.split())
    assert "job.yaml: email.ledger: ledger " in err and "ledger.sqlite" in err, err
    assert "Traceback" not in done.stderr
    assert "restore the file from a backup" in err, err
    assert "move it aside" in err and "sent again" in err, err
    if how == "header":
        assert "is not a SQLite database, or its header is damaged" in err, err
    else:
        assert "is damaged: SQLite's quick_check found" in err, err
    assert took < 15, took  # about 1.5 s: Spark (8-70 s) never started
    assert not (folder / "out").exists() or not any((folder / "out").iterdir())


def test_verifying_the_ledger_keeps_its_writes_safe_from_other_processes(tmp_path):
    """``verify`` reads the file through first (a read-ahead). Were that done here, closing its
    descriptor would drop the POSIX locks SQLite holds for this process's connections (fcntl
    locks belong to the process: https://www.sqlite.org/howtocorrupt.html §2.2); another process
    closing its connection would then take itself for the last one, checkpoint and remove the
    write-ahead log under this run, and every later commit would be lost to everyone else (found
    as outcomes missing from the ledger while a scheduler's check read it)."""
    from mailgem.gems.email.run.ledger_open import open_ledger
    from mailgem.gems.email.run.ledger_db import LedgerTarget

    path = tmp_path / "ledger.sqlite"
    SendLedger(LedgerTarget(path=str(path)), "job", "r", "dest").close()  # a ledger file that exists
    ledger = open_ledger(LedgerTarget(path=str(path)), "job", "r", "dest")  # verified: read ahead
    try:
        assert ledger.begin_many([("k1", "h", "<1@x>")]) == {("k1", "h")}
        # Another process opens the ledger, reads it and closes its connection.
        count = [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
                 " print(db.execute('SELECT count(*) FROM sends').fetchone()[0]); db.close()", str(path)]
        assert subprocess.run(count, capture_output=True, text=True, timeout=60).stdout.strip() == "1"
        assert ledger.begin_many([("k2", "h", "<2@x>")]) == {("k2", "h")}
        ledger.finish("k1", "h", status="sent", attempts=1, reply_code=250, message_id="<1@x>", error=None)
        # What this process committed after that, every other process sees.
        assert subprocess.run(count, capture_output=True, text=True, timeout=60).stdout.strip() == "2"
    finally:
        ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT message_key, status FROM sends ORDER BY 1").fetchall() == [("k1", "sent"),
                                                                                            ("k2", "sending")]
