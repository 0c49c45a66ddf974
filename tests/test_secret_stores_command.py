"""The `command` secret store, with real small scripts: what they print, how they fail, and that
a value never reaches an error message or the log."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from mailgem.fabric import SecretNotFoundError, SecretStoreError, load_fabric
from mailgem.fabric.secrets import CommandSecretStore

VALUE = "  s3cr et with spaces  "  # kept exactly: spaces around and inside belong to it


def script(tmp_path: Path, name: str, body: str) -> str:
    """An executable Python script ``name`` in ``tmp_path`` (the test's interpreter, no shell)."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def vault(tmp_path) -> str:
    """A stand-in for `vault kv get -field=password secret/NAME`: knows `smtp` (and counts calls)."""
    return script(tmp_path, "vault", f"""
with open({str(tmp_path / 'calls')!r}, 'a') as f: f.write(sys.argv[-1] + '\\n')
if sys.argv[-1] == 'secret/smtp':
    sys.stdout.write({VALUE!r} + '\\n')
else:
    sys.stderr.write('No value found at ' + sys.argv[-1] + '\\nsecond line\\n')
    sys.exit(3)
""")


def test_the_name_in_argv_reads_stdout_with_one_newline_removed(vault, tmp_path):
    store = CommandSecretStore([vault, "kv", "get", "-field=password", "secret/{name}"])
    assert store.get("smtp").get_secret_value() == VALUE
    assert store.get("smtp").get_secret_value() == VALUE
    # Read once per store: the second get did not run the command again.
    assert (tmp_path / "calls").read_text().splitlines() == ["secret/smtp"]
    assert VALUE not in repr(store)


def test_the_name_in_the_environment(tmp_path):
    cmd = script(tmp_path, "pass-env", "sys.stdout.write('value-of-' + os.environ['SECRET_NAME'] + '\\n\\n')")
    store = CommandSecretStore([cmd], name_env="SECRET_NAME")
    # Only one trailing newline is the command's line end; the other belongs to the value.
    assert store.get("smtp/reports").get_secret_value() == "value-of-smtp/reports\n"


def test_a_non_zero_exit_quotes_the_first_stderr_line_never_stdout(tmp_path, caplog):
    cmd = script(tmp_path, "leaky", f"print({VALUE!r}); sys.stderr.write('permission denied for ' + {VALUE!r} + "
                                    "'\\n'); sys.exit(3)")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SecretStoreError) as info:
        CommandSecretStore([cmd, "{name}"]).get("smtp")
    message = str(info.value)
    assert "command secret store" in message and "'smtp'" in message and "exit code 3" in message
    assert re.search(r"permission denied for +\*\*\*: check", message)
    assert VALUE.strip() not in message and VALUE.strip() not in caplog.text


def test_a_missing_secret_names_the_store_and_the_secret(vault):
    with pytest.raises(SecretStoreError, match=r"command secret store: secret 'nope'.*exit code 3: "
                                               r"No value found at secret/nope: check"):
        CommandSecretStore([vault, "secret/{name}"]).get("nope")


def test_a_timeout_is_bounded_and_kills_the_command(tmp_path):
    cmd = script(tmp_path, "slow", "time.sleep(60); print('late')")
    started = time.monotonic()
    with pytest.raises(SecretStoreError, match=r"secret 'smtp'.*no answer within 0.5 s \(timeout_s\)"):
        CommandSecretStore([cmd, "{name}"], timeout_s=0.5).get("smtp")
    assert time.monotonic() - started < 10


def test_a_timeout_kills_the_commands_children_too(tmp_path):
    # A wrapper whose child keeps the pipe open: without killing the group, reading would wait 60 s.
    cmd = script(tmp_path, "wrapper", "import subprocess; subprocess.run([sys.executable, '-c', "
                                      "'import time; time.sleep(60)'])")
    started = time.monotonic()
    with pytest.raises(SecretStoreError, match="no answer within"):
        CommandSecretStore([cmd, "{name}"], timeout_s=0.5).get("smtp")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("output", ["", "\n", "   \n"])
