"""Gentle with servers: one AUTH attempt per run on a bad credential, QUIT before closing, a
refused sender said as such (and checked by `mailgem connection test`), a security mode that
does not match the port found once and quickly, SIZE counted as the server counts it, and
headers that would redirect replies or bounces reserved."""

from __future__ import annotations

import asyncio
import socket

import pandas as pd
import pytest
from conftest import LOGIN, PASSWORD, PER_ROW, USER, connection_for, fabric_for
from pydantic import SecretStr

from mailgem.connections import (
    MessageTooLargeError,
    SecurityModeMismatchError,
    SmtpConnection,
    SmtpTransport,
)
from mailgem.connections.delivery import Deliverer
from fault_server import FaultServer
from mailgem.connections.session import TRACE_HEADROOM_BYTES, wire_size
from mailgem.fabric import Fabric, MemorySecretStore, Team
from mailgem.runner.cli import main
from mailgem.gems.email import EmailGem, validate

# Both transaction paths: with PIPELINING (RFC 2920) and without.
PIPELINING_MODES = (True, False)

FAST = {"retry_initial_s": 0.01, "retry_max_s": 0.05}


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(n), "to": [f"user{i}@example.com" for i in range(n)]})


def test_a_wrong_password_costs_one_auth_attempt_per_run(starttls_server):
    report = EmailGem(PER_ROW, fabric_for(starttls_server, password="wrong-password", **FAST), user=USER).apply(None, _frame(10))
    assert set(report["status"]) == {"failed"} and set(report["reply_code"]) == {535}
    assert [(a.success, a.mechanism) for a in starttls_server.auth_attempts] == [(False, "PLAIN")]
    assert starttls_server.sessions_opened == 1 and starttls_server.transactions == 0
    assert starttls_server.quits == starttls_server.wait_for_closed_sessions() == 1  # QUIT before closing


def test_a_rejected_login_falls_back_and_is_not_tried_again(starttls_server):
    with FaultServer(security="starttls", users={"backup@example.com": "backup-pw"}) as backup:
        primary = connection_for(starttls_server, name="reports", fallback="backup", **FAST)
        spare = connection_for(backup, name="backup", username="backup@example.com", password={"secret": "b"})
        fabric = Fabric(name="analytics", teams=[Team(name="t", members=[USER])], connections=[primary, spare])
        fabric.with_store(MemorySecretStore({"smtp-password": SecretStr("wrong"), "b": SecretStr("backup-pw")}))
        report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(6))
        assert set(report["status"]) == {"sent"} and set(report["connection"]) == {"backup"}
        assert len(backup.wait_for_messages(6)) == 6
    assert len(starttls_server.auth_attempts) == 1


def test_spark_workers_do_not_retry_a_rejected_login(spark, starttls_server):
    frame = spark.createDataFrame(_frame(6)).repartition(3)
    fabric = fabric_for(starttls_server, password="wrong-password", **FAST)
    report = EmailGem(PER_ROW, fabric, user=USER).apply(spark, frame).toPandas()
    assert set(report["status"]) == {"failed"} and len(report) == 6
    assert len(starttls_server.auth_attempts) == 1  # the driver's one login; no worker asked again


def test_spark_workers_do_not_ask_again_about_a_refused_sender(spark):
    # Issue 21: a refused sender through Spark opened 9 sessions (the driver's, then one per pool
    # slot of each worker), each with a successful AUTH, and sent a refused MAIL FROM per worker.
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, senders={LOGIN: {LOGIN}}) as server:
        frame = spark.createDataFrame(_frame(6)).repartition(3)
        fabric = fabric_for(server, sender_address="boss@example.com", **FAST)
        report = EmailGem(PER_ROW, fabric, user=USER).apply(spark, frame).toPandas()
        assert set(report["status"]) == {"failed"} and set(report["error_type"]) == {"SenderRefusedError"}
        assert server.sessions_opened == 1 and server.transactions == 1 and len(server.auth_attempts) == 1


def test_a_session_that_fails_to_open_still_says_quit(plain_server):
    conn = connection_for(plain_server, security="starttls", **FAST)  # the server offers no STARTTLS
    [d] = _deliver(SmtpTransport(conn, SecretStr(PASSWORD)))
    assert d.status == "failed" and "STARTTLS" in str(d.error)
    assert plain_server.quits == plain_server.wait_for_closed_sessions() == plain_server.sessions_opened == 1


