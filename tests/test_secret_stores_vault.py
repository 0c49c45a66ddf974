"""The ``vault`` secret store (hvac) against a local HTTP server.

No official Vault emulator installs here (the Vault binary is not on PyPI), so the tests start a
stdlib HTTP server on 127.0.0.1 that answers the documented REST calls the store makes: the KV v2
read ``GET /v1/{mount}/data/{path}``, ``LIST /v1/{mount}/metadata/{path}``, the AppRole and
Kubernetes logins, 403 ``{"errors": ["permission denied"]}`` and 404. The tests check what the
server received (paths, the token header) and that no value reaches an error, a repr or the log.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys

import pytest
from rest_server import Request, rest_server

from mailgem.fabric import FabricConfigError, SecretNotFoundError, SecretStoreError, load_fabric

pytest.importorskip("hvac", reason="hvac is not installed: pip install 'mailgem[vault]'")

VALUE = "vault-pa55-VALUE-7f3c"
API_KEY = "vault-api-key-VALUE-19ab"
TOKEN, ROLE_ID, SECRET_ID, JWT = "s.root-token", "role-1", "secret-1", "eyJ.k8s.jwt"
KV = {"mailgem/smtp": {"password": VALUE, "api_key": API_KEY}, "mailgem/teams/other": {"password": "x-other"},
      "mailgem/locked": {"password": "x-locked"}}


def vault(request: Request) -> tuple[int, object]:
    body = json.loads(request.body or b"{}")
    if request.path == "/v1/auth/approle/login":
        ok = body == {"role_id": ROLE_ID, "secret_id": SECRET_ID}
        return (200, {"auth": {"client_token": "s.approle"}}) if ok else (400, {"errors": ["invalid role or secret ID"]})
    if request.path == "/v1/auth/kubernetes/login":
        ok = body == {"role": "mailgem", "jwt": JWT}
        return (200, {"auth": {"client_token": "s.k8s"}}) if ok else (403, {"errors": ["permission denied"]})
    if request.headers.get("x-vault-token") not in (TOKEN, "s.approle", "s.k8s"):
        return 403, {"errors": ["permission denied"]}
    if request.path.startswith("/v1/secret/data/"):
        key = request.path.removeprefix("/v1/secret/data/")
        if key == "mailgem/locked":
            return 403, {"errors": ["permission denied"]}
        if key not in KV:
            return 404, {"errors": []}
        return 200, {"data": {"data": KV[key], "metadata": {"version": 3, "deletion_time": ""}}}
    if request.path.startswith("/v1/secret/metadata/") and (request.method == "LIST" or "list=true" in request.query):
        folder = request.path.removeprefix("/v1/secret/metadata/").strip("/") + "/"
        keys = sorted({k[len(folder):].split("/")[0] + ("/" if "/" in k[len(folder):] else "")
                       for k in KV if k.startswith(folder)})
        return (200, {"data": {"keys": keys}}) if keys else (404, {"errors": []})
    return 404, {"errors": []}


@pytest.fixture
def server():
    with rest_server(vault) as srv:
        yield srv


def fabric_file(tmp_path, server, auth: str = "{method: token}", secret: str = "smtp", extra: str = ""):
    path = tmp_path / "fabric.yaml"
    path.write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets: {{type: vault, address: "{server.url}", path: mailgem, auth: {auth}{extra}}}
connections:
  - {{name: reports, preset: gmail, username: reports@example.com, password: {{secret: "{secret}"}}}}
""")
    return path


def password(fabric, name="reports"):
    return fabric.transport(name, user="alice")._opener._password.get_secret_value()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, caplog):
    for var in ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_ADDR"):
        monkeypatch.delenv(var, raising=False)
    caplog.set_level(logging.DEBUG)


def no_value(caplog, *texts):
    for text in [caplog.text, *texts]:
        assert VALUE not in text and API_KEY not in text


def test_token_from_the_environment_reads_the_kv_v2_entry_once(tmp_path, server, monkeypatch, caplog):
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    fabric = load_fabric(fabric_file(tmp_path, server))
    store = fabric.store()
    fabric.with_store(store)
    assert password(fabric) == VALUE and password(fabric) == VALUE
    reads = [r for r in server.requests if r.path == "/v1/secret/data/mailgem/smtp"]
    assert len(reads) == 1 and reads[0].method == "GET" and reads[0].headers["x-vault-token"] == TOKEN
    no_value(caplog, repr(store), repr(fabric), str(fabric.secrets))


def test_a_fallback_chain_logs_in_and_reads_once(tmp_path, server, monkeypatch):
    monkeypatch.setenv("ROLE", ROLE_ID)
    monkeypatch.setenv("SECRET", SECRET_ID)
    path = fabric_file(tmp_path, server, "{method: approle, role_id_env: ROLE, secret_id_env: SECRET}")
    path.write_text(path.read_text().replace("password: {secret: \"smtp\"}}", "password: {secret: smtp}, fallback: backup}")
                    + "  - {name: backup, preset: gmail, username: backup@example.com, password: {secret: smtp}}\n")
    chain = load_fabric(path).transports("reports", user="alice")
    assert [t._opener._password.get_secret_value() for t in chain] == [VALUE, VALUE]
    assert [r.path for r in server.requests] == ["/v1/auth/approle/login", "/v1/secret/data/mailgem/smtp"]


