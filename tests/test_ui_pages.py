"""`mailgem ui`'s pages through its app (Starlette's TestClient, in process), against real SMTP
servers (aiosmtpd with STARTTLS and AUTH) and real files: the fabric page (connections, the
connection form, Test connection's live steps, write-only secrets, saving with comments kept and
conflicts refused, team access) and the job page (diagnostics at fields, the live preview, the
YAML tab, Send test, saving). The browser flow is tests/test_ui_browser.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed here")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

from conftest import LOGIN, PASSWORD
from fault_server import FaultServer
from ui_client import client_for, form_values

from mailgem.fabric.loader import load_fabric
from mailgem.fabric.secrets import generate_key

USER = "ann@example.com"
FABRIC = """\
# Our team's fabric: a comment that must survive every save.
name: analytics-test
teams:
  - name: data-eng      # who may use it
    members: [bob, "{user}"]
secrets:
  type: encrypted_file
  path: secrets.enc
  key_file: secrets.key
connections:
  - name: reports       # the daily reports
    host: {host}
    port: {port}
    security: starttls
    ca_bundle: {ca}
    username: {login}
    password: {{secret: smtp-password}}
    timeout_s: ${{SMTP_TIMEOUT:-10}}
"""


@pytest.fixture
def server():
    smtp = FaultServer(security="starttls", users={LOGIN: PASSWORD})
    with smtp:
        yield smtp


@pytest.fixture
def fabric_file(tmp_path: Path, server: FaultServer) -> Path:
    (tmp_path / "secrets.key").write_text(generate_key() + "\n")
    path = tmp_path / "fabric.yaml"
    path.write_text(FABRIC.format(user=USER, host=server.host, port=server.port, ca=server.ca_pem, login=LOGIN))
    return path


def _store_password(fabric_file: Path, value: str = PASSWORD) -> None:
    load_fabric(fabric_file).store().set("smtp-password", __import__("pydantic").SecretStr(value))


def test_the_fabric_page_lists_connections_with_their_teams_and_buttons(fabric_file):
    client = client_for(fabric=fabric_file)
    page = client.get("/fabric")
    assert page.status_code == 200
    row = re.search(r'<tr data-connection="reports">(.*?)</tr>', page.text, re.DOTALL)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:6] == ["<b>reports</b>", "127.0.0.1", str(fabric_file.read_text().split("port: ")[1].split()[0]), "starttls",
                         "password", LOGIN]
    assert "data-eng" in row.group(1) and "Test connection" in row.group(1)
    assert ">Add connection<" in page.text


def test_someone_outside_the_teams_gets_403_on_every_page_and_action(fabric_file):
    client = client_for(fabric=fabric_file, user="mallory")
    for path in ("/fabric", "/fabric/connections/0", "/fabric/connections/new"):
        page = client.get(path)
        assert page.status_code == 403 and "may not use fabric" in page.text
    assert "connections[0]" not in client.get("/fabric/connections/0").text  # no form to fill
    assert client.post("/fabric/secrets", data={"name": "x", "_secret_value": "y"}).status_code == 403
    assert client.post("/fabric/connections/0/save", data={"_digest": "x"}).status_code == 403
    assert client.post("/fabric/connections/0/from-url", data={"_url": "smtp://h"}).status_code == 403
    assert client.post("/fabric/test/reports").status_code == 403
    assert client.post("/fabric/connections/0/test", data={"_digest": "x"}).status_code == 403
    assert load_fabric(fabric_file).store().names() == []


def test_adding_a_connection_keeps_comments_and_env_references_and_stores_its_password_write_only(
        fabric_file, server):
    client = client_for(fabric=fabric_file)
    form_page = client.get("/fabric/connections/new")
    assert form_page.status_code == 200
    values = form_values(form_page.text, "connection-form")
    assert "connections[1].host" in values and "connections[1].password.secret" in values
    assert 'type="password"' in form_page.text
    values.update({"connections[1].name": "second", "connections[1].host": server.host,
                   "connections[1].port": str(server.port), "connections[1].security": "starttls",
                   "connections[1].ca_bundle": str(server.ca_pem), "connections[1].username": LOGIN,
                   "connections[1].password.secret": "second-password", "_secret_value": PASSWORD})
    saved = client.post("/fabric/connections/1/save", data=values)
    assert saved.json() == {"redirect": "/fabric?saved=second"}, saved.text
    text = fabric_file.read_text()
    assert text.startswith("# Our team's fabric: a comment that must survive every save.")
    assert "# who may use it" in text and "# the daily reports" in text
    assert "timeout_s: ${SMTP_TIMEOUT:-10}" in text  # the environment reference, as written
    assert "name: second" in text and "secret: second-password" in text and PASSWORD not in text
    assert load_fabric(fabric_file).store().get("second-password").get_secret_value() == PASSWORD
    # Write-only: the value is in no page, not even the form it was typed into.
    for path in ("/fabric", "/fabric/connections/1", "/fabric/connections/new"):
        assert PASSWORD not in client.get(path).text
    assert PASSWORD not in saved.text


def test_field_errors_come_back_at_their_fields_and_nothing_is_written(fabric_file):
    client = client_for(fabric=fabric_file)
    before = fabric_file.read_text()
    values = form_values(client.get("/fabric/connections/0").text, "connection-form")
    values["connections[0].port"] = "99999"
    answer = client.post("/fabric/connections/0/save", data=values).json()
    assert "connections[0].port" in answer["errors"], answer
    values["connections[0].port"] = "not a port"
    answer = client.post("/fabric/connections/0/save", data=values).json()
    assert "connections[0].port" in answer["errors"], answer
    assert fabric_file.read_text() == before


def test_an_edit_on_disk_since_the_page_loaded_is_refused_with_a_diff(fabric_file):
    client = client_for(fabric=fabric_file)
    values = form_values(client.get("/fabric/connections/0").text, "connection-form")
    elsewhere = fabric_file.read_text().replace("# the daily reports", "# edited in an editor meanwhile")
    fabric_file.write_text(elsewhere)
    values["connections[0].sender_name"] = "From the page"
    values["_secret_value"] = "a-new-value-never-stored"
    answer = client.post("/fabric/connections/0/save", data=values).json()
    assert "+  - name: reports       # edited in an editor meanwhile" in answer["conflict"]
    assert "-  - name: reports       # the daily reports" in answer["conflict"]
    assert fabric_file.read_text() == elsewhere  # never overwritten
    assert load_fabric(fabric_file).store().names() == []  # nor the secret stored


def test_a_url_fills_the_form_and_a_password_in_it_is_refused(fabric_file):
    client = client_for(fabric=fabric_file)
    filled = client.post("/fabric/connections/1/from-url", data={"_url": "smtps://me@smtp.example.com:465"}).json()
    assert filled["values"] == {"connections[1].host": "smtp.example.com", "connections[1].port": "465",
                                "connections[1].security": "implicit_tls", "connections[1].username": "me"}
    with pytest.warns(UserWarning):
        refused = client.post("/fabric/connections/1/from-url",
                              data={"_url": "smtps://me:hunter2-secret@smtp.example.com"}).json()
    assert "password" in refused["errors"]["_url"] and "hunter2-secret" not in json.dumps(refused)


def _events(body: str) -> list[tuple[str, dict]]:
    out = []
    for block in body.strip().split("\n\n"):
        kind = re.search(r"^event: (\w+)$", block, re.MULTILINE)
        data = re.search(r"^data: (.*)$", block, re.MULTILINE)
        assert kind and data, block
        out.append((kind.group(1), json.loads(data.group(1))))
    return out


def test_test_connection_streams_its_steps_then_the_verdict_with_the_clis_lines(fabric_file, server):
    _store_password(fabric_file)
    client = client_for(fabric=fabric_file)
    assert client.post("/fabric/test/reports", headers={"x-csrf-token": "wrong"}).status_code == 403
    events = _events(client.post("/fabric/test/reports").text)
    assert [e for e, _ in events] == ["step"] * 6 + ["done"]
    assert [d["step"] for _, d in events[:-1]] == ["connect", "tls", "ehlo", "size", "auth", "sender"]
    done = events[-1][1]
    assert done["ok"] is True and any("sender accepted" in line for line in done["lines"])
    assert server.messages == [] and PASSWORD not in json.dumps(events)

    _store_password(fabric_file, "wrong-password")
    events = _events(client.post("/fabric/test/reports").text)
    done = events[-1][1]
    assert done["ok"] is False and any(line.startswith("error") and "535" in line for line in done["lines"])
    assert "auth" not in [d.get("step") for _, d in events[:-1]]


def test_setting_a_secret_on_the_page_is_write_only(fabric_file):
    client = client_for(fabric=fabric_file)
    answer = client.post("/fabric/secrets", data={"name": "api-key", "_secret_value": "s3cr3t-value-xyz"})
    assert answer.json() == {"redirect": "/fabric?saved=secret%20api-key"}
    page = client.get("/fabric").text
    assert "<code>api-key</code>" in page and "s3cr3t-value-xyz" not in page
    assert load_fabric(fabric_file).store().get("api-key").get_secret_value() == "s3cr3t-value-xyz"
    blank = client.post("/fabric/secrets", data={"name": "api-key", "_secret_value": "   "}).json()
    assert "empty" in blank["errors"]["name"]
    bad = client.post("/fabric/secrets", data={"name": "no spaces!", "_secret_value": "x"}).json()
    assert "invalid secret name" in bad["errors"]["name"]


JOB = """\
# A small job for the page's tests (this comment must survive a save).
name: ui-pages
source:
  path: rows.parquet    # relative to this file
