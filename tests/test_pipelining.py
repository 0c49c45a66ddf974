"""Pipelined transactions (RFC 2920, connections/pipelining.py): replies kept in order, and every
failure path ending as the unpipelined one does. Servers: aiosmtpd (in process, offering
PIPELINING as Postfix does) and Postfix's smtp-sink where it is installed."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from email.message import EmailMessage

import aiosmtplib
import pandas as pd
import pytest
from conftest import PASSWORD, PER_ROW, USER, connection_for, fabric_for, parse_strict
from fault_server import DATA_TIMEOUT_S, LATE_S
from pydantic import SecretStr

from mailgem.connections.delivery import Deliverer
from mailgem.connections.pipelining import ReplyReader, dot_stuffed
from mailgem.connections.transport import SmtpTransport
from mailgem.gems.email import EmailGem


def _replies(chunks: list[bytes], count: int) -> list[tuple[int, str]]:
    async def go() -> list[tuple[int, str]]:
        reader = ReplyReader()
        futures = reader.expect(count)  # as after writing `count` commands
        for chunk in chunks:
            reader.data_received(chunk)
        return [tuple(r) for r in await reader.replies(futures, 1.0)]  # type: ignore[misc]

    return asyncio.run(go())


def test_replies_that_arrive_together_are_all_kept_in_order():
    # What aiosmtplib drops: three replies in one packet, and a multi-line reply split across two.
    together = _replies([b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"], 3)
    assert [c for c, _ in together] == [250, 250, 354]
    split = _replies([b"250-first\r\n25", b"0-second\r\n250 last\r\n550 5.1.1 nobody\r\n"], 2)
    assert split == [(250, "first\nsecond\nlast"), (550, "5.1.1 nobody")]


def test_a_line_that_is_not_a_reply_means_the_session_is_out_of_step():
    with pytest.raises(aiosmtplib.SMTPServerDisconnected, match="out of sync"):
        _replies([b"250 Ok\r\nhello there\r\n"], 2)


def test_content_is_dot_stuffed_and_ended():
    assert dot_stuffed(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n.\r\n"


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(n), "to": [f"user{i}@example.com" for i in range(n)]})


def test_messages_go_out_pipelined_and_arrive_whole(starttls_server, caplog):
    frame = _frame(6)
    frame.loc[2, "to"] = "user2@example.com, nobody@example.com"
    starttls_server.rcpt_refusals["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: no such user"
    with caplog.at_level(logging.DEBUG, logger="mailgem.connections"):
        report = EmailGem(PER_ROW, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent", "sent", "partial", "sent", "sent", "sent"]
    assert "nobody@example.com: 550" in report.iloc[2].refused
    assert sum("(pipelined)" in r.getMessage() for r in caplog.records) == 6
    received = starttls_server.wait_for_messages(6)
    assert sorted(m.rcpt_tos for m in received)[2] == ("user2@example.com",)
    for m in received:
        parse_strict(m.data)
    assert starttls_server.sessions_opened == 1  # one session, every transaction in step


def test_a_421_in_the_middle_of_a_group_ends_the_session_and_the_message_is_retried(starttls_server):
    starttls_server.rcpt_replies["user1@example.com"] = ["421 4.3.2 Service shutting down"]
    report = EmailGem(PER_ROW, fabric_for(starttls_server, pool_size=1, retry_initial_s=0.01), user=USER).apply(
        None, _frame(3))
    assert list(report["status"]) == ["sent", "sent", "sent"] and report.iloc[1].attempts == 2
    assert starttls_server.sessions_opened == 2 and len(starttls_server.wait_for_messages(3)) == 3


def test_a_reply_out_of_step_is_a_dropped_connection_retried_once_in_step(starttls_server):
    starttls_server.rcpt_replies["user0@example.com"] = ["this is not an SMTP reply"]
    report = EmailGem(PER_ROW, fabric_for(starttls_server, pool_size=1, retry_initial_s=0.01), user=USER).apply(
        None, _frame(2))
    assert list(report["status"]) == ["sent", "sent"] and report.iloc[0].attempts == 2
    assert sorted(m.rcpt_tos for m in starttls_server.wait_for_messages(2)) == [("user0@example.com",), ("user1@example.com",)]


def test_a_connection_dropped_after_the_content_may_have_delivered(starttls_server):
    starttls_server.data_script = ["drop"]
    transport = SmtpTransport(connection_for(starttls_server, max_attempts=1), SecretStr(PASSWORD))
    msg = EmailMessage()
    msg["To"], msg["Subject"] = "a@example.com", "x"
    msg.set_content("hello")

    async def go():
        deliverer = Deliverer([transport])
        try:
            return await deliverer.send(msg, ["a@example.com"])
        finally:
            await deliverer.aclose()

    delivery = asyncio.run(go())
    assert delivery.status == "failed" and delivery.maybe_delivered and starttls_server.dropped == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int) -> None:
    """Until 127.0.0.1:``port`` accepts connections, at most 10 s (what follows then fails, saying what)."""
    for _ in range(100):  # bounded: 10 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


@pytest.fixture
def smtp_sink():
    """Postfix's smtp-sink, a server that pipelines for real (RFC 2920), on loopback."""
    if shutil.which("smtp-sink") is None:
        pytest.skip("Postfix's smtp-sink is not installed (Debian package postfix): the pipelined path is still "
                    "tested against aiosmtpd above")
    port = _free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink drops root privileges when it has them
    proc = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{port}", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_postfix_smtp_sink_takes_pipelined_transactions(smtp_sink, caplog):
    from mailgem.connections import SmtpConnection
    from mailgem.fabric import Fabric, Team

    conn = SmtpConnection(name="reports", host="127.0.0.1", port=smtp_sink, security="none", anonymous=True,
                          sender_address="reports@example.com", pool_size=2, timeout_s=10)
    fabric = Fabric(name="f", teams=[Team(name="t", members=[USER])], connections=[conn])
    frame = _frame(200)
    frame.loc[5, "to"] = "a@example.com, b@example.com, c@example.com"
    with caplog.at_level(logging.DEBUG, logger="mailgem.connections"):
        report = EmailGem(PER_ROW, fabric, user=USER).apply(None, frame)
    assert set(report["status"]) == {"sent"} and report.iloc[5].accepted == 3
    assert sum("(pipelined)" in r.getMessage() for r in caplog.records) == 200


