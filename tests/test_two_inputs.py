"""Two inputs (issue 26 §1): ``in0`` makes the messages, ``in1`` is the data they carry, whole or
sliced by ``slice_by``; pandas and Spark (driver and executors), the Python API and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import USER, fabric_for, parse

from mailgem.gems.email import EmailGem, GemValidationError
from mailgem.runner.cli import main

ROOT = Path(__file__).resolve().parents[1]

CONTACTS = pd.DataFrame({"carrier": ["AA", "UA", "ZZ"], "manager": ["aa@example.com", "ua@example.com", "zz@example.com"]})
# DL has no contact; a null code matches nothing.
FLIGHTS = pd.DataFrame({"code": ["AA", "UA", "AA", "DL", None], "flight": [1, 2, 3, 4, 5],
                        "delay": [61.0, 75.5, 90.0, 120.0, 99.0]})

ROW = {"connection": "reports", "mode": "per_row", "key_columns": ["carrier"], "to_column": "manager",
       "subject": "{{ row.carrier }}: {{ in1_row_count }} delayed flights", "slice_by": {"carrier": "code"},
       "table": {"from": "in1", "columns": ["flight", "delay"]},
       "attachments": [{"from": "in1", "file_name": "{{ row.carrier }}.csv"}], "on_error": "continue"}
SLICED = {"AA: 2 delayed flights": [1, 3], "UA: 1 delayed flights": [2], "ZZ: 0 delayed flights": []}


def _received(server, n):
    """``{subject: (recipients, the CSV attachment's flights, html)}`` of what the server got."""
    out = {}
    for received in server.wait_for_messages(n, timeout_s=60):
        msg = parse(received.data)
        [att] = list(msg.iter_attachments())
        rows = pd.read_csv(io.StringIO(att.get_content()))
        out[msg["Subject"]] = (received.rcpt_tos, list(rows["flight"]), msg.get_body(("html",)).get_content())
    assert len(server.messages) == n
    return out


def _flights_of(got):
    return {subject: flights for subject, (_, flights, _) in got.items()}


# -- pandas -----------------------------------------------------------------------------------

def test_pandas_per_row_each_message_carries_only_its_slice(starttls_server):
    report = EmailGem(ROW, fabric_for(starttls_server), user=USER).apply(CONTACTS, FLIGHTS)
    assert list(report["status"]) == ["sent"] * 3
    assert list(report["message_key"]) == ['row:["AA"]', 'row:["UA"]', 'row:["ZZ"]']  # keys from in0
    got = _received(starttls_server, 3)
    assert _flights_of(got) == SLICED
    rcpts, _, html = got["AA: 2 delayed flights"]
    assert rcpts == ("aa@example.com",)
    assert ">90.00<" in html and ">61.00<" in html and "120" not in html and "75.50" not in html  # the table is in1's


def test_pandas_per_group_carries_the_rows_of_every_key_in_the_group_once(starttls_server):
    contacts = pd.DataFrame({"carrier": ["AA", "UA", "AA", "DL"], "desk": ["east", "east", "east", "south"],
                             "manager": ["east@example.com"] * 3 + ["south@example.com"]})
    props = {"connection": "reports", "mode": "per_group", "group_by": ["desk"], "to_column": "manager",
             "slice_by": {"carrier": "code"}, "subject": "{{ group.desk }}: {{ row_count }}/{{ in1_row_count }}",
             "attachments": [{"from": "in1", "file_name": "{{ group.desk }}.csv"}]}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, contacts, FLIGHTS)
    assert list(report["message_key"]) == ['group:["east"]', 'group:["south"]'] and set(report["status"]) == {"sent"}
    assert _flights_of(_received(starttls_server, 2)) == {"east: 3/3": [1, 2, 3], "south: 1/1": [4]}


def test_without_slice_by_every_message_carries_all_of_in1(starttls_server):
    props = {"connection": "reports", "to": "ops@example.com", "subject": "{{ row_count }} contacts, {{ in1_row_count }} flights",
             "attachments": [{"from": "in1", "file_name": "all.csv"}, {"file_name": "contacts.csv"}]}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, CONTACTS, FLIGHTS)
    assert list(report["status"]) == ["sent"]
    [received] = starttls_server.wait_for_messages(1)
    msg = parse(received.data)
    assert msg["Subject"] == "3 contacts, 5 flights"
    flights, contacts = (pd.read_csv(io.StringIO(a.get_content())) for a in msg.iter_attachments())
    assert list(flights["flight"]) == [1, 2, 3, 4, 5] and list(contacts["carrier"]) == ["AA", "UA", "ZZ"]
    # The body's table stays in0's.
    assert "aa@example.com" in msg.get_body(("html",)).get_content()


