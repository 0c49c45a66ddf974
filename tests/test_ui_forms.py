"""mailgem.ui.forms: fields from the real models' JSON Schemas, a submitted form written back
into the round-trip document, validation errors mapped onto the fields."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailgem.connections.model import SmtpConnection
from mailgem.fabric.loader import interpolate
from mailgem.fabric.model import Fabric
from mailgem.runner.job import JobSpec
from mailgem.ui.form_errors import validation_errors
from mailgem.ui.form_input import apply_form
from mailgem.ui.forms import FormErrors, FormField, connection_schema, form_fields
from mailgem.ui.yamlfile import YamlFile, get_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
JOB_SCHEMA = JobSpec.model_json_schema()


def _by_path(fields: list[FormField]) -> dict[str, FormField]:
    return {f.path: f for f in fields}


def _browser_form(fields: list[FormField], edits: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """What a browser posts for a page showing ``fields`` (textareas with CRLF; a boolean's
    select as "true", "false" or "" for the default), with ``edits`` (``{path: text}``) typed in."""
    edits = edits or {}
    return [(f.path, edits.get(f.path, f.value).replace("\n", "\r\n")) for f in fields]


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_connection_fields_cover_the_model():
    fabric = YamlFile.load(EXAMPLES / "fabric.yaml")
    fields = _by_path(form_fields(connection_schema(), fabric.doc, "connections[0]"))
    p = "connections[0]."
    assert fields[p + "host"].kind == "text"
    assert fields[p + "host"].description == "SMTP server host name or IP address."
    assert fields[p + "port"].kind == "integer"
    security = fields[p + "security"]
    assert (security.kind, security.choices, security.default) == ("select", ("starttls", "implicit_tls", "none"),
                                                                   "starttls")
    assert fields[p + "username"].value == "${REPORTS_MAILBOX:-reports@example.com}"
    assert fields[p + "username"].is_env
    assert fields[p + "sender_address"].kind == "text"
    password = fields[p + "password.secret"]
    assert (password.kind, password.value, password.group) == ("secret", "gmail-app-password", "connections[0]")
    assert fields[p + "preset"].value == "gmail" and "gmail" in fields[p + "preset"].choices
    assert fields[p + "url"].kind == "text"
    # OAuth2, proxy, DKIM, pool and rate limits are all reachable as fields.
    assert fields[p + "auth.type"].choices == ("oauth2",)
    assert fields[p + "auth.provider"].choices == ("office365", "google", "generic")
    assert fields[p + "auth.client_secret.secret"].kind == "secret"
    assert fields[p + "auth.client_id"].group == "connections[0].auth"
    assert not fields[p + "auth.client_id"].required  # required inside auth, which is absent
    assert fields[p + "proxy.url"].kind == "text"
    assert fields[p + "proxy.password.secret"].kind == "secret"
    assert fields[p + "dkim.private_key.secret"].kind == "secret"
    assert fields[p + "dkim.headers"].kind == "list" and "subject" in str(fields[p + "dkim.headers"].default)
    assert (fields[p + "pool_size"].kind, fields[p + "pool_size"].default) == ("integer", "4")
    assert (fields[p + "rate_per_s"].kind, fields[p + "rate_per_s"].value) == ("number", "5")
    assert fields[p + "max_per_day"].value == "2000"
    assert fields[p + "verify_certificates"].kind == "boolean"
    assert fields[p + "verify_certificates"].default == "true"
    assert fields[p + "allowed_special_domains"].kind == "list"
    assert fields[p + "dsn.ret"].choices == ("headers", "full")
    assert fields[p + "name"].required and not fields[p + "host"].required  # a url or preset gives the host
    assert list(fields)[:4] == [p + "name", p + "url", p + "preset", p + "region"]


def test_job_fields():
    job = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    fields = _by_path(form_fields(JOB_SCHEMA, job.doc))
    assert fields["email.subject"].kind == "text" and fields["email.subject"].required
    assert fields["email.html_body"].kind == "textarea"
    assert fields["email.html_body"].value.startswith('<h2 style="font-family')
    assert fields["transform"].kind == "textarea" and "FROM source" in fields["transform"].value
    attachments = fields["email.attachments"]
    assert attachments.kind == "yaml"
    assert attachments.value.startswith('- file_name: "delayed-flights-{{ params.report_date }}.csv"\n')
    assert fields["email.headers"].kind == "yaml"
    assert fields["params"].value.startswith('report_date: "${REPORT_DATE:-2013-07-22}"\nmin_delay_min: 15\n')
    assert fields["email.to"].kind == "list"
    assert fields["email.priority"].choices == ("low", "normal", "high")
    assert fields["email.table.max_rows"].group == "email.table" and fields["email.table.max_rows"].depth == 2
    assert fields["email.chart.y"].kind == "yaml"  # str | list[str]
    assert fields["email.ledger.path"].value == ""  # absent, still offered
    only = form_fields(JOB_SCHEMA, job.doc, only=["email.chart"])
    assert {f.path for f in only} == {"email.chart.kind", "email.chart.x", "email.chart.y", "email.chart.title",
                                      "email.chart.top_n"}


def test_unedited_form_changes_nothing_and_a_subject_edit_one_line():
    job = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    fields = form_fields(JOB_SCHEMA, job.doc)
    assert apply_form(job.doc, JOB_SCHEMA, _browser_form(fields)) == []
    assert job.dump(job.doc) == job.text
    changed = apply_form(job.doc, JOB_SCHEMA, _browser_form(fields, {"email.subject": "Delays on {{ run_date }}"}))
    assert changed == ["email.subject"]
    assert _changed_lines(job.text, job.dump(job.doc)) == [
        ('-  subject: "Delays {{ params.report_date }}: {{ \'{:,}\'.format(row_count) }} departures '
         '{{ params.min_delay_min }}+ min late"'),
        '+  subject: "Delays on {{ run_date }}"',
    ]
    JobSpec.model_validate(interpolate(job.parse(job.dump(job.doc)), "job"))


def test_env_reference_kept_whatever_the_kind(tmp_path):
    fabric = YamlFile.load(EXAMPLES / "fabric.yaml")
    schema = connection_schema()
    changed = apply_form(fabric.doc, schema, {"connections[2].port": "${RELAY_PORT}",
                                              "connections[2].security": "${RELAY_SECURITY:-none}"},
                         "connections[2]")
    assert changed == ["connections[2].port", "connections[2].security"]
    out = fabric.dump(fabric.doc)
    assert "    port: ${RELAY_PORT}\n    security: ${RELAY_SECURITY:-none}\n" in out
    # An unedited ${ENV} value (quoted in the file) stays as written.
    assert apply_form(fabric.doc, schema, {"connections[0].username": "${REPORTS_MAILBOX:-reports@example.com}"},
                      "connections[0]") == []
    assert '    username: "${REPORTS_MAILBOX:-reports@example.com}"\n' in fabric.dump(fabric.doc)


def test_coercion_lists_secrets_and_booleans():
    fabric = YamlFile.load(EXAMPLES / "fabric.yaml")
    schema = connection_schema()
    fields = form_fields(schema, fabric.doc, "connections[2]")
    form = _browser_form(fields, {"connections[2].port": "2525", "connections[2].timeout_s": "12.5",
                                  "connections[2].allowed_special_domains": "internal\r\n\r\n  corp.local \r\n"})
    form = [(k, "false" if k == "connections[2].anonymous" else v) for k, v in form]  # the select set to false
    changed = apply_form(fabric.doc, schema, form, "connections[2]")
    assert set(changed) == {"connections[2].port", "connections[2].timeout_s", "connections[2].anonymous",
                            "connections[2].allowed_special_domains"}
    relay = fabric.doc["connections"][2]
    assert relay["port"] == 2525 and relay["timeout_s"] == 12.5 and relay["anonymous"] is False
    assert relay["allowed_special_domains"] == ["internal", "corp.local"]
    # A new secret reference is written as the examples write it.
    apply_form(fabric.doc, schema, {"connections[2].password.secret": "relay-password"}, "connections[2]")
    assert "    password: {secret: relay-password}\n" in fabric.dump(fabric.doc)
    # A boolean's "(default)" choice removes the key; already absent, nothing is written.
    assert apply_form(fabric.doc, schema, {"connections[2].anonymous": ""}, "connections[2]") == \
        ["connections[2].anonymous"]
    assert "anonymous" not in fabric.doc["connections"][2]
    assert apply_form(fabric.doc, schema, {"connections[2].anonymous": ""}, "connections[2]") == []
    with pytest.raises(FormErrors) as caught:
        apply_form(fabric.doc, schema, {"connections[2].port": "twenty", "connections[2].security": "tls",
                                        "connections[2].anonymous": "maybe"}, "connections[2]")
    assert caught.value.errors == {"connections[2].port": "must be a whole number",
                                   "connections[2].security": "must be one of starttls, implicit_tls, none",
                                   "connections[2].anonymous": "must be true or false"}


def test_empty_optional_removes_key_and_emptied_group():
    fabric = YamlFile.load(EXAMPLES / "fabric.yaml")
    schema = connection_schema()
    before = fabric.text
    changed = apply_form(fabric.doc, schema, {"connections[0].rate_per_s": "", "connections[0].sender_name": "",
                                              "connections[0].ehlo_hostname": ""}, "connections[0]")
    assert changed == ["connections[0].rate_per_s", "connections[0].sender_name"]  # ehlo_hostname was absent
    assert _changed_lines(before, fabric.dump(fabric.doc)) == ["-    sender_name: Analytics Reports",
                                                               "-    rate_per_s: 5"]
    apply_form(fabric.doc, schema, {"connections[0].proxy.url": "socks5://proxy:1080",
                                    "connections[0].proxy.password.secret": "proxy-pw"}, "connections[0]")
    assert get_path(fabric.doc, "connections[0].proxy") == {"url": "socks5://proxy:1080",
                                                            "password": {"secret": "proxy-pw"}}
    apply_form(fabric.doc, schema, {"connections[0].proxy.url": "", "connections[0].proxy.password.secret": ""},
               "connections[0]")
    assert "proxy" not in fabric.doc["connections"][0]  # not proxy: {}


def test_yaml_snippet_error_touches_nothing():
    job = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    with pytest.raises(FormErrors) as caught:
        apply_form(job.doc, JOB_SCHEMA, {"email.subject": "changed", "email.headers": "X-A: [unclosed\n"})
    assert list(caught.value.errors) == ["email.headers"]
    assert "line" in caught.value.errors["email.headers"]
    assert job.dump(job.doc) == job.text
    assert apply_form(job.doc, JOB_SCHEMA, {"email.headers": "X-A: one\nX-B: two\n"}) == ["email.headers"]
    assert job.doc["email"]["headers"] == {"X-A": "one", "X-B": "two"}


def test_unknown_path_is_an_error():
    job = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    with pytest.raises(FormErrors) as caught:
        apply_form(job.doc, JOB_SCHEMA, {"email.subjet": "x", "_digest": "abc"})
    assert list(caught.value.errors) == ["email.subjet"]
    assert job.dump(job.doc) == job.text


def _errors(model, data, prefix="", schema=None):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return validation_errors(caught.value, prefix, schema=schema)


def test_validation_errors_name_the_form_fields():
    connection = {"name": "c", "host": "h", "port": 70000, "security": "tls", "username": "u@example.com",
                  "password": {"secret": "pw"}}
    errors = _errors(SmtpConnection, connection, "connections[0]")
    assert set(errors) == {"connections[0].port", "connections[0].security"}
    assert "65535" in errors["connections[0].port"] and "70000" not in errors["connections[0].port"]
    assert "starttls" in errors["connections[0].security"] and "'tls'" not in errors["connections[0].security"]
    fabric = {"name": "f", "teams": [{"name": "t"}], "connections": [connection]}
    assert set(_errors(Fabric, fabric)) == {"connections[0].port", "connections[0].security"}
    # A rule over several fields is the connection's; a secret's error is at its input.
    no_password = {"name": "c", "host": "h", "port": 25, "username": "u@example.com"}
    assert list(_errors(SmtpConnection, no_password, "connections[0]")) == ["connections[0]"]
    plain = {**no_password, "password": "hunter2"}
    errors = _errors(SmtpConnection, plain, "connections[0]", connection_schema())
    assert list(errors) == ["connections[0].password.secret"]
    assert "hunter2" not in errors["connections[0].password.secret"]


def test_validation_errors_leave_union_members_out():
    job = {"name": "j", "source": {"path": "x.csv"},
           "email": {"connection": "c", "subject": "s", "mode": "sometimes", "chart": {"kind": "bar", "x": "a", "y": 5}}}
    errors = _errors(JobSpec, job)
    assert set(errors) == {"email.mode", "email.chart.y"}
    assert errors["email.mode"] == "Input should be 'report', 'per_group' or 'per_row'"
    assert _errors(JobSpec, job, schema=JOB_SCHEMA) == errors
    fabric = {"name": "f", "teams": [{"name": "t"}], "secrets": {"type": "encrypted_file"}}
    assert list(_errors(Fabric, fabric, schema=Fabric.model_json_schema())) == ["secrets.path"]
