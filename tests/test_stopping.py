"""A run that is stopped (a scheduler's SIGTERM, Ctrl-C) or whose server goes away mid-run
(issue 21 §1 and §4), through the Python API against real servers: what went out is recorded and
reported, what did not start is ``not_started``, a re-run sends exactly the rest, and a short
outage is waited out instead of failing every message."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pandas as pd
import pytest
from conftest import LOGIN, PASSWORD, PER_ROW, USER, fabric_for, parse

from fault_server import FaultServer
from mailgem.gems.email import EmailGem
from mailgem.gems.email.run.stop import StopBeacon, StopListener, StopSignal

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "timeout_s": 10}


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(n), "to": [f"user{i}@example.com" for i in range(n)]})


def _when_transactions(server: FaultServer, count: int, action, timeout_s: float = 30.0) -> threading.Thread:
    """Call ``action()`` from another thread once ``server`` saw ``count`` MAIL commands (bounded;
    the first is the run's sender check)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while server.transactions < count and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _when_received(server: FaultServer, count: int, action, timeout_s: float = 30.0) -> threading.Thread:
    """Call ``action()`` from another thread once ``server`` holds ``count`` messages (bounded)."""
    def watch() -> None:
        server.wait_for_messages(count, timeout_s=timeout_s)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_stop_request_starts_no_new_message_and_reports_the_rest(starttls_server, tmp_path):
    starttls_server.data_script = [0.05] * 40  # each reply 50 ms late: the run lasts long enough to stop
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "r1"}}
    fabric = fabric_for(starttls_server, pool_size=1, **FAST)
    stop = StopSignal()
    watcher = _when_received(starttls_server, 5, lambda: stop.request("stopped by the test"))
    started = time.monotonic()
    report = EmailGem(props, fabric, user=USER, name="job").apply(None, _frame(40), stop=stop)
    watcher.join(timeout=10)
    assert time.monotonic() - started < 20  # 40 messages at 50 ms each would be 2 s; a stop ends it sooner
    received = {m.rcpt_tos[0] for m in starttls_server.messages}
    sent = report[report["status"] == "sent"]
    assert set(sent["recipients"]) == received and 5 <= len(received) < 40  # exactly what the server has
    rest = report[report["status"] != "sent"]
    assert set(rest["status"]) == {"not_started"} and len(report) == 40
    assert set(rest["error"]) == {"not sent: stopped by the test"}
    assert set(report["message_key"]) == {f'row:[{i}]' for i in range(40)}  # every message has its row
    # A re-run with the same run key sends exactly the rest, each once.
    starttls_server.data_script = []
    again = EmailGem(props, fabric, user=USER, name="job").apply(None, _frame(40))
    assert (again["status"] == "sent").sum() == 40 - len(received)
    assert (again["status"] == "already_sent").sum() == len(received)
    recipients = [m.rcpt_tos[0] for m in starttls_server.wait_for_messages(40)]
    assert sorted(recipients) == sorted(f"user{i}@example.com" for i in range(40))  # no second copy


def test_a_stop_ends_the_backoff_and_the_message_keeps_its_failure(starttls_server):
    # The first attempt is refused for now (451); the retry would come after up to an hour of
    # backoff. A stop during the wait ends it at once: no retry, and the 451 is that message's outcome.
    starttls_server.data_script = ["451 4.3.0 Try again later"]
    fabric = fabric_for(starttls_server, pool_size=1, retry_initial_s=3600, retry_max_s=3600, max_attempts=3)
    stop = StopSignal()
    # The 2nd MAIL is the message's (the 1st, the run's sender check): its 451 comes right after.
    watcher = _when_transactions(starttls_server, 2, lambda: threading.Timer(0.3, stop.request,
                                                                              ("stopped by the test",)).start())
    started = time.monotonic()
    report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(1), stop=stop)
    watcher.join(timeout=10)
    assert time.monotonic() - started < 60  # an hour's backoff, cut short
    [row] = report.itertuples()
    assert row.status == "failed" and row.reply_code == 451 and row.attempts == 1
    assert "Not retried: stopped by the test." in row.error
    assert starttls_server.messages == []


def test_on_error_stop_still_reports_every_message_after_a_stop(starttls_server):
    # on_error: stop is the default: a message the stop kept from its retry must not turn the
    # stop into on_error's (an exception with part of the report).
    starttls_server.data_script = [0.05] * 3 + ["451 4.3.0 Try again later"] + [0.05] * 30
    fabric = fabric_for(starttls_server, pool_size=1, pipelining=False, retry_initial_s=3600, retry_max_s=3600)
    stop = StopSignal()
    watcher = _when_transactions(starttls_server, 5, lambda: threading.Timer(0.3, stop.request,
                                                                              ("stopped by the test",)).start())
    props = PER_ROW | {"on_error": "stop"}
    report = EmailGem(props, fabric, user=USER).apply(None, _frame(20), stop=stop)
    watcher.join(timeout=10)
    assert len(report) == 20, report  # no DeliveryError, every message has its row
    assert list(report["status"][:3]) == ["sent"] * 3 and report.iloc[3].status == "failed"
    assert "Not retried: stopped by the test." in report.iloc[3].error
    rest = report["status"][4:]  # message 4 held the one slot while it waited for its retry
    assert set(rest) == {"not_started"}
    assert (report["status"] == "sent").sum() == len(starttls_server.messages)