def test_report_with_slice_by_carries_the_rows_matching_any_of_the_frame(starttls_server):
    props = {"connection": "reports", "to": "ops@example.com", "subject": "{{ in1_row_count }}", "slice_by": {"carrier": "code"},
             "table": {"from": "in1"}, "attachments": [{"from": "in1", "file_name": "x.csv"}]}
    EmailGem(props, fabric_for(starttls_server), user=USER).apply(CONTACTS, FLIGHTS)
    assert _flights_of(_received(starttls_server, 1)) == {"3": [1, 2, 3]}


def test_a_rerun_with_a_ledger_sends_nothing_twice(starttls_server, tmp_path):
    props = ROW | {"ledger": {"path": str(tmp_path / "ledger.sqlite"), "run_key": "2024-05-01"}}
    fab = fabric_for(starttls_server)
    first = EmailGem(props, fab, user=USER, name="two").apply(CONTACTS.iloc[:2], FLIGHTS)
    assert list(first["status"]) == ["sent"] * 2
    second = EmailGem(props, fab, user=USER, name="two").apply(CONTACTS, FLIGHTS)
    assert list(second["status"]) == ["already_sent", "already_sent", "sent"]
    assert _flights_of(_received(starttls_server, 3)) == SLICED


def test_preview_and_build_carry_in1():
    from mailgem.fabric.local import local_identity_fabric

    gem = EmailGem(ROW | {"connection": "local"}, local_identity_fabric())
    built = gem.preview(CONTACTS, 2, in1=FLIGHTS)
    assert [b.message["Subject"] for b in built] == ["AA: 2 delayed flights", "UA: 1 delayed flights"]
    [att] = list(built[1].message.iter_attachments())
    assert list(pd.read_csv(io.StringIO(att.get_content()))["flight"]) == [2]


# -- mistakes, before anything is read or sent -------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    ({}, "slice_by"),
    ({"slice_by": None}, "table.from"),
    ({"slice_by": None, "table": {}}, "attachments[0].from"),
])
def test_what_needs_in1_without_one_is_refused_before_sending(starttls_server, change, field):
    gem = EmailGem(ROW | change, fabric_for(starttls_server), user=USER)
    with pytest.raises(GemValidationError, match=r"use\(s\) the second input, and none was given") as info:
        gem.apply(CONTACTS)
    assert field in str(info.value) and "apply(spark, in0, in1)" in str(info.value)
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0
    assert [d.path for d in gem.validate(list(CONTACTS), has_in1=False) if d.severity == "error"][0] == field


def test_slice_by_and_in1_columns_are_checked_against_each_frame(starttls_server):
    gem = EmailGem(ROW | {"slice_by": {"carrier": "carrier"}}, fabric_for(starttls_server), user=USER)
    with pytest.raises(GemValidationError, match=r"slice_by\.carrier: 'carrier' is not a column of in1 \(it has: "
                                                 r"code, flight, delay\)"):
        gem.apply(CONTACTS, FLIGHTS)
    bad = EmailGem(ROW | {"slice_by": {"carier": "code"}, "table": {"from": "in1", "columns": ["flight", "dly"]},
                          "attachments": [{"from": "in1", "columns": ["manager"]}]}, fabric_for(starttls_server))
    found = {d.path: d.message for d in bad.validate(CONTACTS, FLIGHTS) if d.severity == "error"}
    assert found["slice_by.carier"].startswith("'carier' is not a column of in0")
    assert found["table.columns"] == "unknown column 'dly'; in1 has: code, flight, delay"
    assert found["attachments[0].columns"] == "unknown column 'manager'; in1 has: code, flight, delay"
    assert starttls_server.messages == []
    with pytest.raises(ValueError, match="slice_by"):
        EmailGem(ROW | {"slice_by": {}}, fabric_for(starttls_server))


