"""The send ledger on both backends (a SQLite file, a PostgreSQL database on a private server the
tests start): claims decided by the database, a killed run and its re-run, processes racing on
the same keys, a run that waits for another's outcome, Spark executors sharing a PostgreSQL
ledger, and the database password kept out of every message."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pg_server
import pytest
from conftest import PASSWORD, USER, fabric_for, parse
from pydantic import SecretStr

from mailgem.connections.errors import ConfigError
from mailgem.fabric import MemorySecretStore
from mailgem.gems.email import EmailGem, GemValidationError
from mailgem.gems.email.run.ledger import LedgerTarget, SendLedger
from mailgem.gems.email.run.sender import CLAIM_BATCH

ROOT = Path(__file__).resolve().parents[1]

ROW = {"connection": "reports", "mode": "per_row", "key_columns": ["n"], "to_column": "to",
       "subject": "message {{ row.n }}", "text_body": "hello {{ row.n }}"}


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(n), "to": [f"user{i}@example.com" for i in range(n)]})


def _target(place: dict[str, str], lease_s: float = 30) -> LedgerTarget:
    password = SecretStr(pg_server.PASSWORD) if "url" in place else None
    return LedgerTarget(path=place.get("path"), url=place.get("url"), password=password, lease_s=lease_s)


def test_a_claim_is_decided_by_the_database(ledger_place):
    a = SendLedger(_target(ledger_place), "job", "r1", "dest")
    b = SendLedger(_target(ledger_place), "job", "r1", "dest")
    try:
        assert a.begin_many([("k1", "h", "<a@x>"), ("k2", "h", "<a2@x>")]) == {("k1", "h"), ("k2", "h")}
        # Held by a live run: no other run may take it, with any Message-ID.
        assert b.begin_many([("k1", "h", "<b@x>"), ("k3", "h", "<b3@x>")]) == {("k3", "h")}
        assert b.begin_many([("k1", "h", "<a@x>")]) == set()
        held = b.prior("k1", "h")
        assert held is not None and held.holder and f"pid {os.getpid()}" in held.holder and not held.mine
        assert a.prior("k1", "h").mine and a.prior("k1", "h").holder is None
        a.finish("k2", "h", status="sent", attempts=1, reply_code=250, message_id="<a2@x>", error=None)
        a.close()  # its lease is dropped: k1 may be claimed at once, but the server may hold it,
        assert b.begin_many([("k1", "h", "<b@x>")]) == set()  # so only with its Message-ID
        assert b.begin_many([("k1", "h", "<a@x>"), ("k2", "h", "<b2@x>")]) == {("k1", "h")}  # k2 was accepted
        assert b.prior("k2", "h").done
    finally:
        a.close()
        b.close()


CLAIM_AND_WAIT = """
import sys, time
from pydantic import SecretStr
from mailgem.gems.email.run.ledger import LedgerTarget, SendLedger
from mailgem.gems.email.run.sender import CLAIM_BATCH
place = eval(sys.argv[1])
target = LedgerTarget(path=place.get("path"), url=place.get("url"), lease_s=1.5,
                      password=SecretStr(sys.argv[2]) if "url" in place else None)