params: {{team: Ops}}
email:
  connection: {connection}
  to: ops@example.com, "Data Team <data@example.com>"
  subject: "Rows for {{{{ params.team }}}}: {{{{ row_count }}}}"
  html_body: |
    <p>Hello {{{{ params.team }}}}</p>
    {{{{ table }}}}
  attachments:
    - file_name: rows.csv
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    import pandas as pd

    pd.DataFrame({"n": [1, 2, 3], "city": ["Oslo", "Lima", "Pune"]}).to_parquet(tmp_path / "rows.parquet")
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(connection="local"))
    return path


def _job_form(client) -> dict[str, str]:
    page = client.get("/job")
    assert page.status_code == 200, page.text
    return form_values(page.text, "job-form")


def test_the_job_page_previews_the_form_as_it_is_edited(job_file, tmp_path):
    client = client_for(job=job_file, local=True, outbox=tmp_path / "outbox")
    values = _job_form(client)
    assert values["email.subject"] == "Rows for {{ params.team }}: {{ row_count }}"
    first = client.post("/job/preview", data=values).json()
    assert first["general"] == [] and first["fields"] == {}, first
    assert "Rows for Ops: 3" in first["html"] and 'id="preview"' in first["html"]
    assert "rows.csv" in first["html"] and "dry_run" in first["html"]  # the attachment, the report row
    values["email.subject"] = "Changed: {{ row_count }} rows"
    assert "Changed: 3 rows" in client.post("/job/preview", data=values).json()["html"]
    assert "#121212" not in first["html"]
    assert "background: #121212 !important" in client.post("/job/preview", data={**values, "_dark": "1"}).json()["html"]
    # A template mistake is shown at its field, and the preview waits for the fix.
    values["email.subject"] = "{{ row.n }"
    broken = client.post("/job/preview", data=values).json()
    assert "email.subject" in broken["fields"] and "html" not in broken, broken


