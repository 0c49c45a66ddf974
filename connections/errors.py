"""One error hierarchy for mailgem, rooted at :class:`MailgemError`.

Every SMTP failure becomes a typed :class:`SmtpError` carrying the reply code (RFC 5321 §4.2),
the enhanced status code (RFC 3463), whether it is transient (4xx, dropped connection, timeout)
or permanent (5xx), and a hint in words that says how to fix it. Messages never contain secret
values: the only inputs are reply texts from the server and names from configuration.
"""

from __future__ import annotations

import copy
from typing import Any, Self, TypedDict


from .replies import is_sender_refusal, parse_enhanced_status

__all__ = [
    "MailgemError",
    "ConfigError",
    "SmtpError",
    "SmtpConnectError",
    "SmtpTimeoutError",
    "SmtpDisconnectedError",
    "ServerUnavailableError",
    "ContentWithheldError",
    "TlsError",
    "SecurityModeMismatchError",
    "StartTlsNotOfferedError",
    "InsecureAuthError",
    "AuthenticationError",
    "AuthNotSupportedError",
    "SenderRefusedError",
    "SmtpUtf8NotSupportedError",
    "RecipientsRefusedError",
    "MessageTooLargeError",
    "SmtpResponseError",
    "Where",
    "parse_enhanced_status",
    "is_sender_refusal",
    "redact",
]


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty one of ``secrets`` replaced by ``***``: for a library's
    error text that could quote a password or token (most do not; this makes sure)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Where(TypedDict):
    """The server an error came from, as :class:`SmtpError` takes it (``**where``)."""

    host: str
    port: int


class _Context(Where):
    """Where, and the flags :func:`from_aiosmtplib` passes on to the error it builds."""

    maybe_delivered: bool
    inherited: bool
    during_open: bool