SendLedger(target, "job", "r1", "dest").begin_many([("k1", "h", "<a@x>")])
print("claimed", flush=True)
time.sleep(120)
"""


def test_a_killed_runs_claims_lapse_after_its_lease(ledger_place):
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AND_WAIT, repr(ledger_place), pg_server.PASSWORD],
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        claimed_at = time.monotonic()
        other = SendLedger(_target(ledger_place), "job", "r1", "dest")
        # Two leases later, the claim is still held only because the live holder renews its lease
        # (every 0.5 s); one second, shorter than the lease, proved nothing.
        time.sleep(max(0.0, claimed_at + 2 * 1.5 - time.monotonic()))
        assert other.begin_many([("k1", "h", "<a@x>")]) == set()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        killed_at = time.monotonic()
        claimed: set = set()
        while not claimed and time.monotonic() - killed_at < 15:  # bounded
            time.sleep(0.1)
            claimed = other.begin_many([("k1", "h", "<a@x>")])
        assert claimed == {("k1", "h")}
        assert 0.3 < time.monotonic() - killed_at < 5  # not at once: when the lease ran out
        other.close()
    finally:
        holder.kill()
        holder.wait(timeout=30)


RUN_SCRIPT = """
import json, sys, time
from pathlib import Path
import pandas as pd
from mailgem.fabric import load_fabric
from mailgem.gems.email import EmailGem
fabric_path, ledger, n, go = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
frame = pd.DataFrame({"n": range(n), "to": [f"user{i}@example.com" for i in range(n)]})
props = {"connection": "reports", "mode": "per_row", "key_columns": ["n"], "to_column": "to",
         "subject": "message {{ row.n }}", "text_body": "hello {{ row.n }}",
         "ledger": ledger | {"run_key": "nightly-1"}}
gem = EmailGem(props, load_fabric(fabric_path), user="alice", name="crashy")
if go:
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not Path(go).exists() and time.monotonic() < deadline:  # bounded
        time.sleep(0.005)
report = gem.apply(None, frame)
print(json.dumps(report["status"].value_counts().to_dict()))
print(json.dumps(dict(zip(report["message_key"], report["status"]))))
"""


def _run_args(server, tmp_path: Path, place: dict[str, str], n: int, go: str = "", pool_size: int = 1) -> tuple:
    (tmp_path / "fabric.yaml").write_text(textwrap.dedent(f"""
        name: t
        teams: [{{name: t, members: [alice]}}]
        connections:
          - {{name: reports, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
              username: reports@example.com, password: {{secret: pw}}, pool_size: {pool_size}}}
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MAILGEM_SECRET_PW": PASSWORD,
           "MAILGEM_SECRET_LEDGER_PASSWORD": pg_server.PASSWORD}
    args = [sys.executable, "-c", RUN_SCRIPT, str(tmp_path / "fabric.yaml"), json.dumps(place), str(n), go]
    return args, env


def test_killed_run_then_rerun_sends_every_message_exactly_once(starttls_server, tmp_path, ledger_place):
    place = ledger_place | {"lease_s": 1}
    args, env = _run_args(starttls_server, tmp_path, place, 40)
    # The 16th DATA is held before the server stores it; the run is killed while it waits.
    starttls_server.data_script = [None] * 15 + [("hold", 30.0)]
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until(lambda: starttls_server.holding or run.poll() is not None, 60, step_s=0.05)
    assert starttls_server.holding == 1, run.stderr.read() if run.poll() is not None else "never reached the held message"
    # Killed once the 15 accepted messages are committed `sent` (within OUTCOME_DELAY_S of their
    # replies): a kill inside that window would resend them with the same Message-ID, as documented.
    _wait_until(lambda: _count_sent(place) == 15, 10)
    assert _count_sent(place) == 15
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert len(starttls_server.settled()) == 15  # the held one was never stored

    # The killed run's claims (the held message and those pipelined behind it) lapse a lease
    # later; the re-run sends everything else meanwhile, then those.
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout.splitlines()[0]) == {"sent": 25, "already_sent": 15}
    received = starttls_server.wait_for_messages(40)
    per_key = Counter(parse(m.data)["Subject"] for m in received)
    assert len(per_key) == 40 and set(per_key.values()) == {1}


