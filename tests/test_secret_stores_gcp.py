"""The ``gcp_secret_manager`` secret store (google-cloud-secret-manager) against a local HTTP server.

Google publishes no Secret Manager emulator, so the tests start a stdlib HTTP server on 127.0.0.1
that answers the documented REST calls of the client's REST transport (pointed at it with
``client_options.api_endpoint``): ``GET /v1/projects/{p}/secrets/{name}/versions/{v}:access`` →
``{"name": ..., "payload": {"data": base64}}`` and ``GET /v1/projects/{p}/secrets``, with Google's
JSON errors (403, 404, 400 FAILED_PRECONDITION, 401). Credentials: anonymous, and a service-account
key file found through ``GOOGLE_APPLICATION_CREDENTIALS`` (the client signs its own JWT, so the
server sees a bearer token). No value may reach an error, a repr or the log.
"""

from __future__ import annotations

import base64
import json
import logging
import sys

import pytest
from rest_server import Request, rest_server

from mailgem.fabric import SecretNotFoundError, SecretStoreError, load_fabric

pytest.importorskip("google.cloud.secretmanager",
                    reason="google-cloud-secret-manager is not installed: pip install 'mailgem[gcp]'")

VALUE = "gcp-pa55-VALUE-e41d"
PREFIX = "/v1/projects/analytics-prod/secrets"
VERSIONS = {"smtp-password/versions/latest": VALUE, "smtp-password/versions/2": "older-VALUE"}


def error(code: int, status: str, message: str) -> tuple[int, object]:
    return code, {"error": {"code": code, "message": message, "status": status}}


def secret_manager(request: Request) -> tuple[int, object]:
    if request.path == PREFIX and request.method == "GET":
        return 200, {"secrets": [{"name": "projects/analytics-prod/secrets/smtp-password"},
                                 {"name": "projects/analytics-prod/secrets/dkim-key"}], "totalSize": 2}
    name = request.path.removeprefix(PREFIX + "/").removesuffix(":access")
    if name.startswith("locked/"):
        return error(403, "PERMISSION_DENIED", "Permission 'secretmanager.versions.access' denied")
    if name.startswith("expired/"):
        return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    if name == "smtp-password/versions/1":
        return error(400, "FAILED_PRECONDITION", "Secret Version is in DISABLED state.")
    if name not in VERSIONS:
        return error(404, "NOT_FOUND", "Secret Version not found or has no versions.")
    return 200, {"name": "projects/123/secrets/" + name,
                 "payload": {"data": base64.b64encode(VERSIONS[name].encode()).decode()}}


@pytest.fixture
def server():
    with rest_server(secret_manager) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _logs(caplog):
    caplog.set_level(logging.DEBUG)


def fabric_file(tmp_path, server, secret="smtp-password", extra="anonymous: true"):
    path = tmp_path / "fabric.yaml"
    path.write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets: {{type: gcp_secret_manager, project: analytics-prod, endpoint: "{server.url}", {extra}}}
connections:
  - {{name: reports, preset: gmail, username: reports@example.com, password: {{secret: "{secret}"}}}}
""")
    return path


def password(fabric):
    return fabric.transport("reports", user="alice")._opener._password.get_secret_value()


def service_account_file(tmp_path, server):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "analytics-prod", "private_key_id": "k1", "private_key": key,
        "client_email": "mailgem@analytics-prod.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": server.url + "/token"}))
    return path


@pytest.fixture
def google_records():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("google.cloud.secretmanager_v1")
    saved = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(saved)


def test_latest_version_read_once_over_rest(tmp_path, server, caplog, google_records):
    fabric = load_fabric(fabric_file(tmp_path, server))
    store = fabric.store()
    fabric.with_store(store)
    assert password(fabric) == VALUE and password(fabric) == VALUE
    reads = [r for r in server.requests if r.path.endswith(":access")]
    assert [r.path for r in reads] == [PREFIX + "/smtp-password/versions/latest:access"]
    assert "authorization" not in reads[0].headers  # anonymous
    for text in (caplog.text, repr(store), repr(fabric)):
        assert VALUE not in text
    # At DEBUG the client logs each response in the record's extra ``httpResponse`` with a
    # ``payload`` field (None in this client version; the secret, base64, were it filled): its
    # "google" loggers do not propagate to the root, so a handler of their own looks, and the
    # store's filter withholds a payload whatever the version does.
    encoded = base64.b64encode(VALUE.encode()).decode()
    assert [r for r in google_records if hasattr(r, "httpResponse")]
    from mailgem.fabric.secrets.gcp_secret_manager import _CLIENT_LOGGER
    logging.getLogger(_CLIENT_LOGGER).debug("Received response", extra={"httpResponse": {"payload": encoded}})
    assert google_records[-1].httpResponse == {"payload": "(withheld by mailgem)"}
    assert not [r for r in google_records if encoded in repr(vars(r)) or VALUE in repr(vars(r))]


def test_application_default_credentials_send_a_bearer_token(tmp_path, server, monkeypatch, caplog):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account_file(tmp_path, server)))
    fabric = load_fabric(fabric_file(tmp_path, server, extra="version: '2'"))
    assert password(fabric) == "older-VALUE"
    read = [r for r in server.requests if r.path.endswith(":access")][0]
    assert read.path == PREFIX + "/smtp-password/versions/2:access"
    assert read.headers["authorization"].startswith("Bearer ")
    assert "older-VALUE" not in caplog.text


@pytest.mark.parametrize(("secret", "extra", "error", "words"), [
    ("missing", "anonymous: true", SecretNotFoundError, "secret 'missing' not found: check the secret's name"),
    ("locked", "anonymous: true", SecretStoreError, "permission denied for secret 'locked'.*secretAccessor"),
    ("expired", "anonymous: true", SecretStoreError, "credentials refused for secret 'expired'.*expired"),
    ("smtp-password", "anonymous: true, version: '1'", SecretStoreError, "version '1' is disabled or destroyed"),
    ("a/b", "anonymous: true", SecretStoreError, "invalid Secret Manager secret name 'a/b'"),
])
def test_errors_name_the_store_the_secret_and_what_to_check(tmp_path, server, caplog, secret, extra, error, words):
    with pytest.raises(error, match=words) as err:
        password(load_fabric(fabric_file(tmp_path, server, secret, extra)))
    assert "gcp_secret_manager secret store" in str(err.value) or "invalid" in str(err.value)
    assert VALUE not in str(err.value) and VALUE not in caplog.text


def test_names_and_read_only(tmp_path, server):
    store = load_fabric(fabric_file(tmp_path, server)).store()
    assert store.names() == ["dkim-key", "smtp-password"]
    from pydantic import SecretStr
    with pytest.raises(SecretStoreError, match="read-only"):
        store.set("smtp-password", SecretStr("x"))


def test_a_missing_library_is_explained(tmp_path, server, monkeypatch):
    fabric = load_fabric(fabric_file(tmp_path, server))
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)
    with pytest.raises(SecretStoreError, match=r"pip install 'mailgem\[gcp\]'"):
        fabric.store()
