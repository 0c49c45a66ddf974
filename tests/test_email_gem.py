"""The Email gem end to end against a real STARTTLS + AUTH server: what the server received."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import LOGIN, USER, fabric_for, parse

from mailgem.fabric import AccessDeniedError
from mailgem.gems.email import DeliveryError, EmailGem, GemValidationError, validate
from mailgem.gems.email.run.report import REPORT_COLUMNS


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "carrier": ["UA", "<script>alert(1)</script>", "B6 & Co", None],
        "delay": [12.345, np.nan, 1234.5, 7.0],
        "flights": [1200, 3, 45, 8],
        "day": pd.to_datetime(["2013-07-01 08:30", "2013-07-02 00:00", None, "2013-07-04 23:59"]),
    })


def _props(**overrides):
    return {"connection": "reports", "to": "Ops Team <ops@example.com>, finance@example.com",
            "subject": "Report {{ run_date }}: {{ row_count }} rows"} | overrides


def _send(server, frame, spark=None, **overrides):
    gem = EmailGem(_props(**overrides), fabric_for(server), user=USER, name="daily")
    report = gem.apply(spark, frame)
    return report, [parse(m.data) for m in server.wait_for_messages(1, timeout_s=5)]


def test_report_email_structure_and_headers(starttls_server, frame):
    report, [msg] = _send(starttls_server, frame, cc="cc@example.com", bcc="audit@example.com",
                          reply_to="team@example.com", priority="high", headers={"X-Report": "daily"},
                          attachments=[{"file_name": "data-{{ run_date }}.csv"}])
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p.get_content_type() for p in msg.walk()]
    assert parts == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/csv"]
    assert msg["From"].addresses[0].addr_spec == LOGIN
    assert [a.addr_spec for a in msg["To"].addresses] == ["ops@example.com", "finance@example.com"]
    assert msg["To"].addresses[0].display_name == "Ops Team"
    assert msg["Cc"] == "cc@example.com" and msg["Reply-To"] == "team@example.com" and msg["Bcc"] is None
    assert msg["X-Priority"] == "1 (Highest)" and msg["Importance"] == "high" and msg["X-Report"] == "daily"
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    assert msg["Subject"] == f"Report {dt.datetime.now(dt.UTC).date().isoformat()}: 4 rows"
    received = starttls_server.messages[0]
    assert set(received.rcpt_tos) == {"ops@example.com", "finance@example.com", "cc@example.com", "audit@example.com"}
    row = report.iloc[0]
    assert list(report.columns) == REPORT_COLUMNS and len(report) == 1
    assert row.status == "sent" and row.reply_code == 250 and row.accepted == 4
    assert row.message_id == msg["Message-ID"]


def test_cell_values_are_html_escaped_and_formatted(starttls_server, frame):
    _, [msg] = _send(starttls_server, frame, formats={"float_format": ",.1f", "datetime_format": "%d/%m %H:%M"})
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "B6 &amp; Co" in html
    assert ">1,234.5<" in html and ">12.3<" in html and ">1,200<" in html and ">01/07 08:30<" in html
    assert "nan" not in html.lower().replace("nan-", "") and "NaT" not in html and "None" not in html
    # What repeats per cell is in one <style> block; colours are inline too, for clients that drop it.
    assert html.count("<style>") == 1 and '<table class="mg"' in html and "background-color:#ffffff;color:#101828" in html
    text = msg.get_body(("plain",)).get_content()
    assert "1,234.5" in text and "<script>alert(1)</script>" in text  # text part is not HTML


def test_nan_and_none_render_as_empty_cells(starttls_server):
    frame = pd.DataFrame({"a": [np.nan], "b": [None], "c": [pd.NaT]})
    _, [msg] = _send(starttls_server, frame)
    html = msg.get_body(("html",)).get_content()
    cells = html.split("<tbody>")[1]
    assert cells.count("></td>") == 3


def test_table_is_cut_to_the_html_budget_with_a_note(starttls_server):
    frame = pd.DataFrame({"id": range(5_000), "text": ["some longer value " * 3] * 5_000})
    _, [msg] = _send(starttls_server, frame, table={"max_rows": 2_000, "max_html_bytes": 40_000},
                     attachments=[{"compression": "gzip"}])
    html = msg.get_body(("html",)).get_content()
    shown = html.count("<tr>") - 1
    assert 10 < shown < 2_000
    assert len(html.encode()) <= 40_000
    assert f"Showing {shown:,} of 5,000 rows; the full data is attached." in html
    att = next(msg.iter_attachments())
    data = gzip.decompress(att.get_content())
    assert data.count(b"\n") == 5_001  # header + every row


def test_csv_attachment_options(starttls_server, frame):
    _, [msg] = _send(starttls_server, frame, attachments=[
        {"file_name": "a.csv", "columns": ["carrier", "delay"], "delimiter": ";", "header": False},
        {"file_name": "b-{{ row_count }}.csv", "compression": "zip"},
    ])
    a, b = list(msg.iter_attachments())
    assert a.get_filename() == "a.csv"
    lines = a.get_content().splitlines()
    assert lines[0] == '"UA";12.345' and lines[1] == '"<script>alert(1)</script>";' and len(lines) == 4
    assert b.get_filename() == "b-4.csv.zip" and b.get_content_type() == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b.get_content())) as zf:
        assert zf.namelist() == ["b-4.csv"]
        back = pd.read_csv(zf.open("b-4.csv"))
    assert list(back.columns) == list(frame.columns) and len(back) == 4


def test_summary_table(starttls_server):
    frame = pd.DataFrame({"carrier": ["UA", "UA", "AA"], "delay": [10.0, 30.0, 5.0]})
    _, [msg] = _send(starttls_server, frame, table={"summary": {
        "group_by": ["carrier"], "aggregates": [{"column": "delay", "function": "mean", "name": "avg"},
                                                 {"column": "delay", "function": "count", "name": "n"}],
        "order_by": ["-avg"]}})
    text = msg.get_body(("plain",)).get_content()
    lines = [line.split() for line in text.splitlines() if line.startswith(("UA", "AA", "carrier"))]
    assert lines == [["carrier", "avg", "n"], ["UA", "20.00", "2"], ["AA", "5.00", "1"]]


def test_custom_templates_get_the_frame_context(starttls_server, frame):
    _, [msg] = _send(starttls_server, frame,
                     text_body="{{ columns | join(',') }} / first={{ rows[0].carrier }} / {{ shown_rows }}",
                     html_body="<h1>{{ rows[1].carrier }}</h1>{{ table }}")
    assert msg.get_body(("plain",)).get_content().strip() == "carrier,delay,flights,day / first=UA / 4"
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in msg.get_body(("html",)).get_content()


def test_text_only_body(starttls_server, frame):
    _, [msg] = _send(starttls_server, frame, text_body="only text {{ row_count }}")
    assert msg.get_content_type() == "text/plain" and msg.get_content().strip() == "only text 4"


def test_subject_line_breaks_from_data_cannot_inject_headers(starttls_server):
    frame = pd.DataFrame({"name": ["evil\r\nBcc: victim@example.com\r\nX-Injected: 1"]})
    _, [msg] = _send(starttls_server, frame, subject="Hi {{ rows[0].name }}")
    assert msg["X-Injected"] is None and msg["Bcc"] is None
    assert msg["Subject"] == "Hi evil Bcc: victim@example.com X-Injected: 1"
    assert set(starttls_server.messages[0].rcpt_tos) == {"ops@example.com", "finance@example.com"}


@pytest.mark.parametrize("headers, fragment", [
    ({"From": "ceo@example.com"}, "reserved"),
    ({"fRoM": "ceo@example.com"}, "reserved"),
    ({"return-path": "x@example.com"}, "reserved"),
    ({"DKIM-Signature": "v=1"}, "reserved"),
    ({"Message-ID": "<x@y>"}, "reserved"),
    ({"X-Ok": "a\r\nBcc: victim@example.com"}, "header injection"),
    ({"X-Ok": "a\nb"}, "header injection"),
    ({"Bad Name": "v"}, "printable ASCII"),
    ({"X:Colon": "v"}, "printable ASCII"),
    ({f"X-H{i}": "v" for i in range(51)}, "at most 50"),
])
def test_forbidden_headers_are_rejected_and_nothing_is_sent(starttls_server, frame, headers, fragment):
    diagnostics = validate(_props(headers=headers))
    assert any(fragment in d.message and d.severity == "error" for d in diagnostics)
    with pytest.raises(GemValidationError, match=fragment):
        _send(starttls_server, frame, headers=headers)
    assert starttls_server.messages == []


def test_validate_reports_every_problem_with_paths(frame):
    diagnostics = validate(_props(
        to="not-an-address, ok@example.com", cc=["x@"], subject="{{ unclosed",
        html_body="{% for %}", table={"columns": ["carrier", "nope"]},
        attachments=[{"columns": ["missing"]}]), columns=list(frame.columns))
    paths = {d.path for d in diagnostics}
    assert {"to[0]", "cc[0]", "subject", "html_body", "table.columns", "attachments[0].columns"} <= paths
    unknown = next(d for d in diagnostics if d.path == "table.columns")
    assert "'nope'" in unknown.message and "carrier" in unknown.message
    assert validate(_props(), columns=list(frame.columns)) == []


def test_validate_limits():
    long_subject = validate(_props(subject="x" * 999))
    assert any(d.path == "subject" and "998" in d.message for d in long_subject)
    assert any(d.path == "to" for d in validate(_props(to=[])))
    assert validate({"connection": "c", "subject": "s", "to": "a@example.com", "colour": 1})[0].path == "colour"


def test_gem_has_no_from_field_and_schema_exports():
    schema = EmailGem.schema()
    assert "from" not in {k.lower() for k in schema["properties"]}
    assert {"connection", "to", "cc", "bcc", "subject", "attachments", "on_empty", "on_error"} <= set(schema["properties"])
    json.dumps(schema)
    with pytest.raises(GemValidationError, match="from"):
        EmailGem(_props(**{"from": "ceo@example.com"}), fabric=None)  # type: ignore[arg-type]


def test_empty_frame_skip_sends_nothing_send_anyway_sends(starttls_server):
    empty = pd.DataFrame({"a": pd.Series([], dtype="int64")})
    report = EmailGem(_props(), fabric_for(starttls_server), user=USER).apply(None, empty)
    assert report.iloc[0].status == "skipped" and starttls_server.messages == []
    report = EmailGem(_props(on_empty="send"), fabric_for(starttls_server), user=USER).apply(None, empty)
    [msg] = [parse(m.data) for m in starttls_server.wait_for_messages(1)]
    assert report.iloc[0].status == "sent" and "0 rows" in msg["Subject"]


def test_on_error_continue_records_and_stop_raises(starttls_server, frame):
    bad = fabric_for(starttls_server, password="wrong-password")
    report = EmailGem(_props(on_error="continue"), bad, user=USER).apply(None, frame)
    row = report.iloc[0]
    assert row.status == "failed" and row.reply_code == 535 and row.enhanced_status == "5.7.8"
    assert "App Password" in row.error
    with pytest.raises(DeliveryError) as info:
        EmailGem(_props(), bad, user=USER).apply(None, frame)
    assert info.value.report.iloc[0].status == "failed" and info.value.cause.code == 535
    assert starttls_server.messages == []


def test_access_denied_for_non_member(starttls_server, frame):
    with pytest.raises(AccessDeniedError):
        EmailGem(_props(), fabric_for(starttls_server), user="mallory").apply(None, frame)
    assert starttls_server.messages == [] and starttls_server.auth_attempts == []


def test_partial_refusal_is_reported(starttls_server, frame):
    starttls_server.rcpt_refusals["finance@example.com"] = "550 5.1.1 Unknown user"
    report, _ = _send(starttls_server, frame)
    row = report.iloc[0]
    assert row.status == "partial" and row.accepted == 1 and "finance@example.com: 550" in row.refused


def test_spark_and_pandas_inputs_give_the_same_email(starttls_server, spark, frame):
    props = dict(attachments=[{"file_name": "d.csv"}], subject="{{ row_count }} rows, first {{ rows[0].carrier }}")
    fab = fabric_for(starttls_server)
    # A Spark TIMESTAMP is an instant, shown in the session's zone (UTC): pandas' equivalent is aware.
    EmailGem(_props(**props), fab, user=USER, name="same").apply(None, frame.assign(day=frame["day"].dt.tz_localize("UTC")))
    spark_report = EmailGem(_props(**props), fab, user=USER, name="same").apply(spark, spark.createDataFrame(frame))
    assert type(spark_report).__module__.startswith("pyspark.sql")
    assert spark_report.collect()[0].status == "sent"
    a, b = (parse(m.data) for m in starttls_server.wait_for_messages(2))

    def strip_volatile(msg):
        return msg["Subject"], msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content(), \
            [p.get_content() for p in msg.iter_attachments()]

    assert strip_volatile(a) == strip_volatile(b)
    assert "<td" in strip_volatile(a)[2]


def test_pandas_report_round_trips_through_spark_schema(spark, starttls_server, frame):
    report = EmailGem(_props(), fabric_for(starttls_server), user=USER).apply(spark, spark.createDataFrame(frame))
    assert report.columns == REPORT_COLUMNS and report.count() == 1


def test_message_over_the_servers_size_is_refused_before_data(frame):
    from fault_server import FaultServer
    from conftest import PASSWORD

    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, data_size_limit=3_000) as server:
        with pytest.raises(DeliveryError) as info:
            EmailGem(_props(attachments=[{"file_name": "a.csv"}]), fabric_for(server), user=USER).apply(None, frame)
        row = info.value.report.iloc[0]
        assert row.status == "failed" and "SIZE limit (RFC 1870) of 3,000 bytes" in row.error
        assert row.attempts == 1  # permanent: not retried
        assert server.messages == []
