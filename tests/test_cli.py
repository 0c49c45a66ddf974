"""The command line as a scheduler and a data engineer use it (issue 8): every check before Spark,
validate, preview, dry runs, exit codes, machine-readable results, and a quiet terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import LOGIN, PASSWORD, USER, parse, parse_strict

from fault_server import FaultServer
from mailgem.runner.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPARK_NOISE = ("log4j", "Setting default log level", "NativeCodeLoader", "at org.apache", "Using incubator modules",
               "WARN ", '"logger": "SQLQueryContextLogger"')


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=stdin, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


def _fabric_yaml(server: FaultServer, secret: str = "pw") -> str:
    return f"""
name: t
teams: [{{name: sales, members: [{USER}]}}]
connections:
  - {{name: team-smtp, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
      username: {LOGIN}, password: {{secret: {secret}}}, sender_name: Sales Reports, pool_size: 1, max_attempts: 1}}
"""


def _job(tmp: Path, email: str, *, source: str = "data/sales.csv", transform: str = "", name: str = "job.yaml") -> Path:
    (tmp / name).write_text(f"name: sales\nsource: {{path: {source}}}\n{transform}params: {{region: North}}\n"
                            f"email:\n{email}")
    return tmp / name


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text(
        'city,sales,email,note\nOslo,10,oslo@example.com,"two\nlines"\nBergen,5,bergen@example.com,"say ""hi"""\n'
        "Tromsø,30,tromso@example.com,\n")
    return tmp_path


PER_ROW = """  connection: team-smtp
  mode: per_row
  to_column: email
  subject: "{{ params.region }}: {{ row.city }}"
  text_body: "{{ row.city }} sold {{ row.sales }}"
  on_error: continue
"""


# -- 1. everything that can be checked is checked before Spark starts -------------------------

@pytest.mark.parametrize("case", ["template", "column", "source", "connection", "access", "secret"])
def test_mistakes_are_reported_in_seconds_before_spark(work, starttls_server, case):
    (work / "fabric.yaml").write_text(_fabric_yaml(starttls_server))
    email, source, user, expect = PER_ROW, "data/sales.csv", USER, ""
    if case == "template":
        email = PER_ROW.replace("{{ params.region }}: {{ row.city }}", "{{ shown_rows }} rows")
        expect = "email.subject: 'shown_rows' is undefined; this template sees: job, run_ts, "
    elif case == "column":
        email = PER_ROW.replace("{{ params.region }}: {{ row.city }}", "{{ row.citty }}")
        expect = "email.subject: row.citty: no column 'citty' (did you mean 'city'?); there are: city, sales, email, note"
    elif case == "source":
        source, expect = "sales.csv", f"source.path: 'sales.csv' resolves to {work / 'sales.csv'}, which does not exist"
    elif case == "connection":
        email, expect = PER_ROW.replace("team-smtp", "team-smpt"), "has no connection 'team-smpt' (it has: team-smtp)"
    elif case == "access":
        user, expect = "mallory", "access denied: user 'mallory' may not use fabric 't'"
    else:
        expect = "MAILGEM_SECRET_PW"
    job = _job(work, email, source=source)
    env = {} if case == "secret" else {"MAILGEM_SECRET_PW": PASSWORD}
    started = time.monotonic()
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", user, cwd=work, env=env)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert expect in done.stderr, done.stderr
    assert ("job.yaml" if case not in ("access", "secret") else "fabric.yaml") in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert took < 15, took  # measured about 1 s: Spark (8-70 s) never started
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0
    assert job.exists()


def test_source_paths_are_relative_to_the_job_file(work, monkeypatch):
    (work / "jobs").mkdir()
    job = _job(work / "jobs", PER_ROW.replace("team-smtp", "local"), source="data/sales.csv")
    done = _cli("validate", str(job), cwd=work)
    assert done.returncode == 2
    assert f"resolves to {work / 'jobs' / 'data' / 'sales.csv'}, which does not exist" in done.stderr
    assert "exists relative to the current directory, but a job's paths are relative to the job file" in done.stderr
    job = _job(work / "jobs", PER_ROW.replace("team-smtp", "local"), source="../data/sales.csv")
    monkeypatch.chdir("/")
    assert main(["validate", str(job)]) == 0


