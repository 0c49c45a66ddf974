"""The `aws_secrets_manager` secret store against moto's server mode: a real HTTP endpoint of the
AWS API on loopback, started by these tests, with secrets created through boto3."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgem.connections.errors import MailgemError
from mailgem.fabric import SecretNotFoundError, SecretStoreError, load_fabric

HAVE_AWS = all(importlib.util.find_spec(m) is not None for m in ("boto3", "moto", "flask"))
needs_moto = pytest.mark.skipif(not HAVE_AWS, reason="boto3 and moto[server] are not installed: "
                                                     "pip install 'mailgem[test]' (or 'mailgem[aws]' 'moto[server]')")

PASSWORD = "pa ss#w0rd {not json"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path) -> Any:
    """A boto3 client on the moto server, with dummy credentials and no profile of the machine's."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10).close()
    import boto3

    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_url)


def fabric_yaml(tmp_path: Path, moto_url: str, prefix: str = "", secret: str = "smtp/reports#password") -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(f"""
name: analytics
teams: [{{name: data-eng, members: [alice]}}]
secrets:
  type: aws_secrets_manager
  region: {REGION}
  prefix: "{prefix}"
  endpoint_url: {moto_url}
connections:
  - name: reports
    host: smtp.example.com
    port: 587
    username: reports@example.com
    password: {{secret: "{secret}"}}
""")
    return path


@needs_moto
def test_a_plain_string_and_a_json_key(aws, moto_url, tmp_path):
    aws.create_secret(Name="ldap", SecretString=PASSWORD)
    aws.create_secret(Name="smtp/reports", SecretString=json.dumps({"username": "reports", "password": PASSWORD,
                                                                   "port": 587, "nested": {"a": 1}}))
    store = load_fabric(fabric_yaml(tmp_path, moto_url)).store()
    assert store.get("ldap").get_secret_value() == PASSWORD
    assert store.get("smtp/reports#password").get_secret_value() == PASSWORD
    assert store.get("smtp/reports#port").get_secret_value() == "587"
    with pytest.raises(SecretNotFoundError, match=r"'smtp/reports'.* has no JSON key 'pw' \(its keys: nested, "
                                                  r"password, port, username\)"):
        store.get("smtp/reports#pw")
    with pytest.raises(SecretStoreError, match="JSON key 'nested' holds a dict, not a string"):
        store.get("smtp/reports#nested")
    with pytest.raises(SecretStoreError, match="its SecretString is not a JSON object") as info:
        store.get("ldap#password")
    assert PASSWORD not in str(info.value)
    assert store.names() == ["ldap", "smtp/reports"]


@needs_moto
def test_a_prefix_is_prepended_and_stripped_from_names(aws, moto_url, tmp_path):
    aws.create_secret(Name="mailgem/smtp", SecretString=PASSWORD)
    aws.create_secret(Name="mailgem/ldap", SecretString="other")
    aws.create_secret(Name="other-team/smtp", SecretString="not ours")
    aws.create_secret(Name="x-mailgem/y", SecretString="not ours either")
    store = load_fabric(fabric_yaml(tmp_path, moto_url, prefix="mailgem/")).store()
    assert store.get("smtp").get_secret_value() == PASSWORD
    assert store.names() == ["ldap", "smtp"]


@needs_moto
def test_a_missing_secret_says_what_to_check(aws, moto_url, tmp_path):
    store = load_fabric(fabric_yaml(tmp_path, moto_url, prefix="mailgem/")).store()
    with pytest.raises(SecretNotFoundError, match=r"aws_secrets_manager secret store \(region eu-west-1\): secret "
                                                  r"'nope' \(AWS name 'mailgem/nope'\): not found: check the name, "
                                                  r"the store's prefix and its region"):
        store.get("nope")


