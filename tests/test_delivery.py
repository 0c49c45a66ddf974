"""The delivery engine against servers that misbehave on purpose: retries, partial failures,
chunking, pooling, rate limits and fallback. Delays are tiny so every loop is bounded."""

from __future__ import annotations

import asyncio
import itertools
import socket
from email.message import EmailMessage

import pytest
from conftest import LOGIN, PASSWORD, connection_for, parse
from pydantic import SecretStr

from mailgem.connections import SmtpConnection, SmtpTransport
from mailgem.connections.delivery import Deliverer
from fault_server import DATA_TIMEOUT_S, LATE_S, FaultServer
from mailgem.connections.ratelimit import RateLimiter

# Both transaction paths: with PIPELINING (RFC 2920) and without.
PIPELINING_MODES = (True, False)

FAST = {"retry_initial_s": 0.01, "retry_max_s": 0.05}


def _message(subject: str = "hi") -> EmailMessage:
    msg = EmailMessage()
    msg["To"] = "ops@example.com"
    msg["Subject"] = subject
    msg.set_content("body")
    return msg


class _WriteGate:
    """A gate whose ``may_write`` is ``fence`` (a run's claim on its messages, as the gem's is)."""

    stopping = False

    def __init__(self, fence):
        self.may_write = fence

    async def pause(self, seconds):
        await asyncio.sleep(seconds)

    def may_start(self):
        return True


def _deliver(server, messages, recipients=("ops@example.com",), fence=None, **overrides):
    transport = SmtpTransport(connection_for(server, **(FAST | overrides)), SecretStr(PASSWORD))

    async def go():
        deliverer = Deliverer([transport])
        try:
            gate = None if fence is None else _WriteGate(fence)
            return await asyncio.gather(*(deliverer.send(m, list(recipients), gate=gate) for m in messages))
        finally:
            await deliverer.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("script, attempts", [
    (["421 4.7.0 Try again later"], 2),
    (["451 4.3.0 Temporary failure", "451 4.3.0 Temporary failure"], 3),
    (["drop"], 2),
])
def test_transient_failures_are_retried_and_delivered_once(starttls_server, script, attempts):
    starttls_server.data_script = list(script)
    [d] = _deliver(starttls_server, [_message()])
    assert d.status == "sent" and d.attempts == attempts and d.result.code == 250
    assert len(starttls_server.wait_for_messages(1)) == 1
    assert starttls_server.data_script == []


def test_permanent_failure_is_reported_not_retried(starttls_server):
    starttls_server.data_script = ["554 5.6.0 Message rejected"]
    [d] = _deliver(starttls_server, [_message()])
    assert d.status == "failed" and d.attempts == 1
    assert d.error.code == 554 and d.error.enhanced_status == "5.6.0" and not d.error.transient
    assert starttls_server.messages == []


def test_retries_give_up_after_max_attempts(starttls_server):
    starttls_server.data_script = ["451 4.3.0 busy"] * 5
    [d] = _deliver(starttls_server, [_message()], max_attempts=3)
    assert d.status == "failed" and d.attempts == 3 and d.error.transient
    assert starttls_server.data_script == ["451 4.3.0 busy"] * 2 and starttls_server.messages == []


def test_one_recipient_refused_with_550_is_partial_and_not_retried(starttls_server):
    starttls_server.rcpt_refusals["gone@example.com"] = "550 5.1.1 No such user"
    [d] = _deliver(starttls_server, [_message()], recipients=["ops@example.com", "gone@example.com"])
    assert d.status == "partial" and d.attempts == 1
    assert d.result.accepted == ("ops@example.com",) and d.result.refused["gone@example.com"].code == 550
    assert len(starttls_server.messages) == 1


def test_recipient_refused_with_4xx_is_retried_alone(starttls_server):
    starttls_server.rcpt_replies["busy@example.com"] = ["450 4.2.1 Mailbox busy"]
    [d] = _deliver(starttls_server, [_message()], recipients=["ops@example.com", "busy@example.com"])
    assert d.status == "sent" and d.attempts == 2
    assert sorted(d.result.accepted) == ["busy@example.com", "ops@example.com"]
    first, second = starttls_server.wait_for_messages(2)
    assert first.rcpt_tos == ("ops@example.com",) and second.rcpt_tos == ("busy@example.com",)
    assert parse(first.data)["Message-ID"] == parse(second.data)["Message-ID"]


