"""`mailgem run` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, parse

from mailgem.fabric import EncryptedFileSecretStore, generate_key
from mailgem.runner.cli import main

ROOT = Path(__file__).resolve().parents[1]

JOB = """
name: csv-report
source:
  path: {csv}
transform: SELECT city, sales, note FROM source WHERE sales > ${{MIN_SALES:-0}} ORDER BY sales DESC
params: {{region: North}}
email:
  connection: {connection}
  to: boss@example.com
  subject: "{{{{ params.region }}}}: {{{{ row_count }}}} cities"
  attachments: [{{file_name: cities.csv, compression: gzip}}]
"""


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


@pytest.fixture
def job_dir(tmp_path):
    (tmp_path / "sales.csv").write_text("city,sales,note\nOslo,10,\nBergen,5,<b>bold</b>\nTromsø,30,\nLillehammer,0,\n")
    return tmp_path


def test_run_on_the_embedded_local_fabric(job_dir):
    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="team-smtp"))
    done = _run("run", "job.yaml", "--local", "--outbox", "out", cwd=job_dir, env={"MIN_SALES": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--local: sending through the embedded local SMTP server instead of connection 'team-smtp'" in done.stderr
    assert "report: sent 250" in done.stdout
    [eml] = sorted((job_dir / "out").glob("*.eml"))
    assert str(Path("out") / eml.name) in done.stdout
    msg = parse(eml.read_bytes())
    assert msg["Subject"] == "North: 3 cities" and msg["To"] == "boss@example.com"
    assert msg["From"].addresses[0].addr_spec == "mailgem-dev@example.com"
    text = msg.get_body(("plain",)).get_content()
    assert text.index("Tromsø") < text.index("Oslo") < text.index("Bergen") and "Lillehammer" not in text
    [att] = list(msg.iter_attachments())
    rows = list(csv.reader(io.StringIO(gzip.decompress(att.get_content()).decode())))
    assert rows == [["city", "sales", "note"], ["Tromsø", "30", ""], ["Oslo", "10", ""], ["Bergen", "5", "<b>bold</b>"]]


def test_run_with_a_fabric_file_against_a_real_server(job_dir, starttls_server):
    key = job_dir / "k"
    key.write_text(generate_key())
    EncryptedFileSecretStore(job_dir / "s.json", key_file=key).set("pw", __import__("pydantic").SecretStr(PASSWORD))
    (job_dir / "fabric.yaml").write_text(f"""
name: t
teams: [{{name: sales, members: [{USER}]}}]
secrets: {{type: encrypted_file, path: s.json, key_file: k}}
connections:
  - {{name: team-smtp, host: 127.0.0.1, port: {starttls_server.port}, ca_bundle: "{starttls_server.ca_pem}",
      username: reports@example.com, password: {{secret: pw}}}}
""")
    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="team-smtp"))
    done = _run("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, cwd=job_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    [received] = starttls_server.wait_for_messages(1)
    assert received.tls and received.login == "reports@example.com"
    html = parse(received.data).get_body(("html",)).get_content()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>" not in html
    assert PASSWORD not in done.stdout + done.stderr

    denied = _run("run", "job.yaml", "--fabric", "fabric.yaml", "--user", "mallory", cwd=job_dir)
    assert denied.returncode == 2 and "access denied" in denied.stderr and "Traceback" not in denied.stderr
    assert len(starttls_server.messages) == 1


def test_bad_job_files_are_clear_errors(job_dir, capsys):
    (job_dir / "job.yaml").write_text(JOB.format(csv="nope.csv", connection="c").replace("to: boss@example.com", "to: boss@"))
    assert main(["validate", str(job_dir / "job.yaml"), "--local"]) == 2
    assert "email.to[0]: 'boss@' is not a valid email address" in capsys.readouterr().err
    (job_dir / "job.yaml").write_text("name: x\nsource: {path: a.txt}\nemail: {connection: c, subject: s, to: a@example.com}\n")
    assert main(["validate", str(job_dir / "job.yaml")]) == 2
    assert "source: cannot tell the format" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "sql"])
def test_every_source_kind_reads_the_same_rows(spark, tmp_path, fmt):
    import pandas as pd

    from mailgem.runner.job import SourceSpec, read_source

    frame = pd.DataFrame({"city": ["Oslo", "Bergen"], "sales": [10, 5]})
    path = tmp_path / f"sales.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "json":
        frame.to_json(path, orient="records", lines=True)
    if fmt == "sql":
        spark.createDataFrame(frame).createOrReplaceTempView("sales_view")
        spec = SourceSpec(sql="SELECT city, sales FROM sales_view")
    else:
        spec = SourceSpec(path=str(path))
    rows = sorted((r.city, int(r.sales)) for r in read_source(spark, spec).collect())
    assert rows == [("Bergen", 5), ("Oslo", 10)]


@pytest.mark.parametrize("job", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_are_valid(job, tmp_path, capsys):
    if job.name == "fabric.yaml":
        from mailgem.fabric import load_fabric

        assert load_fabric(job).connections
        return
    # The examples read ../data/flights.parquet (made by `make demo`): a two-row file with its
    # schema stands in, so validate checks every template against the real columns.
    import pandas as pd

    (tmp_path / "examples").mkdir()
    (tmp_path / "data").mkdir()
    flights = pd.DataFrame({c: [2013, 2013] for c in ("year", "month", "day", "sched_dep_time", "sched_arr_time",
                                                      "flight", "distance", "hour", "minute")})
    for c in ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"):
        flights[c] = [1.5, 20.0]
    for c in ("carrier", "tailnum", "origin", "dest"):
        flights[c] = ["UA", "B6"]
    flights["time_hour"] = pd.to_datetime(["2013-07-22 05:00", "2013-07-22 06:00"]).astype("datetime64[us]")
    flights.to_parquet(tmp_path / "data" / "flights.parquet", index=False)
    copy = tmp_path / "examples" / job.name
    copy.write_text(job.read_text())
    for data in (ROOT / "examples").glob("*.csv"):  # what the examples read beside them (carrier contacts)
        (tmp_path / "examples" / data.name).write_bytes(data.read_bytes())
    assert main(["validate", str(copy), "--local"]) == 0, capsys.readouterr()


def test_a_job_whose_connection_is_in_a_fabric_needs_one(job_dir, monkeypatch, capsys):
    # A cron line missing --fabric must not send to the embedded server and exit 0: it is an
    # error, found before Spark starts.
    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="team-smtp"))
    monkeypatch.delenv("MAILGEM_FABRIC", raising=False)

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr("mailgem.runner.spark.local_spark", no_spark)
    monkeypatch.chdir(job_dir)
    assert main(["run", "job.yaml"]) == 2
    err = capsys.readouterr().err
    assert "email.connection is 'team-smtp'" in err
    assert "--fabric" in err and "MAILGEM_FABRIC" in err and "--local" in err
    assert not (job_dir / "outbox").exists()


def test_mailgem_fabric_names_the_fabric_and_local_jobs_need_no_flag(job_dir, starttls_server):
    (job_dir / "fabric.yaml").write_text(f"""
