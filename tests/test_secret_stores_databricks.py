"""The ``databricks`` secret store: databricks-sdk against a local HTTP server, and dbutils.

No Databricks workspace or official emulator is available here, so the tests start a stdlib HTTP
server on 127.0.0.1 answering the documented REST calls the SDK makes:
``GET /api/2.0/secrets/get?scope=..&key=..`` → ``{"key": ..., "value": base64}`` and
``GET /api/2.0/secrets/list?scope=..``, with Databricks' JSON errors (404
RESOURCE_DOES_NOT_EXIST, 403 PERMISSION_DENIED, 401). The SDK is pointed at it with
``DATABRICKS_HOST=http://127.0.0.1:PORT`` and ``DATABRICKS_TOKEN`` (it accepts plain http). The
dbutils path (on a Databricks cluster) is tested with a stand-in ``dbutils`` object in
``__main__``, as a notebook has it. No value may reach an error, a repr or the log.
"""

from __future__ import annotations

import base64
import logging
import sys
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr
from rest_server import Request, rest_server

from mailgem.fabric import SecretNotFoundError, SecretStoreError, load_fabric

pytest.importorskip("databricks.sdk", reason="databricks-sdk is not installed: pip install 'mailgem[databricks]'")

VALUE = "dbx-pa55-VALUE-90ce"
TOKEN = "dapi-test-token"
SCOPE = {"smtp-password": VALUE, "dkim-key": "dkim-VALUE"}


def workspace(request: Request) -> tuple[int, object]:
    query = {k: v[0] for k, v in parse_qs(request.query).items()}
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
    if query.get("scope") == "locked":
        return 403, {"error_code": "PERMISSION_DENIED", "message": "User does not have READ permission on scope"}
    if query.get("scope") != "reports":
        return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Scope does not exist!"}
    if request.path == "/api/2.0/secrets/list":
        return 200, {"secrets": [{"key": k, "last_updated_timestamp": 1} for k in SCOPE]}
    if request.path == "/api/2.0/secrets/get" and query.get("key") in SCOPE:
        return 200, {"key": query["key"], "value": base64.b64encode(SCOPE[query["key"]].encode()).decode()}
    return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Failed to get secret for scope and key"}


@pytest.fixture
def server(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with rest_server(workspace) as srv:
        monkeypatch.setenv("DATABRICKS_HOST", srv.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        yield srv


def fabric_file(tmp_path, scope="reports", secret="smtp-password"):
    path = tmp_path / "fabric.yaml"
    path.write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets: {{type: databricks, scope: {scope}}}
connections:
  - {{name: reports, preset: gmail, username: reports@example.com, password: {{secret: {secret}}}}}
""")
    return path


def password(fabric):
    return fabric.transport("reports", user="alice")._opener._password.get_secret_value()


def no_value(caplog, *texts):
    encoded = base64.b64encode(VALUE.encode()).decode()
    for text in [caplog.text, *texts]:
        assert VALUE not in text and encoded not in text


def test_the_sdk_reads_the_secret_once(tmp_path, server, caplog):
    fabric = load_fabric(fabric_file(tmp_path))
    store = fabric.store()
    fabric.with_store(store)
    assert password(fabric) == VALUE and password(fabric) == VALUE
    reads = [r for r in server.requests if r.path == "/api/2.0/secrets/get"]
    assert len(reads) == 1 and parse_qs(reads[0].query) == {"scope": ["reports"], "key": ["smtp-password"]}
    assert reads[0].headers["authorization"] == f"Bearer {TOKEN}"
    no_value(caplog, repr(store), repr(fabric))


@pytest.mark.parametrize(("scope", "secret", "token", "error", "words"), [
    ("reports", "nope", TOKEN, SecretNotFoundError, "scope 'reports'.*secret 'nope' not found: check the scope and key"),
    ("missing", "smtp-password", TOKEN, SecretNotFoundError, "scope 'missing'.*secret 'smtp-password' not found"),
    ("locked", "smtp-password", TOKEN, SecretStoreError, "permission denied for secret 'smtp-password'.*READ"),
    ("reports", "smtp-password", "dapi-expired", SecretStoreError, "token was refused.*invalid or expired"),
])
def test_errors_name_the_store_the_secret_and_what_to_check(tmp_path, server, monkeypatch, caplog,
                                                            scope, secret, token, error, words):
    monkeypatch.setenv("DATABRICKS_TOKEN", token)
    with pytest.raises(error, match=words) as err:
        password(load_fabric(fabric_file(tmp_path, scope, secret)))
    assert "databricks secret store" in str(err.value)
    no_value(caplog, str(err.value))


def test_names_and_read_only(tmp_path, server):
    store = load_fabric(fabric_file(tmp_path)).store()
    assert store.names() == ["dkim-key", "smtp-password"]
    assert [r.query for r in server.requests if r.path == "/api/2.0/secrets/list"] == ["scope=reports"]
    with pytest.raises(SecretStoreError, match="read-only"):
        store.set("smtp-password", SecretStr("x"))


class StandInSecrets:
    """``dbutils.secrets`` as a notebook has it (its errors carry Databricks' words)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def get(self, scope: str, key: str) -> str:
        self.calls.append((scope, key))
        if key not in SCOPE:
            raise RuntimeError(f"IllegalArgumentException: Secret does not exist with scope: {scope} and key: {key}")
        return SCOPE[key]

    def list(self, scope: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(key=k) for k in SCOPE]


def test_on_databricks_dbutils_is_used(tmp_path, server, monkeypatch, caplog):
    secrets = StandInSecrets()
    monkeypatch.setattr(sys.modules["__main__"], "dbutils", SimpleNamespace(secrets=secrets), raising=False)
    fabric = load_fabric(fabric_file(tmp_path))
    store = fabric.store()
    fabric.with_store(store)
    assert password(fabric) == VALUE and password(fabric) == VALUE
    assert secrets.calls == [("reports", "smtp-password")] and server.requests == []
    assert store.names() == ["dkim-key", "smtp-password"]
    with pytest.raises(SecretNotFoundError, match="databricks secret store.*secret 'nope' not found"):
        store.get("nope")
    no_value(caplog, repr(store))


def test_a_missing_sdk_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.setitem(sys.modules, "databricks.sdk", None)
    with pytest.raises(SecretStoreError, match=r"pip install 'mailgem\[databricks\]'"):
        load_fabric(fabric_file(tmp_path)).store()
