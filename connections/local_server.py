"""A real SMTP server on loopback (aiosmtpd), for the embedded local fabric (``mailgem run --local``).

It speaks STARTTLS (required), implicit TLS or plain SMTP, with AUTH PLAIN/LOGIN checked against
a dict of development credentials, certificates from a throwaway trustme CA, and an optional
outbox folder where each received message is written as an ``.eml`` file. It listens on port 0
(the OS picks a free port) in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["LocalSmtpServer", "ReceivedMessage"]

log = logging.getLogger("mailgem.local_server")
# aiosmtpd logs every command at INFO and a deprecation warning per AUTH it performs itself.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server received it: envelope and raw bytes (parse with ``email``)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None
    tls: bool
    path: Path | None = None
    mail_options: tuple[str, ...] = ()


class _Handler:
    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        responses.insert(len(responses) - 1, "250-PIPELINING")  # as Postfix does (RFC 2920)
        return responses

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return self.server._store(envelope, session)

    async def handle_QUIT(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return "221 Bye"


class _Session(SMTP):
    """aiosmtpd's SMTP session, known to its server while connected (``stop`` closes it)."""

    def __init__(self, owner: LocalSmtpServer, *args: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._live.discard(self)
        super().connection_lost(exc)


class LocalSmtpServer:
    """An in-process aiosmtpd server on 127.0.0.1 (or ::1), port chosen by the OS unless given.

    Args:
        security: ``starttls`` (STARTTLS offered and required before MAIL), ``implicit_tls``
            (TLS from the first byte, RFC 8314) or ``none``.
        users: ``{login: password}`` accepted by AUTH; empty means AUTH is not offered.
        outbox: folder to write each message to as ``<time>-<n>.eml``; ``None`` keeps them in memory only.
        data_size_limit: SIZE advertised and enforced, bytes (RFC 1870); 0 for no limit.
        cert_dir: folder for the CA certificate (``ca_pem``); default: a temporary folder.
        port: where to listen; 0 (default) lets the OS choose a free port.

    It offers PIPELINING (RFC 2920), as Postfix does. Use as a context manager; ``port``,
    ``ca_pem`` (path of the CA to trust) and ``messages`` are available while it runs.
    """

    # What a session is made of; the tests' fault-injecting server (tests/fault_server.py) extends them.
    handler_class: type[_Handler] = _Handler
    session_class: type[_Session] = _Session

    def __init__(
        self,
        *,
        security: Literal["starttls", "implicit_tls", "none"] = "starttls",
        users: dict[str, str] | None = None,
        outbox: Path | None = None,
        host: str = "127.0.0.1",
        data_size_limit: int = 32 * 1024 * 1024,
        cert_dir: Path | None = None,
        port: int = 0,
    ) -> None:
        self.security = security
        self._users = dict(users or {})
        self.outbox = outbox
        self.host = host
        self.data_size_limit = data_size_limit
        self.messages: list[ReceivedMessage] = []
        self._listen_port = port
        self._live: set[SMTP] = set()  # sessions connected now (closed when the server stops)
        self.port = 0
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tmp = None if cert_dir else tempfile.TemporaryDirectory(prefix="mailgem-certs-")
        self._cert_dir = cert_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self._server_ctx: ssl.SSLContext | None = None
        self.ca_pem: Path | None = None
        if security != "none":
            self._make_certificates()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, port={self.port}, security={self.security!r}, users={sorted(self._users)})"

    def _make_certificates(self) -> None:
        ca = trustme.CA(organization_name="mailgem local development CA")
        cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_ctx)
        self._cert_dir.mkdir(parents=True, exist_ok=True)
        self.ca_pem = self._cert_dir / "mailgem-local-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_pem))

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = self._users.get(login)
        ok = expected is not None and auth_data.password == expected.encode("utf-8")
        # handled=False makes aiosmtpd answer 535 5.7.8 itself on failure.
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _encrypted(self, session: Session) -> bool:
        # aiosmtpd only records STARTTLS in session.ssl; implicit TLS is encrypted from the start.
        return self.security == "implicit_tls" or bool(session.ssl)

    def _factory(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the socket is encrypted.
            warnings.simplefilter("ignore", UserWarning)
            return self.session_class(self, self.handler_class(self), **self._smtp_options())

    def _smtp_options(self) -> dict[str, Any]:
        """aiosmtpd's ``SMTP`` arguments for a new session."""
        offers_auth = bool(self._users)
        return dict(
            hostname="mailgem-local",
            ident="mailgem local SMTP (aiosmtpd)",
            data_size_limit=self.data_size_limit,
            tls_context=self._server_ctx if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=self._authenticate if offers_auth else None,
            auth_required=offers_auth,
            # With implicit TLS the socket is already encrypted; aiosmtpd only knows about STARTTLS.
            auth_require_tls=self.security == "starttls",
            enable_SMTPUTF8=False,
            loop=self._loop,
        )

    def _received(self, envelope: Envelope, session: Session, data: bytes, path: Path | None) -> ReceivedMessage:
        login = session.auth_data if isinstance(session.auth_data, str) else None
        return ReceivedMessage(str(envelope.mail_from), tuple(envelope.rcpt_tos), data, login,
                               self._encrypted(session), path, tuple(envelope.mail_options))

    def _store(self, envelope: Envelope, session: Session) -> str:
        data = envelope.original_content or b""
        number = next(self._counter)
        path = None
        if self.outbox is not None:
            self.outbox.mkdir(parents=True, exist_ok=True)
            path = self.outbox / f"{time.strftime('%Y%m%d-%H%M%S')}-{number:04d}.eml"
            path.write_bytes(data)
        message = self._received(envelope, session, data, path)
        with self._lock:
            self.messages.append(message)
        return f"250 2.0.0 OK queued as mailgem-{number:04d}"

    def start(self) -> LocalSmtpServer:
        """Start listening; returns once the port is bound. Raises ``RuntimeError`` if it cannot."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                ssl_ctx = self._server_ctx if self.security == "implicit_tls" else None
                self._server = loop.run_until_complete(
                    loop.create_server(self._factory, host=self.host, port=self._listen_port, ssl=ssl_ctx))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"mailgem-smtpd-{self.security}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("local SMTP server did not start within 10 s")
        if errors:
            raise RuntimeError(f"local SMTP server could not listen on {self.host}: {errors[0]}") from errors[0]
        log.info("local SMTP server listening on %s:%s (%s)", self.host, self.port, self.security)
        return self

    def stop(self) -> None:
        """Stop the server and its thread; connected sessions are closed, as when a server process ends."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._close_sessions)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def _close_sessions(self) -> None:
        for session in list(self._live):
            if isinstance(session.transport, asyncio.Transport):  # a stream transport: abort() closes at once
                session.transport.abort()

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