name: t
teams: [{{name: sales, members: [{USER}]}}]
connections:
  - {{name: team-smtp, host: 127.0.0.1, port: {starttls_server.port}, ca_bundle: "{starttls_server.ca_pem}",
      username: reports@example.com, password: {{secret: pw}}}}
""")
    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="team-smtp"))
    done = _run("run", "job.yaml", "--user", USER, cwd=job_dir,
                env={"MAILGEM_FABRIC": "fabric.yaml", "MAILGEM_SECRET_PW": PASSWORD})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(starttls_server.wait_for_messages(1)) == 1 and not (job_dir / "outbox").exists()
    # A job that names the `local` connection runs on the embedded server, MAILGEM_FABRIC or not.
    (job_dir / "local.yaml").write_text(JOB.format(csv="sales.csv", connection="local"))
    done = _run("run", "local.yaml", "--outbox", "out", cwd=job_dir, env={"MAILGEM_FABRIC": "fabric.yaml"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((job_dir / "out").glob("*.eml"))) == 1 and len(starttls_server.messages) == 1


def test_a_json_sources_columns_are_checked_before_spark(tmp_path, monkeypatch, capsys):
    # A JSON source's columns are every record's keys (a writer leaves out null fields): read
    # whole before Spark starts when small, so a misspelt column is reported at once, and a
    # column only later records have is not.
    from mailgem.runner import source

    records = [{"city": "Oslo", "sales": 10}, {"city": "Bergen", "sales": 5, "manager": "ana@example.com"}]
    (tmp_path / "sales.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    job = textwrap.dedent("""
        name: json-report
        source: {{path: sales.json}}
        email:
          connection: local
          mode: per_row
          to_column: {column}
          subject: "{{{{ row.city }}}}: {{{{ row.sales }}}}"
    """)

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr("mailgem.runner.spark.local_spark", no_spark)
    (tmp_path / "job.yaml").write_text(job.format(column="manger"))
    assert main(["validate", str(tmp_path / "job.yaml"), "--local"]) == 2
    err = capsys.readouterr().err
    assert "to_column" in err and "unknown column 'manger'; the frame has: city, manager, sales" in err
    (tmp_path / "job.yaml").write_text(job.format(column="manager"))
    assert main(["validate", str(tmp_path / "job.yaml"), "--local"]) == 0, capsys.readouterr()
    # Too big to read whole: the columns are left to Spark (no check, no false error).
    monkeypatch.setattr(source, "JSON_SCAN_LIMIT_BYTES", 10)
    (tmp_path / "job.yaml").write_text(job.format(column="manger"))
    assert main(["validate", str(tmp_path / "job.yaml"), "--local"]) == 0, capsys.readouterr()


def test_param_sets_the_jobs_params_as_yaml_scalars(job_dir, spark, capsys):
    """``--param KEY=VALUE`` replaces one of the job's params for this run (a scheduler's date);
    the value is read as YAML, as the job file's own: a date, a number, text."""
    from mailgem.runner.cli.call import run_job_file

    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="local").replace(
        '"{{ params.region }}', '"{{ params.region }} {{ params.day.isoformat() }} {{ params.n + 1 }}'))
    args = ["run", str(job_dir / "job.yaml"), "--outbox", str(job_dir / "out"), "--param", "region=South",
            "--param", "day=2024-01-31", "--param", "n=41"]
    assert main(args) == 0, capsys.readouterr().err
    [eml] = sorted((job_dir / "out").glob("*.eml"))
    assert parse(eml.read_bytes())["Subject"] == "South 2024-01-31 42: 3 cities"
    with pytest.raises(SystemExit) as usage:
        main(["run", str(job_dir / "job.yaml"), "--param", "region"])
    assert usage.value.code == 2
    assert "'region': write KEY=VALUE, e.g. --param report_date=2024-01-31" in capsys.readouterr().err
    assert main(["run", str(job_dir / "job.yaml"), "--param", "region=[a, b]", "--param", "day=x", "--param", "n=1"]) == 2
    assert "--param region=...: the value must be one scalar" in capsys.readouterr().err
    # Bytes of another encoding on the command line reach Python as lone surrogates: no message
    # can carry them, said before Spark, naming the param (and in the job file's params too).
    assert main(["validate", str(job_dir / "job.yaml"), "--local", "--param", "region=S\udcfcd"]) == 2
    err = capsys.readouterr().err
    assert "--param region=...: the value is not valid UTF-8 text" in err and "Traceback" not in err
    outcome = run_job_file(job_dir / "job.yaml", outbox=job_dir / "out0", params={"region": "S\udcfcd", "day": datetime.date(2024, 2, 1), "n": 0})
    assert outcome.exit_code == 2 and len(outcome.errors) == 1
    assert "params.region: 'S\\udcfcd' is not valid Unicode text" in outcome.errors[0]
    # In Python (a scheduler's task): the same run, params kept as given, the outcome as data.
    outcome = run_job_file(job_dir / "job.yaml", outbox=job_dir / "out2", report_out=job_dir / "report.csv",
                           params={"region": "West", "day": datetime.date(2024, 2, 1), "n": 0})
    assert outcome.exit_code == 0 and not outcome.skipped and outcome.errors == []
    assert outcome.summary["counts"] == {"sent": 1} and outcome.summary["messages"] == 1
    assert outcome.summary["report"] == str(job_dir / "report.csv") and (job_dir / "report.csv").exists()
    json.dumps(outcome.summary)  # an XCom
    [eml] = sorted((job_dir / "out2").glob("*.eml"))
    assert parse(eml.read_bytes())["Subject"] == "West 2024-02-01 1: 3 cities"


