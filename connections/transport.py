"""``SmtpTransport``: reach one SMTP connection over aiosmtplib and open sessions on it.

The transport owns the connection's TLS policy and identity, and is gentle with the server:

* ``starttls`` is *required* (aiosmtplib's default is opportunistic): no STARTTLS offered means
  :class:`StartTlsNotOfferedError`, before any credential is sent.
* Credentials are never sent over an unencrypted connection unless ``security: none`` and
  ``allow_insecure_auth: true`` were both set on the connection.
* One AUTH attempt, with the best mechanism the server offers (aiosmtplib's ``login()`` tries
  every mechanism in turn, which a wrong password turns into several failures per session).
* A permanent refusal (rejected credentials, an untrusted certificate, the wrong security mode
  for the port, a refused sender) is remembered: no other session of this transport asks the
  server again. Providers lock accounts after repeated failed logins.
* QUIT is sent before a session that got a greeting is closed, failed ones included.
* From and the envelope sender (``MAIL FROM``) are always the connection's sender; any From,
  Sender or Return-Path on the message is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import aiosmtplib
from pydantic import SecretStr

from .addresses import ascii_domain, envelope_address, needs_smtputf8
from .dkim import DkimSigner
from .oauth2 import TokenSource
from .oauth2 import authenticate as oauth2_authenticate
from .proxy import open_tunnel
from .errors import (
    AuthNotSupportedError,
    ConfigError,
    InsecureAuthError,
    MailgemError,
    SecurityModeMismatchError,
    SenderRefusedError,
    SmtpError,
    StartTlsNotOfferedError,
    from_aiosmtplib,
)
from .headers import prefolded
from .model import SmtpConnection
from .session import (
    MAX_RCPT_PER_TRANSACTION,
    RecipientRefusal,
    SendResult,
    SmtpSession,
    envelope_recipients,
)

__all__ = ["SmtpTransport", "SmtpSession", "SendResult", "RecipientRefusal", "CheckReport", "MAX_RCPT_PER_TRANSACTION",
           "envelope_recipients", "new_message_id"]

log = logging.getLogger("mailgem.connections")

# Headers that carry the sender's identity; only the connection sets them.
IDENTITY_HEADERS = ("From", "Sender", "Return-Path")

# RFC 8314 §3.3: port 465 is implicit TLS. A plain-text client there waits for a greeting that
# never comes, so on 465 the wait is short, and a missing greeting is followed by one TLS probe.
IMPLICIT_TLS_PORT = 465
MODE_PROBE_TIMEOUT_S = 5.0
QUIT_TIMEOUT_S = 5.0

# SASL mechanisms, best first. Inside TLS, PLAIN (RFC 4616) is the standard one; CRAM-MD5
# (RFC 2195) never sends the password, so it comes first on an unencrypted connection.
_MECHANISMS_TLS = ("plain", "login", "cram-md5")
_MECHANISMS_PLAIN = ("cram-md5", "plain", "login")
# OpenSSL's reasons when the peer answered a TLS ClientHello in plain text.
_PLAINTEXT_REPLY = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG",
                              "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})


def new_message_id(domain: str) -> str:
    """A new, globally unique Message-ID (RFC 5322 §3.6.4): 128 random bits and ``domain``."""
    return f"<{secrets.token_hex(16)}.mailgem@{domain}>"  # uuid4's object costs more than the random bits


@dataclass
class CheckReport:
    """Diagnostics for the "Test connection" button.

    Attributes:
        ok: connected, TLS as required, authenticated (unless anonymous), the sender not
            refused and NOOP answered 250.
        banner: the server's greeting (220 reply text).
        extensions: EHLO extensions after TLS, ``{keyword: parameters}``.
        tls_version, cipher: negotiated TLS protocol and cipher suite, ``None`` for plain SMTP.
        auth_mechanisms: AUTH mechanisms the server offers.
        size_limit_bytes: the SIZE the server advertises (RFC 1870), ``None`` when absent or 0.
        authenticated: whether AUTH succeeded (``False`` for anonymous connections).
        sender: the connection's sender; ``sender_accepted`` whether ``MAIL FROM`` and
            ``RCPT TO`` it were accepted (``None``: not checked); ``sender_note`` what the
            server said when only the ``RCPT TO`` was refused for reasons of its own.
        elapsed_s: time taken, seconds.
        error: the typed error when ``ok`` is false.
        options: the connection's options that change what is sent (``name: value``), e.g.
            ``allowed_special_domains``.
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
    sender: str | None = None
    sender_accepted: bool | None = None
    sender_note: str | None = None
    elapsed_s: float = 0.0
    error: SmtpError | None = None
    options: list[str] = field(default_factory=list)

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
        if self.sender_accepted is not None:
            verdict = "sender accepted" if self.sender_accepted else "sender refused"
            note = f" (RCPT TO it was refused: {self.sender_note})" if self.sender_note else ""
            out.append(f"sender      <{self.sender}>: {verdict} (MAIL FROM, RCPT TO, RSET; nothing sent){note}")
        out += [f"option      {option}" for option in self.options]
        if self.error is not None:
            out.append(f"error       {self.error}")
        return out


