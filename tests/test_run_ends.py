"""How a scheduled `mailgem run` ends (issue 21), through the command line in a subprocess as a
scheduler runs it, against real servers: stopped by SIGTERM or Ctrl-C, a connection that fails
before Spark starts, a report that cannot be written, an error nobody foresaw, an outage of the
server mid-run — each with one line of explanation and an exit code, never a trace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import LOGIN, PASSWORD, USER, parse

from fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
TRACES = ("Traceback", "at org.apache", "py4j", "Exception in thread", "ERROR Executor", "KeyboardInterrupt",
          "WARN ", "log4j")
ENV = {"PYTHONPATH": str(ROOT / "src"), "MAILGEM_SECRET_PW": PASSWORD}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailgem.runner.cli", *args]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV, **(env or {})})


def _fabric(work: Path, server: FaultServer, *others: dict[str, object], **extra: object) -> None:
    """fabric.yaml with connection team-smtp reaching ``server`` (``extra`` fields override), and ``others``."""
    fields = {"name": "team-smtp", "host": "127.0.0.1", "port": server.port, "ca_bundle": str(server.ca_pem),
              "username": LOGIN, "password": {"secret": "pw"}, "pool_size": 1, "timeout_s": 10,
              "retry_initial_s": 0.2, "retry_max_s": 1} | extra
    (work / "fabric.yaml").write_text(json.dumps({"name": "t", "teams": [{"name": "sales", "members": [USER]}],
                                                  "connections": [fields, *others]}))


def _job(work: Path, rows: int, **email: object) -> None:
    pd.DataFrame({"n": range(rows), "email": [f"user{i}@example.com" for i in range(rows)]}).to_csv(
        work / "rows.csv", index=False)
    props = {"connection": "team-smtp", "mode": "per_row", "key_columns": ["n"], "to_column": "email",
             "subject": "Message {{ row.n }}", "text_body": "Hello {{ row.n }}", "on_error": "continue"} | email
    (work / "job.yaml").write_text(json.dumps({"name": "rows", "source": {"path": "rows.csv"}, "email": props}))


def _quiet(stderr: str) -> None:
    assert not [t for t in TRACES if t in stderr], stderr[-3000:]


def _report(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


# -- 1. stopped by the scheduler --------------------------------------------------------------

def _stop_mid_run(work: Path, server: FaultServer, signum: int, *, whole_group: bool, after: int
                  ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Start `mailgem run`, send ``signum`` once ``after`` messages arrived (to the whole process
    group, as a terminal's Ctrl-C or Airflow's kill does, when ``whole_group``); its result and
    how long it took to end after the signal."""
    process = subprocess.Popen(_cmd("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--report-out",
                                    "report.csv"), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **ENV}, start_new_session=True)
    try:
        server.wait_for_messages(after, timeout_s=180)
        assert len(server.messages) >= after, "the run did not get going"
        signalled = time.monotonic()
        if whole_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        out, err = process.communicate(timeout=120)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.monotonic() - signalled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_sigterm_stops_the_spark_run_reports_the_rest_and_a_rerun_sends_only_that(tmp_path, starttls_server):
    # 200 messages from two Spark workers, one session each, each reply 100 ms late: SIGTERM
    # after 20 arrived. No new message starts (on the executors too), those being written finish,
    # the report has every row, the exit code says SIGTERM, and the re-run sends the rest, once.
    starttls_server.data_script = [0.1] * 400
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 200, ledger={"path": "ledger.sqlite", "run_key": "r1"})
    done, took = _stop_mid_run(tmp_path, starttls_server, signal.SIGTERM, whole_group=False, after=20)
    assert done.returncode == 143, done.stderr[-3000:]
    _quiet(done.stderr)
    assert "SIGTERM: starting no new message" in done.stderr
    assert took < 60
    report = _report(tmp_path / "report.csv")
    assert len(report) == 200 and set(report["status"]) == {"sent", "not_started"}, report["status"].value_counts()
    received = {m.rcpt_tos[0] for m in starttls_server.messages}
    assert set(report[report["status"] == "sent"]["recipients"]) == received and len(received) < 200
    assert set(report[report["status"] == "not_started"]["error"]) == {"not sent: stopped by SIGTERM"}
    assert f"{len(received)} message(s) went out, {200 - len(received)} not started" in done.stderr
    log_file = Path(done.stderr.split("Spark's own log: ")[1].split()[0])
    assert log_file.is_file()  # where Spark's own lines went, named and kept
    first = len(starttls_server.messages)
    starttls_server.data_script = []
    again = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--report-out", "again.csv",
                 cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = _report(tmp_path / "again.csv")
    assert (rerun["status"] == "sent").sum() == 200 - len(received)
    assert (rerun["status"] == "already_sent").sum() == len(received)
    recipients = [m.rcpt_tos[0] for m in starttls_server.wait_for_messages(200)]
    assert len(recipients) == 200 and len(set(recipients)) == 200 and first == len(received)  # no second copy