@needs_moto
def test_each_secret_is_fetched_once_per_store(aws, moto_url, tmp_path):
    aws.create_secret(Name="smtp/reports", SecretString=json.dumps({"username": "u", "password": PASSWORD}))
    store = load_fabric(fabric_yaml(tmp_path, moto_url)).store()
    assert store.get("smtp/reports#password").get_secret_value() == PASSWORD
    # Changed in AWS after the run read it: the run keeps what it read at its start, and the
    # other key of the same secret needs no second call.
    aws.put_secret_value(SecretId="smtp/reports", SecretString=json.dumps({"username": "v", "password": "new"}))
    assert store.get("smtp/reports#password").get_secret_value() == PASSWORD
    assert store.get("smtp/reports#username").get_secret_value() == "u"
    # Picklable once used (a fabric may go with a gem to Spark workers), without its boto3 client.
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get("smtp/reports#password").get_secret_value() == PASSWORD
    with pytest.raises(SecretNotFoundError):  # a new call, through the copy's own client
        copy.get("not-there")


@needs_moto
def test_no_credentials_says_where_they_come_from(aws, moto_url, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = load_fabric(fabric_yaml(tmp_path, moto_url)).store()
    with pytest.raises(SecretStoreError, match="secret 'smtp'.*no AWS credentials found: set AWS_PROFILE"):
        store.get("smtp")


@needs_moto
def test_a_fabric_connection_takes_its_password_from_secrets_manager(aws, moto_url, tmp_path, caplog):
    aws.create_secret(Name="team/smtp/reports", SecretString=json.dumps({"password": PASSWORD}))
    caplog.set_level(logging.DEBUG)
    fabric = load_fabric(fabric_yaml(tmp_path, moto_url, prefix="team/"))
    transport = fabric.transport("reports", user="alice")
    assert transport._opener._password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(transport) and PASSWORD not in repr(fabric) and PASSWORD not in repr(fabric.store())
    assert PASSWORD not in caplog.text
    # A connection naming a key the secret lacks: the error lists key names, never the value.
    broken = load_fabric(fabric_yaml(tmp_path, moto_url, prefix="team/", secret="smtp/reports#passwd"))
    with pytest.raises(SecretNotFoundError) as info:
        broken.transport("reports", user="alice")
    assert "has no JSON key 'passwd' (its keys: password)" in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in caplog.text


@pytest.fixture(scope="module")
def moto_with_iam() -> Iterator[str]:
    """A moto server in its own process that checks IAM after the first 4 requests (moto reads
    INITIAL_NO_AUTH_ACTION_COUNT when it starts, so not in this process' server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                               "-p", str(port)], env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@needs_moto
def test_unknown_credentials_and_a_missing_permission(aws, moto_with_iam, tmp_path, monkeypatch):
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=moto_with_iam)

    # The 4 requests moto lets through before it checks IAM: a secret, and a user who may only list.
    client("secretsmanager").create_secret(Name="smtp", SecretString=PASSWORD)
    client("iam").create_user(UserName="reader")
    key = client("iam").create_access_key(UserName="reader")["AccessKey"]
    client("iam").put_user_policy(UserName="reader", PolicyName="list-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:ListSecrets",
                                                 "Resource": "*"}]}))
    fabric = fabric_yaml(tmp_path, moto_with_iam, secret="smtp")
    with pytest.raises(SecretStoreError, match=r"secret 'smtp'.*credentials are expired or not valid: refresh them"):
        load_fabric(fabric).transport("reports", user="alice")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    with pytest.raises(SecretStoreError, match=r"secret 'smtp'.*permission denied: check that the IAM policy .*"
                                               r"allows secretsmanager:GetSecretValue") as info:
        load_fabric(fabric).transport("reports", user="alice")
    assert PASSWORD not in str(info.value)
    assert load_fabric(fabric).store().names() == ["smtp"]  # listing is allowed


def test_without_boto3_the_fabric_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` meets where it is not installed
    fabric = load_fabric(fabric_yaml(tmp_path, "http://127.0.0.1:9"))
    with pytest.raises(MailgemError, match=r"needs boto3: pip install 'mailgem\[aws\]'"):
        fabric.store()


def test_other_stores_refuse_a_json_key(tmp_path, monkeypatch):
    from mailgem.fabric import EnvSecretStore

    with pytest.raises(SecretStoreError, match="invalid secret name 'smtp#password'"):
        EnvSecretStore().get("smtp#password")