def test_the_next_message_follows_the_content_before_its_final_reply(starttls_server):
    # RFC 2920 §3.1: on one session, message 2's MAIL FROM is sent right after message 1's final
    # dot, before the server answers it. The server answers each DATA only once the client's next
    # command has arrived (or after 5 s, recording None): a client that waits would get None.
    starttls_server.data_script = [("await_next", 5.0), ("await_next", 5.0)]
    report = EmailGem(PER_ROW, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, _frame(3))
    assert list(report["status"]) == ["sent", "sent", "sent"] and set(report["attempts"]) == {1}
    assert len(starttls_server.ahead) == 2
    assert all(line is not None and line.startswith("MAIL FROM:<reports@example.com>") for line in starttls_server.ahead), \
        starttls_server.ahead
    assert starttls_server.sessions_opened == 1 and [m.rcpt_tos[0] for m in starttls_server.wait_for_messages(3)] == \
        ["user0@example.com", "user1@example.com", "user2@example.com"]


def test_a_session_lost_under_the_message_before_costs_the_next_one_no_attempt(starttls_server):
    # Message 0's final reply comes after the client gave up (it may be delivered): the session
    # ends with message 1's group already written behind it. Message 1 never reached DATA, so it
    # goes out once on a new session, without using one of its (here: one) attempts.
    starttls_server.data_script = [LATE_S]
    fabric = fabric_for(starttls_server, pool_size=1, data_timeout_s=DATA_TIMEOUT_S, max_attempts=1)
    report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(2))
    assert list(report["status"]) == ["failed", "sent"] and list(report["attempts"]) == [1, 1]
    assert "may have accepted it" in report.iloc[0].error
    received = starttls_server.wait_for_messages(2)
    assert sorted(m.rcpt_tos[0] for m in received) == ["user0@example.com", "user1@example.com"]  # each once
    assert starttls_server.sessions_opened == 2


def test_a_354_with_every_recipient_refused_is_ended_with_a_lone_dot(starttls_server):
    # Some servers answer DATA with 354 even when every RCPT of the group was refused: the client
    # ends that empty transaction with a lone dot, never the content (RFC 2920 §3.1), and the
    # session goes on.
    starttls_server.data_without_recipients = True
    starttls_server.rcpt_refusals["user0@example.com"] = "550 5.1.1 <user0@example.com>: no such user"
    report = EmailGem(PER_ROW, fabric_for(starttls_server, pool_size=1), user=USER).apply(None, _frame(2))
    assert list(report["status"]) == ["failed", "sent"] and report.iloc[0].attempts == 1
    assert "every recipient was refused" in report.iloc[0].error and "550" in report.iloc[0].error
    assert starttls_server.empty_contents == [b""]  # the dot came straight after the 354
    assert [m.rcpt_tos for m in starttls_server.wait_for_messages(1)] == [("user1@example.com",)]
    assert starttls_server.sessions_opened == 1


