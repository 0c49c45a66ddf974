"""The table a recipient reads (issue 23 §2, §3, §5): labels, formats, units, totals,
highlights, the HTML document and its byte budget, split parts — read back from the bytes the
server received."""

from __future__ import annotations

import random
import re
import time

import pandas as pd
import pytest
from conftest import USER, fabric_for, parse_strict

from mailgem.gems.email import EmailGem, GemValidationError
from mailgem.gems.email.content.table import fit_rows
from mailgem.gems.email.run.progress import Progress
from mailgem.gems.email.run.report import DeliveryRow
from mailgem.gems.email.validate import validate

REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Report", "on_error": "continue"}


def _send(server, frame, **props):
    server.messages.clear()
    report = EmailGem(REPORT | props, fabric_for(server), user=USER, name="daily").apply(frame)
    sent = int((report["status"] == "sent").sum())
    return report, [parse_strict(m.data) for m in server.wait_for_messages(sent)]


def _bodies(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


FLIGHTS = pd.DataFrame({"carrier": ["UA", "AA", "B6", "DL"], "delayed": [1200, 80, 5, None],
                        "avg_delay": [41.25, 12.5, 7.0, 30.0], "on_time": [0.5, 0.875, 0.99, 0.7]})
COLUMNS = ["carrier", {"name": "delayed", "label": "Delayed flights", "format": ","},
           {"name": "avg_delay", "label": "Avg delay", "format": ",.1f", "unit": "min"},
           {"name": "on_time", "label": "On time", "format": ".0%", "align": "center"}]


def test_labels_formats_units_and_alignment_reach_both_tables(starttls_server):
    _, [msg] = _send(starttls_server, FLIGHTS, table={"columns": COLUMNS})
    text, html = _bodies(msg)
    headers = re.findall(r"<th [^>]*>([^<]*)</th>", html)
    assert headers == ["carrier", "Delayed flights", "Avg delay", "On time"]
    assert '<td class="n">1,200</td>' in html and '<td class="n">41.2 min</td>' in html
    assert '<td class="n c">50%</td>' in html  # center overrides a number's right alignment
    assert "delayed" not in html.replace("Delayed", "")  # the column name is replaced by its label
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("carrier"))
    assert header.split("  ")[0] == "carrier" and "Delayed flights" in header and "Avg delay" in header
    assert any(line.startswith("UA") and "1,200" in line and "41.2 min" in line and "50%" in line for line in lines)


def test_totals_are_over_every_row_and_say_what_they_are(starttls_server):
    props = {"table": {"columns": COLUMNS, "max_rows": 2, "totals": {"delayed": "sum", "avg_delay": "mean"}}}
    _, [msg] = _send(starttls_server, FLIGHTS, **props)
    text, html = _bodies(msg)
    # Four rows, two shown: the totals count all four (1,285 flights; mean delay 22.7 min).
    foot = re.search(r"<tfoot><tr>(.*?)</tr></tfoot>", html).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", foot) == ["Totals", "total 1,285", "average 22.7 min", ""]
    assert "Totals" in text and "total 1,285" in text and "average 22.7 min" in text
    _, [msg] = _send(starttls_server, FLIGHTS, table={"columns": COLUMNS, "totals": {"delayed": "sum"}})
    foot = re.search(r"<tfoot><tr>(.*?)</tr></tfoot>", _bodies(msg)[1]).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", foot)[:2] == ["Total", "1,285"]


def test_highlights_use_a_marker_and_a_legend_not_colour_alone(starttls_server):
    rules = [{"column": "avg_delay", "when": "> 30", "style": "bad"}, {"column": "carrier", "when": '== "B6"', "style": "good"},
             {"column": "avg_delay", "when": ">= 30", "style": "warn"}]
    _, [msg] = _send(starttls_server, FLIGHTS, table={"columns": COLUMNS, "highlight": rules})
    text, html = _bodies(msg)
    # In HTML the markers are character references (✖ ✔ ▲), which any charset carries.
    assert '<td class="n b">&#10006; 41.2 min</td>' in html and '<td class="g">&#10004; B6</td>' in html
    assert '<td class="n w">&#9650; 30.0 min</td>' in html  # the first rule a value satisfies wins
    assert '<td class="n">12.5 min</td>' in html
    assert "&#10006; bad: Avg delay &gt; 30" in html and "&#9650; warning: Avg delay &gt;= 30" in html
    assert "✖ 41.2 min" in text and "✖ bad: Avg delay > 30" in text


def test_presentation_mistakes_are_found_before_a_run():
    base = REPORT | {"table": {"columns": COLUMNS}}
    found = validate(base | {"table": {"columns": [{"name": "carrier", "format": ",.1f"}]}},
                     columns={"carrier": "timestamp[us]"})
    assert [(d.path, d.message) for d in found] == [
        ("table.columns[carrier].format", "',.1f' is a number format but 'carrier' holds timestamp[us]: use a date "
                                          "pattern like '%d %b %Y'")]
    found = validate(base | {"table": {"totals": {"carrier": "sum"}, "highlight": [{"column": "nope", "when": "> 1"}]}},
                     columns={"carrier": "string", "x": "double"})
    assert {(d.path, d.message) for d in found} == {
        ("table.totals.carrier", "sum needs numbers, and 'carrier' holds string: use count"),
        ("table.highlight", "unknown column 'nope'; the frame has: carrier, x")}
    for table, message in [({"columns": [{"name": "a", "format": "abc"}]}, "neither a number format"),
                           ({"highlight": [{"column": "a", "when": "about 3"}]}, "is not a comparison"),
                           ({"columns": ["a"], "totals": {"b": "sum"}}, "not one of table.columns"),
                           ({"columns": ["a", {"name": "a"}]}, "more than once")]:
        with pytest.raises(GemValidationError, match=message):
            EmailGem(REPORT | {"table": table}, fabric=None)


