"""`mailgem ui` in a real browser (issue 24 §4): headless Chromium (Playwright, Debian's binary)
drives the real command, served by uvicorn in its own process, against a real SMTP server
(aiosmtpd with STARTTLS and AUTH) and the demo job on the NYC flights data (Spark kept warm).

The flow: open the fabric page with the token → add a connection to the server, its password set
write-only → Test connection shows "sender accepted" → save → the YAML on disk has the connection
and its comments (and Test connection from the fabric page, with the stored password) → open the demo job → change the subject → the preview shows it → Send test →
the server got one message, to the user only. Without the token: 403. The password never appears
in a response body, the command's output or any file (the store holds it encrypted).

How long the preview took to show the new subject is written to test-artifacts/ui/timings.json
(a measurement, not an assertion: speed targets live in benchmarks/ui_preview.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import LOGIN, PASSWORD
from fault_server import FaultServer

pytest.importorskip("starlette", reason="the ui extra is not installed here")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
TOKEN = "browser-test-token-0123456789"
USER = "ann@example.com"
FLIGHTS = ROOT / "data" / "flights.parquet"

FABRIC = """\
# The team's fabric (a comment the UI must keep).
name: analytics-test
teams:
  - name: data-eng      # who may use it
    members: [bob, "{user}"]
secrets:
  type: encrypted_file  # AES-256-GCM
  path: secrets.enc
  key_file: secrets.key