def test_the_yaml_tab_and_the_form_stay_in_step(job_file, tmp_path):
    client = client_for(job=job_file, local=True, outbox=tmp_path / "outbox")
    values = _job_form(client)
    values["email.subject"] = "From the form"
    text = client.post("/job/yaml", data=values).json()["yaml"]
    assert 'subject: "From the form"' in text and "# A small job" in text  # its quotes kept
    values.update({"_mode": "yaml", "_yaml": text.replace("From the form", "From the YAML tab")})
    form_html = client.post("/job/form", data=values).json()["html"]
    assert 'value="From the YAML tab"' in form_html
    assert "From the YAML tab" in client.post("/job/preview", data=values).json()["html"]


def test_send_test_goes_to_the_users_address_only(job_file, tmp_path):
    from email import message_from_bytes, policy

    outbox = tmp_path / "outbox"
    client = client_for(job=job_file, local=True, outbox=outbox)
    values = {**_job_form(client), "_address": USER}
    answer = client.post("/job/send-test", data=values).json()
    assert answer["ok"] is True, answer
    [eml] = list(outbox.glob("*.eml"))
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["To"] == USER and message["Cc"] is None
    assert str(message["Subject"]).startswith("[test] Rows for Ops: 3")
    bad = client.post("/job/send-test", data={**values, "_address": "not an address"}).json()
    assert bad["ok"] is False and len(list(outbox.glob("*.eml"))) == 1


def test_saving_the_job_changes_only_what_was_edited_and_refuses_a_conflict(job_file, tmp_path):
    client = client_for(job=job_file, local=True, outbox=tmp_path / "outbox")
    before = job_file.read_text()
    values = _job_form(client)
    values["email.subject"] = "Saved subject"
    assert client.post("/job/save", data=values).json() == {"redirect": "/job?saved=1"}
    after = job_file.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [('  subject: "Rows for {{ params.team }}: {{ row_count }}"', '  subject: "Saved subject"')] \
        or changed == [('  subject: "Rows for {{ params.team }}: {{ row_count }}"', "  subject: Saved subject")]
    # The page still holds the old version: saving it again would overwrite the first save.
    values["email.subject"] = "Second"
    answer = client.post("/job/save", data=values).json()
    assert "Saved subject" in answer["conflict"] and job_file.read_text() == after


def test_the_job_page_and_its_actions_are_for_the_fabrics_teams_only(job_file, fabric_file, tmp_path):
    client = client_for(job=job_file, fabric=fabric_file, user="mallory", local=True, outbox=tmp_path / "outbox")
    page = client.get("/job")
    assert page.status_code == 403 and "may not use fabric" in page.text and "job-form" not in page.text
    for action in ("preview", "yaml", "form", "send-test", "save"):
        assert client.post(f"/job/{action}", data={"_digest": "x"}).status_code == 403
    assert not (tmp_path / "outbox").exists()


