"""What the recipient gets (issue 9): safe and faithful content, read back from the bytes the
server received."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from conftest import USER, fabric_for, parse_strict

from gems.email import EmailGem

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
    assert subjects == ["Team (2)", "Team sales (1)"]
    names = sorted(next(m.iter_attachments()).get_filename() for m in messages)
    assert names == ["data.csv", "sales.csv"] and not any("None" in s for s in subjects + names)


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
    assert "overflow-wrap:anywhere" in html.replace(" ", "")
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