def test_every_session_ends_with_quit(starttls_server):
    EmailGem(PER_ROW, fabric_for(starttls_server, max_messages_per_connection=2), user=USER).apply(None, _frame(7))
    assert len(starttls_server.wait_for_messages(7)) == 7
    assert starttls_server.sessions_opened >= 4
    closed = starttls_server.wait_for_closed_sessions()
    assert starttls_server.quits == closed == starttls_server.sessions_opened


@pytest.mark.parametrize("check_at", ["rcpt", "mail"])
def test_a_refused_sender_is_a_sender_error_not_a_recipient_one(check_at, pipelining):
    # Postfix's reject_sender_login_mismatch: with smtpd_delay_reject (the default) at RCPT time.
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, senders={LOGIN: {LOGIN}},
                         sender_check=check_at, pipelining=pipelining) as server:
        fabric = fabric_for(server, sender_address="boss@example.com")
        report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(5))
        assert set(report["status"]) == {"failed"}
        error = report.iloc[0].error
        assert "refused the sender <boss@example.com> of connection 'reports'" in error
        assert "553" in error and "not owned by user" in error and "sender_address" in error
        assert "recipient" not in error.split("Hint")[0]
        assert report.iloc[0].reply_code == 553 and report.iloc[0].enhanced_status == "5.7.1"
        assert server.transactions == 1 and server.messages == []  # asked once, not once per message
        assert server.sessions_opened == 1 and len(server.auth_attempts) == 1  # not one per pool slot (4 before)


def test_connection_test_checks_the_sender_without_sending(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAILGEM_SECRET_PW", PASSWORD)
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, senders={LOGIN: {LOGIN}}) as server:
        for sender, code in ((LOGIN, 0), ("boss@example.com", 3)):  # 3: the connection cannot send
            (tmp_path / "fabric.yaml").write_text(f"""
name: t
teams: [{{name: t, members: [{USER}]}}]
connections:
  - {{name: reports, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
      username: {LOGIN}, password: {{secret: pw}}, sender_address: {sender}}}
""")
            assert main(["connection", "test", "reports", "--fabric", str(tmp_path / "fabric.yaml"), "--user", USER]) == code
            out = capsys.readouterr().out
            if code == 0:
                assert f"<{LOGIN}>: sender accepted" in out
            else:
                assert "<boss@example.com>: sender refused" in out and "553 5.7.1" in out and "sender_address" in out
        assert server.messages == [] and server.transactions == 2


def _deliver(transport: SmtpTransport, *messages):
    """Deliver ``messages`` (default: one small one) to ops@example.com through one Deliverer."""
    async def go():
        deliverer = Deliverer([transport])
        try:
            return await asyncio.gather(*(deliverer.send(m, ["ops@example.com"]) for m in messages or [_message()]))
        finally:
            await deliverer.aclose()

    return asyncio.run(go())


def _message(body: str = "body"):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["To"] = "ops@example.com"
    msg["Subject"] = "hi"
    msg.set_content(body)
    return msg


def test_starttls_on_an_implicit_tls_port_is_found_once(implicit_tls_server):
    conn = connection_for(implicit_tls_server, security="starttls", connect_timeout_s=1, **FAST)
    deliveries = _deliver(SmtpTransport(conn, SecretStr(PASSWORD)), *[_message()] * 4)
    assert {d.status for d in deliveries} == {"failed"} and {d.attempts for d in deliveries} == {1}
    error = deliveries[0].error
    assert isinstance(error, SecurityModeMismatchError) and not error.transient
    assert f"port {implicit_tls_server.port} answers a TLS handshake" in str(error)
    assert "expects implicit_tls" in str(error) and "implicit_tls" in error.hint
    assert implicit_tls_server.sessions_opened == 2  # the plain attempt and one TLS probe, for 4 messages


def test_implicit_tls_on_a_starttls_port_is_named(starttls_server):
    conn = connection_for(starttls_server, security="implicit_tls", **FAST)
    [d] = _deliver(SmtpTransport(conn, SecretStr(PASSWORD)))
    assert isinstance(d.error, SecurityModeMismatchError) and d.attempts == 1
    assert "answered the TLS handshake in plain text: it expects starttls" in str(d.error)


