"""A secret that is empty or only whitespace is refused by the stores that can be written
(issue 21 §6): `mailgem secrets set` says so and how to give the value, stores nothing, and a
value that merely has spaces in or around it is stored exactly as given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USER
from pydantic import SecretStr

from mailgem.fabric import MemorySecretStore, SecretStoreError, load_fabric

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, input=stdin, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


@pytest.fixture
def fabric(tmp_path: Path) -> Path:
    """A fabric with an encrypted file store and its new key."""
    assert _cli("secrets", "keygen", "--key-file", "k", cwd=tmp_path).returncode == 0
    (tmp_path / "fabric.yaml").write_text(f"name: f\nteams: [{{name: t, members: [{USER}]}}]\n"
                                          "secrets: {type: encrypted_file, path: s.json, key_file: k}\n")
    return tmp_path / "fabric.yaml"


@pytest.mark.parametrize("blank", ["   \n", "\t \t\n", " \u00a0\n"], ids=["spaces", "tabs", "no-break-space"])
def test_a_blank_secret_is_refused_and_nothing_is_stored(fabric: Path, blank: str):
    done = _cli("secrets", "set", "pw", "--fabric", "fabric.yaml", cwd=fabric.parent, stdin=blank)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "the value given for secret 'pw' is empty or only whitespace, so nothing was stored" in done.stderr
    assert "pipe the value on stdin of `mailgem secrets set pw --fabric" in done.stderr
    assert "or type it at its prompt" in done.stderr
    listed = _cli("secrets", "list", "--fabric", "fabric.yaml", cwd=fabric.parent)
    assert listed.returncode == 0 and "pw" not in listed.stdout.split(), listed
    assert not (fabric.parent / "s.json").exists()


def test_a_value_with_spaces_in_and_around_it_is_stored_exactly(fabric: Path):
    value = "  pass word with  spaces \t"
    done = _cli("secrets", "set", "pw", "--fabric", "fabric.yaml", cwd=fabric.parent, stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout + done.stderr
    assert load_fabric(fabric).store().get("pw").get_secret_value() == value
    listed = _cli("secrets", "list", "--fabric", "fabric.yaml", cwd=fabric.parent)
    assert listed.stdout.split() == ["pw"]


def test_a_blank_secret_keeps_the_value_stored_before(fabric: Path):
    """Setting a blank value over an existing secret leaves the old one in place."""
    assert _cli("secrets", "set", "pw", "--fabric", "fabric.yaml", cwd=fabric.parent, stdin="hunter2\n").returncode == 0
    assert _cli("secrets", "set", "pw", "--fabric", "fabric.yaml", cwd=fabric.parent, stdin=" \n").returncode == 2
    assert load_fabric(fabric).store().get("pw").get_secret_value() == "hunter2"


def test_the_in_memory_store_refuses_a_blank_value_too():
    store = MemorySecretStore()
    with pytest.raises(SecretStoreError, match="'pw' is empty or only whitespace, so nothing was stored"):
        store.set("pw", SecretStr(" \r\n "))
    with pytest.raises(SecretStoreError, match="empty or only whitespace"):
        store.set("pw", SecretStr(""))
    assert store.names() == []
    store.set("pw", SecretStr(" x "))
    assert store.get("pw").get_secret_value() == " x "
