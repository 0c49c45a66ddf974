"""Several views in one message (issue 26 §3): ``sections`` in the body, each with its own title,
text, table (its own summary, columns, labels) and chart (its own inline image), and an XLSX
attachment with named ``sheets`` (a summary and the detail rows). Read back from what the
server received (``email``, openpyxl), through the Python API (pandas and Spark) and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
from conftest import USER, fabric_for, parse

from mailgem.gems.email import EmailGem, GemValidationError, validate
from mailgem.gems.email.content.compose import Composer, MessageBuildError, Unit
from mailgem.gems.email.properties import EmailProperties

ROOT = Path(__file__).resolve().parents[1]

# Six flights of three carriers; UA's 240-minute delay is the worst.
FLIGHTS = pd.DataFrame({
    "carrier": ["UA", "AA", "UA", "DL", "AA", "UA"],
    "flight": [101, 202, 103, 404, 205, 106],
    "dep_delay": [240.0, 35.0, 20.0, 75.0, 15.0, 5.0],
    "origin": ["EWR", "JFK", "EWR", "LGA", "JFK", "EWR"],
})
BY_CARRIER = {"group_by": ["carrier"], "aggregates": [{"column": "dep_delay", "function": "mean", "name": "avg_delay"},
                                                     {"column": "flight", "function": "count", "name": "flights"}],
              "order_by": ["-avg_delay"]}
SECTIONS = [
    {"title": "Delays by carrier", "text": "Mean departure delay per carrier.\n\nWorst first.",
     "table": {"summary": BY_CARRIER, "columns": [{"name": "carrier", "label": "Airline"},
                                                  {"name": "avg_delay", "label": "Average delay", "format": ",.1f"},
                                                  "flights"]},
     "chart": {"x": "carrier", "y": "avg_delay", "title": "Average delay by airline"}},
    {"title": "The worst {{ section.rows | length }} of {{ section.row_count }} flights",
     "text": "Delays over 60 minutes are marked.",
     "table": {"columns": ["carrier", "flight", {"name": "dep_delay", "label": "Delay", "unit": "min"}], "max_rows": 3,
               "highlight": [{"column": "dep_delay", "when": "> 60", "style": "bad"}]},
     "chart": {"x": "flight", "y": "dep_delay", "top_n": 3}},
]
SHEETS = [{"name": "Summary", "summary": BY_CARRIER},
          {"name": "Detail", "columns": ["carrier", "flight", {"name": "dep_delay", "label": "Delay (min)"}]}]
REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Delays", "on_error": "continue"}


def _sorted_by_delay(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("dep_delay", ascending=False, kind="stable").reset_index(drop=True)


def _html_and_images(msg) -> tuple[str, dict[str, bytes]]:
    """The HTML body and the inline images by Content-ID (without <>)."""
    html = msg.get_body(("html",)).get_content()
    images = {part["Content-ID"].strip("<>"): part.get_content() for part in msg.walk()
              if part.get_content_maintype() == "image"}
    return html, images


def _assert_sections(msg) -> None:
    """The message shows both sections in order: titles, texts, tables and one chart each."""
    html, images = _html_and_images(msg)
    assert len(images) == 2 and all(data.startswith(b"\x89PNG") for data in images.values())
    referenced = re.findall(r'src="cid:([^"]+)"', html)
    assert sorted(referenced) == sorted(images)  # each chart its own image, each shown once
    first, second = html.index("Delays by carrier"), html.index("The worst 3 of 6 flights")
    assert first < html.index(f"cid:{referenced[0]}") < html.index(">Airline</th>") < second
    assert second < html.index(f"cid:{referenced[1]}") < html.index(">Delay</th>")
    assert "<p" in html and "Mean departure delay per carrier." in html and "Worst first." in html
    # The summary: UA (240+20+5)/3 = 88.3 first; the detail: the worst three, one marked.
    summary_table = html[first:second]
    assert summary_table.index(">UA<") < summary_table.index(">DL<") < summary_table.index(">AA<")
    assert ">88.3<" in summary_table and ">25.0<" in summary_table
    detail = html[second:]
    assert [m for m in re.findall(r"<td[^>]*>(\d{3})</td>", detail)] == ["101", "404", "202"]
    assert "Showing 3 of 6 rows" in detail and "&#10006; 240.00 min" in detail
    assert ">EWR<" not in html  # no top-level table: the default body shows the sections
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.index("Delays by carrier\n-----") < text.index("Airline") < text.index("The worst 3 of 6 flights")
    assert re.search(r"UA\s+88\.3\s+3", text) and re.search(r"DL\s+75\.0\s+1", text)
    assert re.search(r"UA\s+101\s+✖ 240\.00 min", text) and "Showing 3 of 6 rows." in text
    assert "Chart: Average delay by airline (bar): UA 88.3" in text


def _assert_workbook(data: bytes) -> None:
    book = openpyxl.load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["Summary", "Detail"]
    summary = list(book["Summary"].iter_rows(values_only=True))
    assert summary[0] == ("carrier", "avg_delay", "flights")
    assert [r[0] for r in summary[1:]] == ["UA", "DL", "AA"] and summary[1][2] == 3
    assert summary[1][1] == pytest.approx(88.333, abs=1e-3)
    detail = list(book["Detail"].iter_rows(values_only=True))
    assert detail[0] == ("carrier", "flight", "Delay (min)")
    assert sorted(detail[1:]) == sorted(zip(FLIGHTS.carrier, FLIGHTS.flight, FLIGHTS.dep_delay, strict=True))
    assert all(isinstance(r[1], int) and isinstance(r[2], int | float) for r in detail[1:])  # typed cells


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_sections_and_sheets_through_the_api(starttls_server, engine, request):
    props = REPORT | {"sections": SECTIONS, "attachments": [{"file_name": "delays.xlsx", "format": "xlsx",
                                                             "sheets": SHEETS}]}
    gem = EmailGem(props, fabric_for(starttls_server), user=USER, name="daily")
    frame = _sorted_by_delay(FLIGHTS)
    if engine == "spark":
        spark = request.getfixturevalue("spark")
        report = gem.apply(spark, spark.createDataFrame(frame).repartition(2).orderBy("dep_delay", ascending=False)).toPandas()
    else:
        report = gem.apply(frame)
    assert report["status"].tolist() == ["sent"], report["error"].tolist()
    [received] = starttls_server.wait_for_messages(1)
    msg = parse(received.data)
    _assert_sections(msg)
    [xlsx] = [p for p in msg.iter_attachments() if p.get_filename() == "delays.xlsx"]
    _assert_workbook(xlsx.get_content())


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_per_group_each_message_has_sections_of_its_groups_rows(starttls_server, engine, request):
    props = REPORT | {"mode": "per_group", "group_by": ["carrier"], "subject": "{{ group.carrier }}", "sections": [
        {"title": "{{ group.carrier }}: {{ section.row_count }} flights", "table": {"columns": ["flight"]}},
        {"title": "By origin", "table": {"summary": {"group_by": ["origin"], "aggregates": [{"column": "flight"}]}},
         "chart": {"x": "origin", "y": "flight_count"}}]}
    frame = _sorted_by_delay(FLIGHTS)
    if engine == "spark":  # per_group on Spark: built and sent on the executors
        spark = request.getfixturevalue("spark")
        report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, spark.createDataFrame(frame)).toPandas()
    else:
        report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(frame)
    assert sorted(report["status"]) == ["sent"] * 3, report["error"].tolist()
    messages = {m["Subject"]: m for m in (parse(r.data) for r in starttls_server.wait_for_messages(3))}
    html, images = _html_and_images(messages["UA"])
    assert "UA: 3 flights" in html and len(images) == 1 and f"cid:{next(iter(images))}" in html
    assert sorted(re.findall(r"<td[^>]*>(\d{3})</td>", html)) == ["101", "103", "106"]
    assert ">EWR<" in html and ">JFK<" not in html
    assert "DL: 1 flights" in messages["DL"].get_body(("plain",)).get_content()


def test_a_custom_body_places_the_sections_beside_the_top_level_table(starttls_server):
    props = REPORT | {"sections": SECTIONS[:1], "table": {"columns": ["origin", "flight"]},
                      "html_body": "<p>Intro</p>{{ sections }}<h2>All flights</h2>{{ table }}",
                      "text_body": "Intro\n{{ sections_text }}\nAll flights\n{{ table_text }}"}
    assert validate(props, list(FLIGHTS.columns)) == []
    EmailGem(props, fabric_for(starttls_server), user=USER).apply(_sorted_by_delay(FLIGHTS))
    msg = parse(starttls_server.wait_for_messages(1)[0].data)
    html, images = _html_and_images(msg)
    assert len(images) == 1 and html.index("Delays by carrier") < html.index("All flights") < html.index(">EWR<")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.index("Airline") < text.index("All flights") < text.index("EWR")


def test_max_html_bytes_cuts_the_sections_tables_alike_until_the_body_fits(starttls_server):
    n = 400
    frame = pd.DataFrame({"id": range(n), "team": [f"team-{i % 3}" for i in range(n)],
                          "note": [f"a fairly long note number {i} " * 3 for i in range(n)]})
    sections = [{"title": "Per team", "table": {"summary": {"group_by": ["team"], "aggregates": [{"column": "id"}]}}},
                {"title": "First notes", "table": {"columns": ["id", "note"], "max_rows": 1000}},
                {"title": "Last notes", "table": {"columns": ["note", "id"], "max_rows": 1000}}]
    budget = 30_000
    props = REPORT | {"sections": sections, "table": {"max_html_bytes": budget}}
    EmailGem(props, fabric_for(starttls_server), user=USER).apply(frame)
    msg = parse(starttls_server.wait_for_messages(1)[0].data)
    html = msg.get_body(("html",)).get_content()
    assert budget * 0.8 < len(html.encode()) <= budget  # as transmitted: the lines end in CRLF already
    shown = [int(x) for x in re.findall(r"Showing ([\d,]+) of 400 rows", html)]
    assert len(shown) == 2 and shown[0] == shown[1] and 10 < shown[0] < 400  # both long tables cut alike
    per_team = html[html.index("Per team"):html.index("First notes")]
    assert per_team.count("<tr>") == 4 and "Showing" not in per_team  # the short summary stays whole
    assert len(re.findall(r"<td[^>]*>a fairly long note", html)) == 2 * shown[0]
    assert msg.get_body(("plain",)).get_content().count(f"Showing {shown[0]:,} of 400 rows.") == 2


def test_a_section_from_in1_shows_the_second_inputs_rows_and_fails_without_one(starttls_server):
    props = EmailProperties.model_validate(REPORT | {"sections": [
        {"title": "Recipients", "table": {"columns": ["name"]}},
        {"title": "Their {{ section.row_count }} flights", "from": "in1", "table": {"columns": ["flight"]},
         "chart": {"x": "flight", "y": "dep_delay"}}]})
    composer = Composer(props, job="j", params={}, charset="utf-8", run_ts=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    in0 = pa.table({"name": ["Ops"]})
    in1 = pa.Table.from_pandas(FLIGHTS[["flight", "dep_delay"]].head(4), preserve_index=False)
    msg, _ = composer.compose(Unit("report", in0, 1, in1=in1))
    html, images = _html_and_images(msg)
    assert "Their 4 flights" in html and ">Ops<" in html and len(images) == 1
    assert re.findall(r"<td[^>]*>(\d{3})</td>", html[html.index("Their 4"):]) == ["101", "202", "103", "404"]
    with pytest.raises(MessageBuildError, match=r"sections\[1\]: from: in1, but the gem has no second input"):
        composer.compose(Unit("report", in0, 1))
    # in1's columns are not known before the run: a missing one fails that message, naming it.
    with pytest.raises(MessageBuildError, match=r"sections\[1\]\.table: columns: no column 'flight'; there are: "
                                                r"dep_delay"):
        composer.compose(Unit("report", in0, 1, in1=in1.select(["dep_delay"])))
    # Through the gem, with one input: refused before anything is read or sent, naming the field.
    with pytest.raises(GemValidationError, match=r"sections\[1\]\.from use\(s\) the second input, and none was given"):
        EmailGem(props, fabric_for(starttls_server), user=USER).apply(pd.DataFrame({"name": ["Ops"]}))
    assert starttls_server.messages == []


@pytest.mark.parametrize(("name", "rule"), [
    ("x" * 32, "is 32 characters; Excel allows at most 31"),
    ("Q1/Q2", "contains /; Excel sheet names cannot contain any of [ ] : * ? / \\"),
    ("[raw]", "contains [ ]"), ("a:b", "contains :"), ("what?", "contains ?"), ("all*", "contains *"),
    ("a\\b", "contains \\"), ("", "a sheet name cannot be empty"), ("  ", "a sheet name cannot be empty"),
    ("'quoted", "begins or ends with an apostrophe"), ("quoted'", "begins or ends with an apostrophe"),
    ("history", "is reserved by Excel"), ("{{ group.carrier }}", "is a template; sheet names are fixed text"),
])
def test_each_sheet_name_rule_is_a_validation_error(name, rule):
    props = REPORT | {"attachments": [{"file_name": "d.xlsx", "format": "xlsx", "sheets": [{"name": name}]}]}
    found = validate(props)
    assert [(d.path, d.severity) for d in found] == [("attachments.0.sheets.0.name", "error")]
    assert rule in found[0].message and (repr(name) in found[0].message or not name.strip())
    with pytest.raises(GemValidationError, match="sheets"):
        EmailGem(props, fabric_for_none(), user=USER)


def test_a_name_within_the_rules_is_accepted():
    name = "Carrier's delays, by hour & day"  # 31 characters; an apostrophe inside is allowed
    assert len(name) == 31
    assert validate(REPORT | {"attachments": [{"file_name": "d.xlsx", "format": "xlsx", "sheets": [{"name": name}]}]}) == []


def fabric_for_none():
    """A fabric whose server is never reached (the properties fail first)."""
    from mailgem.fabric import Fabric, Team

    return Fabric(name="f", teams=[Team(name="t", members=[USER])], connections=[])


@pytest.mark.parametrize(("attachment", "message"), [
    ({"format": "xlsx", "file_name": "d.xlsx", "sheets": [{"name": "Data"}, {"name": "DATA"}]},
     "sheet name 'DATA' is given twice (as 'Data'); Excel compares sheet names without case"),
    ({"file_name": "d.csv", "sheets": [{"name": "Data"}]}, "sheets are worksheets of an XLSX workbook; this "
                                                           "attachment's format is csv"),
    ({"format": "xlsx", "file_name": "d.xlsx", "sheets": [{"name": "S", "summary": BY_CARRIER, "columns": ["carrier"]}]},
     "sheet 'S' has both summary and columns"),
])
def test_sheets_of_one_workbook_are_checked_together(attachment, message):
    [found] = validate(REPORT | {"attachments": [attachment]})
    assert found.severity == "error" and message in found.message, found


def test_validate_checks_the_sections_columns_and_templates():
    columns = {"carrier": "string", "flight": "int64", "dep_delay": "double", "origin": "string"}
    sections = [{"title": "{{ section.row_count }} by {{ sectoin }}", "table": {"summary": {
                    "group_by": ["carier"], "aggregates": [{"column": "dep_delay", "name": "n"}]}},
                 "chart": {"x": "carier", "y": "avg"}},
                {"text": "{{ row.x }}", "table": {"columns": ["flight", {"name": "origin", "format": ",.1f"}],
                                                  "totals": {"origin": "sum"}}, "chart": {"x": "flight", "y": "delay"}},
                {"from": "in1", "title": "{{ section.rows[0].anything }}", "table": {"columns": ["not_in0"]}}]
    attachments = [{"file_name": "d.xlsx", "format": "xlsx", "sheets": [
        {"name": "S", "summary": {"group_by": ["carier"], "aggregates": [{"column": "flight"}]}},
        {"name": "D", "columns": ["flight", "dest"]}]}]
    found = {(d.path, d.severity, d.message) for d in validate(REPORT | {"sections": sections, "attachments": attachments,
                                                                         "mode": "per_row"}, columns)}
    paths = sorted((p, s) for p, s, _ in found)
    assert paths == sorted([
        ("sections[0].title", "error"), ("sections[1].text", "error"),
        ("sections[0].chart", "error"),  # y is not a summary column (x is one: the misspelt group_by)
        ("sections[0].table.summary.group_by", "error"),
        ("sections[1].chart", "error"), ("sections[1].table.columns[origin]", "warning"),
        ("sections[1].table.totals.origin", "error"),
        ("attachments[0].sheets[0] (S)", "error"), ("attachments[0].sheets[1] (D)", "error")]), found
    messages = {p: m for p, _, m in found}
    assert "'sectoin' is undefined (did you mean 'section'?)" in messages["sections[0].title"]
    assert "row.x: no column 'x'" in messages["sections[1].text"]
    assert "unknown column 'carier'; the frame has: carrier, flight, dep_delay, origin" in \
        messages["sections[0].table.summary.group_by"]
    assert "unknown column 'dest'" in messages["attachments[0].sheets[1] (D)"]
    assert "'avg' is not a summary column (carier, n)" in messages["sections[0].chart"]
    assert "sum needs numbers, and 'origin' holds string" in messages["sections[1].table.totals.origin"]
    assert not any(p.startswith("sections[2]") for p in messages)  # from: in1: another frame's columns


def test_validate_says_what_the_bodies_leave_out():
    def said(**props):
        return [(d.path, d.severity, d.message) for d in validate(REPORT | props, list(FLIGHTS.columns))]

    section = {"title": "Views", "chart": {"x": "carrier", "y": "dep_delay"}}
    assert said(sections=[section]) == []
    [(path, severity, message)] = said(sections=[section], chart={"x": "carrier", "y": "dep_delay"})
    assert (path, severity) == ("chart", "warning") and "the default bodies show the sections only" in message
    [(path, _, message)] = said(sections=[section], table={"columns": ["carrier"]})
    assert path == "table" and "not the top-level table" in message
    assert said(sections=[section], table={"max_html_bytes": 50_000}) == []  # the budget is the body's
    assert [p for p, _, _ in said(sections=[section], html_body="{{ table }}", text_body="{{ table_text }}")] == [
        "html_body", "text_body"]
    assert [(p, s) for p, s, _ in said(sections=[section], text_body="{{ sections_text }}")] == [
        ("sections[0].chart", "error")]  # a chart needs an HTML body
    with pytest.raises(GemValidationError, match="max_html_bytes is the budget of the whole HTML body"):
        EmailGem(REPORT | {"sections": [{"table": {"max_html_bytes": 5000}}]}, fabric_for_none())
    with pytest.raises(GemValidationError, match="a section shows something"):
        EmailGem(REPORT | {"sections": [{"from": "in0"}]}, fabric_for_none())


JOB = """
name: delays
source: {{path: flights.csv}}
transform: SELECT * FROM source ORDER BY dep_delay DESC
email:
  connection: local
  to: ops@example.com
  subject: "Delays: {{{{ row_count }}}} flights"
  sections:
    - title: Delays by carrier
      text: "Mean departure delay per carrier.\\n\\nWorst first."
      table:
        summary: {{group_by: [carrier], aggregates: [{{column: dep_delay, function: mean, name: avg_delay}},
                  {{column: flight, function: count, name: flights}}], order_by: [-avg_delay]}}
        columns: [{{name: carrier, label: Airline}}, {{name: avg_delay, label: Average delay, format: ",.1f"}}, flights]
      chart: {{x: carrier, y: avg_delay, title: Average delay by airline}}
    - title: "The worst {{{{ section.rows | length }}}} of {{{{ section.row_count }}}} flights"
      text: Delays over 60 minutes are marked.
      table:
        columns: [carrier, flight, {{name: dep_delay, label: Delay, unit: min}}]
        max_rows: 3
        highlight: [{{column: dep_delay, when: "> 60", style: bad}}]
      chart: {{x: flight, y: dep_delay, top_n: 3}}
  attachments:
    - file_name: delays.xlsx
      format: xlsx
      sheets:
        - {{name: {summary}, summary: {{group_by: [carrier], aggregates: [{{column: dep_delay, function: mean,
             name: avg_delay}}, {{column: flight, function: count, name: flights}}], order_by: [-avg_delay]}}}}
        - {{name: Detail, columns: [carrier, flight, {{name: dep_delay, label: Delay (min)}}]}}
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_sections_and_sheets_through_the_cli(tmp_path):
    FLIGHTS.to_csv(tmp_path / "flights.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB.format(summary="'Q3/Q4'"))
    bad = _cli("validate", "job.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "sheet name 'Q3/Q4' contains /; Excel sheet names cannot contain any of" in bad.stderr, bad.stderr
    assert "attachments" in bad.stderr and "sheets" in bad.stderr
    (tmp_path / "job.yaml").write_text(JOB.format(summary="Summary"))
    done = _cli("run", "job.yaml", "--outbox", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [eml] = sorted((tmp_path / "out").glob("*.eml"))
    msg = parse(eml.read_bytes())
    assert msg["Subject"] == "Delays: 6 flights"
    _assert_sections(msg)
    [xlsx] = [p for p in msg.iter_attachments() if p.get_filename() == "delays.xlsx"]
    _assert_workbook(xlsx.get_content())
