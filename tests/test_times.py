"""Time zones on the data path (issue 23 §1): a Spark ``TIMESTAMP`` is an instant, and the table
the composer is given holds it as ``timestamp[us, tz=Z]``, Z being ``formats.timezone``, else the
Spark session's zone; on the driver (report mode, previews) and on the executors (per_row,
per_group) alike. pandas aware columns keep their zone (or take ``formats.timezone``); naive
pandas columns and ``TIMESTAMP_NTZ`` stay naive. Message keys keep the form earlier versions
gave them, so a ledger written before still knows every message."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PASSWORD, USER, fabric_for, parse

from mailgem.gems.email import EmailGem
from mailgem.gems.email.content.compose import Composer
from mailgem.gems.email.content.unit import Unit
from mailgem.gems.email.run.plan import row_key

ROOT = Path(__file__).resolve().parents[1]
INSTANT = dt.datetime(2024, 3, 1, 11, 0, tzinfo=dt.UTC)  # 12:00 in Berlin, 06:00 in New York

# (session zone, formats.timezone, zone the composer gets, wall time there,
#  the message key's value on the driver, and on the executors: as earlier versions made them)
CASES = [
    ("UTC", None, "UTC", "2024-03-01 11:00:00", '"2024-03-01 11:00:00"', '"2024-03-01 11:00:00"'),
    ("UTC", "Europe/Berlin", "Europe/Berlin", "2024-03-01 12:00:00",
     '"2024-03-01 11:00:00+00:00"', '"2024-03-01 11:00:00+00:00"'),
    ("America/New_York", None, "America/New_York", "2024-03-01 06:00:00",
     '"2024-03-01 11:00:00"', '"2024-03-01 06:00:00"'),
]
IDS = ["utc-session", "berlin-format", "new-york-session"]


class Seeing(Composer):
    """A composer that keeps the schema of every table it makes a message from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schemas: list[pa.Schema] = []

    def context(self, unit: Unit) -> dict[str, Any]:
        self.schemas.append(unit.table.schema)
        return super().context(unit)


class SeeingGem(EmailGem):
    """An Email gem whose driver-side composer is a :class:`Seeing` one (``seen``: the last)."""

    seen: Seeing

    def _composer(self, transport: Any, run_ts: dt.datetime, size_limit: int | None = None,
                  passwords: Any = None) -> Composer:
        self.seen = Seeing(self.properties, job=self.name, params=self.params, charset=transport.connection.charset,
                           run_ts=run_ts, size_limit=size_limit,
                           special_domains=transport.connection.allowed_special_domains, passwords=passwords,
                           base_dir=self.base_dir)
        return self.seen


@contextlib.contextmanager
def session_zone(spark: Any, zone: str) -> Iterator[None]:
    """The Spark session's time zone set to ``zone`` for the block, then restored."""
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", zone)
    try:
        yield
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)


def _frame(spark: Any) -> Any:
    return spark.sql("SELECT 1 AS n, TIMESTAMP'2024-03-01T11:00:00Z' AS ts, TIMESTAMP_NTZ'2024-03-01 11:00:00' AS ntz")


def _props(timezone: str | None, **overrides: Any) -> dict[str, Any]:
    props = {"connection": "reports", "to": "ops@example.com", "subject": "times",
             "attachments": [{"file_name": "rows.parquet", "format": "parquet"}]}
    if timezone:
        props["formats"] = {"timezone": timezone}
    return props | overrides


def _parquet(msg: EmailMessage) -> pa.Table:
    [part] = [p for p in msg.iter_attachments() if p.get_filename() == "rows.parquet"]
    return pq.read_table(io.BytesIO(part.get_content()))


def _types(schema: pa.Schema) -> tuple[Any, Any]:
    return schema.field("ts").type, schema.field("ntz").type


