"""Opening one session: connect (through a proxy when set), TLS, EHLO, STARTTLS, AUTH.

Gentle with the server, and strict about TLS:

* ``starttls`` is *required* (aiosmtplib's default is opportunistic): no STARTTLS offered means
  :class:`StartTlsNotOfferedError`, before any credential is sent.
* Credentials are never sent over an unencrypted connection unless ``security: none`` and
  ``allow_insecure_auth: true`` were both set on the connection.
* One AUTH attempt, with the best mechanism the server offers (aiosmtplib's ``login()`` tries
  every mechanism in turn, which a wrong password turns into several failures per session).
* A permanent refusal is remembered (:class:`~mailgem.connections.memory.ServerMemory`): no
  other session of the connection asks the server again.
* QUIT is sent before a session that got a greeting is closed, failed ones included.
* A port that speaks another security mode than the connection's (RFC 8314 §3.3: 465 is
  implicit TLS) is named as such, not reported as a slow server.

Every SMTP error raised here says ``during_open`` (see :class:`~mailgem.connections.errors.SmtpError`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib
from pydantic import SecretStr

from .errors import (
    AuthNotSupportedError,
    InsecureAuthError,
    MailgemError,
    SecurityModeMismatchError,
    SmtpError,
    StartTlsNotOfferedError,
)
from .translate import from_aiosmtplib
from .identity import SenderIdentity
from .memory import ServerMemory
from .model import SmtpConnection
from .oauth2 import TokenSource
from .oauth2 import authenticate as oauth2_authenticate
from .proxy import open_tunnel
from .session import SmtpSession, quit_client

__all__ = ["Opener", "Offer", "IMPLICIT_TLS_PORT", "MODE_PROBE_TIMEOUT_S"]

log = logging.getLogger("mailgem.connections")

# RFC 8314 §3.3: port 465 is implicit TLS. A plain-text client there waits for a greeting that
# never comes, so on 465 the wait is short, and a missing greeting is followed by one TLS probe.
IMPLICIT_TLS_PORT = 465
MODE_PROBE_TIMEOUT_S = 5.0

# SASL mechanisms, best first. Inside TLS, PLAIN (RFC 4616) is the standard one; CRAM-MD5
# (RFC 2195) never sends the password, so it comes first on an unencrypted connection.
_MECHANISMS_TLS = ("plain", "login", "cram-md5")
_MECHANISMS_PLAIN = ("cram-md5", "plain", "login")
# OpenSSL's reasons when the peer answered a TLS ClientHello in plain text.
_PLAINTEXT_REPLY = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG",
                              "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})


@dataclass
class Offer:
    """What the server showed while a session opened, as far as it got (for the connection test).

    Attributes:
        banner: the greeting's text (220 reply). tls_version, cipher: ``None`` for plain SMTP.
        extensions: EHLO extensions after TLS, ``{keyword: parameters}``.
        auth_mechanisms: AUTH mechanisms offered. size_limit_bytes: SIZE (RFC 1870), bytes.
        authenticated: AUTH succeeded.
    """

    banner: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    auth_mechanisms: list[str] = field(default_factory=list)
    size_limit_bytes: int | None = None
    authenticated: bool = False
    # Told each step as it happens, (step, one line): the "Test connection" button shows them live.
    on_step: Callable[[str, str], None] | None = field(default=None, repr=False, compare=False)

    def tell(self, step: str, line: str) -> None:
        """Pass one step (``connect``, ``tls``, ``ehlo``, ``size``, ``auth``, ``sender``) to ``on_step``."""
        if self.on_step is not None:
            self.on_step(step, line)

    def greeted(self, banner: str, host: str, port: int) -> None:
        """The server's greeting (220) arrived."""
        self.banner = banner
        self.tell("connect", f"connected to {host}:{port}: {banner}")

    def saw(self, client: aiosmtplib.SMTP) -> None:
        """Note TLS and the EHLO reply (after STARTTLS), before AUTH, so a refused login still shows them."""
        ssl_object = client.get_transport_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            self.cipher = (ssl_object.cipher() or (None,))[0]
        self.extensions = dict(client.esmtp_extensions)
        self.auth_mechanisms = [m.upper() for m in client.server_auth_methods]
        self.size_limit_bytes = SmtpSession.size_of(client)
        if self.on_step is not None:  # the lines are made only for a listener
            self.tell("tls", f"{self.tls_version} {self.cipher}" if self.tls_version else "none (plain SMTP)")
            self.tell("ehlo", "AUTH " + (" ".join(self.auth_mechanisms) or "(not offered)"))
            self.tell("size", f"{self.size_limit_bytes:,} bytes" if self.size_limit_bytes else "(none advertised)")


