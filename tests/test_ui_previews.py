"""The UI's frame cache, previews and "Send a test to me" (mailgem.ui.frames, mailgem.ui.previews),
against a real local SparkSession and real SMTP servers."""

from __future__ import annotations

import base64
import gzip
import io
import re
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PER_ROW, USER, fabric_for, parse

from mailgem.connections.errors import AuthenticationError, MailgemError
from mailgem.fabric.loader import load_yaml
from mailgem.fabric.local import local_fabric, local_identity_fabric
from mailgem.runner.job import job_frame, job_gem, load_job, parse_job
from mailgem.runner.source import read_source
from mailgem.ui.frames import FrameCache, FrameReadError
from mailgem.ui.previews import TestAddressError, build_previews, send_test

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "flights_delay_report.yaml"


def _people(folder: Path) -> Path:
    path = folder / "people.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "to": ["a@example.com", "b@example.com", "c@example.com"],
                             "score": [1.5, None, 3.0], "visits": pa.array([4, None, 6], pa.int64())}), path)
    return path


def _job(folder: Path, email: dict | None = None, **fields):
    doc = {"name": "people", "source": {"path": "people.parquet"},
           "email": email or {**PER_ROW, "cc": "boss@example.com", "bcc": "audit@example.com"}, **fields}
    return parse_job(doc, folder / "job.yaml"), doc


# -- the frame cache ---------------------------------------------------------------------


def test_a_file_source_is_read_once_with_pyarrow(tmp_path, spark):
    _people(tmp_path)
    job, doc = _job(tmp_path)
    cache = FrameCache(spark=spark)
    try:
        frame, note = cache.frame(job)
        assert "pyarrow" in note and list(frame.columns) == ["n", "to", "score", "visits"]
        assert frame["visits"].isna().tolist() == [False, True, False]  # integers with a null stay integers
        assert str(frame["visits"].dtype).startswith("int64")
        assert cache.frame(job)[0] is frame
        # An edit of the email properties keeps the frame.
        edited, _ = _job(tmp_path, {**doc["email"], "subject": "Other {{ row.n }}"})
        assert cache.frame(edited)[0] is frame
        # A transform is a new frame (read with Spark), kept in its turn.
        transformed, _ = _job(tmp_path, doc["email"], transform="SELECT * FROM source WHERE n > 1")
        again, note = cache.frame(transformed)
        assert again is not frame and list(again["n"]) == [2, 3] and "Spark" in note
        assert cache.frame(transformed)[0] is again
        # A new export of the data file is read again at the next preview.
        import os

        os.utime(tmp_path / "people.parquet", ns=(1, 1))
        assert cache.frame(transformed)[0] is not again
    finally:
        cache.close()
    assert not spark.sparkContext._jsc.sc().isStopped()  # a session passed in is the caller's to stop


def test_csv_and_json_are_read_as_spark_reads_them(tmp_path, spark):
    (tmp_path / "t.csv").write_text('id;note\n1;"two\nlines"\n2;"say ""hi"""\n', encoding="utf-8")
    (tmp_path / "t.json").write_text('{"b": 1, "a": "x"}\n{"c": 2.5, "a": "2013-07-22T10:00:00"}\n', encoding="utf-8")
    cache = FrameCache(spark=spark)
    for source in ({"path": "t.csv", "options": {"sep": ";"}}, {"path": "t.json"}):
        job = parse_job({"name": "t", "source": source, "email": {"connection": "c", "to": "a@example.com",
                                                                  "subject": "s"}}, tmp_path / "job.yaml")
        frame, note = cache.frame(job)
        expected = read_source(spark, job.source, job.inspect_source()).toPandas()
        assert "pyarrow" in note
        assert list(frame.columns) == list(expected.columns)
        assert frame.astype(object).where(frame.notna(), None).values.tolist() == \
            expected.astype(object).where(expected.notna(), None).values.tolist()
    cache.close()


