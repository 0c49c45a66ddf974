"""What the recipient gets (issue 9): safe and faithful content, read back from the bytes the
server received."""

from __future__ import annotations

import csv
import gzip
import io

import pandas as pd
import pytest
from conftest import USER, fabric_for, parse_strict

from mailgem.gems.email import EmailGem, GemValidationError

REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Report", "on_error": "continue"}


def _send(server, frame, spark=None, **props):
    report = EmailGem(REPORT | props, fabric_for(server), user=USER, name="daily").apply(spark, frame)
    report = report.toPandas() if spark is not None else report
    return report, [parse_strict(m.data) for m in server.wait_for_messages(int((report["status"] == "sent").sum()))]


def _csv(message) -> list[list[str]]:
    [part] = list(message.iter_attachments())
    return list(csv.reader(io.StringIO(part.get_content())))


# -- 1. safe ----------------------------------------------------------------------------------

def test_csv_formulas_from_data_are_neutralised_numbers_are_not(starttls_server):
    frame = pd.DataFrame({"name": ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(A1)",
                                   "-2.5", "\tlead", "plain", "-1+1"],
                          "amount": [-2.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    report, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "data.csv"}])
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "text/csv" and part.get_param("charset") == "utf-8"
    raw = part.get_payload(decode=True)
    assert raw.count(b"\r\n") == 8 and b"\n" not in raw.replace(b"\r\n", b"")  # RFC 4180 CRLF
    rows = _csv(msg)
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://evil.example\",\"x\")", "'+cmd|' /C calc'!A0",
                                        "'@SUM(A1)", "-2.5", "'\tlead", "plain", "'-1+1"]
    assert rows[1][1] == "-2.5"  # a real number column is never touched
    report, [_, raw_msg] = _send(starttls_server, frame, attachments=[{"file_name": "raw.csv", "csv_formula_escape": False,
                                                                      "bom": True}])
    [part] = list(raw_msg.iter_attachments())
    assert part.get_payload(decode=True).startswith(b'\xef\xbb\xbf"name","amount"\r\n"=HYPERLINK(')


def test_every_message_says_it_is_automated(starttls_server):
    _, [msg] = _send(starttls_server, pd.DataFrame({"a": [1]}))
    assert msg["Auto-Submitted"] == "auto-generated"  # RFC 3834 §5: no auto-replies to a report
    assert msg["X-Auto-Response-Suppress"] == "All"
    report = EmailGem(REPORT | {"headers": {"Auto-Submitted": "no"}}, fabric_for(starttls_server), user=USER)
    with pytest.raises(Exception, match="reserved"):
        report.apply(pd.DataFrame({"a": [1]}))


def test_bidi_controls_from_data_are_removed_from_the_subject(starttls_server):
    frame = pd.DataFrame({"n": [1], "to": ["a@example.com"], "name": ["invoice\u202efdp.exe\u2066x\u2069\u200f"]})
    _, [msg] = _send(starttls_server, frame, mode="per_row", to_column="to", subject="File {{ row.name }}")
    assert msg["Subject"] == "File invoicefdp.exex"


def test_file_names_from_data_lose_line_breaks_separators_and_length(starttls_server):
    frame = pd.DataFrame({"n": [1], "to": ["a@example.com"], "name": ["../../etc/pass\r\nBcc: x@evil.example" + "y" * 300]})
    _, [msg] = _send(starttls_server, frame, mode="per_row", to_column="to",
                     attachments=[{"file_name": "{{ row.name }}.csv"}])
    [part] = list(msg.iter_attachments())
    name = part.get_filename()
    assert "/" not in name and "\r" not in name and "\n" not in name and name.endswith(".csv")
    assert len(name) == 150 + len(".csv") and msg["Bcc"] is None


# -- 2. faithful ------------------------------------------------------------------------------