def test_run_job_file_reports_a_configuration_error_and_an_empty_frame(job_dir, spark, capsys):
    from mailgem.runner.cli.call import run_job_file

    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="local").replace(
        "{{ row_count }}", "{{ row_cont }}"))
    outcome = run_job_file(job_dir / "job.yaml")
    assert outcome.exit_code == 2 and not outcome.skipped
    assert any("email.subject: 'row_cont' is undefined" in e for e in outcome.errors), outcome.errors
    (job_dir / "job.yaml").write_text(JOB.format(csv="sales.csv", connection="local"))
    empty = JOB.format(csv="sales.csv", connection="local").replace("sales > ${MIN_SALES:-0}", "sales > 1000")
    (job_dir / "job.yaml").write_text(empty)
    outcome = run_job_file(job_dir / "job.yaml", outbox=job_dir / "out")
    assert outcome.exit_code == 0 and outcome.skipped and outcome.summary["counts"] == {"skipped": 1}


def test_conf_reaches_the_spark_session_and_v_works_after_the_command(job_dir):
    # The session zone is forced to UTC unless a --conf says otherwise: the transform reads it back.
    (job_dir / "job.yaml").write_text(
        "name: zone\nsource: {path: sales.csv}\n"
        "transform: SELECT current_timezone() AS tz, 'boss@example.com' AS email FROM source LIMIT 1\n"
        "email: {connection: local, mode: per_row, to_column: email, subject: 'zone {{ row.tz }}'}\n")
    done = _run("run", "job.yaml", "--local", "--outbox", "out", "--conf", "spark.sql.session.timeZone=America/New_York",
                "-v", cwd=job_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    [eml] = (job_dir / "out").glob("*.eml")
    assert parse(eml.read_bytes())["Subject"] == "zone America/New_York"
    assert " DEBUG " in done.stderr  # -v after the command: logging at DEBUG


def test_a_jvm_mailgem_starts_gets_a_quarter_of_the_memory_not_pysparks_1_gb(spark):
    from mailgem.runner.spark import driver_memory

    # The suite's session was started by local_spark like every command's: its heap is driver_memory().
    heap_gb = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 1024**3
    assert driver_memory() != "1g" or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") < 8 * 1024**3
    assert abs(heap_gb - int(driver_memory().removesuffix("g"))) < 0.5, heap_gb
