"""mailgem in a real Apache Airflow (``make test-airflow``: Airflow pins its own dependencies, so
these tests run in an environment of their own, ``.venv-airflow``, Airflow 3; ``make test-airflow2``
runs them on Airflow 2.10, the oldest supported; elsewhere they are skipped and say so). The README's example DAG, examples/airflow/daily_sales_dag.py, runs as written with
``dag.test()`` against a real SMTP server on loopback: what the server received is parsed and
checked, and each way a run ends becomes the task state the operator's docstring promises."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

if importlib.util.find_spec("airflow") is None:
    pytest.skip("Apache Airflow is not installed here: its tests run in their own environment, `make test-airflow`",
                allow_module_level=True)

from conftest import LOGIN, PASSWORD, USER, parse

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "airflow"
# Airflow reads its configuration when first imported: a home of its own, a SQLite metadata
# database there, and the DAG folder the example is copied into.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mailgem-airflow-"))
DAGS = AIRFLOW_HOME / "dags"
os.environ.update({"AIRFLOW_HOME": str(AIRFLOW_HOME), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                   "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})

from airflow import __version__ as AIRFLOW_VERSION  # noqa: E402
from airflow.utils.state import TaskInstanceState  # noqa: E402

AIRFLOW_2 = AIRFLOW_VERSION.startswith("2.")

LOGICAL = datetime(2026, 12, 3, tzinfo=timezone.utc)  # not the job file's own report_date
TASK = "email_sales"
REGIONS = {"North": "north@example.com", "South": "south@example.com", "West": "west@example.com"}


@pytest.fixture(scope="module", autouse=True)
def metadata_db():
    from airflow.utils import db

    DAGS.mkdir(parents=True, exist_ok=True)
    db.initdb()  # about 16 s on SQLite, once
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def _fabric(server, port: int | None = None, store: str = "{type: airflow, source: connection}",
            secret: str = "smtp_reports") -> str:
    return f"""
name: sales-fabric
teams: [{{name: sales, members: [{USER}]}}]
secrets: {store}
connections:
  - {{name: reports, host: 127.0.0.1, port: {port or server.port}, ca_bundle: "{server.ca_pem}",
      username: {LOGIN}, password: {{secret: {secret}}}, sender_name: Sales, pool_size: 1, max_attempts: 1}}
