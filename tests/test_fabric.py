"""Fabric YAML, secret stores, access control, and the `mailgem secrets` commands."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat

import pytest
from conftest import LOGIN, PASSWORD, USER
from pydantic import SecretStr

from mailgem.fabric import (
    AccessDeniedError,
    DirectorySecretStore,
    EncryptedFileSecretStore,
    EnvSecretStore,
    FabricConfigError,
    SecretNotFoundError,
    SecretStoreError,
    generate_key,
    load_fabric,
)
from mailgem.runner.cli import main

FABRIC = """
name: analytics
teams:
  - name: data-eng
    members: [alice, bob]
secrets:
  type: encrypted_file
  path: secrets.json
  key_file: secrets.key
connections:
  - name: reports
    host: 127.0.0.1
    port: ${SMTP_PORT}
    security: starttls
    ca_bundle: ${CA_PEM}
    username: reports@example.com
    password: {secret: smtp-password}
    sender_name: ${SENDER_NAME:-Analytics Reports}
    timeout_s: 10
  - name: gmail
    preset: gmail
    username: team@example.com
    password: {secret: gmail-app-password}
  - name: sendgrid
    url: smtp://apikey@smtp.sendgrid.net:587/?timeout=20
    sender_address: alerts@example.com
    password: {secret: sendgrid-key}