def test_processes_racing_on_the_same_keys_send_each_message_once(starttls_server, tmp_path, ledger_place):
    # Each run claims CLAIM_BATCH small messages at a time: three batches' worth, so the runs'
    # claims interleave.
    n, runs = 3 * CLAIM_BATCH, 3
    go = tmp_path / "go"
    args, env = _run_args(starttls_server, tmp_path, ledger_place, n, go=str(go), pool_size=2)
    starttls_server.data_script = [0.03] * (n * runs)  # replies come late: the runs overlap
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(runs)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
        go.touch()  # all start together
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    by_run = [json.loads(out.splitlines()[1]) for out, _ in outputs]
    senders = Counter(key for run in by_run for key, status in run.items() if status == "sent")
    assert len(senders) == n and set(senders.values()) == {1}  # each key sent by exactly one run
    assert all(set(run.values()) <= {"sent", "already_sent"} and len(run) == n for run in by_run)
    assert sum(1 for run in by_run if "sent" in run.values()) >= 2  # they did race
    per_key = Counter(parse(m.data)["Subject"] for m in starttls_server.settled())
    assert len(per_key) == n and set(per_key.values()) == {1}


def _report_or_error(props: dict, fab, n: int):
    """Job ``j``'s delivery report for ``_frame(n)``, or the exception that ended its run."""
    try:
        return EmailGem(props, fab, user=USER, name="j").apply(None, _frame(n))
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return exc


# A look-up of many message keys in one statement: an IN list (SQLite), or a key each from an
# array (PostgreSQL, LATERAL: a primary-key lookup a key).
_LOOKS_UP_MANY = re.compile(r"message_key IN \(|unnest\(\?::text\[\]\) AS k\(message_key\) CROSS JOIN LATERAL")


def _count_sent(place: dict[str, str]) -> int:
    """How many rows of the ledger at ``place`` (``ledger:`` options) read ``sent``."""
    query = "SELECT count(*) FROM sends WHERE status = 'sent'"
    if "path" in place:
        with contextlib.closing(sqlite3.connect(place["path"])) as db:
            return db.execute(query).fetchone()[0]
    import psycopg

    with psycopg.connect(place["url"], password=pg_server.PASSWORD) as db:
        return db.execute(query).fetchone()[0]