def _restore(cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class MailgemError(Exception):
    """Root of every error mailgem raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (to Spark workers, by copy.copy) with every attribute, whatever __init__ takes.
        return _restore, (type(self), self.args, dict(self.__dict__))


class ConfigError(MailgemError, ValueError):
    """A configuration value is wrong; the message names where and how to fix it."""


class SmtpError(MailgemError):
    """An SMTP operation failed.

    Attributes:
        code: the SMTP reply code (e.g. 535), or ``None`` when the server never answered.
        enhanced_status: the RFC 3463 enhanced status code (e.g. ``"5.7.8"``), if the server sent one.
        server_message: the server's reply text, as received.
        transient: ``True`` for failures worth retrying later (4xx, dropped connection, timeout).
        hint: what to do about it, in words.
        host, port: the server the connection was talking to.
        maybe_delivered: the connection failed after the message's content was sent and before
            the server's reply to it (RFC 5321 §4.5.3.2.6): the server may have accepted it.
        inherited: a pipelining session failed under an earlier message (its final reply never
            came) before this one's commands were answered: nothing of this message was
            delivered, and it is tried again on another session without counting an attempt.
        during_open: raised while a session was being opened (connect, TLS, EHLO, AUTH, the
            pool's sender check), not by a message's transaction: an unreachable server or a
            refused login, which a fallback connection may get past.
    """

    default_hint = ""
    # None: decided by the reply code (4xx transient, RFC 5321 §4.2.1); subclasses fix it.
    default_transient: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        server_message: str | None = None,
        transient: bool | None = None,
        hint: str | None = None,
        host: str | None = None,
        port: int | None = None,
        maybe_delivered: bool = False,
        inherited: bool = False,
        during_open: bool = False,
    ) -> None:
        self.code = code
        self.server_message = server_message
        self.enhanced_status = parse_enhanced_status(server_message)
        if transient is None:
            transient = self.default_transient
        self.transient = (code is not None and 400 <= code < 500) if transient is None else transient
        self.hint = hint if hint is not None else self.default_hint
        self.host = host
        self.port = port
        self.maybe_delivered = maybe_delivered
        self.inherited = inherited
        self.during_open = during_open
        self.message = message
        super().__init__(message)

    def replace(self, *, transient: bool | None = None, during_open: bool | None = None,
                maybe_delivered: bool | None = None, inherited: bool | None = None) -> Self:
        """A new error of the same kind with the same attributes but those given (the error
        itself is never changed: a copy of it may be remembered or raised elsewhere)."""
        error = copy.copy(self)  # through __reduce__: a new instance with every attribute
        given = {"transient": transient, "during_open": during_open, "maybe_delivered": maybe_delivered,
                 "inherited": inherited}
        error.__dict__.update({name: value for name, value in given.items() if value is not None})
        return error

    def while_opening(self) -> Self:
        """This error as raised while a session opened: itself when it says so already, else a
        new one of its kind with ``during_open`` (see :meth:`replace`)."""
        return self if self.during_open else self.replace(during_open=True)

    def __str__(self) -> str:
        where = f" [{self.host}:{self.port}]" if self.host else ""
        reply = ""
        if self.code is not None:
            reply = f" (server replied {self.code}"
            reply += f" {self.server_message}" if self.server_message else ""
            reply += ")"
        hint = f" Hint: {self.hint}" if self.hint else ""
        return f"{self.message}{where}{reply}.{hint}"


class SmtpConnectError(SmtpError, ConnectionError):
    """The TCP connection could not be made (refused, unreachable, DNS)."""

    default_hint = (
        "check the connection's host and port, that the server is running, and that no firewall "
        "blocks the port (587 for STARTTLS, 465 for implicit TLS, 25 for relays)"
    )

    default_transient = True


class SmtpTimeoutError(SmtpError, TimeoutError):
    """The server did not answer within the connection's ``timeout_s``."""

    default_hint = (
        "check host, port and firewall (a silently dropped port looks like a timeout), or raise "
        "the connection's timeout_s for a slow server"
    )

    default_transient = True


class SmtpDisconnectedError(SmtpError, ConnectionError):
    """The server closed the connection unexpectedly."""

    default_hint = (
        "the server dropped the connection; if it happens right after connecting, the security "
        "mode may not match the port (implicit_tls is 465, starttls is 587)"
    )

    default_transient = True


class ServerUnavailableError(SmtpError, ConnectionError):
    """The server stopped answering in the middle of a run and did not come back within the
    connection's ``retry_outage_s``: the message was held, not sent, and is not tried again in
    this run."""

    default_transient = False  # waited out already: retrying now would only wait again
    default_hint = (
        "the server was reachable earlier in this run, then refused or dropped connections for longer than "
        "retry_outage_s: check that it runs, then re-run the job (a job that records its sends sends only what "
        "was not accepted); raise the connection's retry_outage_s to wait longer"
    )


class ContentWithheldError(SmtpDisconnectedError):
    """The caller's gate closed while a transaction waited for the server (``Gate.may_write()``
    was ``False``: e.g. the process was paused past the time its claim on the message held; see
    :mod:`mailgem.connections.gate`): the content was not written, and the session was ended
    without it (or reset), so the server discards the transaction (RFC 5321 §4.1.1.4: mail is
    processed only at the end of the mail data). Nothing of the message was delivered."""

    default_hint = "the run stopped sending this message; a re-run with the same run key sends what is left"

    default_transient = True  # a local abort (451, RFC 5321 §4.2.3), never the server's refusal


class TlsError(SmtpError):
    """The TLS handshake failed, most often because the certificate could not be verified."""

    default_hint = (
        "the server's certificate was not trusted: set the connection's ca_bundle to the CA that "
        "signed it (a private relay's CA), or fix the host name; only if you accept the risk, set "
        "verify_certificates: false"
    )

    default_transient = False


class SecurityModeMismatchError(TlsError):
    """The port speaks another security mode than the connection's ``security`` (e.g. 465 is
    implicit TLS, RFC 8314 §3.3, and never greets in plain text)."""

    default_hint = (
        "use port 465 with security implicit_tls, or port 587 with security starttls"
    )


class StartTlsNotOfferedError(SmtpError):
    """``security: starttls`` was required but the server does not advertise STARTTLS."""

    default_hint = (
        "the port and security mode do not match: use port 587 with security starttls, or port "
        "465 with security implicit_tls; use security none only for a trusted internal relay"
    )

    default_transient = False


class InsecureAuthError(SmtpError):
    """Credentials would travel over an unencrypted connection; refused before sending them."""

    default_hint = (
        "use security starttls or implicit_tls; for a trusted internal relay on plain SMTP, set "
        "allow_insecure_auth: true on the connection, or make it anonymous"
    )

    default_transient = False


class AuthenticationError(SmtpError):
    """The server rejected the credentials (535, 534, 530 ...)."""

    default_hint = (
        "the server rejected the username or password: check the secret the connection names "
        "(mailgem secrets set NAME). Gmail, Google Workspace and Yahoo need an App Password when "
        "2-step verification is on; Office 365 needs SMTP AUTH enabled for the mailbox"
    )


class AuthNotSupportedError(SmtpError):
    """The server offers no AUTH mechanism the client supports."""

    default_hint = (
        "the server does not offer AUTH on this connection; it may require STARTTLS first, or it "
        "is a relay that needs anonymous: true"
    )

    default_transient = False


class SenderRefusedError(SmtpError):
    """The server refused the connection's sender (at ``MAIL FROM``, or at ``RCPT TO`` when it
    delays its checks, as Postfix's ``smtpd_delay_reject`` does): the login may not send as it."""

    default_hint = (
        "the server refused the envelope sender: set the connection's sender_address to an "
        "address this login is allowed to send as (a verified sender at SendGrid, SES, Mailgun)"
    )


class SmtpUtf8NotSupportedError(SmtpError):
    """An address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531 §3.2), and the
    server does not offer it; nothing was sent."""

    default_transient = False
    default_hint = (
        "write that recipient's address in ASCII (ask for an ASCII alias), or send through a "
        "server that offers SMTPUTF8 (Postfix does, with smtputf8_enable)"
    )


class RecipientsRefusedError(SmtpError):
    """Every ``RCPT TO`` was refused, so nothing was sent.

    Attributes:
        recipients: ``{address: (code, server message)}`` for each refused recipient.
    """

    default_hint = "check the recipient addresses; 5xx refusals are permanent and must not be retried"

    def __init__(self, message: str, recipients: dict[str, tuple[int, str]], **kwargs: Any) -> None:
        self.recipients = recipients
        super().__init__(message, **kwargs)


class MessageTooLargeError(SmtpError):
    """The message exceeds the server's SIZE limit (RFC 1870) or a mailgem limit; nothing was sent.

    Attributes:
        size_bytes: the message's size in bytes as it would be transmitted.
        limit_bytes: the limit it exceeds, in bytes (``None`` when the server refused it after
            DATA without advertising a SIZE).
    """

    default_transient = False
    default_hint = (
        "make the message smaller: compress attachments (compression: gzip or zip), select "
        "fewer columns, or filter the rows"
    )

    def __init__(self, message: str, *, size_bytes: int, limit_bytes: int | None, **kwargs: Any) -> None:
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(message, **kwargs)


class SmtpResponseError(SmtpError):
    """Any other error reply from the server (e.g. to DATA)."""