def test_the_html_part_is_a_whole_document_for_phones_and_dark_mode(starttls_server):
    _, [msg] = _send(starttls_server, FLIGHTS)
    html = _bodies(msg)[1]
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<meta name="color-scheme" content="light dark">' in html and "@media (prefers-color-scheme:dark)" in html
    # The table scrolls sideways in its own container, and every colour comes with a background.
    assert '<div class="mg-wrap" style="overflow-x:auto;' in html
    for style in re.findall(r'style="([^"]*)"', html):
        if re.search(r"(^|;)color:", style):
            assert "background-color:" in style, style
    # A template that writes its own document keeps it, with the same head added.
    own = "<html><head><title>Mine</title></head><body><p>Hi</p>{{ table }}</body></html>"
    _, [msg] = _send(starttls_server, FLIGHTS, html_body=own)
    html = _bodies(msg)[1]
    assert html.startswith("<!DOCTYPE html>")  # no quirks mode for a template's own document either
    assert html.count("<head>") == 1 and html.count("<html>") == 1 and "<title>Mine</title>" in html
    assert html.index('<meta name="viewport"') < html.index("<title>") and "<style>" in html


def test_a_wide_table_shows_at_least_40_rows_within_the_budget_and_says_how_to_scroll(starttls_server):
    n = 5000
    columns = {}
    for i in range(60):
        kind = i % 4
        columns[f"c{i}"] = ([j * 1.5 for j in range(n)] if kind == 0 else list(range(n)) if kind == 1 else
                            pd.date_range("2024-01-01", periods=n, freq="h") if kind == 2 else [f"name{j % 97}" for j in range(n)])
    _, [msg] = _send(starttls_server, pd.DataFrame(columns), table={"max_rows": 5000})
    html = _bodies(msg)[1]
    shown = html.count("<tr>") - 1
    assert shown >= 40, shown  # 10 fitted with ~140 bytes of inline style a cell
    assert len(html.replace("\n", "\r\n").encode()) <= 90_000
    assert f"Showing {shown:,} of 5,000 rows." in html
    assert "60 columns: on a narrow screen, scroll the table sideways to see them all." in html


def test_fit_rows_finds_the_largest_count_in_few_renders():
    rng = random.Random(23)
    deadline = time.monotonic() + 30
    for _ in range(500):  # bounded in count and time
        assert time.monotonic() < deadline
        base, sizes = rng.randint(100, 5000), [rng.randint(20, 300) for _ in range(600)]
        max_rows, budget = rng.randint(0, 500), rng.randint(50, 60_000)
        calls: list[int] = []

        def render(k: int, base=base, sizes=sizes, calls=calls) -> bytes:
            calls.append(k)
            return b"x" * (base + sum(sizes[:k]))

        n, out = fit_rows(render, max_rows, budget)
        truth = max([k for k in range(max_rows + 1) if base + sum(sizes[:k]) <= budget], default=0)
        assert n == truth and len(out) == base + sum(sizes[:n])
        assert len(calls) == len(set(calls)) <= 20
        if max_rows <= 32 and truth == max_rows:
            assert calls == [max_rows]  # a small table that fits: one render


def test_the_progress_counts_the_parts_of_a_split_message():
    progress = Progress(1, "daily", interactive=False)
    for i in range(1, 6):
        progress(DeliveryRow(message_key=f"report#part-{i}-of-5", status="sent"))
    assert progress.summary().startswith("5/5 messages: 5 sent")


def test_formats_fit_every_column_and_left_alignment_holds_in_html(starttls_server):
    frame = pd.DataFrame({"n": [1, 22], "x": [1.234, 2.5]})
    props = {"table": {"columns": [{"name": "n", "format": ".2", "align": "left"}, {"name": "x", "format": ".2"}]}}
    report, [msg] = _send(starttls_server, frame, **props)
    text, html = _bodies(msg)
    # ".2" takes no integer: the integers are written as floats instead of failing every message.
    assert list(report["status"]) == ["sent"] and '<td class="n l">1.0</td>' in html and '<td class="n">1.2</td>' in html
    # "l" comes after "n" in the style block, so it wins: the cell is left-aligned like its header.
    assert html.index("table.mg .l{text-align:left}") > html.index("table.mg .n{text-align:right")
    assert 'text-align:left;padding:6px 10px;border:1px solid #d0d5dd">n</th>' in html


def test_a_latin1_connection_gets_ascii_markers_and_its_own_charset(starttls_server):
    starttls_server.messages.clear()
    fabric = fabric_for(starttls_server, charset="iso-8859-1")
    rules = [{"column": "avg_delay", "when": "> 30", "style": "bad"}]
    report = EmailGem(REPORT | {"table": {"columns": COLUMNS, "highlight": rules}}, fabric, user=USER).apply(FLIGHTS)
    assert list(report["status"]) == ["sent"], report["error"].tolist()
    [msg] = [parse_strict(m.data) for m in starttls_server.wait_for_messages(1)]
    text, html = _bodies(msg)
    assert msg.get_body(("html",)).get_content_charset() == "iso-8859-1" and '<meta charset="iso-8859-1">' in html
    assert '<td class="n b">&#10006; 41.2 min</td>' in html and "&#10006; bad: Avg delay &gt; 30" in html
    assert "[x] 41.2 min" in text and "[x] bad: Avg delay > 30" in text and "✖" not in text