"""


@pytest.fixture
def fabric_file(tmp_path, starttls_server, monkeypatch):
    monkeypatch.setenv("SMTP_PORT", str(starttls_server.port))
    monkeypatch.setenv("CA_PEM", str(starttls_server.ca_pem))
    monkeypatch.delenv("MAILGEM_SECRETS_KEY", raising=False)
    (tmp_path / "secrets.key").write_text(generate_key())
    path = tmp_path / "fabric.yaml"
    path.write_text(FABRIC)
    EncryptedFileSecretStore(tmp_path / "secrets.json", key_file=tmp_path / "secrets.key").set(
        "smtp-password", SecretStr(PASSWORD))
    return path


def test_load_fabric_interpolates_env_and_resolves_connections(fabric_file, starttls_server):
    fab = load_fabric(fabric_file)
    reports = fab.connection("reports")
    assert reports.port == starttls_server.port and reports.sender_name == "Analytics Reports"
    assert fab.connection("gmail").host == "smtp.gmail.com"
    assert fab.connection("sendgrid").timeout_s == 20 and fab.connection("sendgrid").sender == "alerts@example.com"
    report = asyncio.run(fab.transport("reports", USER).check())
    assert report.ok and report.authenticated


def test_everyone_in_the_team_uses_the_same_stored_credentials(fabric_file, starttls_server):
    fab = load_fabric(fabric_file)
    for user in ("alice", "bob"):
        assert asyncio.run(fab.transport("reports", user).check()).ok
    assert [a.login for a in starttls_server.auth_attempts] == [LOGIN, LOGIN]


def test_non_member_is_denied_before_any_secret_or_connection(fabric_file, starttls_server):
    fab = load_fabric(fabric_file)
    with pytest.raises(AccessDeniedError, match="'mallory' may not use fabric 'analytics'.*data-eng"):
        fab.transport("reports", "mallory")
    assert starttls_server.auth_attempts == []


def test_unknown_connection_lists_known_ones(fabric_file):
    with pytest.raises(FabricConfigError, match="no connection 'nope'.*reports, gmail, sendgrid"):
        load_fabric(fabric_file).transport("nope", USER)


def test_missing_env_var_names_the_yaml_path(fabric_file, monkeypatch):
    monkeypatch.delenv("SMTP_PORT")
    with pytest.raises(FabricConfigError, match=r"connections\[0\]\.port: environment variable SMTP_PORT is not set"):
        load_fabric(fabric_file)


@pytest.mark.parametrize("replace, expected", [
    (("port: ${SMTP_PORT}", "port: seventy"), r"connections\[0\]\.port: Input should be a valid integer"),
    (("timeout_s: 10", "timeout_s: 10\n    colour: blue"), r"connections\[0\]\.colour: Extra inputs"),
    (("password: {secret: gmail-app-password}", "password: hunter2"), r"connections\[1\]\.password: must be a secret reference"),
    (("members: [alice, bob]", "members: alice"), r"teams\[0\]\.members: Input should be a valid list"),
    (("type: encrypted_file", "type: keychain"), r"secrets: Input tag 'keychain'"),
    (("  - name: gmail", "  - name: reports"), "connection names must be unique; repeated: reports"),
])
def test_validation_errors_name_file_and_yaml_path(fabric_file, replace, expected):
    fabric_file.write_text(FABRIC.replace(*replace))
    with pytest.raises(FabricConfigError, match=expected) as info:
        load_fabric(fabric_file)
    assert str(fabric_file) in str(info.value) and "hunter2" not in str(info.value)


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("name: x\nteams: [\n")
    with pytest.raises(FabricConfigError, match="line 3"):
        load_fabric(path)


def test_env_store(monkeypatch):
    store = EnvSecretStore()
    monkeypatch.setenv("MAILGEM_SECRET_SMTP_PASSWORD", "from-env")
    assert store.get("smtp-password").get_secret_value() == "from-env"
    assert "smtp_password" in store.names()
    with pytest.raises(SecretNotFoundError, match="MAILGEM_SECRET_OTHER"):
        store.get("other")


def test_directory_store(tmp_path):
    (tmp_path / "smtp-password").write_text("from-file\n", encoding="utf-8")
    store = DirectorySecretStore(tmp_path)
    assert store.get("smtp-password").get_secret_value() == "from-file"
    assert store.names() == ["smtp-password"]
    with pytest.raises(SecretStoreError, match="outside"):
        store.get("../etc/passwd")
    # Writable: a whole new file of mode 0600 renamed into place; nested names make folders.
    store.set("smtp-password", SecretStr(" new value "))
    store.set("team/api-key", SecretStr("k-123"))
    assert store.get("smtp-password").get_secret_value() == "new value"
    assert stat.S_IMODE(os.stat(tmp_path / "smtp-password").st_mode) == 0o600
    assert store.names() == ["smtp-password", "team/api-key"]
    with pytest.raises(SecretStoreError, match="empty"):
        store.set("blank", SecretStr("  "))
    store.delete("team/api-key")
    with pytest.raises(SecretNotFoundError):
        store.delete("team/api-key")
    assert store.names() == ["smtp-password"] and not list(tmp_path.glob(".mailgem-*"))
    # A directory the system will not write to (here: a file in its place; a read-only mount
    # refuses the same way): said with the reason, never the value.
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(SecretStoreError, match="cannot write secret 'x'") as refused:
        DirectorySecretStore(tmp_path / "not-a-dir").set("x", SecretStr("value-9f3"))
    assert "value-9f3" not in str(refused.value)


def test_encrypted_store_round_trip_and_file_never_holds_plaintext(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILGEM_SECRETS_KEY", generate_key())
    store = EncryptedFileSecretStore(tmp_path / "s.json")
    store.set("a", SecretStr("value-one-plaintext"))
    store.set("b", SecretStr("value-two-plaintext"))
    assert store.get("a").get_secret_value() == "value-one-plaintext"
    assert store.names() == ["a", "b"]
    raw = (tmp_path / "s.json").read_text()
    assert "plaintext" not in raw and json.loads(raw)["format"] == "mailgem-secrets/1"
    assert stat.S_IMODE(os.stat(tmp_path / "s.json").st_mode) == 0o600
    # AES-GCM nonces are fresh: the same value twice gives two ciphertexts
    store.set("c", SecretStr("value-one-plaintext"))
    doc = json.loads((tmp_path / "s.json").read_text())["secrets"]
    assert doc["a"]["ciphertext"] != doc["c"]["ciphertext"]


def test_encrypted_store_wrong_key_tamper_and_swapped_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILGEM_SECRETS_KEY", generate_key())
    path = tmp_path / "s.json"
    store = EncryptedFileSecretStore(path)
    store.set("a", SecretStr("alpha"))
    store.set("b", SecretStr("bravo"))
    doc = json.loads(path.read_text())
    doc["secrets"]["a"], doc["secrets"]["b"] = doc["secrets"]["b"], doc["secrets"]["a"]
    path.write_text(json.dumps(doc))
    with pytest.raises(SecretStoreError, match="could not decrypt secret 'a'"):
        store.get("a")  # bound to its name by the associated data
    monkeypatch.setenv("MAILGEM_SECRETS_KEY", generate_key())
    with pytest.raises(SecretStoreError, match="not the one it was stored with"):
        store.get("b")
    monkeypatch.setenv("MAILGEM_SECRETS_KEY", "too-short")
    with pytest.raises(SecretStoreError, match="256-bit"):
        store.get("b")
    monkeypatch.delenv("MAILGEM_SECRETS_KEY")
    with pytest.raises(SecretStoreError, match="mailgem secrets keygen"):
        store.get("b")


def test_cli_secrets_set_reads_stdin_and_list_shows_names_only(fabric_file, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("new-gmail-app-pw\n"))
    assert main(["secrets", "set", "gmail-app-password", "--fabric", str(fabric_file)]) == 0
    assert main(["secrets", "list", "--fabric", str(fabric_file)]) == 0
    out = capsys.readouterr().out
    assert "gmail-app-password" in out and "smtp-password" in out
    assert "new-gmail-app-pw" not in out and PASSWORD not in out
    fab = load_fabric(fabric_file)
    assert fab.store().get("gmail-app-password").get_secret_value() == "new-gmail-app-pw"


def test_cli_secrets_set_has_no_value_argument(fabric_file, capsys):
    with pytest.raises(SystemExit):
        main(["secrets", "set", "x", "some-value", "--fabric", str(fabric_file)])


def test_cli_keygen_writes_private_key_file(tmp_path, capsys):
    key_file = tmp_path / "k"
    assert main(["secrets", "keygen", "--key-file", str(key_file)]) == 0
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.read_text().strip() not in capsys.readouterr().out


def test_cli_connection_test_prints_diagnostics(fabric_file, capsys, monkeypatch):
    monkeypatch.setenv("MAILGEM_USER", USER)
    assert main(["connection", "test", "reports", "--fabric", str(fabric_file)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "TLSv1" in out and "AUTH" in out.upper() and "size limit" in out
    assert main(["connection", "test", "reports", "--fabric", str(fabric_file), "--user", "mallory"]) == 2
    assert "access denied" in capsys.readouterr().err


def test_fallback_chain_and_loops(fabric_file):
    text = FABRIC.replace("    timeout_s: 10\n", "    timeout_s: 10\n    fallback: gmail\n", 1)
    fabric_file.write_text(text)
    fab = load_fabric(fabric_file)
    fab.store().set("gmail-app-password", SecretStr("x"))
    assert [t.connection.name for t in fab.transports("reports", USER)] == ["reports", "gmail"]
    fabric_file.write_text(text.replace("    password: {secret: gmail-app-password}\n",
                                        "    password: {secret: gmail-app-password}\n    fallback: reports\n"))
    with pytest.raises(FabricConfigError, match="loop"):
        load_fabric(fabric_file).transports("reports", USER)


def test_a_fabric_key_file_wins_over_the_environment_variable(fabric_file, monkeypatch, caplog):
    monkeypatch.setenv("MAILGEM_SECRETS_KEY", generate_key())  # someone else's key in the environment
    fab = load_fabric(fabric_file)
    assert fab.store().get("smtp-password").get_secret_value() == PASSWORD
    assert "MAILGEM_SECRETS_KEY is set but the secret store" in caplog.text and "key file" in caplog.text


def test_key_env_and_key_file_together_are_refused(fabric_file):
    fabric_file.write_text(FABRIC.replace("  key_file: secrets.key\n", "  key_file: secrets.key\n  key_env: OTHER_KEY\n"))
    with pytest.raises(FabricConfigError, match="fabric.yaml: secrets: give key_env .* or key_file, not both"):
        load_fabric(fabric_file)


def test_a_wrong_key_is_named_and_secrets_set_refuses_it(fabric_file, monkeypatch, capsys):
    key_file = fabric_file.parent / "secrets.key"
    store_file = fabric_file.parent / "secrets.json"
    before = store_file.read_bytes()
    key_file.write_text(generate_key())  # not the key the store was sealed with
    with pytest.raises(SecretStoreError, match=f"with the key from key file {key_file}: the key is not the one"):
        load_fabric(fabric_file).store().get("smtp-password")
    monkeypatch.setattr("sys.stdin", io.StringIO("another-secret\n"))
    assert main(["secrets", "set", "gmail-app-password", "--fabric", str(fabric_file)]) == 2
    err = capsys.readouterr().err
    assert f"the key from key file {key_file} does not open the secrets already in" in err
    assert "'smtp-password'" in err and "Nothing was written" in err and "another-secret" not in err
    assert store_file.read_bytes() == before


def test_a_missing_secret_says_how_to_add_it_to_this_fabric(fabric_file):
    fab = load_fabric(fabric_file)
    with pytest.raises(SecretNotFoundError, match=f"`mailgem secrets set gmail-app-password --fabric {fabric_file}`"):
        fab.transport("gmail", USER)


def test_mailgem_fabric_is_the_default_fabric(fabric_file, monkeypatch, capsys):
    monkeypatch.setenv("MAILGEM_FABRIC", str(fabric_file))
    assert main(["secrets", "list"]) == 0 and "smtp-password" in capsys.readouterr().out
    monkeypatch.delenv("MAILGEM_FABRIC")
    assert main(["secrets", "list"]) == 2
    assert "pass --fabric FABRIC.yaml or set MAILGEM_FABRIC" in capsys.readouterr().err


def test_local_is_reserved_for_the_embedded_server(fabric_file):
    fabric_file.write_text(FABRIC.replace("  - name: reports\n", "  - name: local\n"))
    with pytest.raises(FabricConfigError, match=r"connections\[0\].name: 'local' is reserved"):
        load_fabric(fabric_file)
