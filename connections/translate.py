"""An aiosmtplib failure as the typed error of :mod:`mailgem.connections.errors`: the reply code,
the enhanced status code (RFC 3463), transient or permanent, and the hint that says how to fix it
(e.g. 535 from Gmail: an App Password)."""

from __future__ import annotations

import ssl

import aiosmtplib

from .errors import (
    AuthenticationError, MessageTooLargeError, RecipientsRefusedError, SenderRefusedError, SmtpConnectError,
    SmtpDisconnectedError, SmtpError, SmtpResponseError, SmtpTimeoutError, TlsError, _Context)

__all__ = ["from_aiosmtplib"]


def _auth_hint(code: int, text: str, host: str | None) -> str:
    lowered = (text or "").lower()
    host = (host or "").lower()
    if code == 534 or "application-specific password" in lowered or "apppassword" in lowered:
        return (
            "the provider requires an App Password for SMTP: create one in the account's security "
            "settings and store it as the connection's password secret"
        )
    if "gmail" in host or "google" in host:
        return (
            "Gmail rejected the login: use an App Password (Google Account > Security > App "
            "passwords; needs 2-step verification), not the account password"
        )
    if "office365" in host or "outlook" in host:
        return (
            "Microsoft rejected the login: SMTP AUTH must be enabled for the mailbox, and "
            "security defaults may block basic authentication"
        )
    return AuthenticationError.default_hint


def _greeting_refusal(exc: aiosmtplib.SMTPConnectResponseError, where: _Context) -> SmtpConnectError:
    """A greeting that is not 220: the server is there (no firewall in the way) and answers, but
    will not serve this session now (421, RFC 5321 §3.8) or at all (554, RFC 5321 §3.1)."""
    if 400 <= exc.code < 500:
        hint = ("the server is up but busy or refusing sessions for now (421, RFC 5321 §3.8): it is retried; if it "
                "persists, the server may limit sessions from this host (lower the connection's pool_size) or be "
                "shutting down")
    else:
        hint = ("the server refuses SMTP service to this client (RFC 5321 §3.1): it may block this host's address "
                "or require another port; ask its administrator")
    return SmtpConnectError(f"the server answered the connection with {exc.code} instead of a greeting",
                            code=exc.code, server_message=exc.message, hint=hint,
                            transient=400 <= exc.code < 500, **where)


def from_aiosmtplib(exc: BaseException, *, stage: str, host: str, port: int, maybe_delivered: bool = False,
                    inherited: bool = False, during_open: bool = False) -> SmtpError:
    """Translate an aiosmtplib (or ssl/OS) exception raised during ``stage`` into a typed error.

    ``stage`` is one of ``connect``, ``starttls``, ``auth``, ``mail``, ``rcpt``, ``data``.
    ``maybe_delivered``, ``inherited``, ``during_open``: set on the error built (see
    :class:`SmtpError`); an ``exc`` that is an :class:`SmtpError` already is returned as it is,
    or as a copy that says those of them that are true (it is never changed itself).
    """
    where: _Context = {"host": host, "port": port, "maybe_delivered": maybe_delivered, "inherited": inherited,
                       "during_open": during_open}
    if isinstance(exc, SmtpError):
        flags = {"maybe_delivered": exc.maybe_delivered or maybe_delivered, "inherited": exc.inherited or inherited,
                 "during_open": exc.during_open or during_open}
        return exc if all(getattr(exc, name) == value for name, value in flags.items()) else exc.replace(**flags)
    ssl_cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__ or exc.__context__
    if isinstance(ssl_cause, ssl.SSLCertVerificationError):
        return TlsError(f"TLS certificate verification failed: {ssl_cause.verify_message}", **where)
    if isinstance(ssl_cause, ssl.SSLError):
        return TlsError(f"TLS handshake failed: {ssl_cause.reason or ssl_cause}", **where,
                        hint="the server's TLS settings do not match: check min_tls_version and "
                        "whether the port speaks implicit TLS (465) or STARTTLS (587)")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return SmtpTimeoutError(f"timed out during {stage}", **where)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SmtpDisconnectedError(f"server disconnected during {stage}", **where)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return _greeting_refusal(exc, where)
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return SmtpConnectError(f"could not connect: {exc.message}", **where)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = {r.recipient: (r.code, r.message) for r in exc.recipients}
        code = exc.recipients[0].code if exc.recipients else None
        text = exc.recipients[0].message if exc.recipients else None
        return RecipientsRefusedError("every recipient was refused", refused, code=code,
                                      server_message=text, **where)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return AuthenticationError("authentication failed", code=exc.code, server_message=exc.message,
                                   hint=_auth_hint(exc.code, exc.message, host), **where)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return SenderRefusedError(f"envelope sender <{exc.sender}> refused", code=exc.code,
                                  server_message=exc.message, **where)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code == 552:
            return SmtpResponseError(f"message refused during {stage}", code=exc.code,
                                     server_message=exc.message, hint=MessageTooLargeError.default_hint,
                                     **where)
        if exc.code == 530:
            return AuthenticationError(f"server requires authentication or TLS during {stage}",
                                       code=exc.code, server_message=exc.message, **where)
        return SmtpResponseError(f"server refused {stage}", code=exc.code, server_message=exc.message, **where)
    if isinstance(exc, aiosmtplib.SMTPException):
        return SmtpResponseError(f"SMTP error during {stage}: {exc}", **where)
    if isinstance(exc, (TimeoutError,)):
        return SmtpTimeoutError(f"timed out during {stage}", **where)
    if isinstance(exc, ConnectionError | OSError):
        return SmtpConnectError(f"network error during {stage}: {exc.strerror or exc}", **where)
    return SmtpResponseError(f"unexpected error during {stage}: {type(exc).__name__}", **where)
