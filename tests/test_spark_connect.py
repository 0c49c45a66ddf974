"""Spark Connect (Spark 4's client mode, as on Databricks serverless and shared clusters): every
mode sends the same messages as the pandas path. A Connect session cannot share a process with
the test run's classic SparkSession, so the Connect client runs in a subprocess, against a real
local Spark Connect server started in that subprocess on a free loopback port."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, fabric_for, normalised
from test_modes import GROUP, ROW, _fingerprint, _messages

from fault_server import FaultServer
from mailgem.gems.email import EmailGem

ROOT = Path(__file__).resolve().parents[1]

REPORT = {"connection": "reports", "to": "boss@example.com", "subject": "{{ row_count }} open tickets",
          "attachments": [{"file_name": "tickets.csv", "compression": "gzip"}]}

# The local Connect server is started here, as PySpark's remote("local[2]") would start it, but
# on a free loopback port: remote("local[...]") always binds (all interfaces) and dials port
# 15002, so two test runs on one machine collided there.
CONNECT_SCRIPT = """
import json, socket, sys, uuid, os
import pandas as pd
from pyspark import SparkConf, SparkContext
from pyspark.sql.connect.session import SparkSession as RemoteSparkSession
from mailgem.fabric import load_fabric
from mailgem.gems.email import EmailGem