def test_nested_columns_are_compact_json_in_html_text_and_csv(starttls_server, spark):
    frame = pd.DataFrame({"tags": [["a", "b"], []], "attrs": [{"k": 1, "v": "x"}, None], "n": [1, 2]})
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "d.csv"}])
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "[&#34;a&#34;,&#34;b&#34;]" in html or '["a","b"]' in html.replace("&#34;", '"')
    assert '["a","b"]' in text and '{"k":1,"v":"x"}' in text
    assert _csv(msg)[1:] == [['["a","b"]', '{"k":1,"v":"x"}', "1"], ["[]", "", "2"]]
    sdf = spark.sql("SELECT array('a','b') AS tags, named_struct('k', 1) AS s, map('x', 2) AS m, 1 AS n")
    report, [_, smsg] = _send(starttls_server, sdf, spark=spark, attachments=[{"file_name": "s.csv"}])
    assert set(report["status"]) == {"sent"}
    assert _csv(smsg)[1] == ['["a","b"]', '{"k":1}', '{"x":2}', "1"]


def test_floats_infinities_huge_values_and_negative_zero(starttls_server):
    frame = pd.DataFrame({"x": [float("inf"), float("-inf"), 1.7976931348623157e308, -0.001, 290.0], "n": [1, 2, 3, 4, 5]})
    _, [msg] = _send(starttls_server, frame)
    text = msg.get_body(("plain",)).get_content()
    lines = [ln.split() for ln in text.splitlines() if ln.strip().endswith(("1", "2", "3", "4", "5"))][-5:]
    assert [ln[0] for ln in lines] == ["∞", "-∞", "1.798e+308", "0.00", "290.00"]
    assert all(len(ln[0]) < 12 for ln in lines) and [ln[1] for ln in lines] == ["1", "2", "3", "4", "5"]


def test_null_group_keys_are_their_own_group_never_none(starttls_server):
    frame = pd.DataFrame({"team": ["sales", None, None], "x": [1, 2, 3]})
    report, messages = _send(starttls_server, frame, mode="per_group", group_by=["team"],
                             to="ops@example.com", subject="Team {{ group.team }} ({{ row_count }})",
                             attachments=[{"file_name": "{{ group.team }}.csv"}])
    assert sorted(report["message_key"]) == ['group:["sales"]', "group:[null]"]
    subjects = sorted(str(m["Subject"]) for m in messages)
    # A null key is named (issue 23 §5: "Region : 9 rows" lost it), in the subject and the file name.
    assert subjects == ["Team (null) (2)", "Team sales (1)"]
    names = sorted(next(m.iter_attachments()).get_filename() for m in messages)
    assert names == ["(null).csv", "sales.csv"] and not any("None" in s for s in subjects + names)
    # ... as formats.na_rep when one is set, and a template can still test it as false.
    starttls_server.messages.clear()
    report, messages = _send(starttls_server, frame, mode="per_group", group_by=["team"], to="ops@example.com",
                             subject="Team {{ group.team }}: {{ group.team or 'no team' }}", formats={"na_rep": "n/a"})
    assert sorted(str(m["Subject"]) for m in messages) == ["Team n/a: no team", "Team sales: sales"]


def test_an_address_from_a_null_group_key_fails_that_message_clearly(starttls_server):
    frame = pd.DataFrame({"team": ["sales", None], "x": [1, 2]})
    for template in ("{{ group.team }}-leads@example.com", "{{ group.team | lower }}-leads@example.com"):
        starttls_server.messages.clear()
        report, messages = _send(starttls_server, frame, mode="per_group", group_by=["team"], to=template)
        by_key = dict(zip(report["message_key"], report["status"], strict=True))
        assert by_key == {'group:["sales"]': "sent", "group:[null]": "failed"}, report
        error = report.set_index("message_key").loc["group:[null]", "error"]
        assert "group.team is null, so this message has no address from it" in error
        assert [m["To"] for m in messages] == ["sales-leads@example.com"]


def test_long_cells_are_cut_in_the_body_but_whole_in_the_attachment(starttls_server):
    long = "word" * 2500  # 10,000 characters, no spaces
    frame = pd.DataFrame({"note": [long], "n": [1]})
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "d.csv"}], table={"max_cell_chars": 120})
    html = msg.get_body(("html",)).get_content()
    assert long not in html and ("word" * 29 + "wor…") in html
    # Long text may break anywhere (in the style block: text cells only, never numbers, dates or booleans).
    assert ".x{min-width:14em;overflow-wrap:anywhere" in html and '<td class="x">wordword' in html
    assert '<td class="n">1</td>' in html
    assert _csv(msg)[1][0] == long