def test_ctrl_c_on_the_terminal_exits_130_quietly(tmp_path, starttls_server):
    # A terminal's Ctrl-C reaches the whole process group: only mailgem may hear it (Spark's JVM
    # and Python workers run in a session of their own), so no Java or PySpark trace appears.
    starttls_server.data_script = [0.1] * 400
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 200)
    done, _ = _stop_mid_run(tmp_path, starttls_server, signal.SIGINT, whole_group=True, after=10)
    assert done.returncode == 130, done.stderr[-3000:]
    _quiet(done.stderr)
    report = _report(tmp_path / "report.csv")
    assert len(report) == 200 and (report["status"] == "sent").sum() == len(starttls_server.messages)
    assert set(report[report["status"] == "not_started"]["error"]) == {"not sent: stopped by SIGINT"}


def test_a_second_signal_ends_at_once(tmp_path, starttls_server):
    # The server holds the first message's reply for a minute: the first SIGTERM would wait for
    # it; the second ends the process now.
    starttls_server.data_script = [("hold", 60)]
    _fabric(tmp_path, starttls_server, timeout_s=120, data_timeout_s=120)
    _job(tmp_path, 5, mode="report", to="ops@example.com", to_column=None, key_columns=[], subject="report",
         text_body="{{ row_count }} rows")
    process = subprocess.Popen(_cmd("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
                               start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)  # ends with the process
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not starttls_server.holding and time.monotonic() < deadline:  # bounded: the message is being written
            time.sleep(0.05)
        assert starttls_server.holding
        process.send_signal(signal.SIGTERM)
        # Once it said it took the signal (not after a fixed sleep), it is still there, its
        # session open: it waits for the message being written.
        deadline = time.monotonic() + 60
        while not any("SIGTERM: starting no new message" in ln for ln in list(lines)) and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded
        assert any("SIGTERM: starting no new message" in ln for ln in list(lines)), lines
        assert process.poll() is None and starttls_server.sessions_closed < starttls_server.sessions_opened
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=30)
        err = "".join(lines)
        assert time.monotonic() - signalled < 10
        assert process.returncode == -signal.SIGTERM  # ended by the signal itself: a shell shows 143
        assert "SIGTERM again: ending now" in err
        _quiet(err)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_a_signal_before_sending_ends_at_once_with_nothing_sent(tmp_path, starttls_server):
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 3)
    process = subprocess.Popen(_cmd("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--json"),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **ENV}, start_new_session=True)
    deadline = time.monotonic() + 60
    while starttls_server.sessions_closed < 1 and time.monotonic() < deadline:  # the connection's check is done
        time.sleep(0.05)
    # Spark is starting: its JVM is there (a fixed sleep could signal before it, or after it was up).
    deadline = time.monotonic() + 120
    while not _jvms_in(tmp_path) and process.poll() is None and time.monotonic() < deadline:  # bounded
        time.sleep(0.05)
    assert _jvms_in(tmp_path), "Spark's JVM never started"
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM before anything was sent; nothing was sent" in err
    _quiet(err)
    summary = json.loads(out)
    assert summary["exit_code"] == 143 and summary["stopped_by"] == "SIGTERM" and summary["messages"] == 0
    assert starttls_server.messages == []
    # Spark's JVM ends with the command (stopped while it started, it used to live on, orphaned).
    deadline = time.monotonic() + 30
    while _jvms_in(tmp_path) and time.monotonic() < deadline:  # bounded
        time.sleep(0.2)
    assert _jvms_in(tmp_path) == []