class Opener:
    """Opens secured, authenticated sessions of one connection (see the module docstring).

    Args:
        connection, identity, memory: what each session is given.
        password: unwrapped only at AUTH; never logged or shown in ``repr``.
        tokens: OAuth2 access tokens (connection ``auth: oauth2``).
        proxy_password: the proxy's, when the connection goes through one.
        preview: no secret was resolved (previews, dry runs): opening raises :class:`MailgemError`.
    """

    def __init__(self, connection: SmtpConnection, identity: SenderIdentity, memory: ServerMemory, *,
                 password: SecretStr | None, tokens: TokenSource | None, proxy_password: SecretStr | None,
                 preview: bool = False) -> None:
        self.connection = connection
        self.identity = identity
        self.memory = memory
        self._password = password
        self._tokens = tokens
        self._proxy_password = proxy_password
        self._preview = preview

    def __repr__(self) -> str:
        return f"Opener({self.connection.name!r})"

    async def open(self, offer: Offer | None = None) -> SmtpSession:
        """Open a session: connect, EHLO, STARTTLS (when ``security: starttls``), AUTH; ``offer``
        is filled in as the server shows itself.

        Raises:
            MailgemError: the connection was set up for a preview (no secret).
            SmtpConnectError, SmtpTimeoutError, TlsError, SecurityModeMismatchError,
            StartTlsNotOfferedError, InsecureAuthError, AuthNotSupportedError, AuthenticationError:
                with ``during_open``; a permanent one is remembered for the run.
        """
        c = self.connection
        if self._preview:
            raise MailgemError(f"connection {c.name!r} was set up for a preview (no secret): it cannot send")
        self.memory.raise_if_refused(opening=True)
        client = self._client()
        stage = "connect"
        try:
            greeting = await self._greet(client)
            stage = "ehlo"
            if offer is not None:
                offer.greeted(greeting.message, c.host, c.port)
            if client.last_ehlo_response is None:
                await client.ehlo()
            if c.security == "starttls":
                stage = "starttls"
                await self._starttls(client)
            encrypted = client.get_transport_info("sslcontext") is not None
            if offer is not None:
                offer.saw(client)  # offered before AUTH, shown if AUTH fails
            mechanism = None
            if not c.anonymous:
                stage = "auth"
                mechanism = await self._login(client, encrypted)
                if offer is not None:
                    offer.authenticated = True
                    offer.tell("auth", f"authenticated as {c.username} (AUTH {mechanism.upper()})")
        except (SmtpError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise await self._failed(client, exc, stage) from None
        self.memory.reached = True
        log.info("connected to %s:%s (%s%s)%s", c.host, c.port, c.security,
                 f", {client.get_transport_info('ssl_object').version()}" if encrypted else "",
                 f" as {c.username} (AUTH {mechanism.upper()})" if mechanism else "")
        return SmtpSession(c, self.identity, self.memory, client, greeting.message)

    async def _failed(self, client: aiosmtplib.SMTP, exc: BaseException, stage: str) -> SmtpError:
        """Close ``client`` after a failure during ``stage`` (QUIT once greeted); the typed error,
        remembered when permanent."""
        c = self.connection
        if isinstance(exc, SmtpError):
            error = exc.while_opening()  # e.g. the proxy's or the OAuth2 token endpoint's
        else:
            error = from_aiosmtplib(exc, stage=stage, host=c.host, port=c.port, during_open=True)
        if stage == "connect":
            client.close()  # no greeting: nothing to QUIT
        else:
            await quit_client(client)
        self.memory.remember_refusal(error)
        return error

    def _client(self) -> aiosmtplib.SMTP:
        c = self.connection
        secured = c.security != "none"
        return aiosmtplib.SMTP(
            hostname=c.host,  # also the name TLS verifies, through a proxy too
            port=c.port if c.proxy is None else None,  # through a proxy: the tunnel's socket instead
            local_hostname=c.ehlo_hostname,
            timeout=c.timeout_s,
            use_tls=c.security == "implicit_tls",
            start_tls=False,  # STARTTLS is done explicitly (_starttls) so that it is required, not opportunistic
            tls_context=c.tls_context() if secured else None,
        )

    async def _starttls(self, client: aiosmtplib.SMTP) -> None:
        c = self.connection
        if not client.supports_extension("starttls"):
            raise StartTlsNotOfferedError("security is starttls but the server does not offer STARTTLS",
                                          host=c.host, port=c.port, during_open=True)
        await client.starttls(tls_context=c.tls_context())
        await client.ehlo()  # RFC 3207 §4.2: extensions must be learned again after TLS

    async def _speaks_implicit_tls(self) -> bool:
        """Whether the port greets inside a TLS handshake (certificates not checked: a probe only)."""
        c = self.connection
        probe = aiosmtplib.SMTP(hostname=c.host, port=c.port, local_hostname=c.ehlo_hostname, use_tls=True,
                                validate_certs=False, start_tls=False, timeout=MODE_PROBE_TIMEOUT_S)
        try:
            await probe.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        await quit_client(probe)
        return True

    async def _greet(self, client: aiosmtplib.SMTP) -> aiosmtplib.SMTPResponse:
        """Connect and read the greeting, telling a mismatched security mode from a slow server."""
        c = self.connection
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
                raise self._mismatch(
                    f"no plain-text greeting within {timeout:g} s, but port {c.port} answers a TLS handshake "
                    f"with an SMTP greeting: it expects implicit_tls (RFC 8314), not {c.security}",
                    "set security: implicit_tls for this port (465 is implicit TLS), or use port 587 "
                    "with security starttls") from None
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if c.security != "implicit_tls" and ("\x15\x03" in exc.message or "\x16\x03" in exc.message):
                raise self._mismatch(f"port {c.port} sent a TLS record where an SMTP greeting was expected: it "
                                     f"expects implicit_tls, not {c.security}") from None
            raise
        except aiosmtplib.SMTPConnectError as exc:
            reason = getattr(exc.__cause__, "reason", None)
            if c.security == "implicit_tls" and reason in _PLAINTEXT_REPLY:
                raise self._mismatch(
                    f"port {c.port} answered the TLS handshake in plain text: it expects starttls (or none), "
                    "not implicit_tls", "set security: starttls for this port (587 is STARTTLS), or use "
                    "port 465 with security implicit_tls") from None
            raise

    def _mismatch(self, message: str, hint: str | None = None) -> SecurityModeMismatchError:
        c = self.connection
        return SecurityModeMismatchError(message, hint=hint, host=c.host, port=c.port, during_open=True)

    async def _login(self, client: aiosmtplib.SMTP, encrypted: bool) -> str:
        """AUTH, where the connection allows sending credentials; returns the mechanism's name."""
        c = self.connection
        if not encrypted and not (c.security == "none" and c.allow_insecure_auth):
            raise InsecureAuthError("refusing to send credentials over an unencrypted connection",
                                    host=c.host, port=c.port, during_open=True)
        if not client.supports_extension("auth"):
            raise AuthNotSupportedError("the server offers no AUTH on this connection", host=c.host, port=c.port,
                                        during_open=True)
        return await self._authenticate(client, encrypted)

    async def _authenticate(self, client: aiosmtplib.SMTP, encrypted: bool) -> str:
        """One AUTH attempt with the best mechanism the server offers; returns its name."""
        c = self.connection
        offered = {m.lower() for m in client.server_auth_methods}
        if self._tokens is not None:
            if "xoauth2" not in offered:
                raise AuthNotSupportedError(
                    f"the connection uses OAuth2, and the server offers AUTH {' '.join(sorted(offered)).upper() or '(none)'} "
                    "without XOAUTH2", hint="check host and port (smtp.office365.com:587, smtp.gmail.com:587)",
                    host=c.host, port=c.port, during_open=True)
            await oauth2_authenticate(client, str(c.username), self._tokens)
            return "xoauth2"
        order = _MECHANISMS_TLS if encrypted else _MECHANISMS_PLAIN
        mechanism = next((m for m in order if m in offered), None)
        if mechanism is None:
            raise AuthNotSupportedError(
                f"the server offers AUTH {' '.join(sorted(offered)).upper() or '(none)'}, none of which mailgem "
                "speaks (PLAIN, LOGIN, CRAM-MD5)", host=c.host, port=c.port, during_open=True)
        method = {"plain": client.auth_plain, "login": client.auth_login, "cram-md5": client.auth_crammd5}[mechanism]
        assert self._password is not None
        await method(str(c.username), self._password.get_secret_value())
        return mechanism