def test_empty_output_is_an_error(tmp_path, output):
    cmd = script(tmp_path, "empty", f"sys.stdout.write({output!r})")
    with pytest.raises(SecretNotFoundError, match=r"secret 'smtp'.*printed nothing: check that the secret exists"):
        CommandSecretStore([cmd, "{name}"]).get("smtp")


def test_a_command_not_found_or_not_executable(tmp_path):
    with pytest.raises(SecretStoreError, match=r"secret 'smtp'.*command 'no-such-vault-cli' not found: install it"):
        CommandSecretStore(["no-such-vault-cli", "{name}"]).get("smtp")
    plain = tmp_path / "plain"
    plain.write_text("print(1)")
    with pytest.raises(SecretStoreError, match="is not executable"):
        CommandSecretStore([str(plain), "{name}"]).get("smtp")


def test_names_with_list_argv_else_the_store_cannot_list(tmp_path):
    lister = script(tmp_path, "list", "print('smtp\\n\\nldap'); print('  ')")
    assert CommandSecretStore(["x", "{name}"], list_argv=[lister]).names() == ["ldap", "smtp"]
    with pytest.raises(SecretStoreError, match="cannot list its secrets: give it list_argv"):
        CommandSecretStore(["x", "{name}"]).names()


def test_the_store_is_read_only(vault):
    with pytest.raises(SecretStoreError, match="read-only"):
        CommandSecretStore([vault, "{name}"]).set("smtp", SecretStr("x"))


def test_a_fabric_reads_its_password_through_the_command(vault, tmp_path, caplog):
    (tmp_path / "fabric.yaml").write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets:
  type: command
  argv: [{vault}, kv, get, -field=password, "secret/{{name}}"]
  timeout_s: 5
connections:
  - name: reports
    host: smtp.example.com
    port: 587
    username: reports@example.com
    password: {{secret: smtp}}
  - name: other
    host: smtp.example.com
    port: 587
    username: reports@example.com
    password: {{secret: smtp}}
    fallback: reports
""")
    caplog.set_level(logging.DEBUG)
    fabric = load_fabric(tmp_path / "fabric.yaml")
    chain = fabric.transports("other", user="alice")
    assert [t.connection.name for t in chain] == ["other", "reports"]
    assert chain[0]._opener._password.get_secret_value() == VALUE
    # The fallback's password is the same secret: one run of the command for the whole chain.
    assert (tmp_path / "calls").read_text().splitlines() == ["secret/smtp"]
    assert VALUE not in repr(chain[0]) and VALUE not in caplog.text


def test_the_fabric_refuses_a_command_that_never_gets_the_name(tmp_path):
    from mailgem.fabric import FabricConfigError

    (tmp_path / "fabric.yaml").write_text("""
name: analytics
teams: [{name: data-eng, members: [alice]}]
secrets: {type: command, argv: [pass, show, smtp]}
""")
    with pytest.raises(FabricConfigError, match="put {name} in an argv item, or set name_env"):
        load_fabric(tmp_path / "fabric.yaml")


def test_mailgem_secrets_list_through_the_command(tmp_path, capsys):
    from mailgem.runner.cli import main

    lister = script(tmp_path, "list", "print('smtp')")
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets: {{type: command, argv: [pass, show, "{{name}}"], list_argv: [{lister}]}}
""")
    assert main(["secrets", "list", "--fabric", str(fabric)]) == 0
    assert capsys.readouterr().out == "smtp\n"
    fabric.write_text(fabric.read_text().replace(f", list_argv: [{lister}]", ""))
    assert main(["secrets", "list", "--fabric", str(fabric)]) == 2
    assert "cannot list its secrets: give it list_argv" in capsys.readouterr().err