# -- Spark: the driver's path and the executors' ----------------------------------------------

@pytest.fixture
def spark_inputs(spark):
    flights = FLIGHTS.assign(at=pd.to_datetime(["2013-07-22 20:00", "2013-07-22 21:00", "2013-07-22 22:00",
                                                "2013-07-22 23:00", "2013-07-23 00:00"], utc=True))
    return spark.createDataFrame(CONTACTS), spark.createDataFrame(flights)


@pytest.mark.parametrize("distributed", [False, True], ids=["driver", "executors"])
def test_spark_per_row_sliced_by_a_join(starttls_server, spark, spark_inputs, distributed):
    in0, in1 = spark_inputs
    props = ROW | {"distributed": distributed, "formats": {"timezone": "America/New_York"}}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, in0, in1).toPandas()
    assert sorted(report["message_key"]) == ['row:["AA"]', 'row:["UA"]', 'row:["ZZ"]']
    assert set(report["status"]) == {"sent"}
    got = _received(starttls_server, 3)
    assert _flights_of(got) == SLICED
    [aa] = [m for m in starttls_server.messages if m.rcpt_tos == ("aa@example.com",)]
    [att] = list(parse(aa.data).iter_attachments())
    assert list(pd.read_csv(io.StringIO(att.get_content()))["at"]) == ["2013-07-22 16:00:00-04:00",
                                                                       "2013-07-22 18:00:00-04:00"]


@pytest.mark.parametrize("distributed", [False, True], ids=["driver", "executors"])
def test_spark_per_group_and_whole_in1(starttls_server, spark, spark_inputs, distributed):
    in0, in1 = spark_inputs
    props = {"connection": "reports", "mode": "per_group", "group_by": ["carrier"], "to_column": "manager",
             "distributed": distributed, "subject": "{{ group.carrier }}: {{ in1_row_count }}",
             "attachments": [{"from": "in1", "file_name": "all.csv"}]}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(in0, in1)  # apply(in0, in1) for Spark too
    assert report.count() == 3
    assert _flights_of(_received(starttls_server, 3)) == {f"{c}: 5": [1, 2, 3, 4, 5] for c in ("AA", "UA", "ZZ")}


def test_spark_per_group_sliced_on_the_executors(starttls_server, spark, spark_inputs):
    contacts = spark.createDataFrame(pd.DataFrame({
        "carrier": ["AA", "UA", "AA", "DL", None], "desk": ["east", "east", "east", "south", "south"],
        "manager": ["east@example.com"] * 3 + ["south@example.com"] * 2}))
    props = {"connection": "reports", "mode": "per_group", "group_by": ["desk"], "to_column": "manager",
             "slice_by": {"carrier": "code"}, "subject": "{{ group.desk }}: {{ row_count }}/{{ in1_row_count }}",
             "attachments": [{"from": "in1", "file_name": "{{ group.desk }}.csv"}]}
    report = EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, contacts, spark_inputs[1])
    assert sorted(report.toPandas()["message_key"]) == ['group:["east"]', 'group:["south"]']
    # Each key's flights once, in in1's order, though two of the group's rows are AA; a null key matches nothing.
    assert _flights_of(_received(starttls_server, 2)) == {"east: 3/3": [1, 2, 3], "south: 2/1": [4]}


@pytest.mark.parametrize("distributed", [False, True], ids=["driver", "executors"])
def test_spark_slice_by_a_timestamp_key(starttls_server, spark, spark_inputs, distributed):
    hours = pd.to_datetime(["2013-07-22 21:00", "2013-07-23 00:00", "2013-07-24 00:00"], utc=True)
    in0 = spark.createDataFrame(CONTACTS.assign(hour=hours))
    props = ROW | {"slice_by": {"hour": "at"}, "distributed": distributed}
    EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, in0, spark_inputs[1])
    assert _flights_of(_received(starttls_server, 3)) == {"AA: 1 delayed flights": [2], "UA: 1 delayed flights": [5],
                                                          "ZZ: 0 delayed flights": []}