def _fence_open_for(asks: int):
    """A fence (see Deliverer.send) that is open for its first ``asks`` asks, and the list of
    times it was asked."""
    asked: list[int] = []

    def fence() -> bool:
        asked.append(len(asked) + 1)
        return len(asked) <= asks

    return fence, asked


def test_no_retry_once_the_fence_closes(starttls_server):
    # A run whose ledger lease may have lapsed during the backoff must not try again: another
    # run may be sending the message by then.
    starttls_server.data_script = ["451 4.3.0 Temporary failure"]
    fence, asked = _fence_open_for(2)  # the first attempt asks twice: before it, and before the content
    [d] = _deliver(starttls_server, [_message()], fence=fence)
    assert d.status == "not_started" and asked == [1, 2, 3]
    assert starttls_server.data_script == [] and starttls_server.settled() == []


def test_a_fence_that_closes_while_the_commands_wait_keeps_the_content_back(starttls_server):
    # A run paused after a message's MAIL and RCPT went out, past its ledger lease: when it goes
    # on, the server is ready for the content but another run owns the message by then. The
    # content must not follow; without its final dot the server keeps nothing.
    def fence() -> bool:
        return starttls_server.transactions == 0  # open until the server has this message's MAIL

    [d] = _deliver(starttls_server, [_message()], fence=fence)
    assert d.status == "not_started" and d.attempts == 0 and d.error is None
    assert starttls_server.settled() == [] and starttls_server.empty_contents == []
    assert starttls_server.transactions == 1
    # The session was not given back to the pool half-way through a transaction: it was closed.
    assert starttls_server.sessions_opened == 1
    assert starttls_server.wait_for_closed_sessions(timeout_s=5) == 1


def test_recipients_not_retried_once_the_fence_closes_leave_the_message_partial(starttls_server):
    starttls_server.rcpt_replies["busy@example.com"] = ["450 4.2.1 Mailbox busy"]
    fence, _ = _fence_open_for(2)
    [d] = _deliver(starttls_server, [_message()], recipients=["ops@example.com", "busy@example.com"], fence=fence)
    assert d.status == "partial" and d.result.accepted == ("ops@example.com",)
    why = d.result.refused["busy@example.com"]
    assert why.code == 450 and why.enhanced_status == "4.2.1" and "(not retried: the run stopped)" in why.message
    assert [m.rcpt_tos for m in starttls_server.settled()] == [("ops@example.com",)]


def test_slow_accept_past_the_timeout_is_the_documented_duplicate_window(starttls_server):
    # The server accepts only after the client gave up (at 2 s) and retried. The server holds
    # two copies, with one Message-ID, which is what lets mail clients collapse them.
    starttls_server.data_script = [LATE_S]
    [d] = _deliver(starttls_server, [_message()], data_timeout_s=DATA_TIMEOUT_S)
    assert d.status == "sent" and d.attempts == 2
    copies = starttls_server.wait_for_messages(2, timeout_s=5)
    assert len(copies) == 2
    assert parse(copies[0].data)["Message-ID"] == parse(copies[1].data)["Message-ID"] == d.message_id


def test_more_than_100_recipients_go_in_chunks_of_100(starttls_server):
    recipients = [f"user{i}@example.com" for i in range(250)]
    [d] = _deliver(starttls_server, [_message()], recipients=recipients)
    assert d.status == "sent" and len(d.result.accepted) == 250
    assert [len(m.rcpt_tos) for m in starttls_server.wait_for_messages(3)] == [100, 100, 50]


def test_a_fence_that_closes_between_chunks_leaves_the_message_partial(starttls_server):
    # 250 recipients go in three transactions; the run stops (its fence closes) once the server has
    # the second one's MAIL. The first chunk's 100 have the message and are never sent it again;
    # the other 150 are not sent now, each saying why, and nothing else reaches the server.
    recipients = [f"user{i}@example.com" for i in range(250)]

    def fence() -> bool:
        return starttls_server.transactions < 2

    [d] = _deliver(starttls_server, [_message()], recipients=recipients, fence=fence)
    assert d.status == "partial" and d.result.accepted == tuple(recipients[:100])
    assert sorted(d.result.refused) == sorted(recipients[100:])
    assert all("(not retried: the run stopped)" in why.message and "not sent: the run stopped" in why.message
               for why in d.result.refused.values())
    assert starttls_server.transactions == 2
    assert [m.rcpt_tos for m in starttls_server.settled()] == [tuple(recipients[:100])]
    assert starttls_server.empty_contents == []