def test_validate_reports_every_problem_at_once(work, capsys):
    email = PER_ROW.replace("team-smtp", "local").replace("{{ row.city }} sold", "{{ row.cty }} {{ tabel }} sold") + \
        "  cc: [bad@, '{{ grop.x }}']\n"
    job = _job(work, email)
    assert main(["validate", str(job), "--json"]) == 2
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["exit_code"] == 2 and len(result["errors"]) == 3, result
    joined = "\n".join(result["errors"])
    assert "email.cc[0]: 'bad@' is not a valid email address" in joined
    assert "email.cc[1]: 'grop' is undefined (did you mean 'group'?)" not in joined  # per_row has no group
    assert "email.cc[1]: 'grop' is undefined; this template sees: job, run_ts, run_date, params, row_count, " \
           "total_row_count, part, columns, rows, aggregates, in1_row_count, row" in joined
    assert "email.text_body: 'tabel' is undefined (did you mean 'table'?)" in joined
    # Fixed, the same job validates; row.x is only checked where the columns are known.
    job = _job(work, PER_ROW.replace("team-smtp", "local"))
    assert main(["validate", str(job)]) == 0
    assert "OK, the run would start" in capsys.readouterr().out


def test_validate_needs_the_fabric_the_run_needs(work, capsys, monkeypatch):
    monkeypatch.delenv("MAILGEM_FABRIC", raising=False)
    job = _job(work, PER_ROW)
    assert main(["validate", str(job)]) == 2  # `run` would not start: no fabric for team-smtp
    assert "no fabric was given" in capsys.readouterr().err


def test_schema_from_data_checks_columns_after_a_transform(work, spark, capsys):
    email = PER_ROW.replace("team-smtp", "local").replace("{{ row.city }} sold", "{{ row.town }} sold")
    job = _job(work, email, transform="transform: SELECT city AS town, sales, email FROM source\n")
    assert main(["validate", str(job)]) == 0  # columns unknown without Spark: row.x passes
    capsys.readouterr()
    email = PER_ROW.replace("team-smtp", "local").replace("{{ row.city }} sold", "{{ row.cty }} sold")
    job = _job(work, email, transform="transform: SELECT city AS town, sales, email FROM source\n")
    assert main(["validate", str(job), "--schema-from-data"]) == 2
    err = capsys.readouterr().err
    assert "email.text_body: row.cty: no column 'cty'; there are: town, sales, email" in err


def test_template_names_in_the_readme_are_what_each_template_sees():
    from mailgem.gems.email.content.templates import BASE_NAMES, BODY_NAMES, MESSAGE_NAMES, template_names

    readme = (ROOT / "README.md").read_text()
    for label, names in (("all templates", BASE_NAMES), ("message templates", MESSAGE_NAMES[len(BASE_NAMES):]),
                         ("bodies", BODY_NAMES[len(MESSAGE_NAMES):])):
        line = next(ln for ln in readme.splitlines() if ln.startswith(f"| {label} |"))
        assert [n.strip("` ") for n in line.split("|")[2].split(",")] == list(names), line
    assert "shown_rows" not in template_names("subject", "report") and "shown_rows" in template_names("html_body", "report")
    assert template_names("ledger.run_key", "per_row") == BASE_NAMES


