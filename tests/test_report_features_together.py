"""Issue 26's four parts in one job, as a bursting report uses them: two inputs (the recipients
and the data they carry, sliced per recipient), ``send_if`` on the slice, sections over ``in1``,
and an XLSX workbook of ``in1`` with two sheets in an AES-encrypted ZIP. On pandas and on
Spark's executors; what the server received is parsed with ``email``."""

from __future__ import annotations

import io

import openpyxl
import pandas as pd
import pytest
import pyzipper
from conftest import USER, fabric_for, parse
from pydantic import SecretStr

from mailgem.gems.email import EmailGem

ZIP_PASSWORD = "together-zip-test-only-41"

CONTACTS = pd.DataFrame({"carrier": ["AA", "UA", "ZZ"],
                         "manager": ["aa@example.com", "ua@example.com", "zz@example.com"]})
FLIGHTS = pd.DataFrame({"code": ["AA", "UA", "AA", "DL"], "flight": [1, 2, 3, 4], "delay": [61.0, 75.5, 90.0, 120.0]})

PROPS = {
    "connection": "reports", "mode": "per_row", "key_columns": ["carrier"], "to_column": "manager",
    "slice_by": {"carrier": "code"},
    "send_if": "{{ in1_row_count > 0 }}",  # ZZ has no delayed flight: no message
    "subject": "{{ row.carrier }}: {{ in1_row_count }} delayed",
    "table": {"enabled": False},  # the rows travel only in the protected workbook
    "sections": [
        {"title": "Delays of {{ row.carrier }}", "from": "in1",
         "table": {"summary": {"group_by": ["code"], "aggregates": [{"column": "delay", "function": "max"}]}}},
        {"title": "Notes", "text": "{{ in1_row_count }} flights over an hour late."},
    ],
    "attachments": [{"from": "in1", "format": "xlsx", "file_name": "{{ row.carrier }}.xlsx",
                     "protect": {"password": {"secret": "zip-password"}},
                     "sheets": [{"name": "Summary", "summary": {"group_by": ["code"], "aggregates": [{"column": "delay", "function": "mean"}]}},
                                {"name": "Detail", "columns": ["flight", "delay"]}]}],
    "on_error": "continue",
}


def _fabric(server):
    fabric = fabric_for(server)
    fabric.store().set("zip-password", SecretStr(ZIP_PASSWORD))
    return fabric


def _check(server, report: pd.DataFrame) -> None:
    statuses = dict(zip(report["message_key"], report["status"], strict=True))
    assert statuses == {'row:["AA"]': "sent", 'row:["UA"]': "sent", 'row:["ZZ"]': "skipped_by_rule"}
    got = {}
    for received in server.wait_for_messages(2, timeout_s=60):
        assert ZIP_PASSWORD.encode() not in received.data
        msg = parse(received.data)
        [zipped] = list(msg.iter_attachments())
        assert zipped.get_filename() == f"{msg['Subject'][:2]}.xlsx.zip"
        with pyzipper.AESZipFile(io.BytesIO(zipped.get_content())) as zf:
            zf.setpassword(ZIP_PASSWORD.encode())
            book = openpyxl.load_workbook(io.BytesIO(zf.read(f"{msg['Subject'][:2]}.xlsx")), read_only=True)
        assert book.sheetnames == ["Summary", "Detail"]
        detail = [row for row in book["Detail"].iter_rows(min_row=2, values_only=True)]
        html = msg.get_body(("html",)).get_content()
        assert "Delays of " + msg["Subject"][:2] in html and "Notes" in html
        got[str(msg["Subject"])] = (received.rcpt_tos, sorted(f for f, _ in detail), html)
    assert set(got) == {"AA: 2 delayed", "UA: 1 delayed"} and len(server.messages) == 2
    assert got["AA: 2 delayed"][:2] == (("aa@example.com",), [1, 3])
    assert got["UA: 1 delayed"][:2] == (("ua@example.com",), [2])
    assert "90" in got["AA: 2 delayed"][2] and "120" not in got["AA: 2 delayed"][2]  # the section's max: AA's only


def test_pandas_bursting_with_rules_sections_and_a_protected_workbook(starttls_server):
    report = EmailGem(PROPS, _fabric(starttls_server), user=USER, name="together").apply(CONTACTS, FLIGHTS)
    _check(starttls_server, report)


@pytest.mark.parametrize("distributed", [True, False], ids=["executors", "driver"])
def test_spark_bursting_with_rules_sections_and_a_protected_workbook(starttls_server, spark, distributed):
    gem = EmailGem(PROPS | {"distributed": distributed}, _fabric(starttls_server), user=USER, name="together")
    report = gem.apply(spark, spark.createDataFrame(CONTACTS), spark.createDataFrame(FLIGHTS)).toPandas()
    _check(starttls_server, report)