"""


@pytest.fixture
def dag_files(starttls_server, tmp_path, monkeypatch):
    """The example folder as written, as Airflow's DAG folder; its fabric file (the Variable
    ``mailgem_fabric`` names it) reaches the test server, the password in an Airflow Connection."""
    shutil.rmtree(DAGS)
    shutil.copytree(EXAMPLE, DAGS, ignore=shutil.ignore_patterns("reports", "ledger.sqlite", "__pycache__"))
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(_fabric(starttls_server))
    monkeypatch.setenv("AIRFLOW_VAR_MAILGEM_FABRIC", str(fabric))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_REPORTS", json.dumps({"conn_type": "smtp", "login": LOGIN,
                                                                "password": PASSWORD}))
    return fabric


def _dag():
    """The example DAG, imported from its file (a fresh module each time)."""
    spec = importlib.util.spec_from_file_location(f"daily_sales_dag_{id(object())}", DAGS / "daily_sales_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    dag.get_task(TASK).retry_delay = timedelta(0)  # the example waits 5 minutes between tries
    return dag


def _run(dag):
    if AIRFLOW_2:
        # Airflow 2.10's dag.test() shows the task's log on the sys.stdout of its first call only
        # (one handler, added once per process): under pytest, a stream closed since. Without it,
        # this call adds one on this test's stdout, which capfd reads.
        task_log = logging.getLogger("airflow.task")
        for handler in [h for h in task_log.handlers if type(h) is logging.StreamHandler]:
            task_log.removeHandler(handler)
    # Airflow 3 renamed dag.test()'s execution_date (Airflow 2.10) to logical_date.
    run = dag.test(**{"execution_date" if AIRFLOW_2 else "logical_date": LOGICAL})
    ti = run.get_task_instance(TASK)
    return run, ti


def _xcom(ti):
    return ti.xcom_pull(task_ids=TASK, key="return_value")


def _redact(text: str) -> object:
    """``text`` as Airflow's secrets masker lets it into a task's log."""
    try:  # Airflow 3
        from airflow.sdk.log import redact
    except ImportError:  # Airflow 2.10
        from airflow.utils.log.secrets_masker import redact
    return redact(text)


def _received(server) -> dict[str, str]:
    """Each message the server received: its recipient and subject (parsed as an email)."""
    out = {}
    for m in server.messages:
        msg = parse(m.data)
        out[str(msg["To"])] = str(msg["Subject"])
    return out


def _ledger_run_keys() -> set[str]:
    with sqlite3.connect(DAGS / "ledger.sqlite") as db:
        return {row[0] for row in db.execute("SELECT DISTINCT run_key FROM sends")}


def test_the_readme_shows_the_example_dag_as_it_is():
    readme = (ROOT / "README.md").read_text()
    code = (EXAMPLE / "daily_sales_dag.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert code in blocks, "README.md's Airflow section must show examples/airflow/daily_sales_dag.py as it is"


def test_a_daily_run_sends_each_region_once_and_returns_the_summary(dag_files, starttls_server, capfd):
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SUCCESS
    assert _received(starttls_server) == {a: f"Sales 2026-12-03: {r}" for r, a in REGIONS.items()}
    summary = _xcom(ti)
    assert summary["exit_code"] == 0 and summary["counts"] == {"sent": 3} and summary["messages"] == 3
    assert summary["job"] == "daily-sales" and summary["connection"] == "reports" and summary["duration_s"] > 0
    assert summary["report"] == str(DAGS / "reports" / "sales-2026-12-03.csv")  # {{ ds }} rendered
    assert Path(summary["report"]).exists()
    assert _ledger_run_keys() == {"2026-12-03"}  # {{ ds }} → params.report_date → run_key
    text = capfd.readouterr()
    assert PASSWORD not in text.out + text.err and PASSWORD not in json.dumps(summary)
    # The same logical date again: the ledger has every message; nothing is sent twice.
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SUCCESS
    assert len(starttls_server.messages) == 3
    assert _xcom(ti)["counts"] == {"already_sent": 3}


def test_an_empty_frame_skips_the_task(dag_files, starttls_server):
    (DAGS / "sales.csv").write_text("region,manager,sales\n")
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SKIPPED
    assert starttls_server.messages == []


def test_a_job_whose_skip_if_holds_skips_the_task(dag_files, starttls_server):
    job = DAGS / "daily_sales.yaml"
    job.write_text(job.read_text().replace("  mode: per_row\n", "  mode: per_row\n  skip_if: \"{{ row_count < 100 }}\"\n"))
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SKIPPED
    assert starttls_server.messages == []
    job.write_text(job.read_text().replace("row_count < 100", "row_count > 100"))
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SUCCESS and len(starttls_server.messages) == 3


def test_a_refused_recipient_fails_the_task_with_the_error_in_its_log(dag_files, starttls_server, capfd):
    starttls_server.rcpt_refusals = {"west@example.com": "550 5.1.1 <west@example.com>: no such user"}
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.FAILED
    assert set(_received(starttls_server)) == {"north@example.com", "south@example.com"}
    log = capfd.readouterr()
    text = log.out + log.err
    assert re.search(r"mailgem: .*: failed: .*550.*no such user", text), text[-3000:]
    assert PASSWORD not in text


def test_a_configuration_error_fails_at_once_without_retry(dag_files, starttls_server, monkeypatch, capfd):
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_REPORTS")  # the password's Connection is missing
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.FAILED and ti.try_number == 1  # AirflowFailException: no retry
    text = "".join(capfd.readouterr())
    assert "airflow secret store: secret 'smtp_reports': Airflow has no Connection 'smtp_reports'" in text
    assert starttls_server.sessions_opened == 0


def test_a_connection_failure_is_retried(dag_files, starttls_server, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dag_files.write_text(_fabric(starttls_server, port=closed))
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.FAILED
    assert ti.try_number == 3  # retries=2: Airflow tried it three times
    assert starttls_server.messages == []


def test_the_airflow_store_reads_a_variable(dag_files, starttls_server, monkeypatch, capfd):
    dag_files.write_text(_fabric(starttls_server, store="{type: airflow}", secret="smtp_password"))
    monkeypatch.setenv("AIRFLOW_VAR_SMTP_PASSWORD", PASSWORD)
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_REPORTS")
    run, ti = _run(_dag())
    assert ti.state == TaskInstanceState.SUCCESS and len(starttls_server.messages) == 3
    # The password from the Variable logged in: every AUTH succeeded (the check before Spark, the sends).
    assert starttls_server.auth_attempts and all(a.success and a.login == LOGIN for a in starttls_server.auth_attempts)
    text = "".join(capfd.readouterr())
    assert PASSWORD not in text


def test_the_airflow_store_outside_a_task(monkeypatch):
    """The store's own answers: a connection's other fields, a JSON variable's key, the errors."""
    from mailgem.fabric.errors import SecretNotFoundError, SecretStoreError
    from mailgem.fabric.secrets.airflow import AirflowSecretStore

    monkeypatch.setenv("AIRFLOW_CONN_RELAY", json.dumps({"conn_type": "smtp", "login": "u", "password": "p-1234",
                                                         "host": "relay", "extra": {"token": "t-5678"}}))
    monkeypatch.setenv("AIRFLOW_VAR_MAILGEM_JSON", json.dumps({"pw": "v-9012"}))
    conns = AirflowSecretStore("connection")
    assert conns.get("relay").get_secret_value() == "p-1234"
    assert conns.get("relay#login").get_secret_value() == "u"
    assert conns.get("relay#token").get_secret_value() == "t-5678"
    with pytest.raises(SecretNotFoundError, match="has no field 'nope'"):
        conns.get("relay#nope")
    variables = AirflowSecretStore("variable", prefix="mailgem_")
    assert variables.get("json#pw").get_secret_value() == "v-9012"
    # Masked in Airflow's task log, though Airflow masks only Variables named like a secret.
    assert "v-9012" not in str(_redact("login with v-9012"))
    with pytest.raises(SecretNotFoundError, match=r"Airflow has no Variable 'mailgem_missing': add it"):
        variables.get("missing")
    with pytest.raises(SecretStoreError, match="cannot list"):
        variables.names()
    assert "9012" not in repr(variables)


def test_the_user_is_the_operators_else_the_tasks_owner():
    from mailgem.airflow import MailgemOperator

    assert MailgemOperator(task_id="a", job="j.yaml").mailgem_user() is None  # Airflow's default owner: nobody
    assert MailgemOperator(task_id="b", job="j.yaml", owner="bob").mailgem_user() == "bob"
    assert MailgemOperator(task_id="c", job="j.yaml", owner="bob", user="carol").mailgem_user() == "carol"
    with pytest.raises(ValueError, match="master .* or remote"):
        MailgemOperator(task_id="d", job="j.yaml", master="local[1]", remote="sc://h:15002")