def test_the_driver_collects_only_the_in1_rows_matching_in0s_keys(spark_inputs):
    from mailgem.gems.email.properties import EmailProperties
    from mailgem.gems.email.run.in1 import collect_in1

    in0, in1 = spark_inputs
    collected = collect_in1(in1.orderBy("flight", ascending=False), in0, EmailProperties.model_validate(ROW))
    assert collected is not None and collected.table.column("flight").to_pylist() == [3, 2, 1]  # in1's order kept


def test_spark_and_pandas_inputs_cannot_be_mixed(starttls_server, spark, spark_inputs):
    with pytest.raises(GemValidationError, match="both be Spark DataFrames or both pandas"):
        EmailGem(ROW, fabric_for(starttls_server), user=USER).apply(spark, spark_inputs[0], FLIGHTS)


# -- the job file and the CLI -----------------------------------------------------------------

@pytest.fixture
def example(tmp_path):
    """examples/flights_two_inputs.yaml and its contacts, over a small flights file of known rows."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "data").mkdir()
    for name in ("flights_two_inputs.yaml", "carrier_contacts.csv"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "examples" / name)
    day, other = dt.date(2013, 7, 22), dt.date(2013, 7, 23)
    rows = [("AA", 11, day, 75.0), ("UA", 21, day, 200.0), ("AA", 12, day, 300.0), ("AA", 13, day, 30.0),
            ("DL", 31, other, 500.0), ("B6", 41, day, 61.0)]
    flights = pd.DataFrame({"year": [d.year for _, _, d, _ in rows], "month": [d.month for _, _, d, _ in rows],
                            "day": [d.day for _, _, d, _ in rows], "carrier": [r[0] for r in rows],
                            "flight": [r[1] for r in rows], "tailnum": "N1", "origin": "JFK", "dest": "LAX",
                            "dep_delay": [r[3] for r in rows], "arr_delay": 1.0,
                            "time_hour": pd.to_datetime(["2013-07-22 20:00"] * 6, utc=True).astype("datetime64[us, UTC]")})
    flights.to_parquet(tmp_path / "data" / "flights.parquet", index=False)
    return tmp_path


def test_the_two_input_example_sends_each_carrier_only_its_flights(example, spark, capsys):
    job, out = str(example / "examples" / "flights_two_inputs.yaml"), str(example / "out")
    assert main(["run", job, "--local", "--outbox", out, "--json"]) == 0, capsys.readouterr().err[-3000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["messages"] == 16 and summary["counts"] == {"sent": 16}  # one per contact (in0)
    got = {}
    for eml in sorted((example / "out").glob("*.eml")):
        msg = parse(eml.read_bytes())
        [att] = list(msg.iter_attachments())
        got[msg["To"]] = (msg["Subject"], list(pd.read_csv(io.StringIO(att.get_content()))["flight"]),
                          att.get_filename())
    assert got["aa-delays@example.com"] == ("American Airlines: 2 departures over an hour late on 2013-07-22",
                                            [12, 11], "AA-delays-2013-07-22.csv")  # worst first, as in1 is ordered
    assert got["ua-delays@example.com"][1] == [21] and got["b6-delays@example.com"][1] == [41]
    assert got["dl-delays@example.com"][:2] == ("Delta Air Lines: 0 departures over an hour late on 2013-07-22", [])
    # A re-run of the same day: the ledger sends nothing twice.
    assert main(["run", job, "--local", "--outbox", out, "--json"]) == 0, capsys.readouterr().err[-3000:]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["counts"] == {"already_sent": 16}
    assert len(list((example / "out").glob("*.eml"))) == 16


def test_dry_run_and_preview_of_two_inputs(example, spark, capsys):
    job = str(example / "examples" / "flights_two_inputs.yaml")
    assert main(["run", job, "--local", "--dry-run", "--out", str(example / "dry")]) == 0, capsys.readouterr()
    emls = {parse(p.read_bytes())["To"]: parse(p.read_bytes()) for p in (example / "dry").glob("*.eml")}
    assert len(emls) == 16
    [att] = list(emls["ua-delays@example.com"].iter_attachments())
    assert list(pd.read_csv(io.StringIO(att.get_content()))["flight"]) == [21]
    assert main(["preview", job, "--local", "--limit", "2", "--out", str(example / "pre")]) == 0
    assert len(list((example / "pre").glob("*.eml"))) == 2
    assert not (example / "out").exists()
    capsys.readouterr()
    # After Spark analysed both transforms, in1's columns are known: a table column it lacks is named.
    path = Path(job)
    path.write_text(path.read_text().replace("{name: origin, label: From}", "{name: origins}"))
    assert main(["validate", job, "--local"]) == 0  # in1 has a transform: its columns are unknown before Spark
    assert main(["validate", job, "--local", "--schema-from-data"]) == 2
    assert "email.table.columns: unknown column 'origins'; in1 has: carrier, flight, tailnum, origin" in \
        capsys.readouterr().err


def test_job_file_mistakes_of_two_sources_are_reported_before_spark(example, capsys):
    job = example / "examples" / "flights_two_inputs.yaml"
    text = job.read_text()
    job.write_text(text.replace("../data/flights.parquet", "../data/nope.parquet"))
    assert main(["validate", str(job), "--local"]) == 2
    err = capsys.readouterr().err
    assert f"{job}: sources.data.path: '../data/nope.parquet' resolves to" in err and "does not exist" in err
    # A column of in1 the table names: checked against the Parquet footer, before Spark.
    job.write_text(re.sub(r"    transform: \|\n(      .*\n)+", "", text))
    assert main(["validate", str(job), "--local"]) == 2
    err = capsys.readouterr().err
    assert "email.table.columns: unknown column 'scheduled_hour'; in1 has: year, month" in err
    job.write_text(text.replace("sources:", "source: {path: a.csv}\nsources:"))
    assert main(["validate", str(job), "--local"]) == 2
    assert "give source (one input) or sources (two named inputs" in capsys.readouterr().err
    one = text.split("sources:")[0] + "source: {path: carrier_contacts.csv}\n" + "params:" + text.split("params:")[1]
    job.write_text(one)
    assert main(["validate", str(job), "--local"]) == 2
    err = capsys.readouterr().err
    assert f"{job}: email.slice_by: uses the second input (in1), and there is none" in err
    assert f"{job}: email.table.from: is in1, and there is no second input" in err
    assert f"{job}: email.attachments[0].from: is in1" in err
    three = text.replace("  data:", "  more: {path: carrier_contacts.csv}\n  data:")
    job.write_text(three)
    assert main(["validate", str(job), "--local"]) == 2
    assert "names 3 source(s); give exactly two" in capsys.readouterr().err


def test_schema_shows_the_new_properties(capsys):
    assert main(["schema", "email"]) == 0
    schema = json.loads(capsys.readouterr().out)
    defs = schema["$defs"]
    assert "in0_column" in schema["properties"]["slice_by"]["description"]
    assert defs["AttachmentSpec"]["properties"]["from"]["enum"] == ["in0", "in1"]
    assert "second input" in defs["TableOptions"]["properties"]["from"]["description"]
    assert main(["schema"]) == 0  # the job file's
    job = json.loads(capsys.readouterr().out)
    assert "in1" in job["properties"]["sources"]["description"]
    assert "transform" in job["$defs"]["NamedSource"]["properties"]


def test_the_ui_previews_a_two_input_job_with_its_in1(example, spark):
    from mailgem.fabric.local import local_identity_fabric
    from mailgem.runner.job import load_job
    from mailgem.ui.frames import FrameCache
    from mailgem.ui.previews import build_previews

    job = load_job(example / "examples" / "flights_two_inputs.yaml")
    cache = FrameCache(spark=spark)
    try:
        in0, in1, note = cache.frames(job)
        assert len(in0) == 16 and sorted(in1["flight"]) == [11, 12, 21, 41]  # in1 through its transform
        assert note.startswith("recipients: 16 rows read with Spark") and "data (in1): 4 rows" in note
        assert cache.frame(job)[0] is in0  # kept
        previews = build_previews(job, in0, local_identity_fabric(USER), "local", USER, 2, in1)
        assert [p.recipients for p in previews] == [["9e-delays@example.com"], ["aa-delays@example.com"]]
        [(name, _, _, payload)] = previews[1].attachments
        assert name == "AA-delays-2013-07-22.csv" and list(pd.read_csv(io.BytesIO(payload))["flight"]) == [12, 11]
    finally:
        cache.close()