def _wait_until(condition, timeout_s: float, step_s: float = 0.02) -> None:
    """Poll ``condition`` until it holds, at most ``timeout_s`` seconds (bounded: what follows
    asserts what was waited for)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(step_s)


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("hold_s, outcome", [(1.0, "already_sent"), (6.0, "failed")], ids=["waits", "gives_up"])
def test_a_message_another_live_run_is_sending_is_waited_for(starttls_server, ledger_place, hold_s, outcome):
    props = ROW | {"ledger": ledger_place | {"lease_s": 1, "run_key": "r"}, "on_error": "continue"}
    fab = fabric_for(starttls_server, pool_size=1)
    starttls_server.data_script = [("hold", hold_s)]
    first, reports = _in_thread(lambda: EmailGem(props, fab, user=USER, name="j").apply(None, _frame(1)))
    _wait_until(lambda: starttls_server.holding, 30)
    second = EmailGem(props, fab, user=USER, name="j").apply(None, _frame(2))
    row = second.set_index("message_key").loc["row:[0]"]
    assert row.status == outcome
    if outcome == "already_sent":
        assert "accepted by another run" in row.error
    else:
        assert "another run still holds it" in row.error and "re-run with the same run key" in row.error
    assert second.set_index("message_key").loc["row:[1]"].status == "sent"
    first.join(timeout=30)
    assert list(reports[0]["status"]) == ["sent"]
    per_key = Counter(parse(m.data)["Subject"] for m in starttls_server.wait_for_messages(2))
    assert per_key == {"message 0": 1, "message 1": 1}


def test_spark_executors_share_a_postgresql_ledger(spark, starttls_server, postgres):
    place = {"url": postgres.create_database("t_spark"), "secret": "ledger-password"}
    props = ROW | {"ledger": place | {"run_key": "r"}}
    fab = fabric_for(starttls_server)
    frame = spark.createDataFrame(_frame(6)).repartition(3)
    first = EmailGem(props, fab, user=USER, name="j").apply(spark, frame).toPandas()
    assert sorted(first["status"]) == ["sent"] * 6
    again = EmailGem(props, fab, user=USER, name="j").apply(spark, frame).toPandas()
    assert sorted(again["status"]) == ["already_sent"] * 6
    assert len(starttls_server.wait_for_messages(6)) == 6
    ledger = SendLedger(_target(place), "j", "r", fab.destination("reports"))
    assert sorted(r["status"] for r in ledger.rows()) == ["sent"] * 6
    ledger.close()


def test_a_wrong_ledger_password_is_reported_before_anything_is_sent(starttls_server, postgres, caplog):
    wrong = "wr0ng-ledger-pw-7c2a"
    fab = fabric_for(starttls_server).with_store(MemorySecretStore({
        "smtp-password": SecretStr(PASSWORD), "ledger-password": SecretStr(wrong)}))
    props = ROW | {"ledger": {"url": postgres.url(), "secret": "ledger-password"}}
    with pytest.raises(ConfigError) as info:
        EmailGem(props, fab, user=USER, name="j").apply(None, _frame(2))
    message = str(info.value)
    assert postgres.url() in message and "password" in message and "ledger.secret" in message
    assert starttls_server.messages == []
    for text in (message, repr(info.value), caplog.text):
        assert wrong not in text and pg_server.PASSWORD not in text
    target = LedgerTarget(url=postgres.url(), password=SecretStr(pg_server.PASSWORD))
    ledger = SendLedger(target, "j", "r", "d")
    for text in (repr(target), str(target), repr(ledger)):
        assert pg_server.PASSWORD not in text and postgres.url() in text
    ledger.close()


def test_a_password_written_in_the_ledger_url_is_refused_without_echoing_it():
    with pytest.raises(GemValidationError) as info:
        EmailGem(ROW | {"ledger": {"url": "postgresql://u:hunter2-secret@db.example.com/mail"}},
                 None, user=USER)
    assert "contains a password" in str(info.value) and "ledger.secret" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize("ledger, error", [
    ({"path": "l.sqlite", "url": "postgresql://u@h/db"}, "exactly one"),
    ({"url": "mysql://u@h/db"}, "must start with postgresql://"),
    ({"url": "postgresql://u@h"}, "needs a host and a database"),
    ({"path": "l.sqlite", "secret": "x"}, "goes with ledger.url"),
])
def test_ledger_options_say_what_is_wrong(ledger, error):
    with pytest.raises(GemValidationError, match=error):
        EmailGem(ROW | {"ledger": ledger}, None, user=USER)


def test_a_ledger_from_before_claims_gains_its_owner_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sends (job TEXT NOT NULL, run_key TEXT NOT NULL, destination TEXT NOT NULL,"
                   " message_key TEXT NOT NULL, recipients_hash TEXT NOT NULL, status TEXT NOT NULL,"
                   " maybe_delivered INTEGER NOT NULL DEFAULT 0, reply_code INTEGER, message_id TEXT, connection TEXT,"
                   " attempts INTEGER NOT NULL DEFAULT 0, error TEXT, first_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
                   " PRIMARY KEY (job, run_key, destination, message_key, recipients_hash))")
        db.execute("INSERT INTO sends VALUES ('j', 'r', 'd', 'k', 'h', 'sending', 0, NULL, '<old@x>', NULL, 1, NULL,"
                   " 't', 't')")
    db.close()
    ledger = SendLedger(path, "j", "r", "d")
    # A row a killed earlier mailgem left `sending` has no owner: claimable, with its Message-ID.
    assert ledger.begin_many([("k", "h", "<new@x>")]) == set()
    assert ledger.begin_many([("k", "h", "<old@x>")]) == {("k", "h")}
    ledger.close()


def test_mailgem_run_reports_a_ledger_it_cannot_open_before_spark_starts(starttls_server, postgres, tmp_path,
                                                                         monkeypatch, capsys):
    from mailgem.runner.cli import main

    wrong = "wr0ng-ledger-pw-cli-41"
    monkeypatch.setenv("MAILGEM_SECRET_PW", PASSWORD)
    monkeypatch.setenv("MAILGEM_SECRET_LEDGER_PASSWORD", wrong)
    (tmp_path / "data.csv").write_text("n,to\n1,a@example.com\n")
    (tmp_path / "fabric.yaml").write_text(textwrap.dedent(f"""
        name: t
        teams: [{{name: t, members: [{USER}]}}]
        connections:
          - {{name: reports, host: 127.0.0.1, port: {starttls_server.port}, ca_bundle: "{starttls_server.ca_pem}",
              username: reports@example.com, password: {{secret: pw}}}}
    """))
    (tmp_path / "job.yaml").write_text(textwrap.dedent(f"""
        name: j
        source: {{path: data.csv}}
        email:
          connection: reports
          mode: per_row
          to_column: to
          subject: "n {{{{ row.n }}}}"
          ledger: {{url: "{postgres.url()}", secret: ledger-password}}
    """))
    job, fab = str(tmp_path / "job.yaml"), str(tmp_path / "fabric.yaml")
    assert main(["run", job, "--fabric", fab, "--user", USER]) == 2
    err = capsys.readouterr().err
    assert f"{job}: email.ledger: cannot open the ledger database {postgres.url()}" in err
    assert "password authentication failed" in err and wrong not in err
    assert starttls_server.messages == []
    # --local: the embedded fabric has no secrets; said at once, with the way out.
    assert main(["run", job, "--local", "--user", USER]) == 2
    assert "email.ledger.secret: the embedded local server's fabric holds no secrets" in capsys.readouterr().err
    monkeypatch.setenv("MAILGEM_SECRET_LEDGER_PASSWORD", pg_server.PASSWORD)
    assert main(["validate", job, "--fabric", fab, "--user", USER]) == 0


def test_the_same_message_twice_in_a_run_is_sent_once(starttls_server, ledger_place):
    # Identical rows without key columns are the same message (same key and recipients).
    frame = pd.DataFrame({"to": ["a@example.com", "a@example.com", "b@example.com", "a@example.com"]})
    props = {"connection": "reports", "mode": "per_row", "to_column": "to", "subject": "hi", "text_body": "x",
             "ledger": ledger_place | {"lease_s": 1}}
    report = EmailGem(props, fabric_for(starttls_server, pool_size=2), user=USER).apply(None, frame)
    assert sorted(report["status"]) == ["already_sent", "already_sent", "sent", "sent"]
    assert sorted(r for m in starttls_server.settled() for r in m.rcpt_tos) == ["a@example.com", "b@example.com"]


def _record_statements(monkeypatch) -> list[str]:
    """Every statement the ledger sends from now on (both databases), in order."""
    from mailgem.gems.email.run import ledger_db

    statements: list[str] = []
    execute = ledger_db.Backend.execute

    def recording(self, db, statement, args=()):
        statements.append(statement)
        return execute(self, db, statement, args)

    monkeypatch.setattr(ledger_db.Backend, "execute", recording)
    return statements


def test_a_rerun_looks_its_messages_up_a_chunk_at_a_time(starttls_server, ledger_place, monkeypatch):
    # A re-run asked the ledger about each message (a round trip each to PostgreSQL); now one
    # query covers a chunk of messages, and what it says is what one query each would say.
    from mailgem.gems.email.run import sender

    monkeypatch.setattr(sender, "PREFETCH_UNITS", 50)
    props = ROW | {"ledger": ledger_place}
    first = EmailGem(props, fabric_for(starttls_server, pool_size=2), user=USER).apply(None, _frame(80))
    assert set(first["status"]) == {"sent"}
    statements = _record_statements(monkeypatch)
    report = EmailGem(props, fabric_for(starttls_server, pool_size=2), user=USER).apply(None, _frame(120))
    assert Counter(report["status"]) == {"already_sent": 80, "sent": 40}
    assert list(report["message_key"]) == [f"row:[{i}]" for i in range(120)]
    lookups = [s for s in statements if "FROM sends s LEFT JOIN" in s]
    assert len(lookups) == 3 and all(_LOOKS_UP_MANY.search(s) for s in lookups), lookups  # 120 messages, chunks of 50
    assert len(starttls_server.wait_for_messages(120)) == 120
    assert sorted(r for m in starttls_server.messages for r in m.rcpt_tos) == sorted(_frame(120)["to"])


def test_a_rerun_looks_groups_up_with_a_bound_on_the_rows_held_ahead(starttls_server, ledger_place, monkeypatch):
    # A group's rows are copied out of the frame: a chunk holds at most PREFETCH_ROWS rows.
    from mailgem.gems.email.run import sender

    monkeypatch.setattr(sender, "PREFETCH_ROWS", 100)
    frame = pd.DataFrame({"team": [f"t{i // 30:02d}" for i in range(300)], "n": range(300)})
    props = {"connection": "reports", "mode": "per_group", "group_by": ["team"], "to": "ops@example.com",
             "subject": "{{ group.team }}", "attachments": [{"file_name": "rows.csv"}], "ledger": ledger_place}
    EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, frame.head(150))  # 5 groups
    statements = _record_statements(monkeypatch)
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, frame)
    assert Counter(report["status"]) == {"already_sent": 5, "sent": 5}
    lookups = [s for s in statements if "FROM sends s LEFT JOIN" in s]
    assert len(lookups) == 3 and all(_LOOKS_UP_MANY.search(s) for s in lookups)  # 4 + 4 + 2 groups of 30 rows
    assert len(starttls_server.wait_for_messages(10)) == 10


def _connect(place: dict[str, str]):
    """A connection of the test's own to the ledger's database (autocommit; ``BEGIN`` by hand)."""
    if "path" in place:
        import sqlite3

        return sqlite3.connect(place["path"], isolation_level=None)
    import psycopg

    return psycopg.connect(place["url"], password=pg_server.PASSWORD, autocommit=True)


class _Stall:
    """The ledger's database holding up this run's lease renewals, as a stalled or unreachable
    database would (or a paused process, whose lease runs out the same way): SQLite's write lock,
    or a PostgreSQL row lock on the lease rows."""

    def __init__(self, place: dict[str, str]) -> None:
        self.place = place

    def __enter__(self) -> _Stall:
        self.db = _connect(self.place)
        if "path" in self.place:
            self.db.execute("BEGIN IMMEDIATE")  # every writer waits (busy timeout)
        else:
            self.db.execute("BEGIN")
            self.db.execute("SELECT 1 FROM ledger_owners FOR UPDATE")  # renewals wait; claims do not
        return self

    def __exit__(self, *exc) -> None:
        self.db.execute("COMMIT")
        self.db.close()


def test_a_lease_that_ran_out_is_not_renewed_and_does_not_overwrite_the_next_owner(ledger_place):
    # The database's clock passed the lease (as it does while the run is stopped or asleep): the
    # renewal that comes next must not revive it, and the outcome the run records late must not
    # overwrite the run that took the message over.
    a = SendLedger(_target(ledger_place, lease_s=0.6), "job", "r1", "dest")
    b = SendLedger(_target(ledger_place), "job", "r1", "dest")
    try:
        assert a.begin_many([("k1", "h", "<a@x>")]) == {("k1", "h")}
        assert a.lease_held() and a.failure is None
        db = _connect(ledger_place)
        db.execute(f"UPDATE ledger_owners SET alive_until = 0 WHERE owner = '{a.owner}'")  # a's hex token
        db.close()
        _wait_until(lambda: a.failure is not None, 5, step_s=0.05)  # renewals come every 0.2 s
        assert type(a.failure).__name__ == "LeaseLapsedError", a.failure
        assert "had run out by the database's clock" in str(a.failure) and "Re-run with the same run key" in str(a.failure)
        assert not a.lease_held()
        assert b.begin_many([("k1", "h", "<a@x>")]) == {("k1", "h")}  # taken over (same Message-ID)
        b.finish("k1", "h", status="sent", attempts=1, reply_code=250, message_id="<a@x>", error=None)
        b.flush()
        a.finish("k1", "h", status="failed", attempts=1, reply_code=451, message_id="<a@x>", error="late")
        a.flush()
        assert b.prior("k1", "h").done and b.prior("k1", "h").status == "sent"
    finally:
        a.close()
        b.close()


def test_no_message_starts_once_the_lease_was_not_renewed_in_time(ledger_place):
    a = SendLedger(_target(ledger_place, lease_s=0.6), "job", "r1", "dest")
    try:
        assert a.lease_held()  # nothing claimed yet: no lease to lose
        a.begin_many([("k1", "h", "<a@x>")])
        with _Stall(ledger_place):
            _wait_until(lambda: not a.lease_held(), 5)
            assert not a.lease_held()
        assert "was last renewed" in str(a.failure) and "lease_s 0.6 s" in str(a.failure)
    finally:
        a.close()


def test_a_run_whose_lease_may_have_lapsed_stops_and_the_rerun_sends_the_rest_once(starttls_server, ledger_place):
    n = 60
    props = ROW | {"ledger": ledger_place | {"lease_s": 1, "run_key": "r"}}
    fab = fabric_for(starttls_server, pool_size=1)
    starttls_server.data_script = [0.05] * n  # the run takes about 3 s

    thread, out = _in_thread(lambda: _report_or_error(props, fab, n))
    _wait_until(lambda: len(starttls_server.messages) >= 5, 30)
    with _Stall(ledger_place):
        time.sleep(2.5)  # over the lease: another run could have taken its messages over meanwhile
    thread.join(timeout=60)
    assert isinstance(out[0], Exception), "the run went on sending after its lease could have lapsed"
    assert "lease" in str(out[0]) and "Re-run with the same run key" in str(out[0]), out[0]
    report = out[0].report  # one row says why, on a message that was not sent; none after it
    why = report[report["error"].fillna("").str.contains("lease")]
    assert list(why["status"]) == ["failed"] and why.iloc[0].error.startswith("not sent: this run's lease"), why
    sent_first = len(starttls_server.messages)
    assert 5 <= sent_first < n

    starttls_server.data_script = []
    again = EmailGem(props, fab, user=USER, name="j").apply(None, _frame(n))
    assert Counter(again["status"]) == {"already_sent": sent_first, "sent": n - sent_first}
    per_key = Counter(parse(m.data)["Subject"] for m in starttls_server.wait_for_messages(n))
    assert len(per_key) == n and set(per_key.values()) == {1}


def test_a_paused_run_stops_when_it_resumes_after_a_rerun_took_its_messages_over(starttls_server, tmp_path,
                                                                                 ledger_place):
    # A real pause (SIGSTOP) longer than the lease: a re-run takes the paused run's messages over
    # meanwhile; when the paused run resumes, it must not write another message.
    n = 60
    place = ledger_place | {"lease_s": 1}
    args, env = _run_args(starttls_server, tmp_path, place, n)
    # The 11th reply is held: the run waits for it, between ledger transactions, when it is paused
    # (a pause inside one is the next test's).
    starttls_server.data_script = [0.05] * 10 + [("hold", 1.0)] + [0.05] * n
    paused = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: starttls_server.holding or paused.poll() is not None, 60, step_s=0.01)
        time.sleep(0.2)  # the outcomes before it are committed (within 20 ms)
        paused.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # its lease runs out
        starttls_server.data_script = []
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        # Every session but the paused run's has closed: nothing else can arrive meanwhile.
        assert starttls_server.wait_until(lambda: starttls_server.sessions_opened - starttls_server.sessions_closed <= 1)
        before_resume = len(starttls_server.messages)
        paused.send_signal(signal.SIGCONT)
        _, err = paused.communicate(timeout=60)
    finally:
        paused.kill()
        paused.wait(timeout=30)
    assert paused.returncode != 0 and "lease" in err and "Re-run with the same run key" in err, err[-2000:]
    received = [parse(m.data) for m in starttls_server.settled()]  # with anything the resumed run still wrote
    per_key = Counter(m["Subject"] for m in received)
    assert len(per_key) == n
    # After it resumed, the paused run wrote nothing: it started no message, and it kept back the
    # content of the one whose commands it had written before the pause (behind the message
    # waiting for its reply on its one session), which it used to send.
    assert len(received) == before_resume, [m["Subject"] for m in received[before_resume:]]
    # Copies (those accepted just before the pause whose outcome it had not yet recorded, as with
    # a killed run) carry one Message-ID each.
    for key in (key for key, count in per_key.items() if count > 1):
        assert len({m["Message-ID"] for m in received if m["Subject"] == key}) == 1


def test_a_transaction_a_paused_process_left_open_ends_after_the_lease(postgres):
    # A process stopped between its BEGIN and its COMMIT holds its rows' locks: another run's
    # claim on them waited until it resumed, however long that was. The server now ends such a
    # transaction after lease_s (as the lease itself runs out), and the claim goes on.
    url = postgres.create_database("t_open_transaction")
    target = LedgerTarget(url=url, password=SecretStr(pg_server.PASSWORD), lease_s=1)
    a, b = SendLedger(target, "job", "r1", "dest"), SendLedger(target, "job", "r1", "dest")
    try:
        a.begin_many([("k1", "h", "<a@x>")])
        a.finish("k1", "h", status="failed", attempts=1, reply_code=554, message_id="<a@x>", error="refused")
        a.flush()
        # a's own connection, stopped midway through a transaction that locked k1's row:
        stalled = a._db()
        a._backend.execute(stalled, "BEGIN")
        a._backend.execute(stalled, "UPDATE sends SET attempts = attempts WHERE message_key = 'k1'")
        claim, out = _in_thread(lambda: b.begin_many([("k1", "h", "<b@x>")]))
        claim.join(timeout=15)  # bounded: without the timeout it waits as long as a is stopped
        assert not claim.is_alive(), "the claim still waits for the stopped transaction's lock"
        assert out == [{("k1", "h")}]  # a refused message may be claimed again
    finally:
        with contextlib.suppress(Exception):
            a._backend.execute(a._db(), "ROLLBACK")
        a.close()
        b.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "unpipelined"])
def test_a_message_waiting_for_a_session_when_the_lease_lapses_is_not_sent(starttls_server, ledger_place):
    # Three messages, all handed to the sender at once; the one session holds the first (its reply
    # comes after 3 s). The lease runs out meanwhile. Pipelined, the second's commands went out
    # behind the first: when the server is ready for its content, the content is kept back.
    # Unpipelined, the second waits for the session and is asked to start only then. Either way
    # the second is the row that says why the run stopped (not a message that was sent), and the
    # third, waiting for the session, never starts.
    props = ROW | {"ledger": ledger_place | {"lease_s": 1, "run_key": "r"}}
    fab = fabric_for(starttls_server, pool_size=1)
    starttls_server.data_script = [("hold", 3.0)]

    thread, out = _in_thread(lambda: _report_or_error(props, fab, 3))
    _wait_until(lambda: starttls_server.holding, 30)
    with _Stall(ledger_place):
        time.sleep(2.0)  # no renewal: the lease runs out while the first message is held
    thread.join(timeout=60)
    report = out[0].report
    assert list(report["message_key"]) == ["row:[0]", "row:[1]"]
    assert list(report["status"]) == ["sent", "failed"], report
    assert report.iloc[1].error.startswith("not sent: this run's lease")
    assert "lease" not in str(report.iloc[0].error)
    assert [parse(m.data)["Subject"] for m in starttls_server.settled()] == ["message 0"]
    assert starttls_server.empty_contents == []