class SmtpTransport:
    """Connect to one :class:`SmtpConnection` and send through it.

    ``password`` is the value resolved from the fabric's secret store; it is unwrapped only at
    AUTH and never logged or shown in ``repr``.

    Example::

        async with SmtpTransport(conn, password).connect() as session:
            result = await session.send(message)
    """

    def __init__(self, connection: SmtpConnection, password: SecretStr | None = None, *,
                 identity_only: bool = False, dkim_key: SecretStr | None = None,
                 proxy_password: SecretStr | None = None, tokens: TokenSource | None = None) -> None:
        self.connection = connection
        # Previews and dry runs: the connection's From and envelope sender, no secret, no session.
        self.identity_only = identity_only
        # MAIL FROM and From: a non-ASCII domain as its A-label; a non-ASCII local part needs SMTPUTF8.
        self.envelope_sender, self.sender_smtputf8 = envelope_address(connection.sender)
        # The right-hand side of Message-IDs (RFC 5322 §3.6.4): the sender's domain, in ASCII.
        self.domain = ascii_domain(connection.sender)
        # Parsed once: the stdlib reuses a header object given to it (policy.header_store_parse).
        self._from = prefolded("From", formataddr((connection.sender_name or "", self.envelope_sender)))
        self._password = password if password is not None else connection._inline_password
        # The first permanent refusal of this run (see remember_refusal); pickled with the transport.
        self.refusal: SmtpError | None = None
        # What this run learnt of the server: a session opened once in this process (so a later
        # refusal to connect is an outage, not a wrong host), and the server accepted the sender
        # (check_sender: no other session need ask; pickled with the transport to Spark workers).
        self.reached = False
        self.sender_verified = False
        self._proxy_password = proxy_password
        self._warned: set[str] = set()  # topics warned about once (see warn_once)
        self.tokens = tokens  # OAuth2 access tokens (connection auth: oauth2)
        # DKIM: the key (resolved from the fabric) travels; the signer is built where it signs.
        self._dkim_key = dkim_key
        self._signer: DkimSigner | None = None
        if connection.dkim is not None and not identity_only:
            if dkim_key is None:
                raise ConfigError(f"connection {connection.name!r} signs with DKIM but its private key was not "
                                  "resolved: resolve the connection through its fabric")
            self._signer = DkimSigner(connection.dkim, dkim_key)  # a bad key is reported now, before sending
        if connection.auth is not None and tokens is None and not identity_only:
            raise ConfigError(f"connection {connection.name!r} authenticates with OAuth2 but its secrets were not "
                              "resolved: resolve the connection through its fabric")
        if not connection.anonymous and connection.auth is None and self._password is None and not identity_only:
            raise InsecureAuthError(
                f"connection {connection.name!r} needs a password to authenticate but none was resolved",
                hint="resolve the connection through its fabric so the password secret is looked up",
            )

    def __repr__(self) -> str:
        c = self.connection
        return f"SmtpTransport(name={c.name!r}, host={c.host!r}, port={c.port}, security={c.security!r}, user={c.username!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_signer"] = None  # rebuilt from the key where the transport lands (a Spark executor)
        state["reached"] = False  # a worker's network is its own: it reaches the server itself first
        return state

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature first when the connection signs (RFC 6376), else as it is."""
        if self.connection.dkim is None or self.identity_only:
            return data
        if self._signer is None:
            assert self._dkim_key is not None
            self._signer = DkimSigner(self.connection.dkim, self._dkim_key)
        return self._signer.sign(data)

    def needs_smtputf8(self, recipients: Iterable[str]) -> bool:
        """Whether a message from this connection to ``recipients`` needs SMTPUTF8 (RFC 6531)."""
        return self.sender_smtputf8 or needs_smtputf8(recipients)

    # -- permanent refusals --------------------------------------------------------------

    def warn_once(self, topic: str, message: str) -> None:
        """Log ``message`` as a warning the first time ``topic`` comes up for this transport."""
        if topic not in self._warned:
            self._warned.add(topic)
            log.warning("%s", message)

    def remember_refusal(self, error: SmtpError) -> None:
        """Keep the first permanent refusal: later sessions raise it without asking the server."""
        if not error.transient and self.refusal is None:
            self.refusal = error
            log.warning("connection %s: %s; not asking the server again in this run", self.connection.name,
                        error.message)

    def raise_if_refused(self) -> None:
        """Raise (a copy of) the remembered permanent refusal, if any."""
        if self.refusal is not None:
            raise copy.copy(self.refusal)

    # -- sessions ------------------------------------------------------------------------

    def _client(self) -> aiosmtplib.SMTP:
        c = self.connection
        secured = c.security != "none"
        return aiosmtplib.SMTP(
            hostname=c.host,  # also the name TLS verifies, through a proxy too
            port=c.port if c.proxy is None else None,  # through a proxy: the tunnel's socket instead
            local_hostname=c.ehlo_hostname,
            timeout=c.timeout_s,
            use_tls=c.security == "implicit_tls",
            start_tls=False,  # STARTTLS is done explicitly below so that it is required, not opportunistic
            tls_context=c.tls_context() if secured else None,
        )

    async def quit(self, client: aiosmtplib.SMTP) -> None:
        """QUIT (waiting at most :data:`QUIT_TIMEOUT_S`), then close the socket."""
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await asyncio.wait_for(client.quit(), timeout=QUIT_TIMEOUT_S)
        client.close()

    async def _speaks_implicit_tls(self) -> bool:
        """Whether the port greets inside a TLS handshake (certificates not checked: a probe only)."""
        c = self.connection
        probe = aiosmtplib.SMTP(hostname=c.host, port=c.port, local_hostname=c.ehlo_hostname, use_tls=True,
                                validate_certs=False, start_tls=False, timeout=MODE_PROBE_TIMEOUT_S)
        try:
            await probe.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        await self.quit(probe)
        return True

    async def _greet(self, client: aiosmtplib.SMTP) -> aiosmtplib.SMTPResponse:
        """Connect and read the greeting, telling a mismatched security mode from a slow server."""
        c = self.connection
        where = {"host": c.host, "port": c.port}
        plain_on_465 = c.security != "implicit_tls" and c.port == IMPLICIT_TLS_PORT
        timeout = min(c.connect_timeout_s, MODE_PROBE_TIMEOUT_S) if plain_on_465 else c.connect_timeout_s
        try:
            if c.proxy is not None:
                sock = await open_tunnel(c.proxy, self._proxy_password, c.host, c.port, c.connect_timeout_s)
                return await client.connect(sock=sock, timeout=timeout)
            return await client.connect(timeout=timeout)
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            # aiosmtplib chains a read timeout when TCP connected but no greeting came.
            no_greeting = isinstance(exc.__cause__, aiosmtplib.SMTPTimeoutError)
            if c.security != "implicit_tls" and no_greeting and c.proxy is None and await self._speaks_implicit_tls():
                raise SecurityModeMismatchError(
                    f"no plain-text greeting within {timeout:g} s, but port {c.port} answers a TLS handshake "
                    f"with an SMTP greeting: it expects implicit_tls (RFC 8314), not {c.security}",
                    hint="set security: implicit_tls for this port (465 is implicit TLS), or use port 587 "
                         "with security starttls", **where) from None
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if c.security != "implicit_tls" and ("\x15\x03" in exc.message or "\x16\x03" in exc.message):
                raise SecurityModeMismatchError(
                    f"port {c.port} sent a TLS record where an SMTP greeting was expected: it expects "
                    f"implicit_tls, not {c.security}", **where) from None
            raise
        except aiosmtplib.SMTPConnectError as exc:
            reason = getattr(exc.__cause__, "reason", None)
            if c.security == "implicit_tls" and reason in _PLAINTEXT_REPLY:
                raise SecurityModeMismatchError(
                    f"port {c.port} answered the TLS handshake in plain text: it expects starttls (or none), "
                    "not implicit_tls", hint="set security: starttls for this port (587 is STARTTLS), or use "
                    "port 465 with security implicit_tls", **where) from None
            raise

    async def _authenticate(self, client: aiosmtplib.SMTP, encrypted: bool) -> str:
        """One AUTH attempt with the best mechanism the server offers; returns its name."""
        c = self.connection
        offered = {m.lower() for m in client.server_auth_methods}
        if self.tokens is not None:
            if "xoauth2" not in offered:
                raise AuthNotSupportedError(
                    f"the connection uses OAuth2, and the server offers AUTH {' '.join(sorted(offered)).upper() or '(none)'} "
                    "without XOAUTH2", hint="check host and port (smtp.office365.com:587, smtp.gmail.com:587)",
                    host=c.host, port=c.port)
            await oauth2_authenticate(client, str(c.username), self.tokens)
            return "xoauth2"
        order = _MECHANISMS_TLS if encrypted else _MECHANISMS_PLAIN
        mechanism = next((m for m in order if m in offered), None)
        if mechanism is None:
            raise AuthNotSupportedError(
                f"the server offers AUTH {' '.join(sorted(offered)).upper() or '(none)'}, none of which mailgem "
                "speaks (PLAIN, LOGIN, CRAM-MD5)", host=c.host, port=c.port)
        method = {"plain": client.auth_plain, "login": client.auth_login, "cram-md5": client.auth_crammd5}[mechanism]
        assert self._password is not None
        await method(str(c.username), self._password.get_secret_value())
        return mechanism

    async def _open(self, report: CheckReport | None = None) -> SmtpSession:
        if self.identity_only:
            raise MailgemError(f"connection {self.connection.name!r} was set up for a preview (no secret): it cannot send")
        self.raise_if_refused()
        c = self.connection
        where = {"host": c.host, "port": c.port}
        client = self._client()
        stage = "connect"
        try:
            greeting = await self._greet(client)
            stage = "ehlo"
            if report is not None:
                report.banner = greeting.message
            if client.last_ehlo_response is None:
                await client.ehlo()
            if c.security == "starttls":
                stage = "starttls"
                if not client.supports_extension("starttls"):
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
                report.size_limit_bytes = SmtpSession.size_of(client)  # offered before AUTH, shown if AUTH fails
            mechanism = None
            if not c.anonymous:
                stage = "auth"
                if not encrypted and not (c.security == "none" and c.allow_insecure_auth):
                    raise InsecureAuthError("refusing to send credentials over an unencrypted connection", **where)
                if not client.supports_extension("auth"):
                    raise AuthNotSupportedError("the server offers no AUTH on this connection", **where)
                mechanism = await self._authenticate(client, encrypted)
                if report is not None:
                    report.authenticated = True
        except (SmtpError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = exc if isinstance(exc, SmtpError) else from_aiosmtplib(exc, stage=stage, **where)
            if stage == "connect":
                client.close()  # no greeting: nothing to QUIT
            else:
                await self.quit(client)
            self.remember_refusal(error)
            raise error from None
        self.reached = True
        log.info("connected to %s:%s (%s%s)%s", c.host, c.port, c.security,
                 f", {client.get_transport_info('ssl_object').version()}" if encrypted else "",
                 f" as {c.username} (AUTH {mechanism.upper()})" if mechanism else "")
        return SmtpSession(self, client, greeting.message)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[SmtpSession]:
        """Open a secured, authenticated session; QUIT on exit.

        Raises:
            SmtpConnectError, SmtpTimeoutError, TlsError, SecurityModeMismatchError,
            StartTlsNotOfferedError, InsecureAuthError, AuthNotSupportedError, AuthenticationError.
        """
        session = await self._open()
        try:
            yield session
        finally:
            await session.close()

    def from_line(self, utf8: bool = False) -> bytes:
        """The From header line this connection writes, as transmitted (CRLF-terminated)."""
        folded = self._from.fold(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
        return folded.encode("utf-8" if utf8 else "ascii", "surrogateescape")

    def flatten(self, message: EmailMessage, *, utf8: bool = False) -> bytes:
        """Set this connection's identity on ``message`` and return its bytes as transmitted.

        From becomes the connection's sender; Sender, Return-Path and Bcc are removed; Date and
        Message-ID are added when missing (RFC 5322 §3.6.1, §3.6.4). ``utf8`` writes UTF-8
        headers (RFC 6532), for messages sent with SMTPUTF8.
        """
        for name in (*IDENTITY_HEADERS, "Bcc"):
            del message[name]
        message["From"] = self._from
        if "Date" not in message:
            message["Date"] = formatdate(localtime=True)
        if "Message-ID" not in message:
            message["Message-ID"] = new_message_id(self.domain)
        return message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)

    async def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> SendResult:
        """Open a session, send one message, close. See :meth:`SmtpSession.send`."""
        async with self.connect() as session:
            return await session.send(message, recipients)

    async def check(self) -> CheckReport:
        """Connect, authenticate and check the sender without sending; report what the server offers.

        The sender check is ``MAIL FROM`` and ``RCPT TO`` the connection's sender, then ``RSET``.
        Never raises for SMTP failures: they are in ``report.error`` with ``ok`` false.
        """
        c = self.connection
        report = CheckReport(host=c.host, port=c.port, security=c.security, sender=c.sender, options=c.options())
        started = time.perf_counter()
        try:
            session = await self._open(report)
            try:
                try:
                    note = await session.check_sender()
                except SenderRefusedError:
                    report.sender_accepted = False
                    raise
                report.sender_accepted = True
                report.sender_note = str(note) if note else None
                report.ok = await session.noop() == 250
            finally:
                await session.close()
        except SmtpError as exc:
            report.error = exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            report.error = from_aiosmtplib(exc, stage="noop", host=c.host, port=c.port)
        report.elapsed_s = time.perf_counter() - started
        return report