fabric, props, frame = load_fabric(sys.argv[1]), json.loads(sys.argv[2]), pd.read_json(sys.argv[3])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
token = os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = str(uuid.uuid4())
conf = (SparkConf().setMaster("local[2]").set("spark.ui.enabled", "false")
        .set("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
        .set("spark.connect.grpc.binding.address", "127.0.0.1").set("spark.connect.grpc.binding.port", str(port))
        .set("spark.connect.authenticate.token", token))
server = SparkContext.getOrCreate(conf)
# What SparkSession.builder.remote("local[2]") returns once its server is up (it refuses a URL
# while a classic context exists in the process, even the one serving it).
os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
# (Host "localhost": the client sends a token over plain gRPC only to localhost.)
spark = RemoteSparkSession.builder.remote(f"sc://localhost:{port}/;token={token}").getOrCreate()
assert type(spark).__module__.startswith("pyspark.sql.connect"), type(spark)
report = EmailGem(props, fabric, user="alice", name="tickets").apply(spark, spark.createDataFrame(frame))
assert type(report).__module__.startswith("pyspark.sql.connect"), type(report)
print("REPORT " + report.toPandas().to_json(orient="records"))
spark.stop()
server.stop()
"""


def _connect_missing() -> str | None:
    missing = [m for m in ("grpc", "grpc_status", "google.rpc", "zstandard") if importlib.util.find_spec(m) is None]
    return f"the Spark Connect client needs {', '.join(missing)} (pip install 'pyspark[connect]')" if missing else None


@pytest.mark.skipif(_connect_missing() is not None, reason=_connect_missing() or "")
@pytest.mark.parametrize("props", [ROW, GROUP, REPORT], ids=["per_row", "per_group", "report"])
def test_spark_connect_sends_the_same_messages_as_pandas(tickets, props, tmp_path):
    results = []
    with FaultServer(security="starttls", users={"reports@example.com": PASSWORD}) as server:
        report = EmailGem(props, fabric_for(server), user=USER, name="tickets").apply(None, tickets)
        assert set(report["status"]) == {"sent"}
        results.append(_fingerprint(_messages(server, len(report))))
        raw = [sorted(normalised(m.data) for m in server.messages)]
    with FaultServer(security="starttls", users={"reports@example.com": PASSWORD}) as server:
        (tmp_path / "fabric.yaml").write_text(textwrap.dedent(f"""
            name: t
            teams: [{{name: t, members: [alice]}}]
            connections:
              - {{name: reports, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
                  username: reports@example.com, password: {{secret: pw}}, sender_name: Reports}}
        """))
        tickets.to_json(tmp_path / "tickets.json")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MAILGEM_SECRET_PW": PASSWORD, "PYSPARK_PYTHON": sys.executable}
        run = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT, str(tmp_path / "fabric.yaml"), json.dumps(props),
                              str(tmp_path / "tickets.json")], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        line = next(x for x in run.stdout.splitlines() if x.startswith("REPORT "))
        rows = json.loads(line.removeprefix("REPORT "))
        assert {r["status"] for r in rows} == {"sent"} and len(rows) == len(report)
        results.append(_fingerprint(_messages(server, len(rows))))
        raw.append(sorted(normalised(m.data) for m in server.messages))
    assert results[0] == results[1]
    assert raw[0] == raw[1]  # byte for byte, but for Date, Message-ID and boundaries


@pytest.mark.parametrize("conf, expected", [
    ({"spark.master": "local[2]"}, 2),
    ({"spark.master": "local"}, 1),
    ({"spark.master": "local[*]"}, os.cpu_count() or 1),
    ({"spark.master": "local[3, 2]"}, 3),  # local[N, maxFailures]
    ({"spark.master": "local-cluster[2, 4, 1024]"}, 8),
    ({"spark.master": "yarn", "spark.executor.instances": "5", "spark.executor.cores": "4"}, 20),
    ({"spark.master": "local[2]", "spark.default.parallelism": "7"}, 7),
    ({"spark.master": "sc://cluster.example.com"}, 2),  # nothing to go by: 2
])
def test_parallelism_on_spark_connect_comes_from_configuration(conf, expected):
    from mailgem.gems.spark_info import parallelism_from_conf

    assert parallelism_from_conf(conf.get) == expected


# A Spark Connect server for `mailgem run --remote`: up on a free loopback port with a token,
# READY on stdout, serving until its stdin closes.
SERVER_SCRIPT = """
import os, socket, sys
from pyspark import SparkConf, SparkContext
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
token = os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"]
conf = (SparkConf().setMaster("local[2]").set("spark.ui.enabled", "false")
        .set("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
        .set("spark.connect.grpc.binding.address", "127.0.0.1").set("spark.connect.grpc.binding.port", str(port))
        .set("spark.connect.authenticate.token", token))
server = SparkContext.getOrCreate(conf)
print(f"READY {port}", flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.mark.skipif(_connect_missing() is not None, reason=_connect_missing() or "")
def test_mailgem_run_remote_reads_the_job_through_spark_connect(tmp_path):
    import uuid

    token = str(uuid.uuid4())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYSPARK_PYTHON": sys.executable}
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": token})
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        (tmp_path / "t.csv").write_text("city,sales\nOslo,10\nBergen,5\n")
        (tmp_path / "job.yaml").write_text('name: connect\nsource: {path: t.csv}\ntransform: SELECT * FROM source '
                                           'WHERE sales > 6\nemail: {connection: local, to: boss@example.com, '
                                           'subject: "{{ row_count }} via {{ params.via }}"}\n')
        url = f"sc://localhost:{port}/;token={token}"
        run = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", "job.yaml", "--remote", url,
                              "--param", "via=connect", "--json"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout)["counts"] == {"sent": 1}
        [eml] = (tmp_path / "outbox").glob("*.eml")
        assert "Subject: 1 via connect" in eml.read_text()
        assert token not in run.stdout + run.stderr  # the URL's token is never repeated
        # $SPARK_REMOTE as PySpark reads it, and --conf set on the Connect session (its zone, read back).
        (tmp_path / "zone.yaml").write_text('name: zone\nsource: {path: t.csv}\ntransform: SELECT current_timezone() AS tz '
                                            'FROM source LIMIT 1\nemail: {connection: local, to: boss@example.com, '
                                            'subject: "zone {{ rows[0].tz }}"}\n')
        zoned = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", "zone.yaml",
                                "--conf", "spark.sql.session.timeZone=America/New_York", "-v"], cwd=tmp_path,
                               env={**env, "SPARK_REMOTE": url}, capture_output=True, text=True, timeout=300)
        assert zoned.returncode == 0, zoned.stderr[-3000:]
        [zone] = [p.read_text() for p in (tmp_path / "outbox").glob("*.eml") if "Subject: zone" in p.read_text()]
        assert "Subject: zone America/New_York" in zone
        assert token not in zoned.stdout + zoned.stderr
        bad = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", "job.yaml", "--remote",
                              "https://x.example.com", "--param", "via=x"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "a Spark Connect URL starts with sc://" in bad.stderr
    finally:
        server.communicate(input="", timeout=120)