def test_a_large_transformed_frame_stays_in_spark(tmp_path, spark):
    _people(tmp_path)
    job, _ = _job(tmp_path, transform="SELECT * FROM source")
    cache = FrameCache(max_rows=2, spark=spark)
    try:
        frame, note = cache.frame(job)
        assert hasattr(frame, "sparkSession") and "kept in Spark" in note and frame.is_cached
        previews = build_previews(job, frame, local_identity_fabric(USER), "local", USER, limit=2)
        assert [p.recipients for p in previews] == [["a@example.com", "boss@example.com", "audit@example.com"],
                                                    ["b@example.com", "boss@example.com", "audit@example.com"]]
    finally:
        cache.close()


def test_a_spark_error_is_one_line_naming_the_transform(tmp_path, spark):
    _people(tmp_path)
    job, _ = _job(tmp_path, transform="SELECT nope FROM source")
    cache = FrameCache(spark=spark)
    with pytest.raises(FrameReadError, match=r"job\.yaml: transform: .*nope.*\(SQL: SELECT nope FROM source\)") as info:
        cache.frame(job)
    assert "\n" not in str(info.value)
    missing = parse_job({"name": "t", "source": {"path": "gone.parquet"},
                         "email": {"connection": "c", "to": "a@example.com", "subject": "s"}}, tmp_path / "job.yaml")
    with pytest.raises(FrameReadError, match="does not exist"):
        cache.frame(missing)


# -- previews ----------------------------------------------------------------------------


def _table(html: str) -> str:
    return re.search(r"<table.*</table>", html, re.DOTALL).group(0)


def _members(xlsx: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(xlsx)) as z:
        return {n: z.read(n) for n in z.namelist() if not n.startswith("docProps/")}


@pytest.fixture
def demo_job():
    if not (ROOT / "data" / "flights.parquet").exists():
        pytest.skip("the demo data is missing: python examples/prepare_flights.py data/flights.parquet")
    return load_job(DEMO)


def test_the_demo_job_previews_as_the_gem_builds_from_spark(demo_job, spark):
    fabric = local_identity_fabric(USER)
    cache = FrameCache(spark=spark)
    try:
        frame, note = cache.frame(demo_job)
        assert "kept in memory" in note and not hasattr(frame, "sparkSession")
        preview, = build_previews(demo_job, frame, fabric, "local", USER)
    finally:
        cache.close()
    direct, = job_gem(demo_job, fabric, "local", USER).build(job_frame(demo_job, spark), 3)

    assert preview.error is None and dict(preview.headers)["Subject"] == direct.subject
    assert dict(preview.headers)["Subject"].startswith("Delays 2013-07-22: ")
    assert [n for n, _ in preview.headers][:8] == ["From", "To", "Cc", "Reply-To", "Subject", "Date",
                                                   "Auto-Submitted", "Message-ID"]
    assert ("X-Report-Job", "daily-delay-report") in preview.headers
    assert preview.recipients == direct.recipients and preview.size_bytes > 0
    assert _table(preview.html) == _table(direct.html())
    assert preview.text == direct.message.get_body(("plain",)).get_content()
    attached = {a.get_filename(): a.get_payload(decode=True) for a in direct.message.iter_attachments()}
    assert [name for name, *_ in preview.attachments] == list(attached)
    # The same files: the CSV to the byte; the workbook's sheets too (its zip holds its creation time).
    assert preview.attachments[0][2] == len(attached[preview.attachments[0][0]])
    xlsx_name, _, _, workbook = preview.attachments[1]
    assert _members(workbook) == _members(attached[xlsx_name])
    # scheduled_hour in New York time (EDT in July) in both: the same CSV.
    csv_name, _, _, payload = preview.attachments[0]
    rows = gzip.decompress(payload).decode()
    assert rows == gzip.decompress(attached[csv_name]).decode()
    assert re.search(r'^"2013-07-22 \d\d:00:00-04:00",', rows, re.MULTILINE)


