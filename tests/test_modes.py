"""per_group and per_row modes, recipients from data, the message cap, the ledger (re-runs; a
killed run and racing runs are in test_ledger.py), and the Spark-distributed path delivering the same messages as the pandas path."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd
import pytest
from conftest import PASSWORD, USER, fabric_for, normalised, parse

from mailgem.gems.email import DeliveryError, EmailGem
from mailgem.gems.email.gem import MessageCapError

ROOT = Path(__file__).resolve().parents[1]


GROUP = {"connection": "reports", "mode": "per_group", "group_by": ["team"], "to_column": "manager",
         "subject": "{{ group.team }}: {{ row_count }} open tickets",
         "attachments": [{"file_name": "{{ group.team }}.csv"}]}
ROW = {"connection": "reports", "mode": "per_row", "key_columns": ["ticket"], "to": "{{ row.manager }}",
       "subject": "Ticket {{ row.ticket }}: {{ row.title }}", "text_body": "Hello, ticket {{ row.ticket }} is yours."}


def _messages(server, n):
    return [(m, parse(m.data)) for m in server.wait_for_messages(n, timeout_s=20)]


def test_per_group_sends_each_group_only_its_rows(starttls_server, tickets):
    report = EmailGem(GROUP, fabric_for(starttls_server), user=USER, name="tickets").apply(None, tickets)
    assert sorted(report["message_key"]) == ['group:["core"]', 'group:["data"]', 'group:["web"]']
    assert set(report["status"]) == {"sent"}
    got = {}
    for received, msg in _messages(starttls_server, 3):
        [att] = list(msg.iter_attachments())
        csv = pd.read_csv(io.StringIO(att.get_content()))
        got[msg["Subject"]] = (received.rcpt_tos, sorted(csv["ticket"]), msg.get_body(("html",)).get_content())
    assert set(got) == {"core: 2 open tickets", "web: 2 open tickets", "data: 1 open tickets"}
    rcpts, ids, html = got["core: 2 open tickets"]
    assert rcpts == ("ana@example.com",) and ids == [101, 102]
    assert "Disk full" in html and "&lt;b&gt;Leak&lt;/b&gt;" in html and "CSS" not in html and "ETL" not in html
    assert got["web: 2 open tickets"][:2] == (("ben@example.com",), [201, 202])


def test_per_row_one_email_per_row_with_every_column(starttls_server, tickets):
    report = EmailGem(ROW, fabric_for(starttls_server), user=USER, name="tickets").apply(None, tickets)
    assert len(report) == 5 and set(report["status"]) == {"sent"}
    assert list(report["message_key"]) == [f"row:[{t}]" for t in tickets["ticket"]]
    by_subject = {msg["Subject"]: (r.rcpt_tos, msg) for r, msg in _messages(starttls_server, 5)}
    rcpts, msg = by_subject["Ticket 102: <b>Leak</b>"]
    assert rcpts == ("ana@example.com",) and msg.get_content().strip() == "Hello, ticket 102 is yours."


def test_bad_address_in_data_fails_only_that_message(starttls_server, tickets):
    tickets.loc[2, "manager"] = "not-an-address"
    report = EmailGem(ROW | {"on_error": "continue"}, fabric_for(starttls_server), user=USER).apply(None, tickets)
    bad = report[report["message_key"] == "row:[201]"].iloc[0]
    assert bad.status == "failed" and "not-an-address" in bad.error and pd.isna(bad.reply_code)
    assert (report["status"] == "sent").sum() == 4
    assert len(_messages(starttls_server, 4)) == 4


def test_bad_address_with_on_error_stop_raises_after_recording_what_was_sent(starttls_server, tickets):
    tickets.loc[2, "manager"] = "not-an-address"
    with pytest.raises(DeliveryError, match="not-an-address") as info:
        EmailGem(ROW | {"connection": "reports"}, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, tickets)
    report = info.value.report
    assert list(report["status"]) == ["sent", "sent", "failed"]  # nothing after the failure was scheduled
    assert len(starttls_server.wait_for_messages(2)) == 2


def test_max_messages_is_checked_before_sending_anything(starttls_server, tickets):
    with pytest.raises(MessageCapError, match="5 messages, over max_messages 4; nothing was sent"):
        EmailGem(ROW | {"max_messages": 4}, fabric_for(starttls_server), user=USER).apply(None, tickets)
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0


def test_spark_frames_are_computed_once_and_checked_before_sending(spark, starttls_server, tickets):
    # An uncached frame's upstream used to run three times: a count, the partitions (adaptive
    # execution runs a shuffle to know them) and the sending job. Now only the sending job
    # computes it; max_messages takes one pass of at most max_messages + 1 rows (the exact
    # count only for the error), before anything is sent.
    from pyspark.sql import functions as F

    seen = spark.sparkContext.accumulator(0)

    def keep(ticket):  # upstream work: counts every row it is run on
        seen.add(1)
        return True

    frame = spark.createDataFrame(tickets).repartition(1).filter(F.udf(keep, "boolean")(F.col("ticket")))
    report = EmailGem(ROW, fabric_for(starttls_server), user=USER).apply(spark, frame).toPandas()
    assert (report["status"] == "sent").sum() == 5 and len(_messages(starttls_server, 5)) == 5
    assert seen.value == 5  # each row once

    with pytest.raises(MessageCapError, match="5 messages, over max_messages 4; nothing was sent"):
        EmailGem(ROW | {"max_messages": 4}, fabric_for(starttls_server), user=USER).apply(spark, frame)
    with pytest.raises(MessageCapError, match="3 messages, over max_messages 2; nothing was sent"):
        EmailGem(GROUP | {"max_messages": 2}, fabric_for(starttls_server), user=USER).apply(spark, frame)
    report = EmailGem(ROW | {"max_messages": 5}, fabric_for(starttls_server), user=USER).apply(
        spark, frame.filter("ticket < 0")).toPandas()
    assert list(report["status"]) == ["skipped"] and report.iloc[0].message_key == "(none)"
    assert len(starttls_server.settled()) == 5  # nothing more was sent


def test_ledger_makes_a_rerun_send_only_what_was_not_accepted(starttls_server, tickets, tmp_path):
    props = ROW | {"ledger": {"path": str(tmp_path / "ledger.sqlite"), "run_key": "2024-05-01"}}
    fab = fabric_for(starttls_server)
    first = EmailGem(props, fab, user=USER, name="tickets").apply(None, tickets.iloc[:3])
    assert list(first["status"]) == ["sent"] * 3
    second = EmailGem(props, fab, user=USER, name="tickets").apply(None, tickets)
    assert list(second["status"]) == ["already_sent"] * 3 + ["sent"] * 2
    assert list(second["message_id"][:3]) == list(first["message_id"])
    messages = _messages(starttls_server, 5)
    assert len(messages) == 5 and len({m["Message-ID"] for _, m in messages}) == 5
    other_run = EmailGem(props | {"ledger": {"path": str(tmp_path / "ledger.sqlite"), "run_key": "2024-05-02"}},
                         fab, user=USER, name="tickets").apply(None, tickets.iloc[:1])
    assert list(other_run["status"]) == ["sent"]


def _fingerprint(messages):
    """Everything but Date and Message-ID (a new one per message and run)."""
    out = []
    for received, msg in messages:
        atts = [gzip.decompress(a.get_content()) if a.get_content_type() == "application/gzip" else a.get_content()
                for a in msg.iter_attachments()]
        assert msg["Message-ID"].endswith(".mailgem@example.com>")
        out.append((msg["Subject"], received.rcpt_tos, msg.get_body(("plain",)).get_content(),
                    msg.get_body(("html",)).get_content() if msg.get_body(("html",)) else None, atts))
    return sorted(out)


@pytest.mark.parametrize("props", [GROUP, ROW | {"text_body": None, "attachments": [{"compression": "gzip"}]}],
                         ids=["per_group", "per_row"])
def test_spark_distributed_path_delivers_the_same_messages_as_pandas(spark, tickets, props, tmp_path):
    from fault_server import FaultServer

    results, raw = [], []
    for engine in ("pandas", "spark"):
        with FaultServer(security="starttls", users={"reports@example.com": PASSWORD}) as server:
            ledger = {"path": str(tmp_path / f"{engine}.sqlite"), "run_key": "same-run"}
            gem = EmailGem(props | {"ledger": ledger}, fabric_for(server), user=USER, name="tickets")
            frame = tickets if engine == "pandas" else spark.createDataFrame(tickets).repartition(3)
            report = gem.apply(spark, frame)
            if engine == "spark":
                assert type(report).__module__.startswith("pyspark.sql")
                report = report.toPandas()
            assert set(report["status"]) == {"sent"}
            results.append(_fingerprint(_messages(server, len(report))))
            raw.append(sorted(normalised(m.data) for m in server.messages))
    assert results[0] == results[1] and len(results[0]) in (3, 5)
    assert raw[0] == raw[1]  # byte for byte, but for Date, Message-ID and boundaries


def test_progress_logs_counts_when_not_in_a_terminal(caplog):
    import logging

    from mailgem.gems.email.run.progress import Progress
    from mailgem.gems.email.run.report import DeliveryRow

    caplog.set_level(logging.INFO, logger="mailgem.gems")
    progress = Progress(3, "bench", interval_s=0, interactive=False)
    for status in ("sent", "sent", "failed"):
        progress(DeliveryRow("k", status))
    progress.close()
    assert "3/3 messages: 1 failed, 2 sent" in caplog.text

