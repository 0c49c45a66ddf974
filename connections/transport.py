"""``SmtpTransport``: reach one SMTP connection over aiosmtplib and send messages through it.

The transport owns the connection's TLS policy and identity:

* ``starttls`` is *required* (aiosmtplib's default is opportunistic): no STARTTLS offered means
  :class:`StartTlsNotOfferedError`, before any credential is sent.
* Credentials are never sent over an unencrypted connection unless ``security: none`` and
  ``allow_insecure_auth: true`` were both set on the connection.
* From and the envelope sender (``MAIL FROM``) are always the connection's sender; any From,
  Sender or Return-Path on the message is replaced.
* Before ``MAIL FROM``, the message size is checked against the server's advertised SIZE
  (RFC 1870), which aiosmtplib sends but never checks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, make_msgid

import aiosmtplib
from pydantic import SecretStr

from .errors import (
    AuthNotSupportedError,
    InsecureAuthError,
    MessageTooLargeError,
    RecipientsRefusedError,
    SmtpError,
    StartTlsNotOfferedError,
    from_aiosmtplib,
    parse_enhanced_status,
)
from .headers import prefolded
from .model import SmtpConnection

__all__ = ["SmtpTransport", "SmtpSession", "SendResult", "RecipientRefusal", "CheckReport", "MAX_RCPT_PER_TRANSACTION"]

log = logging.getLogger("mailgem.connections")

# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RCPT_PER_TRANSACTION = 100

# Headers that carry the sender's identity; only the connection sets them.
IDENTITY_HEADERS = ("From", "Sender", "Return-Path")


@dataclass(frozen=True)
class RecipientRefusal:
    """One refused ``RCPT TO``: reply code, enhanced status code and the server's text."""

    code: int
    message: str
    enhanced_status: str | None = None

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


@dataclass(frozen=True)
class SendResult:
    """What the server said about one message.

    Attributes:
        accepted: recipients the server accepted (``RCPT TO`` 250/251).
        refused: ``{recipient: RecipientRefusal}`` for recipients refused while others were
            accepted (a partial success, RFC 5321 §3.3).
        code: reply code to the end of DATA (250 when queued).
        message: the server's reply text (often carries its queue id).
        enhanced_status: RFC 3463 code from that reply, if any.
        message_id: the message's ``Message-ID`` header.
        size_bytes: bytes transmitted in DATA.
    """

    accepted: tuple[str, ...]
    refused: dict[str, RecipientRefusal]
    code: int
    message: str
    enhanced_status: str | None
    message_id: str | None
    size_bytes: int


@dataclass
class CheckReport:
    """Diagnostics for the "Test connection" button.

    Attributes:
        ok: connected, TLS as required, authenticated (unless anonymous) and NOOP answered 250.
        banner: the server's greeting (220 reply text).
        extensions: EHLO extensions after TLS, ``{keyword: parameters}``.
        tls_version, cipher: negotiated TLS protocol and cipher suite, ``None`` for plain SMTP.
        auth_mechanisms: AUTH mechanisms the server offers.
        size_limit_bytes: the SIZE the server advertises (RFC 1870), ``None`` when absent or 0.
        authenticated: whether AUTH succeeded (``False`` for anonymous connections).
        elapsed_s: time taken, seconds.
        error: the typed error when ``ok`` is false.
    """

    host: str
    port: int
    security: str
    ok: bool = False
    banner: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    tls_version: str | None = None
    cipher: str | None = None
    auth_mechanisms: list[str] = field(default_factory=list)
    size_limit_bytes: int | None = None
    authenticated: bool = False
    elapsed_s: float = 0.0
    error: SmtpError | None = None

    def lines(self) -> list[str]:
        """Human-readable lines, one fact each."""
        out = [
            f"server      {self.host}:{self.port} ({self.security})",
            f"result      {'OK' if self.ok else 'FAILED'} in {self.elapsed_s:.2f} s",
        ]
        if self.banner is not None:
            out.append(f"banner      {self.banner}")
        if self.tls_version:
            out.append(f"tls         {self.tls_version} {self.cipher}")
        if self.extensions:
            out.append("extensions  " + ", ".join(f"{k.upper()} {v}".strip() for k, v in sorted(self.extensions.items())))
        out.append("auth        " + (", ".join(self.auth_mechanisms) or "(not offered)")
                   + (" - authenticated" if self.authenticated else ""))
        out.append("size limit  " + (f"{self.size_limit_bytes:,} bytes" if self.size_limit_bytes else "(none advertised)"))
        if self.error is not None:
            out.append(f"error       {self.error}")
        return out