def test_line_breaks_in_cells_do_not_break_the_text_table(starttls_server):
    frame = pd.DataFrame({"note": ["first\nsecond", "one\r\ntwo"], "n": [1, 2]})
    _, [msg] = _send(starttls_server, frame)
    text = msg.get_body(("plain",)).get_content()
    assert "first second" in text and "one two" in text
    assert not any(line.strip().startswith(("second", "two")) for line in text.splitlines())


def test_one_row_is_singular_and_an_empty_result_says_so(starttls_server):
    _, [one] = _send(starttls_server, pd.DataFrame({"a": [1]}))
    assert "daily: 1 row (" in one.get_body(("plain",)).get_content()
    _, [_, empty] = _send(starttls_server, pd.DataFrame({"a": pd.Series([], dtype="int64")}), on_empty="send")
    text = empty.get_body(("plain",)).get_content()
    assert "daily: 0 rows (" in text and "The result was empty" in text
    assert "The result was empty" in empty.get_body(("html",)).get_content()


# -- 3. formats -------------------------------------------------------------------------------

def test_xlsx_attachment_has_typed_cells_a_frozen_header_and_no_formulas(starttls_server):
    import datetime as dt

    import openpyxl

    frame = pd.DataFrame({
        "carrier": ["UA", '=HYPERLINK("http://evil.example")'], "delay": [12.5, -3.0], "flights": [1200, 7],
        "on_time": [False, True], "day": [dt.date(2013, 7, 22), None],
        "at": pd.to_datetime(["2013-07-22 05:00", "2013-07-22 06:30"]), "tags": [["a"], []],
    })
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "delays.xlsx", "format": "xlsx"}])
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert part.get_filename() == "delays.xlsx"
    book = openpyxl.load_workbook(io.BytesIO(part.get_content()))
    sheet = book.active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("carrier", "delay", "flights", "on_time", "day", "at", "tags")
    assert rows[1] == ("UA", 12.5, 1200, False, dt.datetime(2013, 7, 22), dt.datetime(2013, 7, 22, 5), '["a"]')
    assert rows[2][0] == '=HYPERLINK("http://evil.example")' and sheet["A3"].data_type == "s"  # text, not a formula
    assert rows[2][4] is None and sheet["E2"].number_format == "yyyy-mm-dd"
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == "A1:G3"
    assert sheet["A1"].font.b and sheet.column_dimensions["B"].width >= 8


def test_parquet_attachment_keeps_types(starttls_server):
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"carrier": ["UA", None], "delay": [12.5, None], "flights": pd.array([1200, None], "Int64")})
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "delays.parquet", "format": "parquet"}])
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(part.get_content()))
    assert table.to_pydict() == {"carrier": ["UA", None], "delay": [12.5, None], "flights": [1200, None]}
    assert str(table.schema.field("flights").type) == "int64"


@pytest.mark.parametrize("attachment,message", [
    ({"file_name": "report.xlsx"}, "ends in .xlsx but format is csv: set format: xlsx, or name the file report.csv"),
    ({"file_name": "report.csv", "format": "xlsx"}, "ends in .csv but format is xlsx"),
    ({"file_name": "r.parquet", "format": "parquet", "compression": "gzip"}, "compression is for CSV"),
])
def test_attachment_format_mistakes_are_validation_errors(attachment, message):
    from mailgem.gems.email import validate

    [problem] = validate(REPORT | {"attachments": [attachment]})
    assert problem.path == "attachments.0" and message in problem.message


def test_xlsx_refuses_more_rows_than_a_worksheet_holds_before_sending(starttls_server, monkeypatch):
    from mailgem.gems.email.content import xlsx_format

    monkeypatch.setattr(xlsx_format, "MAX_ROWS", 3)  # the real limit is 1,048,576 rows
    report, _ = _send(starttls_server, pd.DataFrame({"a": range(3)}), attachments=[{"file_name": "d.xlsx", "format": "xlsx"}])
    assert list(report["status"]) == ["failed"] and starttls_server.sessions_opened == 0
    assert "3 rows x 1 columns do not fit an Excel worksheet (3 rows" in report.iloc[0].error