def test_token_file_and_a_field_named_in_the_secret(tmp_path, server, caplog):
    (tmp_path / "vault-token").write_text(TOKEN + "\n")
    fabric = load_fabric(fabric_file(tmp_path, server, "{method: token, token_file: vault-token}", "smtp#api_key"))
    assert password(fabric) == API_KEY
    no_value(caplog)


def test_approle_from_variables_and_from_files(tmp_path, server, monkeypatch, caplog):
    monkeypatch.setenv("ROLE", ROLE_ID)
    monkeypatch.setenv("SECRET", SECRET_ID)
    fabric = load_fabric(fabric_file(tmp_path, server, "{method: approle, role_id_env: ROLE, secret_id_env: SECRET}"))
    assert password(fabric) == VALUE
    assert server.requests[0].path == "/v1/auth/approle/login"
    assert server.requests[-1].headers["x-vault-token"] == "s.approle"
    (tmp_path / "rid").write_text(ROLE_ID)
    (tmp_path / "sid").write_text("wrong")
    fabric = load_fabric(fabric_file(tmp_path, server, "{method: approle, role_id_file: rid, secret_id_file: sid}"))
    with pytest.raises(SecretStoreError, match="approle login refused") as err:
        password(fabric)
    assert "wrong" not in str(err.value)
    no_value(caplog)


def test_kubernetes_login_with_the_service_account_token(tmp_path, server, caplog):
    (tmp_path / "jwt").write_text(JWT)
    fabric = load_fabric(fabric_file(tmp_path, server, "{method: kubernetes, role: mailgem, jwt_file: jwt}"))
    assert password(fabric) == VALUE
    assert [r.path for r in server.requests][0] == "/v1/auth/kubernetes/login"
    fabric = load_fabric(fabric_file(tmp_path, server, "{method: kubernetes, role: other, jwt_file: jwt}"))
    with pytest.raises(SecretStoreError, match="kubernetes login refused"):
        password(fabric)
    no_value(caplog)


def test_errors_name_the_store_the_secret_and_what_to_check(tmp_path, server, monkeypatch, caplog):
    with pytest.raises(SecretStoreError, match="set the environment variable VAULT_TOKEN"):
        password(load_fabric(fabric_file(tmp_path, server)))
    monkeypatch.setenv("VAULT_TOKEN", "s.expired")
    with pytest.raises(SecretStoreError, match=r"vault secret store at .*permission denied for secret 'smtp'.*expired"):
        password(load_fabric(fabric_file(tmp_path, server)))
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    with pytest.raises(SecretNotFoundError, match=r"secret 'nope' \(secret/data/mailgem/nope\) not found"):
        password(load_fabric(fabric_file(tmp_path, server, secret="nope")))
    with pytest.raises(SecretStoreError, match="permission denied for secret 'locked'"):
        password(load_fabric(fabric_file(tmp_path, server, secret="locked")))
    with pytest.raises(SecretNotFoundError, match=r"has no field 'user' \(its fields: api_key, password\)") as err:
        password(load_fabric(fabric_file(tmp_path, server, secret="smtp#user")))
    no_value(caplog, str(err.value), repr(err.value))


def test_names_lists_entries_and_set_is_refused(tmp_path, server, monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    store = load_fabric(fabric_file(tmp_path, server)).store()
    assert store.names() == ["locked", "smtp", "teams/other"]
    assert any(r.path == "/v1/secret/metadata/mailgem" for r in server.requests)
    from pydantic import SecretStr
    with pytest.raises(SecretStoreError, match="read-only"):
        store.set("smtp", SecretStr("new"))


def test_an_inline_token_is_refused_and_a_missing_hvac_is_explained(tmp_path, server, monkeypatch):
    with pytest.raises(FabricConfigError, match="never written in the fabric file") as err:
        load_fabric(fabric_file(tmp_path, server, "{method: token, token: s.inline-VALUE}"))
    assert "s.inline-VALUE" not in str(err.value)
    fabric = load_fabric(fabric_file(tmp_path, server))
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(SecretStoreError, match=r"pip install 'mailgem\[vault\]'"):
        fabric.store()


def test_mailgem_secrets_list_and_set_on_the_command_line(tmp_path, server, monkeypatch, capsys):
    from mailgem.runner.cli import main
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    path = fabric_file(tmp_path, server)
    assert main(["secrets", "list", "--fabric", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["locked", "smtp", "teams/other"]
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("new-VALUE\n"))
    assert main(["secrets", "set", "smtp", "--fabric", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vault secret store is read-only" in err and "new-VALUE" not in err


def test_a_run_reads_each_secret_once_across_its_steps_and_a_pickled_fabric_keeps_it(tmp_path, server, monkeypatch):
    # The checks before Spark, the gem's transports and a ledger's password each ask the fabric
    # for its store: one store per fabric, so Vault is asked once (one read, no second login).
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    fabric = load_fabric(fabric_file(tmp_path, server))
    assert fabric.store() is fabric.store()
    assert password(fabric) == VALUE and password(fabric) == VALUE
    assert fabric.secret("smtp", user="alice").get_secret_value() == VALUE
    reads = [r for r in server.requests if r.path == "/v1/secret/data/mailgem/smtp"]
    assert len(reads) == 1
    # A fabric going to Spark workers pickles with what was read, without its lock or client.
    copy = pickle.loads(pickle.dumps(fabric))
    assert password(copy) == VALUE and len([r for r in server.requests if r.path == reads[0].path]) == 1
