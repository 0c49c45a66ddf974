"""The README's Dagster definitions file (examples/dagster/definitions.py), run as written with
``dagster.materialize()``: through the embedded local server (its development deployment) and
through a fabric's connection to the tests' SMTP server (production), where a refused recipient
fails the run. What the servers received is parsed, not assumed.

Run by ``make test-dagster`` in .venv-dagster; without Dagster (``make test``) it is skipped."""

from __future__ import annotations

import email
import email.policy
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

dagster = pytest.importorskip("dagster", reason="Dagster is not installed: `make test-dagster` runs these tests "
                                                "in .venv-dagster")

from conftest import LOGIN, PASSWORD  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dagster" / "definitions.py"
README = ROOT / "README.md"


def fabric_file(folder: Path, server: Any, connection: str = "reports-smtp") -> Path:
    """A fabric YAML reaching ``server`` as ``connection``, its password in the environment."""
    path = folder / "fabric.yaml"
    path.write_text(f"""
name: t
teams: [{{name: data-eng, members: [alice]}}]
secrets: {{type: env}}
connections:
  - {{name: {connection}, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
      username: {LOGIN}, password: {{secret: smtp-password}}, sender_name: Reports, timeout_s: 10}}
""")
    return path


@pytest.fixture
def prod(tmp_path, monkeypatch, starttls_server):
    """The example's production deployment: $MAILGEM_FABRIC names a fabric reaching the test
    server, the password in $MAILGEM_SECRET_SMTP_PASSWORD, Dagster running as alice."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "prod")
    monkeypatch.setenv("MAILGEM_FABRIC", str(fabric_file(tmp_path, starttls_server)))
    monkeypatch.setenv("MAILGEM_SECRET_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILGEM_USER", "alice")
    return starttls_server


def run_example(**kwargs: Any) -> Any:
    """Load the definitions file as `dagster dev -f` would, then materialize its assets with its
    resources."""
    defs = runpy.run_path(str(EXAMPLE))["defs"]
    return dagster.materialize(list(defs.assets), resources=defs.resources, **kwargs)


def metadata(result: Any) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node("late_flights_email")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_the_readme_shows_the_definitions_file_as_written():
    text = EXAMPLE.read_text()
    body = text.split('"""', 2)[2].lstrip("\n")  # the file less its docstring
    assert f"```python\n{body}```" in README.read_text(), "README's Dagster section differs from " + str(EXAMPLE)


def test_the_example_sends_through_the_embedded_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_DEPLOYMENT", raising=False)
    result = run_example()
    assert result.success
    [eml] = (tmp_path / "outbox").glob("*.eml")  # the embedded server's outbox
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ops@example.com" and message["Subject"] == "3 carriers with late flights"
    assert message["From"].addresses[0].addr_spec == "mailgem-dev@example.com"
    html = message.get_body(("html",)).get_content()
    assert "Late flights by carrier" in html and "UA" in html and "41.5" in html
    meta = metadata(result)
    assert meta["messages"] == 1 and meta["sent"] == 1 and meta["failed"] == 0 and meta["connection"] == "local"
    assert 0 < meta["duration_s"] < 30


def test_the_example_sends_through_the_fabric_in_production(prod, tmp_path):
    result = run_example()
    assert result.success
    [received] = prod.wait_for_messages(1)
    assert received.rcpt_tos == ("ops@example.com",) and received.mail_from == LOGIN
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "3 carriers with late flights" and message["Auto-Submitted"] == "auto-generated"
    assert "DL" in message.get_body(("plain",)).get_content()
    meta = metadata(result)
    assert (meta["messages"], meta["sent"], meta["failed"], meta["connection"]) == (1, 1, 0, "reports-smtp")
    assert not (tmp_path / "outbox").exists()  # production never lands in the development outbox


def test_a_refused_recipient_fails_the_run(prod, capsys):
    prod.rcpt_refusals["ops@example.com"] = "550 5.1.1 <ops@example.com>: Recipient address rejected"
    result = run_example(raise_on_error=False)
    assert not result.success and not prod.messages
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.user_failure_data
    assert error.description.startswith("1 of 1 message(s) not delivered (1 failed):")
    assert "report: failed 550 5.1.1 to ops@example.com" in error.description
    assert {k: v.value for k, v in error.metadata.items() if k in ("messages", "sent", "failed")} == \
        {"messages": 1, "sent": 0, "failed": 1}
    assert PASSWORD not in str(result.all_events) + str(capsys.readouterr())


def test_the_dagster_command_materializes_the_asset_in_its_own_processes(tmp_path, monkeypatch):
    # As a user runs it: Dagster's own loader reads the file, and the default multiprocess
    # executor runs the step (and so the resource and the embedded server) in a child process.
    monkeypatch.delenv("DAGSTER_DEPLOYMENT", raising=False)
    dagster_cli = Path(sys.executable).parent / "dagster"
    done = subprocess.run([str(dagster_cli), "asset", "materialize", "--select", "late_flights_email",
                           "-f", str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Multiprocess executor" in done.stderr and "RUN_SUCCESS" in done.stderr
    [eml] = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "3 carriers with late flights"