def test_header_values_are_templates_and_a_line_break_from_data_names_the_header(starttls_server):
    frame = pd.DataFrame({"n": [1, 2], "to": ["a@example.com", "b@example.com"], "team": ["north", "south\r\nBcc: x@evil.example"]})
    report, [msg] = _send(starttls_server, frame, mode="per_row", to_column="to", subject="{{ row.n }}",
                          headers={"X-Team": "team-{{ row.team }}", "X-Static": "yes"})
    assert msg["X-Team"] == "team-north" and msg["X-Static"] == "yes" and msg["Bcc"] is None
    assert list(report["status"]) == ["sent", "failed"]
    assert report.iloc[1].error.startswith("headers.X-Team: the rendered value 'team-south\\r\\nBcc: x@evil.example' "
                                           "is not allowed: header 'X-Team' contains a line break")
    from mailgem.gems.email import validate

    [problem] = validate(REPORT | {"headers": {"X-Team": "{{ row.team }}"}})
    assert problem.path == "headers.X-Team" and "'row' is undefined" in problem.message  # report mode has no row


def test_templates_keep_jinjas_globals_and_the_sandbox(starttls_server):
    # Compiled templates carry the environment's globals as a plain dict (faster renders): range,
    # namespace, cycler and dict still work, in every message, and the sandbox still refuses.
    frame = pd.DataFrame({"n": [2, 3], "to": ["a@example.com", "b@example.com"]})
    body = ("{% set ns = namespace(total=0) %}{% for i in range(row.n) %}{% set ns.total = ns.total + i %}{% endfor %}"
            "{% set c = cycler('odd', 'even') %}{{ c.next() }}-{{ c.next() }} {{ dict(k=ns.total).k }}")
    report, msgs = _send(starttls_server, frame, mode="per_row", to_column="to", subject="{{ range(row.n) | list }}",
                         text_body=body)
    assert list(report["status"]) == ["sent", "sent"]
    assert sorted(m["Subject"] for m in msgs) == ["[0, 1, 2]", "[0, 1]"]
    assert sorted(m.get_body(("plain",)).get_content().strip() for m in msgs) == ["odd-even 1", "odd-even 3"]
    # What the sandbox refuses is a validation error, before anything is sent (issue 21 §5).
    sessions = starttls_server.sessions_opened
    with pytest.raises(GemValidationError, match="the template sandbox refused it: .*unsafe"):
        _send(starttls_server, frame.head(1), mode="per_row", to_column="to", subject="{{ row.n.__class__.__mro__ }}")
    assert starttls_server.sessions_opened == sessions


def test_time_zone_aware_timestamps_keep_their_instant_and_zone(starttls_server):
    berlin = pd.to_datetime(["2024-03-01 12:00:00", "2024-07-01 12:00:00.250"], format="ISO8601").tz_localize("Europe/Berlin")
    naive = pd.to_datetime(["2024-03-01 12:00:00", "2024-03-01 12:00:00.000005"], format="ISO8601")
    frame = pd.DataFrame({"at": berlin, "naive": naive})
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "d.csv"}])
    text = msg.get_body(("plain",)).get_content()
    # The zone is named once, in the header; cells are wall time there (issue 23 §1).
    assert "at (Europe/Berlin)" in text and "2024-03-01 12:00:00 " in text and "2024-07-01 12:00:00.250000" in text
    assert "2024-03-01 12:00:00.000005" in text and "11:00:00" not in text and "+01:00" not in text
    assert [r[0] for r in _csv(msg)[1:]] == ["2024-03-01 12:00:00.000000+01:00", "2024-07-01 12:00:00.250000+02:00"]
    _, [_, utc] = _send(starttls_server, frame, formats={"timezone": "America/New_York"},
                        attachments=[{"file_name": "d.csv"}])
    text = utc.get_body(("plain",)).get_content()
    assert "at (America/New_York)" in text and "2024-03-01 06:00:00 " in text and "2024-07-01 06:00:00.250000" in text
    assert _csv(utc)[1][0] == "2024-03-01 06:00:00.000000-05:00"
    from mailgem.gems.email import validate

    assert "unknown time zone 'Mars/Olympus'" in validate(REPORT | {"formats": {"timezone": "Mars/Olympus"}})[0].message