_POSTFIX_MASTER = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


@pytest.fixture
def postfix_relay():
    """A private Postfix instance (``postfix -c DIR``: its own configuration, queue and log, the
    system's mail setup untouched) listening on loopback with STARTTLS required, PIPELINING
    offered as Postfix always does, one recipient refused by an access map, relaying every
    message it accepts to an aiosmtpd server; yields ``(port, ca_pem, relay_target)``."""
    import pwd
    import tempfile

    import trustme

    from fault_server import FaultServer

    if shutil.which("postfix") is None or os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs the Debian package postfix and root (master starts as root "
                    "and drops to the postfix user); the pipelined path is still tested against aiosmtpd and smtp-sink")
    try:
        postfix_uid = pwd.getpwnam("postfix").pw_uid
    except KeyError:
        pytest.skip("the postfix user does not exist (the postfix package is not fully installed)")
    root = Path(tempfile.mkdtemp(prefix="mailgem-postfix-"))  # not under pytest's 0700 tmp: Postfix's user reads it
    root.chmod(0o755)
    for sub in ("conf", "queue", "data"):
        (root / sub).mkdir()
    os.chown(root / "data", postfix_uid, -1)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "conf" / "server.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    port = _free_port()
    with FaultServer(security="none") as target:
        (root / "conf" / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.example.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{target.port}
smtp_tls_security_level = none
smtpd_tls_security_level = encrypt
smtpd_tls_chain_files = {root}/conf/server.pem
smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ nobody@example.com = REJECT no such user }} }}, permit_mynetworks, reject
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
""")
        (root / "conf" / "master.cf").write_text(_POSTFIX_MASTER.format(listen=f"127.0.0.1:{port}"))
        started = subprocess.run(["postfix", "-c", str(root / "conf"), "start"], capture_output=True, text=True,
                                 timeout=60)
        try:
            if started.returncode != 0:
                log = (root / "maillog").read_text()[-2000:] if (root / "maillog").exists() else started.stderr
                pytest.fail(f"the private Postfix instance did not start:\n{log}")
            _wait_for_port(port)
            yield port, root / "ca.pem", target
        finally:
            subprocess.run(["postfix", "-c", str(root / "conf"), "stop"], capture_output=True, timeout=60)
            shutil.rmtree(root, ignore_errors=True)


def test_real_postfix_takes_pipelined_transactions_over_starttls(postfix_relay, caplog):
    from mailgem.connections import SmtpConnection
    from mailgem.fabric import Fabric, Team

    port, ca_pem, target = postfix_relay
    conn = SmtpConnection(name="reports", host="127.0.0.1", port=port, security="starttls", ca_bundle=ca_pem,
                          anonymous=True, sender_address="reports@example.com", pool_size=2, timeout_s=10,
                          max_attempts=1)
    fabric = Fabric(name="f", teams=[Team(name="t", members=[USER])], connections=[conn])
    frame = _frame(40)
    frame.loc[3, "to"] = "user3@example.com, nobody@example.com"
    frame.loc[7, "to"] = "nobody@example.com"
    with caplog.at_level(logging.DEBUG, logger="mailgem.connections"):
        report = EmailGem(PER_ROW, fabric, user=USER).apply(None, frame)
    statuses = list(report["status"])
    assert statuses[3] == "partial" and statuses[7] == "failed"
    assert statuses[:3] + statuses[4:7] + statuses[8:] == ["sent"] * 38
    assert "nobody@example.com: 554" in report.iloc[3].refused and "5.7.1" in report.iloc[3].refused
    assert "every recipient was refused" in report.iloc[7].error
    assert sum("(pipelined)" in r.getMessage() for r in caplog.records) == 39  # every transaction that was sent
    received = target.wait_for_messages(39, timeout_s=30)  # Postfix relays them on to the test server
    assert sorted(m.rcpt_tos[0] for m in received) == sorted(f"user{i}@example.com" for i in range(40) if i != 7)
    for m in received:
        parse_strict(m.data)
