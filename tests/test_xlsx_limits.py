"""A text cell longer than Excel allows (issue 21 §6): XLSX attachments cut it to Excel's 32,767
characters, say so in the log and in the delivery report's ``notes``, or, with ``long_cells:
error``, fail the message before anything is sent. Read back from the bytes the server received."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from conftest import USER, fabric_for, parse_strict

from mailgem.gems.email import EmailGem

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 32_767  # Excel's characters per cell (Microsoft, "Excel specifications and limits")
EMOJI = "\U0001F4C8"  # outside the BMP: two UTF-16 code units, as Excel counts text
REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Report", "on_error": "continue"}
XLSX = {"file_name": "report.xlsx", "format": "xlsx"}


def _send(server, frame: pd.DataFrame, **props) -> tuple[pd.DataFrame, list]:
    report = EmailGem(REPORT | props, fabric_for(server), user=USER, name="daily").apply(frame)
    return report, [parse_strict(m.data) for m in server.wait_for_messages(int((report["status"] == "sent").sum()))]


def _cells(message) -> list[tuple]:
    [part] = list(message.iter_attachments())
    return list(openpyxl.load_workbook(io.BytesIO(part.get_content())).active.iter_rows(values_only=True))


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_a_cell_over_excels_limit_is_cut_noted_in_the_report_and_logged(starttls_server, caplog):
    frame = pd.DataFrame({"id": [1, 2], "note": ["n" * 40_000, "short"], "body": ["b" * (LIMIT + 1), "b" * LIMIT],
                          "title": ["t" * 100, None]})
    with caplog.at_level(logging.WARNING, logger="mailgem"):
        report, [msg] = _send(starttls_server, frame, attachments=[XLSX])
    rows = _cells(msg)
    assert rows[0] == ("id", "note", "body", "title")
    assert len(rows[1][1]) == LIMIT and rows[1][1] == "n" * LIMIT
    assert len(rows[1][2]) == LIMIT and rows[2][2] == "b" * LIMIT  # at the limit: whole
    assert rows[2][1] == "short" and rows[1][3] == "t" * 100
    [row] = report.to_dict("records")
    assert row["status"] == "sent"
    assert row["notes"] == "xlsx attachment 'report.xlsx': 2 cells cut to Excel's 32,767 characters in columns note, body"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and "report.xlsx" in r.getMessage()]
    assert "2 cells cut to Excel's 32,767 characters in columns note, body" in warning.getMessage()
    assert "long_cells: error" in warning.getMessage()  # how to refuse instead


def test_characters_are_counted_as_excel_counts_them_in_utf16_units(starttls_server):
    whole = "a" + EMOJI * ((LIMIT - 1) // 2)  # exactly 32,767 UTF-16 units, 16,384 characters
    over = EMOJI * 20_000  # 20,000 characters (under the limit for len()), 40,000 UTF-16 units
    assert _utf16_units(whole) == LIMIT and len(over) < LIMIT < _utf16_units(over)
    report, [msg] = _send(starttls_server, pd.DataFrame({"whole": [whole], "over": [over]}), attachments=[XLSX])
    rows = _cells(msg)
    assert rows[1][0] == whole
    # Cut to the limit without splitting a character: 16,383 emoji, 32,766 units.
    assert rows[1][1] == EMOJI * (LIMIT // 2)
    assert report.iloc[0]["notes"] == ("xlsx attachment 'report.xlsx': 1 cell cut to Excel's 32,767 characters in "
                                       "column over")


def test_only_the_messages_whose_cells_were_cut_have_notes(starttls_server):
    frame = pd.DataFrame({"n": [1, 2], "to": ["a@example.com", "b@example.com"], "text": ["x" * (LIMIT + 5), "fine"]})
    report, messages = _send(starttls_server, frame, mode="per_row", to_column="to", key_columns=["n"],
                             attachments=[{"file_name": "row-{{ row.n }}.xlsx", "format": "xlsx", "columns": ["text"]}])
    notes = dict(zip(report["message_key"], report["notes"], strict=True))
    assert list(report["status"]) == ["sent", "sent"] and len(messages) == 2
    assert notes["row:[1]"] == "xlsx attachment 'row-1.xlsx': 1 cell cut to Excel's 32,767 characters in column text"
    assert pd.isna(notes["row:[2]"])


def test_long_cells_error_fails_the_message_and_sends_nothing(starttls_server):
    frame = pd.DataFrame({"id": [1, 2], "note": ["ok", "n" * 40_000]})
    report, messages = _send(starttls_server, frame, attachments=[XLSX | {"long_cells": "error"}])
    [row] = report.to_dict("records")
    assert row["status"] == "failed" and row["error_type"] == "MessageBuildError"
    assert "attachments[0] (report.xlsx)" in row["error"]
    assert "column 'note'" in row["error"] and "40,000 characters" in row["error"] and "32,767" in row["error"]
    assert "long_cells: cut" in row["error"]  # how to send it anyway
    assert messages == [] and starttls_server.messages == [] and starttls_server.sessions_opened == 0


def test_long_cells_is_an_xlsx_option_with_cut_by_default():
    from mailgem.gems.email.properties import AttachmentSpec

    assert AttachmentSpec(file_name="r.xlsx", format="xlsx").long_cells == "cut"
    with pytest.raises(ValueError, match="long_cells"):
        AttachmentSpec(file_name="r.xlsx", format="xlsx", long_cells="truncate")


def test_the_run_report_file_says_which_columns_were_cut(tmp_path):
    """Through `mailgem run` (Spark reads the CSV source, the embedded server receives)."""
    (tmp_path / "data.csv").write_text(f"id,note\n1,{'n' * 40_000}\n2,short\n")
    (tmp_path / "job.yaml").write_text(
        "name: long-cells\nsource: {path: data.csv}\nemail:\n  connection: local\n  to: ops@example.com\n"
        "  subject: Report\n  attachments: [{file_name: report.xlsx, format: xlsx}]\n")
    done = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", "job.yaml", "--local", "--outbox", "out",
                           "--report-out", "r.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    [row] = pd.read_csv(tmp_path / "r.csv").to_dict("records")
    assert row["status"] == "sent"
    assert row["notes"] == "xlsx attachment 'report.xlsx': 1 cell cut to Excel's 32,767 characters in column note"
    [eml] = (tmp_path / "out").glob("*.eml")
    rows = _cells(parse_strict(eml.read_bytes()))
    assert len(rows[1][1]) == LIMIT