@pytest.mark.parametrize("session, timezone, zone, wall, driver_key, _", CASES, ids=IDS)
def test_spark_instants_reach_the_composer_in_the_display_zone_on_the_driver(spark, starttls_server, session,
                                                                            timezone, zone, wall, driver_key, _):
    fabric = fabric_for(starttls_server)
    with session_zone(spark, session):
        gem = SeeingGem(_props(timezone), fabric, user=USER)
        [built] = gem.preview(_frame(spark))
        assert _types(gem.seen.schemas[0]) == (pa.timestamp("us", tz=zone), pa.timestamp("us"))
        back = _parquet(built.message)
        assert _types(back.schema) == (pa.timestamp("us", tz=zone), pa.timestamp("us"))
        assert back.column("ts")[0].as_py() == INSTANT and str(back.column("ts")[0].as_py())[:19] == wall
        assert back.column("ntz")[0].as_py() == dt.datetime(2024, 3, 1, 11)
        # {{ row.ts }} and {{ group.ts }} show the instant in Z; the message keys are as before.
        subject = "{{ row.ts.tzinfo }} {{ row.ts }}"
        [row] = SeeingGem(_props(timezone, mode="per_row", key_columns=["ts"], subject=subject), fabric,
                          user=USER).preview(_frame(spark))
        assert row.key == f"row:[{driver_key}]" and row.message["Subject"].startswith(f"{zone} {wall}")
        [group] = SeeingGem(_props(timezone, mode="per_group", group_by=["ts"], subject=subject.replace("row", "group")),
                            fabric, user=USER).preview(_frame(spark))
        assert group.key == f"group:[{driver_key}]" and group.message["Subject"].startswith(f"{zone} {wall}")
        # A key hashing every value (no key_columns) too: JSON has the value as it had it.
        [hashed] = SeeingGem(_props(timezone, mode="per_row"), fabric, user=USER).preview(_frame(spark))
        assert hashed.key == row_key({"n": 1, "ts": json.loads(driver_key), "ntz": "2024-03-01 11:00:00"}, [])
        # report mode, sent (the driver's send loop): the same table
        gem.apply(spark, _frame(spark))
        [sent] = starttls_server.wait_for_messages(1)
        assert _types(gem.seen.schemas[0])[0] == pa.timestamp("us", tz=zone)
        assert _types(_parquet(parse(sent.data)).schema)[0] == pa.timestamp("us", tz=zone)


def test_java_zone_ids_spark_accepts_are_read_as_arrow_and_python_know_them(spark, starttls_server):
    from mailgem.gems.email.data import arrow_zone

    assert [arrow_zone(z) for z in ("Z", "-08", "+01:00:00", "GMT+1", "UTC+05:30", "PST", "EST", "Europe/Berlin")] == [
        "UTC", "-08:00", "+01:00", "+01:00", "+05:30", "America/Los_Angeles", "-05:00", "Europe/Berlin"]
    # A session in "-08" (Spark's own form): every path formats the instant in that offset.
    for mode in ("report", "per_row"):
        starttls_server.messages.clear()
        with session_zone(spark, "-08"):
            report = EmailGem(_props(None, mode=mode, text_body="{{ table_text }}"), fabric_for(starttls_server),
                              user=USER).apply(spark, _frame(spark)).toPandas()
        assert list(report["status"]) == ["sent"], report["error"].tolist()
        msg = parse(starttls_server.wait_for_messages(1)[0].data)
        assert "ts (-08:00)" in msg.get_body(("plain",)).get_content() and "2024-03-01 03:00:00" in \
            msg.get_body(("plain",)).get_content()
        assert _types(_parquet(msg).schema)[0] == pa.timestamp("us", tz="-08:00")