def _jvms_in(folder: Path) -> list[int]:
    """The Spark JVMs (spark-submit) whose working folder is ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(folder) and \
                    b"SparkSubmit" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# -- 3. the connection is tried before Spark starts ------------------------------------------

def _spark_started(stderr: str) -> bool:
    return "sending per_row messages" in stderr or "Spark's own log" in stderr


# A master Spark cannot use: a run that starts Spark fails with a Spark error (exit 2), so an
# exit code of 3 (or a usage error's 2 without that error) shows the run ended before Spark.
NO_SPARK = {"MAILGEM_SPARK_MASTER": "no-such-master"}


@pytest.mark.parametrize("case", ["wrong password", "closed port"])
def test_a_connection_that_cannot_work_ends_the_run_before_spark(tmp_path, starttls_server, case):
    if case == "closed port":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        _fabric(tmp_path, starttls_server, port=port)
        env = {}
    else:
        _fabric(tmp_path, starttls_server)
        env = {"MAILGEM_SECRET_PW": "wrong-password"}
    env |= NO_SPARK
    _job(tmp_path, 3)
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 3, done.stderr[-3000:]
    assert not _spark_started(done.stderr)  # 52-59 s before: Spark started first (about 1 s now)
    _quiet(done.stderr)
    assert "connection 'team-smtp' failed before the run started" in done.stderr
    assert ("535" in done.stderr and "App Password" in done.stderr) if case == "wrong password" else \
        "Connect call failed" in done.stderr or "could not connect" in done.stderr
    result = json.loads(done.stdout)
    assert result["exit_code"] == 3 and result["errors"] and PASSWORD not in done.stdout + done.stderr
    if case == "wrong password":
        assert [a.success for a in starttls_server.auth_attempts] == [False]  # one AUTH, not one per worker


def test_a_refused_sender_costs_one_session_and_one_mail_from(tmp_path):
    # Postfix's reject_sender_login_mismatch accepts the login and refuses the sender at RCPT.
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, senders={LOGIN: {LOGIN}}) as server:
        _fabric(tmp_path, server, sender_address="boss@example.com")
        _job(tmp_path, 20)
        done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, cwd=tmp_path, env=NO_SPARK)
        assert done.returncode == 3, done.stderr[-3000:]
        assert "refused the sender <boss@example.com>" in done.stderr and "sender_address" in done.stderr
        assert not _spark_started(done.stderr)
        assert server.sessions_opened == 1 and server.transactions == 1 and len(server.auth_attempts) == 1
        assert server.messages == []


def test_a_failing_primary_with_a_working_fallback_is_a_warning(tmp_path, starttls_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    backup = {"name": "backup", "host": "127.0.0.1", "port": starttls_server.port,
              "ca_bundle": str(starttls_server.ca_pem), "username": LOGIN, "password": {"secret": "pw"}}
    _fabric(tmp_path, starttls_server, backup, port=closed, fallback="backup")
    _job(tmp_path, 2)
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning: connection 'team-smtp' failed its check" in done.stderr and "fallback 'backup'" in done.stderr
    assert len(starttls_server.wait_for_messages(2)) == 2


# -- 2. no traceback reaches a user -----------------------------------------------------------

def test_a_report_path_that_cannot_be_written_is_found_before_sending(tmp_path, starttls_server):
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 2)
    (tmp_path / "f").write_text("a file, not a folder")
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--report-out", "f/report.csv",
                cwd=tmp_path, env=NO_SPARK)
    assert done.returncode == 2 and not _spark_started(done.stderr), done.stderr[-3000:]
    assert "--report-out f/report.csv: f is a file, not a folder" in done.stderr
    _quiet(done.stderr)
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0


def test_a_report_that_fails_to_be_written_after_sending_is_printed_instead(tmp_path, starttls_server):
    # A file that takes no bytes (a full disk): the check before sending passes, the write fails.
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 2)
    (tmp_path / "report.csv").symlink_to("/dev/full")
    done = _cli("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER, "--report-out", "report.csv",
                cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "could not write the delivery report to report.csv" in done.stderr and "printed on stdout" in done.stderr
    _quiet(done.stderr)
    assert "message_key,status,recipients" in done.stdout and done.stdout.count(",sent,") == 2
    assert len(starttls_server.settled()) == 2


def test_an_unforeseen_error_is_one_line_with_what_was_sent(tmp_path, starttls_server):
    # A bug stands in for anything nobody foresaw: it strikes after the messages went out.
    _fabric(tmp_path, starttls_server)
    _job(tmp_path, 3, distributed=False)
    code = ("import sys\n"
            "from mailgem.gems.email.run.progress import Progress\n"
            "def buggy(self):\n"
            "    raise TypeError(\"'int' object is not iterable\")\n"
            "Progress.close = buggy\n"
            "from mailgem.runner.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    for verbose in ([], ["-v"]):
        done = subprocess.run([sys.executable, "-c", code, *verbose, "run", "job.yaml", "--fabric", "fabric.yaml",
                               "--user", USER], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                              env={**os.environ, **ENV})
        assert done.returncode == 1, done.stderr[-3000:]
        if verbose:
            assert "Traceback" in done.stderr  # -v shows it
            continue
        _quiet(done.stderr)
        [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("mailgem: unexpected error")]
        assert "unexpected error TypeError at " in line
        assert "not iterable" not in line  # an error's text may quote a secret: -v shows it
        assert "3 message(s) had been accepted before it" in line and "-v shows the full trace" in line
    assert len(starttls_server.settled()) == 6


# -- 4. an outage of a few minutes is waited out ----------------------------------------------

def test_a_server_restart_mid_run_is_waited_out(tmp_path):
    certs = tmp_path / "certs"
    servers = [FaultServer(security="starttls", users={LOGIN: PASSWORD}, cert_dir=certs).start()]
    try:
        servers[0].data_script = [0.05] * 10 + [("hold", 60)]  # the 11th reply waits: the server stops then
        _fabric(tmp_path, servers[0], retry_outage_s=120)
        _job(tmp_path, 60)
        process = subprocess.Popen(_cmd("run", "job.yaml", "--fabric", "fabric.yaml", "--user", USER,
                                        "--report-out", "report.csv"), cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not servers[0].holding and time.monotonic() < deadline:  # bounded
                time.sleep(0.05)
            assert servers[0].holding, "the run did not get going"
            port = servers[0].port
            servers[0].stop()  # the server goes away mid-run ...
            time.sleep(5)
            servers.append(FaultServer(security="starttls", users={LOGIN: PASSWORD}, cert_dir=certs,
                                           port=port).start())  # ... and is back 5 s later
            out, err = process.communicate(timeout=180)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        assert process.returncode == 0, err[-3000:]
        _quiet(err)
        report = _report(tmp_path / "report.csv")
        assert set(report["status"]) == {"sent"} and len(report) == 60
        copies: dict[str, set[str]] = {}
        for server in servers:
            for m in server.messages:
                copies.setdefault(m.rcpt_tos[0], set()).add(parse(m.data)["Message-ID"])
        assert len(copies) == 60 and all(len(ids) == 1 for ids in copies.values())  # a resend keeps its ID
        assert servers[1].messages  # the rest went to the server that came back
    finally:
        for server in servers:
            server.stop()


# -- 6. nothing changes silently -------------------------------------------------------------

@pytest.fixture
def busy_server():
    """A server that answers every connection with 421 and closes it, as Postfix does when it is
    shutting down or limits this client's sessions (anvil); yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():  # bounded by the fixture's teardown
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with client:
                client.sendall(b"421 4.3.2 mx.example.test Service not available, closing transmission channel\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(timeout=5)
    listener.close()


def test_a_421_greeting_says_the_server_is_there_and_busy(tmp_path, starttls_server, busy_server):
    _fabric(tmp_path, starttls_server, port=busy_server)
    done = _cli("connection", "test", "team-smtp", "--fabric", "fabric.yaml", "--user", USER, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "answered the connection with 421" in done.stdout and "busy or refusing" in done.stdout
    assert "firewall" not in done.stdout  # the server answered: no firewall is in the way


def test_connection_test_with_a_wrong_password_still_shows_the_size_the_server_offers(tmp_path, starttls_server):
    _fabric(tmp_path, starttls_server)
    done = _cli("connection", "test", "team-smtp", "--fabric", "fabric.yaml", "--user", USER, cwd=tmp_path,
                env={"MAILGEM_SECRET_PW": "wrong-password"})
    assert done.returncode == 3
    assert "SIZE 33554432" in done.stdout and "size limit  33,554,432 bytes" in done.stdout, done.stdout
    assert "(none advertised)" not in done.stdout


def test_version_imports_nothing_but_the_standard_library(tmp_path):
    # `mailgem --version` took 3 s on a loaded machine: it imported the gem, pandas and pyarrow.
    code = ("import sys\n"
            "from mailgem.runner.cli import main\n"
            "try:\n"
            "    main(['--version'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'pyarrow', 'pydantic', 'aiosmtplib',\n"
            "               'jinja2', 'pyspark', 'yaml', 'email_validator', 'cryptography', 'numpy'})\n"
            "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **ENV})
    assert done.stdout.startswith("mailgem ") and done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