def test_a_connection_is_tested_as_the_form_has_it_before_it_is_saved(fabric_file, server):
    client = client_for(fabric=fabric_file)
    before = fabric_file.read_text()
    values = form_values(client.get("/fabric/connections/new").text, "connection-form")
    values.update({"connections[1].name": "draft", "connections[1].host": server.host,
                   "connections[1].port": str(server.port), "connections[1].security": "starttls",
                   "connections[1].ca_bundle": str(server.ca_pem), "connections[1].username": LOGIN,
                   "connections[1].password.secret": "draft-password", "_secret_value": PASSWORD})
    events = _events(client.post("/fabric/connections/1/test", data=values).text)
    assert events[-1][1]["ok"] is True, events
    assert any("sender accepted" in line for line in events[-1][1]["lines"])
    # Tested, not saved: the file and the store are as they were; the typed password was used once.
    assert fabric_file.read_text() == before and load_fabric(fabric_file).store().names() == []
    values["connections[1].port"] = "not a port"
    events = _events(client.post("/fabric/connections/1/test", data=values).text)
    assert events == [("done", {"ok": False, "lines": [events[0][1]["lines"][0]]})]
    assert "connections[1].port" in events[0][1]["lines"][0] and PASSWORD not in json.dumps(events)


def test_mistakes_a_page_can_send_get_answers_not_crashes(fabric_file, job_file, tmp_path):
    client = client_for(fabric=fabric_file)
    values = form_values(client.get("/fabric/connections/0").text, "connection-form")
    assert client.post("/fabric/connections/5/save", data=values).status_code == 404
    stale = client.post("/fabric/connections/0/save", data={**values, "_digest": "from-before-a-restart"}).json()
    assert "reload" in stale["message"]
    url = client.post("/fabric/connections/0/from-url", data={"_url": "smtp://h:25/?tls_skip_verify=true"}).json()
    assert url["values"]["connections[0].verify_certificates"] == "false"  # as the select's choices spell it
    jobs = client_for(job=job_file, local=True, outbox=tmp_path / "outbox")
    form = _job_form(jobs)
    assert "reload" in jobs.post("/job/yaml", data={**form, "_digest": "gone"}).json()["general"][0]
    assert "html" in jobs.post("/job/preview", data={**form, "_message": "-1"}).json()
    assert "html" in jobs.post("/job/preview", data={**form, "_message": "abc"}).json()


def test_an_invalid_fabric_file_is_said_on_every_page(fabric_file):
    fabric_file.write_text(fabric_file.read_text().replace("security: starttls", "security: sometimes"))
    client = client_for(fabric=fabric_file)
    for path in ("/fabric", "/fabric/connections/0", "/fabric/connections/new"):
        page = client.get(path)
        assert page.status_code == 400 and "connections[0].security" in page.text, page.text


def test_a_read_only_store_lists_its_names_offers_no_set_form_and_tests_with_a_typed_password(
        tmp_path, fabric_file, server):
    # A `command` store (a real script; Vault, AWS and the others are read-only the same way): the
    # page lists what the store lists, offers no "Set secret" form, and a typed password is used
    # by Test connection only — saving it is refused at its field, the file unchanged.
    script = tmp_path / "store.py"
    script.write_text("import sys\nif sys.argv[1:] == ['ls']:\n    print('smtp-password')\nelse:\n    sys.exit(1)\n")
    text = fabric_file.read_text().replace(
        "  type: encrypted_file\n  path: secrets.enc\n  key_file: secrets.key\n",
        f"  type: command\n  argv: [{sys.executable}, {script}, '{{name}}']\n  list_argv: [{sys.executable}, {script}, ls]\n")
    fabric_file.write_text(text)
    client = client_for(fabric=fabric_file)
    page = client.get("/fabric").text
    assert 'id="store-read-only"' in page and "<code>smtp-password</code>" in page
    assert 'data-post="/fabric/secrets"' not in page
    refused = client.post("/fabric/secrets", data={"name": "api-key", "_secret_value": "s3cr3t-value-xyz"}).json()
    assert "read-only" in refused["errors"]["name"]
    form_page = client.get("/fabric/connections/0").text
    assert "Used only by Test connection" in form_page
    values = form_values(form_page, "connection-form")
    values["_secret_value"] = PASSWORD
    events = _events(client.post("/fabric/connections/0/test", data=values).text)
    assert events[-1][1]["ok"] is True, events
    saved = client.post("/fabric/connections/0/save", data=values).json()
    assert "read-only" in saved["errors"]["connections[0].password.secret"]
    assert fabric_file.read_text() == text and PASSWORD not in json.dumps(events)