@pytest.mark.parametrize("mode", ["per_row", "per_group"])
@pytest.mark.parametrize("session, timezone, zone, wall, _, executor_key", CASES, ids=IDS)
def test_spark_instants_reach_the_composer_in_the_display_zone_on_the_executors(spark, starttls_server, mode, session,
                                                                               timezone, zone, wall, _, executor_key):
    keys = {"key_columns": ["ts"]} if mode == "per_row" else {"group_by": ["ts"]}
    scope = "row" if mode == "per_row" else "group"
    props = _props(timezone, mode=mode, subject=f"{{{{ {scope}.ts.tzinfo }}}} {{{{ {scope}.ts }}}}", **keys)
    with session_zone(spark, session):
        report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, _frame(spark)).toPandas()
    assert list(report["status"]) == ["sent"]
    assert list(report["message_key"]) == [f"{scope}:[{executor_key}]"]  # as before: a ledger still knows it
    [sent] = starttls_server.wait_for_messages(1)
    msg = parse(sent.data)
    assert msg["Subject"].startswith(f"{zone} {wall}")
    back = _parquet(msg)
    assert _types(back.schema) == (pa.timestamp("us", tz=zone), pa.timestamp("us"))
    assert back.column("ts")[0].as_py() == INSTANT and back.column("ntz")[0].as_py() == dt.datetime(2024, 3, 1, 11)


def test_a_daylight_saving_fall_back_hour_keeps_its_instant_on_the_executors(spark, starttls_server):
    # 01:30 comes twice in New York on 2024-11-03; a worker's pandas batch could not tell which.
    frame = spark.sql("SELECT TIMESTAMP'2024-11-03T05:30:00Z' AS ts UNION ALL SELECT TIMESTAMP'2024-11-03T06:30:00Z'")
    props = _props(None, mode="per_row", key_columns=["ts"], subject="{{ row.ts }}")
    with session_zone(spark, "America/New_York"):
        report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, frame).toPandas()
    assert sorted(report["status"]) == ["sent", "sent"]
    subjects = sorted(parse(m.data)["Subject"] for m in starttls_server.wait_for_messages(2))
    assert subjects == ["2024-11-03 01:30:00-04:00", "2024-11-03 01:30:00-05:00"]


CONNECT_SCRIPT = """
import json, os, socket, sys, uuid
from pyspark import SparkConf, SparkContext
from pyspark.sql.connect.session import SparkSession as RemoteSparkSession
from mailgem.fabric import load_fabric
from mailgem.gems.email import EmailGem

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
token = os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = str(uuid.uuid4())
server = SparkContext.getOrCreate(SparkConf().setMaster("local[2]").set("spark.ui.enabled", "false")
    .set("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
    .set("spark.connect.grpc.binding.address", "127.0.0.1").set("spark.connect.grpc.binding.port", str(port))
    .set("spark.connect.authenticate.token", token))
os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
spark = RemoteSparkSession.builder.remote(f"sc://localhost:{port}/;token={token}").getOrCreate()
spark.conf.set("spark.sql.session.timeZone", "America/New_York")
frame = spark.sql(sys.argv[3])
for props in json.loads(sys.argv[2]):
    gem = EmailGem(props, load_fabric(sys.argv[1]), user="alice")
    print("KEYS " + json.dumps([b.key for b in gem.preview(frame)]))
    print("REPORT " + json.dumps(list(gem.apply(spark, frame).toPandas()["message_key"])), flush=True)
spark.stop()
server.stop()
"""


def test_spark_connect_reads_the_session_zone_and_sends_instants_in_it(starttls_server, tmp_path):
    from test_spark_connect import _connect_missing

    if (missing := _connect_missing()) is not None:
        pytest.skip(missing)
    (tmp_path / "fabric.yaml").write_text(textwrap.dedent(f"""
        name: t
        teams: [{{name: t, members: [alice]}}]
        connections:
          - {{name: reports, host: 127.0.0.1, port: {starttls_server.port}, ca_bundle: "{starttls_server.ca_pem}",
              username: reports@example.com, password: {{secret: pw}}}}
    """))
    subject = "{{ row.ts.tzinfo }} {{ row.ts }}"
    props = [_props(None, mode="per_row", key_columns=["ts"], subject=subject),
             _props(None, subject="report", attachments=[{"file_name": "rows.parquet", "format": "parquet"}])]
    sql = "SELECT 1 AS n, TIMESTAMP'2024-03-01T11:00:00Z' AS ts, TIMESTAMP_NTZ'2024-03-01 11:00:00' AS ntz"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MAILGEM_SECRET_PW": PASSWORD, "PYSPARK_PYTHON": sys.executable}
    run = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT, str(tmp_path / "fabric.yaml"), json.dumps(props), sql],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("KEYS ", "REPORT "))]
    # keys as before: UTC wall time on the driver (preview, report), session wall time on the executors
    assert [(kind, json.loads(keys)) for kind, keys in lines] == [
        ("KEYS", ['row:["2024-03-01 11:00:00"]']), ("REPORT", ['row:["2024-03-01 06:00:00"]']),
        ("KEYS", ["report"]), ("REPORT", ["report"])]
    row, report = (parse(m.data) for m in starttls_server.wait_for_messages(2))
    assert row["Subject"].startswith("America/New_York 2024-03-01 06:00:00")
    back = _parquet(report)
    assert _types(back.schema) == (pa.timestamp("us", tz="America/New_York"), pa.timestamp("us"))
    assert back.column("ts")[0].as_py() == INSTANT


