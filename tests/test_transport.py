"""SmtpTransport against real in-process servers: security modes, AUTH, TLS policy, SIZE, refusals."""

from __future__ import annotations

import asyncio
import socket
from email.message import EmailMessage

import pytest
from conftest import LOGIN, PASSWORD, connection_for, parse
from pydantic import SecretStr

from mailgem.connections import (
    AuthenticationError,
    InsecureAuthError,
    MessageTooLargeError,
    RecipientsRefusedError,
    SmtpConnectError,
    SmtpConnection,
    SmtpTransport,
    StartTlsNotOfferedError,
    TlsError,
)
from fault_server import FaultServer


def _message(to: str = "ops@example.com", subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("body text")
    return msg


def _send(conn: SmtpConnection, password: str | None, msg: EmailMessage, recipients=None):
    transport = SmtpTransport(conn, SecretStr(password) if password else None)
    return asyncio.run(transport.send(msg, recipients))


@pytest.mark.parametrize("server_fixture", ["starttls_server", "implicit_tls_server"])
def test_each_tls_mode_delivers_and_authenticates(request, server_fixture):
    server = request.getfixturevalue(server_fixture)
    result = _send(connection_for(server), PASSWORD, _message())

    assert result.code == 250 and result.accepted == ("ops@example.com",) and not result.refused
    [received] = server.wait_for_messages(1)
    assert received.tls is True
    assert received.login == LOGIN
    assert received.mail_from == LOGIN  # envelope sender is the authenticated user
    msg = parse(received.data)
    assert msg["Subject"] == "Hello"
    assert msg["From"].addresses[0].addr_spec == LOGIN
    assert msg["From"].addresses[0].display_name == "Reports"
    assert msg["Message-ID"] == result.message_id and msg["Date"]
    assert [(a.success, a.tls) for a in server.auth_attempts] == [(True, True)]  # AUTH only inside TLS


def test_plain_relay_without_auth(relay_server):
    conn = connection_for(relay_server, username=None, password=None, anonymous=True,
                          sender_address="etl@example.com")
    _send(conn, None, _message())
    [received] = relay_server.wait_for_messages(1)
    assert received.tls is False and received.login is None
    assert received.mail_from == "etl@example.com"
    assert parse(received.data)["From"].addresses[0].addr_spec == "etl@example.com"


def test_plain_auth_only_when_explicitly_allowed(plain_server):
    with pytest.raises(ValueError, match="allow_insecure_auth"):
        connection_for(plain_server)
    conn = connection_for(plain_server, allow_insecure_auth=True)
    _send(conn, PASSWORD, _message())
    assert plain_server.wait_for_messages(1)[0].login == LOGIN


def test_transport_refuses_auth_over_plaintext_even_if_model_is_bypassed(plain_server):
    # model_construct skips validation: the transport must still refuse on its own.
    conn = SmtpConnection.model_construct(**connection_for(plain_server, allow_insecure_auth=True).model_dump()
                                          | {"allow_insecure_auth": False})
    with pytest.raises(InsecureAuthError, match="unencrypted"):
        _send(conn, PASSWORD, _message())
    assert plain_server.auth_attempts == [] and plain_server.messages == []


def test_starttls_required_but_not_offered(plain_server):
    conn = connection_for(plain_server, security="starttls")
    with pytest.raises(StartTlsNotOfferedError) as info:
        _send(conn, PASSWORD, _message())
    assert "587" in info.value.hint and "465" in info.value.hint
    assert plain_server.auth_attempts == [] and plain_server.messages == []


def test_wrong_password_is_a_typed_error_with_hint_and_nothing_is_sent(starttls_server):
    with pytest.raises(AuthenticationError) as info:
        _send(connection_for(starttls_server), "not-the-password", _message())
    err = info.value
    assert err.code == 535 and err.enhanced_status == "5.7.8" and err.transient is False
    assert "App Password" in err.hint
    assert "535" in str(err) and "not-the-password" not in str(err)
    assert starttls_server.messages == []
    # One attempt, with the best mechanism offered (aiosmtplib's login() would try PLAIN, then LOGIN).
    assert [(a.success, a.mechanism) for a in starttls_server.auth_attempts] == [(False, "PLAIN")]
    assert starttls_server.quits == 1  # QUIT before closing, failed sessions included


def test_gmail_host_gets_the_app_password_hint():
    from mailgem.connections.translate import from_aiosmtplib
    import aiosmtplib

    err = from_aiosmtplib(aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Username and Password not accepted"),
                          stage="auth", host="smtp.gmail.com", port=587)
    assert isinstance(err, AuthenticationError) and "App Password" in err.hint and "Gmail" in err.hint


@pytest.mark.parametrize("server_fixture", ["starttls_server", "implicit_tls_server"])
def test_self_signed_certificate_refused_unless_verification_off(request, server_fixture):
    starttls_server = request.getfixturevalue(server_fixture)
    untrusted = connection_for(starttls_server, ca_bundle=None)
    with pytest.raises(TlsError) as info:
        _send(untrusted, PASSWORD, _message())
    assert "certificate" in str(info.value) and "ca_bundle" in info.value.hint
    assert starttls_server.auth_attempts == []  # no credential before a trusted TLS session

    _send(connection_for(starttls_server, ca_bundle=None, verify_certificates=False), PASSWORD, _message())
    assert len(starttls_server.wait_for_messages(1)) == 1


def test_min_tls_13_is_negotiated(implicit_tls_server):
    report = asyncio.run(SmtpTransport(connection_for(implicit_tls_server, min_tls_version="1.3"),
                                       SecretStr(PASSWORD)).check())
    assert report.ok and report.tls_version == "TLSv1.3"


def test_check_reports_server_capabilities_without_sending(starttls_server):
    report = asyncio.run(SmtpTransport(connection_for(starttls_server), SecretStr(PASSWORD)).check())
    assert report.ok and report.authenticated and report.error is None
    assert "mailgem local SMTP" in report.banner
    assert report.tls_version in {"TLSv1.2", "TLSv1.3"} and report.cipher
    assert {"LOGIN", "PLAIN"} <= set(report.auth_mechanisms)
    assert report.size_limit_bytes == starttls_server.data_size_limit
    assert "starttls" not in report.extensions  # extensions are those learned after TLS
    assert starttls_server.messages == []
    assert any("size limit" in line for line in report.lines())


def test_check_tells_each_step_as_it_happens(starttls_server):
    # The UI's "Test connection" shows these live; a refused login stops after what the server offered.
    steps: list[tuple[str, str]] = []
    report = asyncio.run(SmtpTransport(connection_for(starttls_server), SecretStr(PASSWORD)).check(
        lambda step, line: steps.append((step, line))))
    assert report.ok
    assert [s for s, _ in steps] == ["connect", "tls", "ehlo", "size", "auth", "sender"]
    assert steps[1][1].startswith("TLSv1.")
    assert steps[-1][1].endswith("sender accepted (MAIL FROM, RCPT TO, RSET; nothing sent)")
    assert PASSWORD not in repr(steps)

    steps.clear()
    report = asyncio.run(SmtpTransport(connection_for(starttls_server), SecretStr("wrong")).check(
        lambda step, line: steps.append((step, line))))
    assert not report.ok and [s for s, _ in steps] == ["connect", "tls", "ehlo", "size"]


def test_check_failure_is_reported_not_raised(starttls_server):
    report = asyncio.run(SmtpTransport(connection_for(starttls_server), SecretStr("wrong")).check())
    assert report.ok is False and isinstance(report.error, AuthenticationError)


def test_connection_refused_names_host_and_port():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = SmtpConnection(name="x", host="127.0.0.1", port=port, security="implicit_tls",
                          username=LOGIN, password={"secret": "p"}, timeout_s=5)
    with pytest.raises(SmtpConnectError) as info:
        _send(conn, PASSWORD, _message())
    assert info.value.transient and "firewall" in info.value.hint and str(port) in str(info.value)


def test_size_limit_checked_before_sending():
    with FaultServer(security="starttls", users={LOGIN: PASSWORD}, data_size_limit=2_000) as server:
        msg = _message()
        msg.set_content("x" * 5_000)
        with pytest.raises(MessageTooLargeError) as info:
            _send(connection_for(server), PASSWORD, msg)
        err = info.value
        assert err.limit_bytes == 2_000 and err.size_bytes > 5_000
        assert "2,000" in str(err) and f"{err.size_bytes:,}" in str(err)
        assert server.messages == []


def test_one_refused_recipient_is_a_partial_success(starttls_server):
    starttls_server.rcpt_refusals["nobody@example.com"] = "550 5.1.1 No such user"
    result = _send(connection_for(starttls_server), PASSWORD, _message("ops@example.com, nobody@example.com"))
    assert result.accepted == ("ops@example.com",)
    refusal = result.refused["nobody@example.com"]
    assert refusal.code == 550 and refusal.enhanced_status == "5.1.1" and not refusal.transient
    assert starttls_server.wait_for_messages(1)[0].rcpt_tos == ("ops@example.com",)


def test_all_recipients_refused_raises_and_sends_nothing(starttls_server):
    starttls_server.rcpt_refusals["nobody@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(RecipientsRefusedError) as info:
        _send(connection_for(starttls_server), PASSWORD, _message("nobody@example.com"))
    assert info.value.recipients == {"nobody@example.com": (550, "5.1.1 No such user")}
    assert starttls_server.messages == []


def test_identity_headers_cannot_be_overridden_and_bcc_is_not_transmitted(starttls_server):
    msg = _message()
    msg["From"] = "ceo@example.com"
    msg["Sender"] = "ceo@example.com"
    msg["Bcc"] = "audit@example.com"
    _send(connection_for(starttls_server), PASSWORD, msg)
    [received] = starttls_server.wait_for_messages(1)
    parsed = parse(received.data)
    assert parsed["From"].addresses[0].addr_spec == LOGIN
    assert parsed["Sender"] is None and parsed["Bcc"] is None
    assert received.mail_from == LOGIN
    assert set(received.rcpt_tos) == {"ops@example.com", "audit@example.com"}