def test_inline_images_become_data_uris_and_the_report_row_is_a_dry_run(demo_job, spark):
    cache = FrameCache(spark=spark)
    try:
        preview, = build_previews(demo_job, cache.frame(demo_job)[0], local_identity_fabric(USER), "local", USER)
    finally:
        cache.close()
    assert "cid:" not in preview.html
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', preview.html)
    assert found and base64.b64decode(found.group(1)).startswith(b"\x89PNG")
    row = preview.report_row
    assert row["status"] == "dry_run" and row["message_key"] == "report" and row["connection"] == "local"
    assert row["size_bytes"] == preview.size_bytes and row["message_id"] == dict(preview.headers)["Message-ID"]
    assert row["recipients"] == ", ".join(preview.recipients)


def test_a_message_that_cannot_be_built_comes_with_its_error(tmp_path):
    _people(tmp_path)
    job, _ = _job(tmp_path, {**PER_ROW, "subject": "{{ row.n + 'x' }}"})
    cache = FrameCache()
    previews = build_previews(job, cache.frame(job)[0], local_identity_fabric(USER), "local", USER, limit=1)
    assert previews[0].error and "\n" not in previews[0].error and previews[0].html is None
    assert previews[0].report_row["status"] == "failed"


# -- send a test to me -------------------------------------------------------------------


def test_a_test_goes_to_the_given_address_only(tmp_path, starttls_server):
    _people(tmp_path)
    job, _ = _job(tmp_path)  # per_row, recipients from the column "to", with cc and bcc
    frame, _ = FrameCache().frame(job)
    result = send_test(job, frame, fabric_for(starttls_server), "reports", USER, "me@example.com")
    received, = starttls_server.messages
    msg = parse(received.data)
    assert received.rcpt_tos == ("me@example.com",)
    assert msg["To"] == "me@example.com" and msg["Cc"] is None and msg["Bcc"] is None
    assert msg["Subject"] == "[test] Message 1" == result.subject
    assert result.code == 250 and result.recipient == "me@example.com" and result.size_bytes == len(received.data)


def test_a_test_through_the_embedded_server(tmp_path):
    job = parse_job({"name": "demo", "source": {"path": "x.parquet"},
                     "email": {"connection": "local", "to": "ops@example.com", "cc": "x@example.com",
                               "subject": "{{ row_count }} rows", "html_body": "{{ table }}"}}, tmp_path / "j.yaml")
    _people(tmp_path).rename(tmp_path / "x.parquet")
    frame, _ = FrameCache().frame(job)
    with local_fabric(tmp_path / "outbox", user=USER) as run:
        result = send_test(job, frame, run.fabric, "local", USER, "Me <me@example.com>")
        received, = run.server.messages
    assert received.rcpt_tos == ("me@example.com",) and result.subject == "[test] 3 rows"
    msg = parse(received.path.read_bytes())
    assert msg["To"] == "Me <me@example.com>" and msg["Cc"] is None


@pytest.mark.parametrize("address", ["not an address", "a@example.com, b@example.com", "me@localhost", ""])
def test_a_bad_address_sends_nothing(tmp_path, starttls_server, address):
    _people(tmp_path)
    job, _ = _job(tmp_path)
    with pytest.raises(TestAddressError, match="test address"):
        send_test(job, FrameCache().frame(job)[0], fabric_for(starttls_server), "reports", USER, address)
    assert starttls_server.messages == []


def test_a_refused_login_says_how_to_fix_it(tmp_path, starttls_server):
    _people(tmp_path)
    job, _ = _job(tmp_path)
    with pytest.raises(AuthenticationError) as info:
        send_test(job, FrameCache().frame(job)[0], fabric_for(starttls_server, password="wrong"), "reports", USER,
                  "me@example.com")
    assert isinstance(info.value, MailgemError) and info.value.code == 535 and "Hint:" in str(info.value)
    assert "wrong" not in str(info.value) and starttls_server.messages == []


def test_the_demo_job_file_parses_as_a_document(demo_job):
    # The benchmark edits the demo job as a document and parses it again (parse_job).
    doc = load_yaml(DEMO)
    doc["email"]["subject"] = "Edited"
    assert parse_job(doc, DEMO).email.subject == "Edited" and demo_job.transform