def test_inline_chart_is_a_related_png_shown_by_cid_and_described_in_text(starttls_server):
    from PIL import Image

    frame = pd.DataFrame({"carrier": ["UA", "B6", "EV", "DL", "AA"], "delayed": [40, 76, 61, 12, 30],
                          "mean_delay": [30.5, 45.0, 52.1, 20.0, 25.5]})
    _, [msg] = _send(starttls_server, frame, attachments=[{"file_name": "d.xlsx", "format": "xlsx"}],
                     chart={"kind": "bar", "x": "carrier", "y": "delayed", "title": "Delayed flights", "top_n": 3})
    html_part = msg.get_body(("html",))
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    [image] = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    cid = image["Content-ID"].strip("<>")
    html = html_part.get_content()
    assert f'src="cid:{cid}"' in html and 'width="600"' in html
    assert 'alt="Chart: Delayed flights (bar): B6 76, EV 61, UA 40"' in html
    png = Image.open(io.BytesIO(image.get_content()))
    assert png.format == "PNG" and png.width == 1200 and 300 <= png.height <= 800  # 600 px at 2x density
    assert "Chart: Delayed flights (bar): B6 76, EV 61, UA 40" in msg.get_body(("plain",)).get_content()
    assert [a.get_filename() for a in msg.iter_attachments()] == ["d.xlsx"]  # the image is inline, not attached


def test_chart_mistakes_are_found_by_validate():
    from mailgem.gems.email import validate

    chart = {"x": "carrier", "y": ["delayed", "nope"]}
    problems = validate(REPORT | {"chart": chart}, columns=["carrier", "delayed"])
    assert [(p.path, p.message) for p in problems if p.severity == "error"] == [
        ("chart", "unknown column 'nope'; the frame has: carrier, delayed")]
    problems = validate(REPORT | {"chart": chart, "text_body": "only text"})
    assert any("a chart needs an HTML body" in p.message for p in problems)


def test_whole_number_aggregates_stay_integers(starttls_server):
    # pandas stores an integer column with a null as floats; its max is still a whole number.
    frame = pd.DataFrame({"carrier": ["UA", "UA", "B6"], "delay": [290.0, None, 12.0], "ratio": [0.5, 1.25, 2.0]})
    summary = {"group_by": ["carrier"], "aggregates": [{"column": "delay", "function": "max"},
                                                        {"column": "delay", "function": "mean", "name": "avg"},
                                                        {"column": "ratio", "function": "sum"}]}
    _, [msg] = _send(starttls_server, frame, table={"summary": summary}, formats={"float_format": ",.1f"})
    text = msg.get_body(("plain",)).get_content()
    ua = next(ln.split() for ln in text.splitlines() if ln.startswith("UA"))
    assert ua == ["UA", "290", "290.0", "1.8"]  # max of whole numbers; mean and sums of fractions keep the format


def _big_frame(rows: int, noise: bool) -> pd.DataFrame:
    import base64
    import random

    rnd = random.Random(7)
    text = [base64.b64encode(rnd.randbytes(75)).decode() if noise else "the same words again " * 5 for _ in range(rows)]
    return pd.DataFrame({"n": range(rows), "text": text})


def test_a_message_over_max_message_bytes_fails_with_both_sizes_and_the_options(starttls_server):
    report, messages = _send(starttls_server, _big_frame(2000, noise=True), max_message_bytes=50_000,
                             attachments=[{"file_name": "d.csv"}])
    assert messages == [] and list(report["status"]) == ["failed"]
    error = report.iloc[0].error
    assert "over the limit of 50,000 bytes" in error and "attachments_over_limit: compress or split" in error