def envelope_recipients(message: EmailMessage) -> list[str]:
    """Addresses from To, Cc and Bcc (RFC 5322 §3.6.3), de-duplicated, in order."""
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    seen: dict[str, None] = {}
    for _, address in getaddresses(fields):
        if address:
            seen.setdefault(address, None)
    return list(seen)


class SmtpSession:
    """One connected, secured and authenticated aiosmtplib client. Use via :meth:`SmtpTransport.connect`."""

    def __init__(self, transport: SmtpTransport, client: aiosmtplib.SMTP, banner: str | None) -> None:
        self._transport = transport
        self._client = client
        self.banner = banner

    @property
    def size_limit_bytes(self) -> int | None:
        """SIZE advertised by the server (RFC 1870 §4), ``None`` when absent or 0 (no limit)."""
        raw = self._client.esmtp_extensions.get("size", "").strip()
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    async def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> SendResult:
        """Send ``message`` to ``recipients`` (default: its To, Cc and Bcc; Bcc is never transmitted).

        Returns:
            a :class:`SendResult`; recipients refused while others are accepted are in ``refused``.

        Raises:
            MessageTooLargeError: larger than the server's SIZE; nothing was sent.
            RecipientsRefusedError: every recipient refused; nothing was sent.
            SmtpError: any other failure, typed (see :mod:`connections.errors`).
        """
        rcpts = list(recipients) if recipients is not None else envelope_recipients(message)
        if not rcpts:
            raise RecipientsRefusedError("the message has no recipients", {}, transient=False,
                                         hint="set to, cc or bcc")
        data = self._transport.flatten(message)  # Bcc was read above, before flatten drops it
        return await self.send_bytes(data, rcpts, message_id=str(message["Message-ID"]))

    async def send_bytes(self, data: bytes, recipients: Sequence[str], *, message_id: str | None = None) -> SendResult:
        """Send an already flattened message (CRLF line endings).

        More than :data:`MAX_RCPT_PER_TRANSACTION` recipients go in several mail transactions of
        that many (RFC 5321 §4.5.3.1.8: servers need buffer only 100 recipients). A chunk that
        fails after an earlier one was accepted is reported per recipient, not raised, so that
        what was accepted is never sent again.
        """
        chunks = [list(recipients[i:i + MAX_RCPT_PER_TRANSACTION])
                  for i in range(0, len(recipients), MAX_RCPT_PER_TRANSACTION)]
        if len(chunks) <= 1:
            return await self._transaction(data, list(recipients), message_id)
        results: list[SendResult] = []
        failures: dict[str, RecipientRefusal] = {}
        last_error: SmtpError | None = None
        for chunk in chunks:
            try:
                results.append(await self._transaction(data, chunk, message_id))
            except MessageTooLargeError:
                raise
            except SmtpError as exc:
                if isinstance(exc, RecipientsRefusedError) and exc.recipients:
                    failures.update({r: RecipientRefusal(c, m, parse_enhanced_status(m)) for r, (c, m) in exc.recipients.items()})
                else:
                    code = exc.code if exc.code is not None else (451 if exc.transient else 554)
                    failures.update({r: RecipientRefusal(code, exc.server_message or exc.message, exc.enhanced_status)
                                     for r in chunk})
                last_error = exc
        if not results:
            assert last_error is not None
            raise last_error
        refused = {r: v for res in results for r, v in res.refused.items()} | failures
        last = results[-1]
        return SendResult(tuple(a for res in results for a in res.accepted), refused, last.code, last.message,
                          last.enhanced_status, message_id, len(data))

    async def _transaction(self, data: bytes, recipients: list[str], message_id: str | None) -> SendResult:
        """One mail transaction: MAIL FROM, RCPT TO each recipient, DATA."""
        transport = self._transport
        connection = transport.connection
        limit = self.size_limit_bytes
        where = {"host": connection.host, "port": connection.port}
        effective = limit or connection.max_message_bytes
        if len(data) > effective:
            source = "the server's SIZE limit (RFC 1870)" if limit else "the connection's max_message_bytes"
            raise MessageTooLargeError(
                f"message is {len(data):,} bytes, over {source} of {effective:,} bytes; nothing was sent",
                size_bytes=len(data), limit_bytes=effective, **where)
        client = self._client
        stage = "mail"
        try:
            options = [f"SIZE={len(data)}"] if self._client.supports_extension("size") else []
            await client.mail(connection.sender, options=options)
            stage = "rcpt"
            refused: dict[str, RecipientRefusal] = {}
            accepted: list[str] = []
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt)
                    accepted.append(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[rcpt] = RecipientRefusal(exc.code, exc.message, parse_enhanced_status(exc.message))
            if not accepted:
                await self._reset()
                first = next(iter(refused.values()))
                raise RecipientsRefusedError(
                    "every recipient was refused; nothing was sent",
                    {r: (v.code, v.message) for r, v in refused.items()},
                    code=first.code, server_message=first.message, **where)
            stage = "data"
            response = await client.data(data, timeout=connection.data_timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise from_aiosmtplib(exc, stage=stage, **where) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise from_aiosmtplib(exc, stage=stage, **where) from None
        log.debug("message %s accepted by %s:%s for %d recipient(s), %d refused",
                  message_id, connection.host, connection.port, len(accepted), len(refused))
        return SendResult(tuple(accepted), refused, response.code, response.message,
                          parse_enhanced_status(response.message), message_id, len(data))

    async def _reset(self) -> None:
        # RSET leaves the session usable for the next message; a failure here is not the story.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await self._client.rset()

    async def noop(self) -> int:
        """Send NOOP and return the reply code (250 when the session is healthy)."""
        return (await self._client.noop()).code


class SmtpTransport:
    """Connect to one :class:`SmtpConnection` and send through it.

    ``password`` is the value resolved from the fabric's secret store; it is unwrapped only at
    AUTH and never logged or shown in ``repr``.

    Example::

        async with SmtpTransport(conn, password).connect() as session:
            result = await session.send(message)
    """

    def __init__(self, connection: SmtpConnection, password: SecretStr | None = None) -> None:
        self.connection = connection
        # Parsed once: the stdlib reuses a header object given to it (policy.header_store_parse).
        self._from = prefolded("From", formataddr((connection.sender_name or "", connection.sender)))
        self._password = password if password is not None else connection._inline_password
        if not connection.anonymous and self._password is None:
            raise InsecureAuthError(
                f"connection {connection.name!r} needs a password to authenticate but none was resolved",
                hint="resolve the connection through its fabric so the password secret is looked up",
            )

    def __repr__(self) -> str:
        c = self.connection
        return f"SmtpTransport(name={c.name!r}, host={c.host!r}, port={c.port}, security={c.security!r}, user={c.username!r})"

    def _client(self) -> aiosmtplib.SMTP:
        c = self.connection
        secured = c.security != "none"
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            local_hostname=c.ehlo_hostname,
            timeout=c.timeout_s,
            use_tls=c.security == "implicit_tls",
            start_tls=False,  # STARTTLS is done explicitly below so that it is required, not opportunistic
            tls_context=c.tls_context() if secured else None,
        )

    async def _open(self, report: CheckReport | None = None) -> SmtpSession:
        c = self.connection
        where = {"host": c.host, "port": c.port}
        client = self._client()
        stage = "connect"
        try:
            greeting = await client.connect(timeout=c.connect_timeout_s)
            if report is not None:
                report.banner = greeting.message
            if client.last_ehlo_response is None:
                await client.ehlo()
            if c.security == "starttls":
                stage = "starttls"
                if not client.supports_extension("starttls"):
                    client.close()
                    raise StartTlsNotOfferedError("security is starttls but the server does not offer STARTTLS", **where)
                await client.starttls(tls_context=c.tls_context())
                await client.ehlo()  # RFC 3207 §4.2: extensions must be learned again after TLS
            encrypted = client.get_transport_info("sslcontext") is not None
            if report is not None:
                ssl_object = client.get_transport_info("ssl_object")
                if ssl_object is not None:
                    report.tls_version = ssl_object.version()
                    report.cipher = (ssl_object.cipher() or (None,))[0]
                report.extensions = dict(client.esmtp_extensions)
                report.auth_mechanisms = [m.upper() for m in client.server_auth_methods]
            if not c.anonymous:
                stage = "auth"
                if not encrypted and not (c.security == "none" and c.allow_insecure_auth):
                    client.close()
                    raise InsecureAuthError("refusing to send credentials over an unencrypted connection", **where)
                if not client.supports_extension("auth"):
                    client.close()
                    raise AuthNotSupportedError("the server offers no AUTH on this connection", **where)
                assert self._password is not None
                await client.login(str(c.username), self._password.get_secret_value())
                if report is not None:
                    report.authenticated = True
        except SmtpError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise from_aiosmtplib(exc, stage=stage, **where) from None
        log.info("connected to %s:%s (%s%s)%s", c.host, c.port, c.security,
                 f", {client.get_transport_info('ssl_object').version()}" if encrypted else "",
                 "" if c.anonymous else f" as {c.username}")
        return SmtpSession(self, client, greeting.message)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[SmtpSession]:
        """Open a secured, authenticated session; QUIT on exit.

        Raises:
            SmtpConnectError, SmtpTimeoutError, TlsError, StartTlsNotOfferedError,
            InsecureAuthError, AuthNotSupportedError, AuthenticationError.
        """
        session = await self._open()
        try:
            yield session
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await session._client.quit()
            session._client.close()

    def from_line(self) -> bytes:
        """The From header line this connection writes, as transmitted (CRLF-terminated)."""
        return self._from.fold(policy=policy.SMTP).encode("ascii", "surrogateescape")

    def flatten(self, message: EmailMessage) -> bytes:
        """Set this connection's identity on ``message`` and return its bytes as transmitted.

        From becomes the connection's sender; Sender, Return-Path and Bcc are removed; Date and
        Message-ID are added when missing (RFC 5322 §3.6.1, §3.6.4).
        """
        connection = self.connection
        for name in (*IDENTITY_HEADERS, "Bcc"):
            del message[name]
        message["From"] = self._from
        if "Date" not in message:
            message["Date"] = formatdate(localtime=True)
        if "Message-ID" not in message:
            # RFC 5322 §3.6.4: the right-hand side names the sender's domain.
            message["Message-ID"] = make_msgid(domain=connection.sender.rpartition("@")[2])
        return message.as_bytes(policy=policy.SMTP)

    async def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> SendResult:
        """Open a session, send one message, close. See :meth:`SmtpSession.send`."""
        async with self.connect() as session:
            return await session.send(message, recipients)

    async def check(self) -> CheckReport:
        """Connect and authenticate without sending; report what the server offers.

        Never raises for SMTP failures: they are in ``report.error`` with ``ok`` false.
        """
        c = self.connection
        report = CheckReport(host=c.host, port=c.port, security=c.security)
        started = time.perf_counter()
        try:
            session = await self._open(report)
            try:
                report.size_limit_bytes = session.size_limit_bytes
                report.ok = await session.noop() == 250
            finally:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await session._client.quit()
                session._client.close()
        except SmtpError as exc:
            report.error = exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            report.error = from_aiosmtplib(exc, stage="noop", host=c.host, port=c.port)
        report.elapsed_s = time.perf_counter() - started
        return report