def test_pool_reuses_sessions_and_reconnects_after_max_messages(starttls_server):
    results = _deliver(starttls_server, [_message(f"m{i}") for i in range(10)], pool_size=2,
                       max_messages_per_connection=3)
    assert all(d.status == "sent" for d in results)
    assert len(starttls_server.wait_for_messages(10)) == 10
    assert 4 <= starttls_server.sessions_opened <= 5  # ceil(10 / 3) sessions, at most 2 at a time
    assert len(starttls_server.auth_attempts) == starttls_server.sessions_opened


def test_pool_opens_its_other_sessions_side_by_side_once_the_first_has_opened(starttls_server):
    # The first session opens alone (a wrong password costs the server one AUTH); the borrowers
    # that waited for it then open theirs together, not one after another: by the time the
    # second session authenticates, the third and fourth have connected. (They used to open one
    # at a time, each a whole connect-TLS-AUTH later than the one before.)
    connected_at_auth: list[int] = []
    authenticate = starttls_server._authenticate

    def recording(server, session, envelope, mechanism, auth_data):
        connected_at_auth.append(starttls_server.sessions_opened)
        return authenticate(server, session, envelope, mechanism, auth_data)

    starttls_server._authenticate = recording
    results = _deliver(starttls_server, [_message(f"m{i}") for i in range(12)], pool_size=4)
    assert all(d.status == "sent" for d in results)
    assert starttls_server.sessions_opened == 4 and len(connected_at_auth) == 4
    assert connected_at_auth[0] == 1  # the first alone
    assert connected_at_auth[1] >= 3, connected_at_auth


def test_rate_limiter_spaces_messages_and_caps_the_day():
    limiter = RateLimiter(rate_per_s=10, max_per_day=4)
    delays = [limiter.reserve() for _ in range(4)]
    assert delays[0] == pytest.approx(0, abs=0.01)
    assert [round(b - a, 2) for a, b in itertools.pairwise(delays)] == [0.1, 0.1, 0.1]
    from mailgem.connections.ratelimit import DailyLimitReached
    with pytest.raises(DailyLimitReached, match="daily limit of 4"):
        limiter.reserve()


def test_daily_cap_defers_the_rest(starttls_server):
    results = _deliver(starttls_server, [_message(f"m{i}") for i in range(3)], max_per_day=2, pool_size=1,
                       name="capped")
    assert sorted(d.status for d in results) == ["deferred", "sent", "sent"]
    assert len(starttls_server.wait_for_messages(2)) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("failure", ["unreachable", "auth"])
def test_fallback_connection_is_used_and_reported(starttls_server, failure):
    with FaultServer(security="starttls", users={"backup@example.com": "backup-pw"}) as backup:
        primary_conn = connection_for(starttls_server, name="primary", fallback="backup", **FAST)
        if failure == "unreachable":
            primary_conn = primary_conn.model_copy(update={"port": _closed_port()})
        primary = SmtpTransport(primary_conn, SecretStr(PASSWORD if failure == "unreachable" else "wrong"))
        fallback = SmtpTransport(SmtpConnection(name="backup", host="127.0.0.1", port=backup.port,
                                                ca_bundle=backup.ca_pem, username="backup@example.com",
                                                password={"secret": "b"}, **FAST), SecretStr("backup-pw"))

        async def go():
            deliverer = Deliverer([primary, fallback])
            try:
                return await deliverer.send(_message(), ["ops@example.com"])
            finally:
                await deliverer.aclose()

        d = asyncio.run(go())
        assert d.status == "sent" and d.connection == "backup"
        [received] = backup.wait_for_messages(1)
        assert received.mail_from == "backup@example.com"
        assert parse(received.data)["From"].addresses[0].addr_spec == "backup@example.com"
        assert starttls_server.messages == []
        assert LOGIN  # the primary's login was never used to send