def test_attachments_over_the_limit_are_compressed(starttls_server):
    report, [msg] = _send(starttls_server, _big_frame(3000, noise=False), max_message_bytes=80_000,
                          attachments_over_limit="compress", attachments=[{"file_name": "d.csv"}])
    [part] = list(msg.iter_attachments())  # 315 KB of CSV, about 430 KB in base64: over, until gzipped
    assert part.get_filename() == "d.csv.gz" and part.get_content_type() == "application/gzip"
    assert len(starttls_server.messages[0].data) <= 80_000 and len(gzip.decompress(part.get_content())) > 300_000


def test_attachments_over_the_servers_size_are_split_into_numbered_parts(spark):
    from conftest import LOGIN, PASSWORD

    from fault_server import FaultServer

    frame = _big_frame(4000, noise=True)  # about 430 KB of CSV that does not compress
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, data_size_limit=200_000) as server:
        report, messages = _send(server, frame, attachments_over_limit="split", subject="Daily",
                                 attachments=[{"file_name": "d.csv"}])
        assert set(report["status"]) == {"sent"} and len(report) >= 3
        n = len(report)
        assert list(report["message_key"]) == [f"report#part-{i}-of-{n}" for i in range(1, n + 1)]
        assert sorted(str(m["Subject"]) for m in messages) == sorted(f"Daily (part {i} of {n})" for i in range(1, n + 1))
        assert all(len(m.data) <= 200_000 for m in server.messages)
        names = sorted(next(m.iter_attachments()).get_filename() for m in messages)
        assert names == sorted(f"d-part{i}of{n}.csv" for i in range(1, n + 1))
        # Each part's body says which rows of how many it holds (issue 23 §5).
        size = -(-4000 // n)
        bodies = sorted(m.get_body(("plain",)).get_content() for m in messages)
        for i in range(1, n + 1):
            last = min(i * size, 4000)
            assert sum(f"part {i} of {n}, rows {(i - 1) * size + 1:,}-{last:,} of 4,000" in b for b in bodies) == 1
        rows = [r for m in messages for r in _csv(m)[1:]]
        assert sorted(int(r[0]) for r in rows) == list(range(4000))  # every row, once


def test_spark_timestamps_are_shown_in_formats_timezone_on_the_driver_and_the_executors(starttls_server, spark):
    sdf = spark.sql("SELECT 1 AS n, 'a@example.com' AS to, TIMESTAMP'2024-03-01 11:00:00' AS ltz, "
                    "TIMESTAMP_NTZ'2024-03-01 11:00:00' AS ntz")
    _, [plain] = _send(starttls_server, sdf, spark=spark)  # in the session's zone (UTC), NTZ as it is
    assert plain.get_body(("plain",)).get_content().count("2024-03-01 11:00:00") == 2
    zone = {"formats": {"timezone": "Europe/Berlin"}}
    _, [_, report] = _send(starttls_server, sdf, spark=spark, **zone)
    _, [_, _, per_row] = _send(starttls_server, sdf, spark=spark, mode="per_row", to_column="to",
                               text_body="{{ table_text }}", **zone)
    for msg in (report, per_row):
        text = msg.get_body(("plain",)).get_content()
        assert "ltz (Europe/Berlin)" in text and "2024-03-01 12:00:00" in text  # the instant, in Berlin
        assert "2024-03-01 11:00:00" in text  # TIMESTAMP_NTZ has no zone to convert


@pytest.mark.parametrize("attach", [False, True], ids=["layout", "full-message"])
def test_no_space_is_lost_when_a_subject_is_folded_into_encoded_words(starttls_server, attach):
    # Found by hypothesis: the stdlib folds at the space between two encoded words, and decoders
    # drop whitespace there (RFC 2047 §6.2), so "¡ ¡" arrived as "¡¡".
    subject = "0000 00¡¡¡¡𐀀𐀀𐀀𐀀𐀀𐀀 ¡ ¡"
    frame = pd.DataFrame({"n": [1], "to": ["a@example.com"], "s": [subject]})
    extra = {"attachments": [{"file_name": "d.csv"}]} if attach else {}
    _, [msg] = _send(starttls_server, frame, mode="per_row", to_column="to", subject="{{ row.s }}",
                     text_body="x", **extra)
    assert msg["Subject"] == subject