connections: []
"""


@pytest.fixture
def server() -> Iterator[FaultServer]:
    smtp = FaultServer(security="starttls", users={LOGIN: PASSWORD})
    with smtp:
        yield smtp


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    if not FLIGHTS.is_file():
        pytest.skip(f"{FLIGHTS} is missing: `make demo` (or examples/prepare_flights.py) makes it")
    from mailgem.fabric.secrets import generate_key

    (tmp_path / "secrets.key").write_text(generate_key() + "\n")
    (tmp_path / "fabric.yaml").write_text(FABRIC.format(user=USER))
    job = (ROOT / "examples" / "flights_delay_report.yaml").read_text()
    job = job.replace("path: ../data/flights.parquet", f"path: {FLIGHTS}")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "daily.yaml").write_text(job)
    return tmp_path


@pytest.fixture
def ui(workspace: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "MAILGEM_USER": USER, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgem", "ui", "--fabric", "fabric.yaml", "--job", "jobs/daily.yaml",
         "--port", "0", "--token", TOKEN, "--no-browser"],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the URL, printed once the socket listens
    match = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=", line)
    if match is None:
        proc.kill()
        pytest.fail(f"mailgem ui did not print its URL: {line!r} {proc.communicate(timeout=30)}")
    try:
        yield match.group(1), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_fabric_and_job_pages_end_to_end(chromium, server: FaultServer, workspace: Path, ui) -> None:
    base, proc = ui
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    bodies: list[str] = []

    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)

    def keep(response) -> None:
        try:
            bodies.append(response.text())
        except Exception:  # noqa: BLE001 - a body that cannot be read (event stream, redirect)
            pass

    page.on("response", keep)

    # Without the token: 403, on every page.
    anonymous = chromium.new_context().new_page()
    for path in ("/fabric", "/job", "/static/ui.js"):
        assert anonymous.goto(base + path).status == 403
    anonymous.context.close()

    # The fabric page, then Add connection: the form generated from the connection's schema.
    page.goto(f"{base}/fabric?token={TOKEN}")
    assert page.url == f"{base}/fabric"  # the token traded for the cookie, gone from the address
    page.get_by_role("link", name="Add connection").click()
    page.wait_for_url(re.compile(r"/fabric/connections/new$"))
    fields = {"name": "test-smtp", "host": server.host, "port": str(server.port), "ca_bundle": str(server.ca_pem),
              "username": LOGIN, "password.secret": "test-smtp-password", "sender_name": "Reports"}
    for key, value in fields.items():
        page.locator(f'[name="connections[0].{key}"]').fill(value)
    page.locator('select[name="connections[0].security"]').select_option("starttls")
    page.locator('input[type="password"]').fill(PASSWORD)
    # Test connection on the form, before saving: the steps as they happen, the sender accepted.
    page.get_by_role("button", name="Test connection").click()
    steps = page.locator("pre[data-steps-form]")
    steps.filter(has_text="sender accepted").wait_for()
    assert "TLSv1." in steps.inner_text() and "authenticated as" in steps.inner_text()
    page.screenshot(path=str(ARTIFACTS / "connection-form.png"), full_page=True)
    assert server.messages == []  # the test sends nothing
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/fabric\?saved="))

    saved = (workspace / "fabric.yaml").read_text()
    assert "# The team's fabric (a comment the UI must keep)." in saved and "# who may use it" in saved
    assert "name: test-smtp" in saved and "secret: test-smtp-password" in saved and PASSWORD not in saved
    from mailgem.fabric.loader import load_fabric

    store = load_fabric(workspace / "fabric.yaml").store()
    assert store.get("test-smtp-password").get_secret_value() == PASSWORD

    # Test connection on the fabric page, for the saved connection (its password from the store).
    page.get_by_role("button", name="Test connection").click()
    steps = page.locator('pre[data-steps="test-smtp"]')
    steps.filter(has_text="sender accepted").wait_for()
    page.screenshot(path=str(ARTIFACTS / "fabric.png"), full_page=True)
    assert server.messages == []

    # The job page: point the demo job at the new connection, then the live preview.
    job_file = workspace / "jobs" / "daily.yaml"
    job_file.write_text(job_file.read_text().replace("connection: reports-smtp", "connection: test-smtp"))
    page.goto(f"{base}/job")
    subject = page.locator("#preview-headers [data-header=Subject]")
    subject.wait_for(timeout=180_000)  # the first load starts Spark and reads the source
    assert "Delays 2013-07-22" in subject.inner_text()
    assert page.frame_locator("#preview").locator("table").first.is_visible()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "job.png"))

    # Five edits of the subject, each timed from the keystroke to the new subject on screen.
    shown_after_s = []
    shown = "s => document.querySelector('#preview-headers [data-header=Subject]')?.textContent.startsWith(s)"
    for n in range(1, 6):
        started = time.monotonic()
        page.locator('[name="email.subject"]').fill(f"Edit {n}: {{{{ params.report_date }}}}")
        # Checked at every frame (a locator's wait polls ever more slowly, up to 500 ms apart).
        page.wait_for_function(shown, arg=f"Edit {n}: 2013-07-22", polling="raf", timeout=30_000)
        shown_after_s.append(round(time.monotonic() - started, 3))
    new_subject = "Late departures on {{ params.report_date }}"
    page.locator('[name="email.subject"]').fill(new_subject)
    subject.filter(has_text="Late departures on 2013-07-22").wait_for(timeout=30_000)
    (ARTIFACTS / "timings.json").write_text(json.dumps({"subject_change_to_preview_s": shown_after_s}))
    page.locator("#phone").check()
    page.locator("#dark").check()
    body = page.frame_locator("#preview").locator("body")
    page.wait_for_function("() => document.getElementById('preview-status').textContent.startsWith('Updated')")
    assert body.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(18, 18, 18)"
    assert page.locator("#preview").bounding_box()["width"] <= 392  # the phone's 390 px (and a border)
    page.locator(".viewer").screenshot(path=str(ARTIFACTS / "job-phone-dark.png"))
    page.locator("#phone").uncheck()
    page.locator("#dark").uncheck()

    # Send test: one message, to the user only, marked as a test.
    page.locator("#address").fill(USER)
    page.get_by_role("button", name="Send test").click()
    page.locator(".send-result.ok").wait_for(timeout=60_000)
    received = server.wait_for_messages(1)
    assert len(received) == 1
    assert list(received[0].rcpt_tos) == [USER]
    message = message_from_bytes(received[0].data, policy=policy.default)
    assert message["To"] == USER and message["Cc"] is None
    assert str(message["Subject"]).startswith("[test] Late departures on 2013-07-22")

    # Save the job: the subject changes on disk, the comments stay.
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/job\?saved="))
    text = job_file.read_text()
    assert 'subject: "Late departures on {{ params.report_date }}"' in text or \
        "subject: Late departures on {{ params.report_date }}" in text
    assert "# Delayed departures of one day" in text
    context.close()

    # The password was in no response, nowhere in the command's output, in no file but the store.
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert not [b for b in bodies if PASSWORD in b]
    assert PASSWORD not in out + err and TOKEN not in err
    leaks = [p for p in workspace.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaks == []  # the store holds it encrypted
    shutil.copy(job_file, ARTIFACTS / "daily-saved.yaml")