def test_the_beacon_tells_a_listener_to_stop_and_only_with_its_token():
    driver = StopSignal()
    with StopBeacon(driver, "127.0.0.1") as address:
        worker = StopSignal()
        with StopListener(address, worker):
            stranger = StopSignal()
            with StopListener(type(address)(address.host, address.port, "not-the-token"), stranger):
                driver.request("stopped by SIGTERM")
                deadline = time.monotonic() + 10
                while not worker.stopping and time.monotonic() < deadline:  # bounded
                    time.sleep(0.02)
                assert worker.reason == "stopped by SIGTERM"
                # A connection without the token is closed: it reads that as the driver gone.
                assert stranger.reason in (None, "the Spark driver went away")
    assert "token" not in repr(address) and address.token not in repr(address)
    # A listener whose driver is gone stops too, rather than sending on alone.
    lone = StopSignal()
    with StopBeacon(StopSignal(), "127.0.0.1") as address:
        listener = StopListener(address, lone).__enter__()
    deadline = time.monotonic() + 10
    while not lone.stopping and time.monotonic() < deadline:  # bounded
        time.sleep(0.02)
    listener.__exit__(None, None, None)
    assert lone.reason == "the Spark driver went away"


@pytest.fixture
def restartable(tmp_path):
    """A STARTTLS + AUTH server that a test can stop and start again on the same port (its
    certificates in a folder of their own, which the connection's ca_bundle names)."""
    certs = tmp_path / "certs"
    servers = [FaultServer(security="starttls", users={LOGIN: PASSWORD}, cert_dir=certs).start()]

    def restart(after_s: float) -> None:
        port = servers[-1].port
        servers[-1].stop()
        time.sleep(after_s)
        servers.append(FaultServer(security="starttls", users={LOGIN: PASSWORD}, cert_dir=certs,
                                       port=port).start())

    yield servers, restart
    for server in servers:
        server.stop()


def _when_holding(server: FaultServer, action, timeout_s: float = 30.0) -> threading.Thread:
    """Call ``action()`` from another thread once ``server`` holds a message's reply (bounded)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not server.holding and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_outage_mid_run_is_waited_out(restartable):
    servers, restart = restartable
    first = servers[0]
    first.data_script = [None] * 5 + [("hold", 30)]  # the 6th message's reply waits: the server stops then
    fabric = fabric_for(first, pool_size=2, retry_outage_s=60, **FAST)
    # The server stops mid-run and is back 3 s later: every message waits, none fails.
    watcher = _when_holding(first, lambda: restart(3.0))
    report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(30))
    watcher.join(timeout=30)
    assert set(report["status"]) == {"sent"}, report[report["status"] != "sent"][["message_key", "error"]]
    copies: dict[str, list[str]] = {}
    for server in servers:
        for m in server.messages:
            copies.setdefault(m.rcpt_tos[0], []).append(parse(m.data)["Message-ID"])
    assert sorted(copies) == sorted(f"user{i}@example.com" for i in range(30))
    # A message whose reply was lost when the server stopped may arrive twice: with one Message-ID.
    assert all(len(set(ids)) == 1 for ids in copies.values())
    assert len(servers) == 2 and servers[1].messages  # the rest went to the server that came back


def test_an_outage_longer_than_retry_outage_s_fails_the_rest_with_the_reason(restartable):
    servers, _ = restartable
    first = servers[0]
    first.data_script = [None] * 5 + [("hold", 30)]
    fabric = fabric_for(first, pool_size=1, retry_outage_s=2, **FAST)
    watcher = _when_holding(first, first.stop)  # gone for good, with a reply held
    started = time.monotonic()
    report = EmailGem(PER_ROW | {"on_error": "continue"}, fabric, user=USER).apply(None, _frame(30))
    watcher.join(timeout=30)
    assert time.monotonic() - started < 30
    assert list(report["status"][:5]) == ["sent"] * 5 and len(first.messages) == 5
    failed = report[report["status"] == "failed"]
    assert len(failed) == 25 and set(failed["error_type"]) == {"ServerUnavailableError"}, failed["error"]
    assert "retry_outage_s 2" in failed.iloc[0].error


def test_a_server_unreachable_from_the_start_is_not_waited_for(starttls_server):
    # A wrong port is not an outage: the run fails at once, it does not wait retry_outage_s.
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fabric = fabric_for(starttls_server, pool_size=1, retry_outage_s=300, port=port, max_attempts=2, **FAST)
    started = time.monotonic()
    report = EmailGem(PER_ROW | {"on_error": "continue"}, fabric, user=USER).apply(None, _frame(3))
    assert time.monotonic() - started < 15
    assert set(report["error_type"]) == {"SmtpConnectError"}


class _SessionLimitedServer(FaultServer):
    """A server that takes at most ``limit`` sessions at once and answers others 421 (as
    Postfix's anvil limits a client's sessions)."""

    def __init__(self, limit: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.refused = 0

    def _factory(self):
        if len(self._live) < self.limit:
            return super()._factory()
        self.refused += 1
        return _Refusing()


class _Refusing(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        transport.write(b"421 4.7.0 Too many concurrent SMTP connections from this client\r\n")
        transport.close()


def test_a_session_limit_is_not_an_outage():
    # A 421 for one session too many, while another serves: not the server gone away. Before,
    # the extra sessions' 421s began an outage whose wait then failed 87 of 100 messages.
    with _SessionLimitedServer(1, security="starttls", users={LOGIN: PASSWORD}) as server:
        fabric = fabric_for(server, pool_size=3, retry_outage_s=2, max_attempts=20, **FAST)
        report = EmailGem(PER_ROW, fabric, user=USER).apply(None, _frame(30))
        assert server.refused > 0  # the limit was met
        assert set(report["status"]) == {"sent"}, report["error"].dropna().head()
