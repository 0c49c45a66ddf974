"""One message's problem is that message's failed row, never the end of the run: internationalised
addresses (RFC 6531/6532) on servers with and without SMTPUTF8, and any other exception while
building or sending one message, locally and on Spark executors, with what the ledger keeps."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest
from conftest import PER_ROW, USER, fabric_for, parse_strict
from fault_server import DATA_TIMEOUT_S, LATE_S

from mailgem.gems.email import DeliveryError, EmailGem
from mailgem.gems.email.run import sender
from mailgem.gems.email.run.ledger import SendLedger

# Both transaction paths: with PIPELINING (RFC 2920) and without.
PIPELINING_MODES = (True, False)


def _frame(*addresses: str) -> pd.DataFrame:
    return pd.DataFrame({"n": range(len(addresses)), "to": list(addresses)})


def _by_key(report):
    return {row.message_key: row for row in report.itertuples()}


@pytest.mark.parametrize("server_fixture", ["starttls_server", "smtputf8_server"])
def test_idn_domain_goes_out_as_its_a_label_on_every_server(request, server_fixture):
    server = request.getfixturevalue(server_fixture)
    report = EmailGem(PER_ROW, fabric_for(server), user=USER).apply(None, _frame("user@exämple.com", "ops@example.com"))
    assert list(report["status"]) == ["sent", "sent"]
    assert report.iloc[0].recipients == "user@xn--exmple-cua.com"
    received = {m.rcpt_tos: m for m in server.wait_for_messages(2)}
    idn = received[("user@xn--exmple-cua.com",)]
    assert "SMTPUTF8" not in idn.mail_options  # an A-label needs no extension
    msg = parse_strict(idn.data)
    assert msg["To"] == "user@xn--exmple-cua.com" and msg["Subject"] == "Message 0"


def test_non_ascii_local_part_uses_smtputf8_when_the_server_offers_it(smtputf8_server):
    frame = _frame("josé@example.org", "ops@example.com", "Zoë Ünal <zoë@exämple.com>")
    report = EmailGem(PER_ROW, fabric_for(smtputf8_server), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent"] * 3, report["error"].tolist()
    received = {m.rcpt_tos[0]: m for m in smtputf8_server.wait_for_messages(3)}
    jose = received["josé@example.org"]
    assert "SMTPUTF8" in jose.mail_options and "BODY=8BITMIME" in jose.mail_options
    assert parse_strict(jose.data)["To"].addresses[0].addr_spec == "josé@example.org"
    zoe = parse_strict(received["zoë@exämple.com"].data)  # U-labels stay as written with SMTPUTF8
    assert zoe["To"].addresses[0].display_name == "Zoë Ünal"
    assert "SMTPUTF8" not in received["ops@example.com"].mail_options


def test_non_ascii_local_part_fails_only_that_message_without_smtputf8(starttls_server):
    frame = _frame("ops@example.com", "josé@example.org", "ana@example.com")
    report = EmailGem(PER_ROW, fabric_for(starttls_server), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent", "failed", "sent"]
    failed = report.iloc[1]
    assert "josé@example.org" in failed.error and "SMTPUTF8" in failed.error and "RFC 6531" in failed.error
    assert pd.isna(failed.reply_code) and failed.attempts == 1  # permanent: not retried
    assert sorted(m.rcpt_tos for m in starttls_server.wait_for_messages(2)) == [("ana@example.com",), ("ops@example.com",)]


def test_on_error_stop_still_returns_the_report(starttls_server):
    frame = _frame("ops@example.com", "josé@example.org", "ana@example.com")
    with pytest.raises(DeliveryError, match="SMTPUTF8") as info:
        EmailGem(PER_ROW | {"on_error": "stop"}, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, frame)
    assert list(info.value.report["status"]) == ["sent", "failed"]


def test_a_template_error_on_one_row_fails_that_row_only(starttls_server):
    frame = pd.DataFrame({"n": [1, 0, 2], "to": ["a@example.com", "b@example.com", "c@example.com"]})
    props = PER_ROW | {"subject": "{{ 10 // row.n }} per unit"}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent", "failed", "sent"]
    assert report.iloc[1].error.startswith("subject: ZeroDivisionError")
    assert len(starttls_server.wait_for_messages(2)) == 2


def test_a_value_the_charset_cannot_hold_names_the_part_and_column(starttls_server):
    frame = pd.DataFrame({"n": [1, 2], "to": ["a@example.com", "b@example.com"], "city": ["Zürich", "東京"]})
    props = PER_ROW | {"text_body": "City: {{ row.city }}"}
    report = EmailGem(props, fabric_for(starttls_server, charset="iso-8859-1"), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent", "failed"]
    error = report.iloc[1].error
    assert error.startswith("text_body: character '東'") and "column 'city'" in error and "utf-8" in error
    [received] = starttls_server.wait_for_messages(1)
    assert parse_strict(received.data).get_content().strip() == "City: Zürich"


def test_text_that_is_not_valid_unicode_fails_only_its_row(starttls_server):
    frame = pd.DataFrame({"n": [1, 2, 3], "to": ["a@example.com", "b@example.com", "c@example.com"],
                          "name": ["Ann", "bad \udc80 bytes", "Cy"]})
    props = PER_ROW | {"text_body": "Hi {{ row.name }}"}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent", "failed", "sent"]
    assert "column 'name'" in report.iloc[1].error and "not valid Unicode" in report.iloc[1].error
    assert len(starttls_server.wait_for_messages(2)) == 2


def test_a_column_the_csv_writer_refuses_is_named(starttls_server):
    # Nested columns are written as JSON (issue 9); an interval is something CSV still cannot hold.
    frame = pd.DataFrame({"team": ["a", "b"], "to": ["a@example.com", "b@example.com"],
                          "tags": [pd.DateOffset(months=1), pd.DateOffset(days=2)]})
    props = {"connection": "reports", "mode": "per_group", "group_by": ["team"], "to_column": "to",
             "subject": "{{ group.team }}", "attachments": [{"file_name": "{{ group.team }}.csv"}], "on_error": "continue"}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, frame)
    assert set(report["status"]) == {"failed"}
    error = report.iloc[0].error
    assert error.startswith("attachments[0] (a.csv): ") and "'tags' (month_day_nano_interval)" in error
    assert "columns option" in error
    assert starttls_server.messages == []


def test_ledger_is_failed_unless_data_may_have_reached_the_server(starttls_server, tmp_path):
    # Message 0: 554 after DATA (definitely refused). Message 1: accepted, but the reply comes after
    # the client gave up (may be delivered). Message 2: josé without SMTPUTF8 (refused before MAIL
    # FROM, nothing left). Message 3: sent.
    starttls_server.data_script = ["554 5.6.0 Message rejected", LATE_S, None]
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "r1"}}
    fabric = fabric_for(starttls_server, pool_size=1, data_timeout_s=DATA_TIMEOUT_S, max_attempts=1)
    frame = _frame("a@example.com", "b@example.com", "josé@example.org", "d@example.com")
    report = EmailGem(props, fabric, user=USER, name="job").apply(None, frame)
    assert list(report["status"]) == ["failed", "failed", "failed", "sent"]
    assert "may have accepted it" in report.iloc[1].error and "may have" not in report.iloc[0].error
    ledger = SendLedger(tmp_path / "l.sqlite", "job", "r1", fabric.destination("reports"))
    rows = {r["message_key"]: r for r in ledger.rows()}
    assert [(rows[f"row:[{n}]"]["status"], rows[f"row:[{n}]"]["maybe_delivered"]) for n in range(4)] \
        == [("failed", 0), ("sending", 1), ("failed", 0), ("sent", 0)]


def test_spark_executors_record_a_bad_message_and_go_on(spark, starttls_server, tmp_path):
    frame = spark.createDataFrame(_frame("ops@example.com", "josé@example.org", "user@exämple.com",
                                         "ana@example.com")).repartition(2)
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "r1"}}
    fabric = fabric_for(starttls_server)
    report = _by_key(EmailGem(props, fabric, user=USER, name="job").apply(spark, frame).toPandas())
    assert {k: r.status for k, r in report.items()} == {
        "row:[0]": "sent", "row:[1]": "failed", "row:[2]": "sent", "row:[3]": "sent"}
    assert "SMTPUTF8" in report["row:[1]"].error
    assert len(starttls_server.wait_for_messages(3)) == 3
    ledger = SendLedger(tmp_path / "l.sqlite", "job", "r1", fabric.destination("reports"))
    assert sorted(r["status"] for r in ledger.rows()) == ["failed"] + ["sent"] * 3  # nothing left "sending"
    again = EmailGem(props, fabric, user=USER, name="job").apply(spark, frame).toPandas()
    assert sorted(again["status"]) == ["already_sent"] * 3 + ["failed"]
    assert len(starttls_server.settled()) == 3  # nobody got a second copy


def test_a_ledger_that_cannot_be_written_stops_the_run_even_under_continue(starttls_server, tmp_path, monkeypatch):
    import sqlite3

    calls: list[list[tuple]] = []
    begin_many = SendLedger.begin_many

    def failing_begin_many(self, items):
        calls.append(list(items))
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return begin_many(self, items)

    monkeypatch.setattr(SendLedger, "begin_many", failing_begin_many)
    monkeypatch.setattr(sender, "CLAIM_BATCH", 4)  # two claims for 8 messages
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite")}}
    with pytest.raises(DeliveryError, match="writing the ledger: OperationalError: disk I/O error") as info:
        EmailGem(props, fabric_for(starttls_server, pool_size=1), user=USER).apply(
            None, _frame(*[f"u{i}@example.com" for i in range(8)]))
    # Messages are recorded a batch at a time (the second claimed while the first starts); the
    # second batch could not be recorded, so none of it was sent, and no message of the first
    # that had not started yet starts: without a ledger, a re-run could send twice.
    report = info.value.report
    sent = int((report["status"] == "sent").sum())
    assert sent <= len(calls[0]) and list(report["status"]) == ["sent"] * sent + ["failed"] * len(calls[1])
    assert all(e.startswith("not sent: ") for e in report["error"][sent:])
    assert list(report["message_key"][sent:]) == [key for key, _, _ in calls[1]]
    assert len(starttls_server.settled()) == sent


def test_an_outcome_that_cannot_be_recorded_stops_the_run(starttls_server, tmp_path, monkeypatch):
    # Outcomes are committed together after the server's replies; when that commit fails, no
    # further message goes out (a re-run could not know what was accepted).
    import sqlite3

    transaction = SendLedger._transaction
    failures = []

    def failing_outcomes(self, claims):
        if claims is None and not failures:  # the first commit of outcomes alone
            failures.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        return transaction(self, claims)

    monkeypatch.setattr(SendLedger, "_transaction", failing_outcomes)
    # Replies come 50 ms late, so outcomes are committed on their own (after OUTCOME_DELAY_S)
    # before the next batch's claim would carry them.
    starttls_server.data_script = [0.05] * 12
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite")}, "on_error": "continue"}
    frame = _frame(*[f"u{i}@example.com" for i in range(12)])
    with pytest.raises(DeliveryError, match="ledger: OperationalError: disk I/O error") as info:
        EmailGem(props, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, frame)
    report = info.value.report
    sent = int((report["status"] == "sent").sum())
    assert 0 < sent < 12 and len(report) < 12 + 1
    assert report["error"].str.contains("disk I/O error").any()
    assert len(starttls_server.settled()) == sent  # nothing went out after the failure was known


def test_each_message_is_sending_on_disk_before_it_arrives_and_ledger_writes_are_batched(starttls_server, tmp_path,
                                                                                           monkeypatch):
    import sqlite3
    from email import message_from_bytes

    path = tmp_path / "l.sqlite"
    seen: list[object] = []

    def status_on_disk(envelope):  # runs in the server as each message's content arrives
        message_id = message_from_bytes(envelope.original_content)["Message-ID"]
        with contextlib.closing(sqlite3.connect(path)) as db:
            seen.append(db.execute("SELECT status FROM sends WHERE message_id=?", (message_id,)).fetchone())

    commits: list[int] = []
    transaction = SendLedger._transaction

    def counted(self, claims):
        commits.append(len(claims) if claims else 0)
        return transaction(self, claims)

    monkeypatch.setattr(SendLedger, "_transaction", counted)
    n = 24
    starttls_server.data_script = [status_on_disk] * n
    props = PER_ROW | {"ledger": {"path": str(path)}}
    report = EmailGem(props, fabric_for(starttls_server, pool_size=2), user=USER).apply(
        None, _frame(*[f"u{i}@example.com" for i in range(n)]))
    assert set(report["status"]) == {"sent"}
    assert seen == [("sending",)] * n  # recorded, and committed, before its first byte
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT status, COUNT(*) FROM sends GROUP BY status").fetchall() == [("sent", n)]
    # One commit per message and outcome would be 2n; batches of begins and group-committed outcomes are fewer.
    assert sum(commits) == n and max(commits) > 1 and len(commits) < 2 * n, commits


def test_on_error_stop_sends_what_comes_before_the_failure_and_nothing_after(starttls_server, tmp_path):
    # With a ledger, messages are built and recorded a batch at a time: a bad address in the middle
    # of a batch still lets the messages before it go out, and none after it.
    frame = _frame("a@example.com", "b@example.com", "c@example.com", "not-an-address", "e@example.com",
                   "f@example.com")
    props = PER_ROW | {"on_error": "stop", "ledger": {"path": str(tmp_path / "l.sqlite")}}
    with pytest.raises(DeliveryError, match="not-an-address") as info:
        EmailGem(props, fabric_for(starttls_server, pool_size=2), user=USER).apply(None, frame)
    assert list(info.value.report["status"]) == ["sent", "sent", "sent", "failed"]
    assert sorted(m.rcpt_tos[0] for m in starttls_server.settled()) == \
        ["a@example.com", "b@example.com", "c@example.com"]