def test_pandas_aware_columns_keep_their_zone_or_take_formats_timezone_and_naive_ones_stay_naive(starttls_server):
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-03-01 12:00"]).tz_localize("Europe/Berlin"),
                          "ntz": pd.to_datetime(["2024-03-01 11:00"])})
    fabric = fabric_for(starttls_server)
    for timezone, zone, wall in [(None, "Europe/Berlin", "12:00"), ("America/New_York", "America/New_York", "06:00")]:
        gem = SeeingGem(_props(timezone), fabric, user=USER)
        [built] = gem.preview(frame)
        assert _types(gem.seen.schemas[0]) == (pa.timestamp("us", tz=zone), pa.timestamp("us"))
        assert _parquet(built.message).column("ts")[0].as_py() == INSTANT
        [row] = EmailGem(_props(timezone, mode="per_row", key_columns=["ts", "ntz"], subject="{{ row.ts }}"), fabric,
                         user=USER).preview(frame)
        assert f" {wall}:00" in row.message["Subject"]
        # The key, as before: the column's own zone, whatever zone the email shows it in.
        assert row.key == 'row:["2024-03-01 12:00:00+01:00","2024-03-01 11:00:00"]'


def test_the_html_table_names_the_zone(starttls_server):
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-03-01 11:00"]).tz_localize("UTC")})
    [built] = EmailGem(_props("Europe/Berlin", attachments=[]), fabric_for(starttls_server), user=USER).preview(frame)
    html = built.message.get_body(("html",)).get_content()
    assert "12:00" in html and "Europe/Berlin" in html


JOB = """
name: times
source: {{path: times.parquet}}
email:
  connection: local
  mode: per_row
  key_columns: [at]
  to: boss@example.com
  subject: "{{{{ row.at }}}}"
  attachments: [{{file_name: rows.parquet, format: parquet}}]
{formats}
"""


@pytest.mark.parametrize("timezone, zone, wall", [(None, "UTC", "11:00"), ("Europe/Berlin", "Europe/Berlin", "12:00")])
def test_mailgem_run_sends_instants_in_the_display_zone(tmp_path, timezone, zone, wall):
    at = pd.to_datetime(["2024-03-01 12:00"]).tz_localize("Europe/Berlin").astype("datetime64[us, Europe/Berlin]")
    pd.DataFrame({"at": at, "n": [1]}).to_parquet(tmp_path / "times.parquet")
    formats = f"  formats: {{timezone: {timezone}}}" if timezone else ""
    (tmp_path / "job.yaml").write_text(textwrap.dedent(JOB.format(formats=formats)))
    done = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", "job.yaml", "--outbox", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    [eml] = sorted((tmp_path / "out").glob("*.eml"))
    msg = parse(eml.read_bytes())
    back = _parquet(msg)
    assert back.schema.field("at").type == pa.timestamp("us", tz=zone) and back.column("at")[0].as_py() == INSTANT
    html = msg.get_body(("html",)).get_content()
    other = "12:00" if wall == "11:00" else "11:00"
    assert f"2024-03-01 {wall}:00" in html and other not in html
    assert msg["Subject"].startswith(f"2024-03-01 {wall}:00")