def test_a_template_error_is_a_configuration_error_reported_once(work):
    (work / "data" / "many.csv").write_text("n,email\n" + "".join(f"{i},u{i}@example.com\n" for i in range(40)))
    email = PER_ROW.replace("team-smtp", "local").replace("{{ row.city }} sold", "{{ row.n | nofilter }} sold")
    _job(work, email, source="data/many.csv")
    done = _cli("run", "job.yaml", "--outbox", "out", cwd=work, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("No filter named 'nofilter'") == 1, done.stderr
    assert not (work / "out").exists()


def test_a_template_error_only_the_data_reveals_on_every_row_is_exit_2_said_once(work, spark, capsys):
    (work / "data" / "many.csv").write_text("n,email\n" + "".join(f"{i},u{i}@example.com\n" for i in range(30)))
    # With made-up sample values this is only a warning; every real row then fails the same way.
    email = PER_ROW.replace("team-smtp", "local").replace("{{ row.city }} sold {{ row.sales }}", "{{ row.n // 0 }}")
    job = _job(work, email.replace("{{ row.city }}", "{{ row.n }}"), source="data/many.csv")
    assert main(["run", str(job), "--outbox", str(work / "out")]) == 2
    out = capsys.readouterr()
    assert "warning:" in out.err and "email.text_body: rendering with sample values raised" in out.err
    assert out.out.count("integer division or modulo by zero") == 1, out.out
    assert "error #1 (30 messages): text_body: ZeroDivisionError" in out.out


def test_spark_noise_stays_out_of_the_terminal_and_sql_errors_are_one_line(work):
    email = PER_ROW.replace("team-smtp", "local")
    _job(work, email, transform="transform: SELECT citty, email FROM source\n")
    done = _cli("run", "job.yaml", cwd=work)
    assert done.returncode == 2
    assert not [n for n in SPARK_NOISE if n in done.stderr + done.stdout], done.stderr
    assert "job.yaml: transform: [UNRESOLVED_COLUMN.WITH_SUGGESTION]" in done.stderr
    assert "Did you mean one of the following? [`city`" in done.stderr
    assert "SQL: SELECT citty, email FROM source" in done.stderr
    log_file = done.stderr.split("Spark's own log: ")[1].split(";")[0]
    assert "Setting default log level" in Path(log_file).read_text()  # what the terminal was spared
    verbose = _cli("-v", "run", "job.yaml", cwd=work)
    assert verbose.returncode == 2 and "org.apache.spark.sql.AnalysisException" in verbose.stderr


# -- data read as the user meant it -----------------------------------------------------------

def test_csv_quoted_newlines_and_doubled_quotes_are_read_as_written(work, spark):
    from mailgem.runner.job import load_job
    from mailgem.runner.source import read_source

    job = load_job(_job(work, PER_ROW))
    rows = {r.city: r.note for r in read_source(spark, job.source, job.inspect_source()).collect()}
    assert rows == {"Oslo": "two\nlines", "Bergen": 'say "hi"', "Tromsø": None}


def test_encoding_warning_names_the_column_and_the_option(work, spark, capsys):
    from mailgem.runner.job import load_job
    from mailgem.runner.source import read_source

    (work / "data" / "latin.csv").write_bytes("city,sales,note\nZürich,1,ok\nSão Paulo,2,fine\n".encode("cp1252"))
    job = _job(work, PER_ROW.replace("team-smtp", "local").replace("to_column: email", "to: a@example.com"),
               source="data/latin.csv")
    assert main(["validate", str(job)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert "warning:" in err and "latin.csv is not valid UTF-8 (byte 0xfc, line 2, column 'city')" in err
    assert "Set source.encoding" in err
    job.write_text(job.read_text().replace("source: {path: data/latin.csv}",
                                           "source: {path: data/latin.csv, encoding: cp1252}"))
    assert main(["validate", str(job)]) == 0 and "UTF-8" not in capsys.readouterr().err
    spec = load_job(job)
    assert sorted(r.city for r in read_source(spark, spec.source, spec.inspect_source()).collect()) == \
        ["São Paulo", "Zürich"]


def test_parquet_nanosecond_timestamps_are_read_and_wide_decimals_named(work, spark, capsys):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mailgem.runner.job import load_job
    from mailgem.runner.source import read_source

    frame = pd.DataFrame({"at": pd.to_datetime(["2024-03-01 12:00:00.123456789", "1969-12-31 23:59:59.999999999"]),
                          "email": ["a@example.com", "b@example.com"]})
    frame.to_parquet(work / "data" / "ns.parquet")  # pandas' default: TIMESTAMP(NANOS)
    assert pq.read_schema(work / "data" / "ns.parquet").field("at").type.unit == "ns"
    job = load_job(_job(work, PER_ROW.replace("team-smtp", "local"), source="data/ns.parquet"))
    got = read_source(spark, job.source, job.inspect_source()).toPandas()["at"].tolist()
    assert got == [pd.Timestamp("2024-03-01 12:00:00.123456"), pd.Timestamp("1969-12-31 23:59:59.999999")]
    pq.write_table(pa.table({"amount": pa.array([decimal.Decimal("1.5")], pa.decimal256(40, 2))}),
                   work / "data" / "wide.parquet")
    job = _job(work, PER_ROW.replace("team-smtp", "local").replace("to_column: email", "to: a@example.com"),
               source="data/wide.parquet")
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "column 'amount' of wide.parquet is decimal256(40, 2), more digits than Spark's 38" in err
    assert "decimal(38, 2), a double or a string" in err


def test_a_small_source_is_spread_over_every_executor(work, spark, starttls_server):
    from conftest import fabric_for

    from mailgem.gems.email.gem import EmailGem
    from mailgem.runner.job import load_job
    from mailgem.runner.source import read_source

    job = load_job(_job(work, PER_ROW.replace("team-smtp", "reports")))
    frame = read_source(spark, job.source, job.inspect_source())
    assert frame.rdd.getNumPartitions() == 1  # a small file is one partition
    gem = EmailGem(job.email, fabric_for(starttls_server, pool_size=1), user=USER, params=job.params)
    report = gem.apply(spark, frame).toPandas()
    assert (report["status"] == "sent").all() and len(report) == 3
    # One session for the driver's login check, then one per executor core's pool of 1 (local[2]).
    assert starttls_server.sessions_opened == 3, starttls_server.sessions_opened


# -- 2. preview without sending ---------------------------------------------------------------

def test_preview_builds_messages_as_run_would_without_sending_or_reading_secrets(work, starttls_server):
    (work / "fabric.yaml").write_text(_fabric_yaml(starttls_server, secret="never-set"))
    _job(work, PER_ROW + "  attachments: [{file_name: '{{ row.city }}.csv'}]\n")
    # --open hands the first .html to the browser; BROWSER (honoured by webbrowser) records it here.
    browser = f"{sys.executable} -c \"import sys, pathlib; pathlib.Path('opened.txt').write_text(sys.argv[1])\" %s"
    done = _cli("preview", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--limit", "2", "--out", "pv",
                "--open", cwd=work, env={"BROWSER": browser})
    assert done.returncode == 0, done.stderr
    emls = sorted((work / "pv").glob("*.eml"))
    htmls = sorted((work / "pv").glob("*.html"))
    assert len(emls) == 2 and len(htmls) == 2
    msg = parse_strict(emls[0].read_bytes())
    assert msg["From"] == f"Sales Reports <{LOGIN}>" and msg["To"] == "oslo@example.com"
    assert msg["Subject"] == "North: Oslo" and msg["Message-ID"] and msg["Date"]
    assert [a.get_filename() for a in msg.iter_attachments()] == ["Oslo.csv"]
    page = htmls[0].read_text()
    assert "North: Oslo" in page and "Oslo.csv" in page and "Oslo sold 10" in page
    assert "to oslo@example.com | 'North: Oslo' |" in done.stdout and "attachments: Oslo.csv" in done.stdout
    assert str(Path("pv") / emls[0].name) in done.stdout
    assert starttls_server.sessions_opened == 0  # nothing sent; the secret "never-set" was never read
    for _ in range(50):  # the browser command runs detached; bounded wait for it
        if (work / "opened.txt").exists():
            break
        time.sleep(0.1)
    assert (work / "opened.txt").read_text() == htmls[0].resolve().as_uri()


def test_dry_run_builds_every_message_and_reports_dry_run(work, starttls_server):
    (work / "fabric.yaml").write_text(_fabric_yaml(starttls_server, secret="never-set"))
    _job(work, PER_ROW)
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--dry-run", "--out", "dr",
                "--report-out", "report.json", "--json", cwd=work)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"dry_run": 3} and summary["dry_run"] is True
    report = pd.read_json(work / "report.json", lines=True)
    assert set(report["status"]) == {"dry_run"} and report["size_bytes"].gt(200).all()
    assert len(list((work / "dr").glob("*.eml"))) == 3 and starttls_server.sessions_opened == 0


def test_notebook_preview_api_and_apply_without_spark(starttls_server):
    from conftest import PER_ROW as ROW_PROPS
    from conftest import fabric_for

    from mailgem.gems.email.gem import EmailGem

    frame = pd.DataFrame({"n": [1, 2], "to": ["a@example.com", "bad@"]})
    gem = EmailGem(ROW_PROPS, fabric_for(starttls_server), user=USER)
    first, second = gem.preview(frame, limit=5)
    assert first.message is not None and first.recipients == ["a@example.com"] and "Message 1" in first._repr_html_()
    assert second.error is not None and "bad@" in second.summary()
    report = gem.apply(frame)  # pandas in: no SparkSession argument needed
    assert list(report["status"]) == ["sent", "failed"] and report.loc[1, "error_type"] == "RecipientError"


# -- 3. what a scheduler needs ----------------------------------------------------------------

@pytest.mark.parametrize("case,code", [("ok", 0), ("one_bad_address", 1), ("wrong_password", 3)])
def test_exit_codes_json_summary_and_report_file(work, starttls_server, case, code, capsys):
    (work / "fabric.yaml").write_text(_fabric_yaml(starttls_server))
    if case == "one_bad_address":
        (work / "data" / "sales.csv").write_text("city,sales,email\nOslo,10,oslo@example.com\nBergen,5,bergen@\n")
    env = {"MAILGEM_SECRET_PW": PASSWORD if case != "wrong_password" else "Wr0ng-Pa55w0rd-x"}
    os.environ.update(env)
    try:
        _job(work, PER_ROW)
        report_out = work / "out" / f"report-{case}.parquet"
        assert main(["run", str(work / "job.yaml"), "--fabric", str(work / "fabric.yaml"), "--user", USER,
                     "--json", "--report-out", str(report_out)]) == code
    finally:
        os.environ.pop("MAILGEM_SECRET_PW")
    out = capsys.readouterr()
    [line] = out.out.splitlines()
    summary = json.loads(line)
    assert summary["exit_code"] == code and summary["connection"] == "team-smtp" and summary["duration_s"] > 0
    if case == "wrong_password":
        # Found by the connection's check before Spark started: nothing was read, so there are
        # no messages to report, and the summary says why.
        assert summary["messages"] == 0 and summary["counts"] == {} and summary["report"] is None
        assert "authentication failed" in summary["errors"][0] and not report_out.exists()
        assert "Wr0ng-Pa55w0rd-x" not in out.err + out.out
        assert len(starttls_server.auth_attempts) == 1
        return
    assert summary["report"] == str(report_out)
    report = pd.read_parquet(report_out)
    assert summary["messages"] == len(report) and sum(summary["counts"].values()) == len(report)
    if case == "one_bad_address":
        assert summary["counts"] == {"sent": 1, "failed": 1}


def test_report_lines_print_integers_and_each_error_once(work, spark, capsys):
    rows = "".join(f"C{i},{i},\n" for i in range(5))
    (work / "data" / "sales.csv").write_text("city,sales,email\nOslo,10,oslo@example.com\n" + rows)
    job = _job(work, PER_ROW.replace("team-smtp", "local"))
    assert main(["run", str(job), "--outbox", str(work / "out"), "--report-out", str(work / "r.csv")]) == 1
    out = capsys.readouterr().out
    assert "250 2.0.0" in out and "250.0" not in out and ".0 bytes" not in out
    assert out.count("no recipients for this message") == 1, out
    assert "error #1 (5 messages): no recipients for this message" in out and out.count("error #1 (below)") == 5
    assert "5 failed" in out and pd.read_csv(work / "r.csv")["reply_code"].dropna().tolist() == [250]


def test_help_version_and_schema(tmp_path):
    done = _cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("mailgem ")
    for command in (["run"], ["validate"], ["preview"], ["connection", "test"], ["secrets", "set"],
                    ["secrets", "delete"], ["secrets", "keygen"], ["schema"]):
        text = _cli(*command, "--help", cwd=tmp_path).stdout
        assert f"example:\n  mailgem {' '.join(command)}" in text and "exit codes:" in text, command
    from mailgem.runner.cli import _parser

    def actions(parser):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from actions(sub)
            elif action.dest not in ("help", "version", "command", "action"):
                yield parser.prog, action

    missing = [(prog, a.dest) for prog, a in actions(_parser()) if not a.help]
    assert missing == []
    job_schema = json.loads(_cli("schema", cwd=tmp_path).stdout)
    assert {"source", "transform", "params", "email"} <= set(job_schema["properties"])
    fabric_schema = json.loads(_cli("schema", "fabric", cwd=tmp_path).stdout)
    assert {"teams", "secrets", "connections"} <= set(fabric_schema["properties"])
    assert "to_column" in json.loads(_cli("schema", "email", cwd=tmp_path).stdout)["properties"]


def test_piping_into_head_ends_quietly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(f"{sys.executable} -m mailgem.runner.cli schema | head -1", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout == "{\n" and done.stderr == "", done.stderr
    # A reader that leaves before anything is written (`| true`): the write fails with EPIPE.
    done = subprocess.run(f"{sys.executable} -m mailgem.runner.cli schema | true; echo ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.stderr == "" and done.stdout == "0\n", done.stderr


def test_secrets_keygen_refuses_to_overwrite_and_delete_removes(tmp_path, capsys):
    key = tmp_path / "k"
    assert main(["secrets", "keygen", "--key-file", str(key)]) == 0
    first = key.read_text()
    assert main(["secrets", "keygen", "--key-file", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err and key.read_text() == first
    assert main(["secrets", "keygen", "--key-file", str(tmp_path / "no" / "k")]) == 2
    assert f"folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    (tmp_path / "fabric.yaml").write_text(f"name: f\nteams: [{{name: t, members: [{USER}]}}]\n"
                                          "secrets: {type: encrypted_file, path: s.json, key_file: k}\n")
    fabric = str(tmp_path / "fabric.yaml")
    done = _cli("secrets", "set", "pw", "--fabric", fabric, cwd=tmp_path, stdin="hunter2\n")
    assert done.returncode == 0, done.stderr
    assert main(["secrets", "list", "--fabric", fabric]) == 0 and capsys.readouterr().out == "pw\n"
    assert main(["secrets", "delete", "pw", "--fabric", fabric]) == 0
    assert "deleted secret 'pw'" in capsys.readouterr().out
    assert main(["secrets", "list", "--fabric", fabric]) == 0 and "pw" not in capsys.readouterr().out
    assert main(["secrets", "delete", "pw", "--fabric", fabric]) == 2
    assert "secret 'pw' not found" in capsys.readouterr().err


def test_a_sent_message_from_run_is_what_preview_showed(work, starttls_server):
    (work / "fabric.yaml").write_text(_fabric_yaml(starttls_server))
    _job(work, PER_ROW)
    env = {"MAILGEM_SECRET_PW": PASSWORD}
    assert _cli("preview", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--limit", "1", cwd=work,
                env=env).returncode == 0
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    [shown] = (work / "preview").glob("*.eml")
    sent = {parse(m.data)["Subject"]: parse(m.data) for m in starttls_server.wait_for_messages(3)}
    preview = parse(shown.read_bytes())
    real = sent[preview["Subject"]]
    for header in ("From", "To", "Subject", "Content-Type"):
        assert str(preview[header]).split(";")[0] == str(real[header]).split(";")[0], header
    assert preview.get_body(("plain",)).get_content() == real.get_body(("plain",)).get_content()


def test_preview_of_per_row_reads_only_the_rows_it_shows(spark, starttls_server):
    from conftest import PER_ROW as ROW_PROPS
    from conftest import fabric_for

    from mailgem.gems.email.gem import EmailGem

    # Row 3 onward cannot even be computed: a preview of 2 messages must never get there.
    frame = spark.range(1, 1001, numPartitions=1).selectExpr(
        "id AS n", "IF(id <= 2, concat('u', id, '@example.com'), raise_error('read past the preview')) AS to")
    built = EmailGem(ROW_PROPS, fabric_for(starttls_server), user=USER).preview(frame, limit=2)
    assert [b.recipients for b in built] == [["u1@example.com"], ["u2@example.com"]]


def test_preview_of_per_group_collects_only_the_groups_it_shows(spark, starttls_server, monkeypatch):
    import pandas as pd
    from conftest import fabric_for

    from mailgem.gems.email import gem as gem_module
    from mailgem.gems.email.gem import EmailGem

    props = {"connection": "reports", "mode": "per_group", "group_by": ["team"], "to": "ops@example.com",
             "subject": "{{ group.team }}: {{ row_count }} rows", "attachments": [{"file_name": "rows.csv"}]}
    teams = [f"t{i % 40:02d}" for i in range(1000)] + [None] * 10
    pdf = pd.DataFrame({"team": teams, "n": range(len(teams))})
    collected: list[int] = []
    collect = gem_module.collect

    def counting(frame, **kwargs):  # the rows that reach the driver
        data = collect(frame, **kwargs)
        collected.append(data.table.num_rows)
        return data

    monkeypatch.setattr(gem_module, "collect", counting)
    gem = EmailGem(props, fabric_for(starttls_server), user=USER)
    built = gem.preview(spark.createDataFrame(pdf).repartition(3), limit=3)
    # The first three groups, as the pandas path takes them, built from their own rows only.
    assert [b.message["Subject"] for b in built] == ["t00: 25 rows", "t01: 25 rows", "t02: 25 rows"]
    assert [b.message["Subject"] for b in gem.preview(pdf, limit=3)] == ["t00: 25 rows", "t01: 25 rows", "t02: 25 rows"]
    assert collected[0] == 75  # not 1,010
    # A null key is a group like any other, last, as in the pandas path.
    small = pdf[pdf["team"].isin(["t00", "t01"]) | pdf["team"].isna()]
    subjects = [b.message["Subject"] for b in gem.preview(spark.createDataFrame(small), limit=3)]
    assert subjects == ["t00: 25 rows", "t01: 25 rows", "(null): 10 rows"]  # a null key is named (issue 23 §5)
    assert subjects == [b.message["Subject"] for b in gem.preview(small, limit=3)]
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0