def _port_465_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does (TIME_WAIT)
        try:
            s.bind(("127.0.0.1", 465))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not _port_465_free(), reason="needs to listen on 127.0.0.1:465 (root, port free)")
def test_port_465_with_starttls_gets_a_short_wait_and_the_fix():
    with FaultServer(security="implicit_tls", users={LOGIN: PASSWORD}, port=465) as server:
        conn = SmtpConnection(name="r", host="127.0.0.1", port=465, security="starttls", ca_bundle=server.ca_pem,
                              username=LOGIN, password={"secret": "p"}, **FAST)  # connect_timeout_s: 30 s
        [d] = _deliver(SmtpTransport(conn, SecretStr(PASSWORD)))
        assert isinstance(d.error, SecurityModeMismatchError) and d.attempts == 1
        assert "no plain-text greeting within 5 s" in str(d.error) and "port 465" in str(d.error)


def _dotted_message(size: int):
    """A message of about ``size`` bytes whose every body line starts with a dot (each is
    dot-stuffed on the wire, RFC 5321 §4.5.2)."""
    lines = (size - 300) // 20
    return _message("\n".join(".dotted line " + "x" * 6 for _ in range(lines)))


def test_size_counts_what_the_server_counts(pipelining):
    limit = 20_000
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, data_size_limit=limit,
                         pipelining=pipelining) as server:
        transport = SmtpTransport(connection_for(server, **FAST), SecretStr(PASSWORD))
        data = transport.flatten(_dotted_message(limit - 1_000))
        assert len(data) < limit < wire_size(data)  # under the SIZE as it stands, over it as transmitted
        [d] = _deliver(transport, _dotted_message(limit - 1_000))
        assert d.status == "failed" and isinstance(d.error, MessageTooLargeError) and d.attempts == 1
        assert f"{limit:,}" in str(d.error) and "as transmitted" in str(d.error)
        assert server.transactions == 0 and server.messages == []  # refused before MAIL FROM
        # Within the headroom for the server's own trace headers: refused too, and said why.
        small = _message("y" * (limit - TRACE_HEADROOM_BYTES // 2))
        [d] = _deliver(transport, small)
        assert isinstance(d.error, MessageTooLargeError) and "trace headers" in str(d.error)


def test_552_after_data_is_the_same_too_large_error(starttls_server):
    starttls_server.data_script = ["552 5.3.4 Message file too big"]
    transport = SmtpTransport(connection_for(starttls_server, **FAST), SecretStr(PASSWORD))
    [d] = _deliver(transport, _message("z" * 5_000))
    assert d.status == "failed" and isinstance(d.error, MessageTooLargeError) and d.attempts == 1
    assert d.error.code == 552 and d.error.size_bytes > 5_000
    assert f"{d.error.size_bytes:,} bytes" in str(d.error) and "too large" in str(d.error)
    assert f"SIZE is {starttls_server.data_size_limit:,} bytes" in str(d.error)


@pytest.mark.parametrize("name", ["Resent-To", "Resent-Message-ID", "resent-date", "Errors-To",
                                  "Disposition-Notification-To", "Return-Receipt-To"])
def test_headers_that_redirect_replies_or_restate_identity_are_reserved(starttls_server, name):
    props = {"connection": "reports", "to": "ops@example.com", "subject": "s", "headers": {name: "x@example.com"}}
    assert any("reserved" in d.message for d in validate(props))
    with pytest.raises(Exception, match="reserved"):
        EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, _frame(1))
    assert starttls_server.messages == []


@pytest.mark.parametrize("reply, about_sender", [
    ("5.7.1 <boss@example.com>: Sender address rejected: not owned by user reports@example.com", True),
    ("5.1.8 <boss@example.com>: Sender address rejected: Domain not found", True),
    ("5.7.1 Sender not authorized", True),
    ("5.7.1 <boss@example.com>... you may not send as this address", True),  # 5.7.1 naming the sender
    ("5.7.1 <ops@example.com>: Relay access denied", False),
    ("4.1.2 <ops@example.com>: Recipient address rejected: Domain not found", False),
    ("5.1.1 <ops@example.com>: Recipient address rejected: User unknown", False),
])
def test_which_refusals_are_about_the_sender(reply, about_sender):
    from mailgem.connections.errors import is_sender_refusal

    assert is_sender_refusal(reply, "boss@example.com") is about_sender
