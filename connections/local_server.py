"""A real SMTP server on loopback (aiosmtpd), for the embedded local fabric and the tests.

It speaks STARTTLS (required), implicit TLS or plain SMTP, with AUTH PLAIN/LOGIN checked against
a dict of development credentials, certificates from a throwaway trustme CA, and an optional
outbox folder where each received message is written as an ``.eml`` file. It listens on port 0
(the OS picks a free port) in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import ssl
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["LocalSmtpServer", "ReceivedMessage", "AuthAttempt"]

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
    # Each accepted recipient's RCPT TO parameters (RFC 3461 NOTIFY, ORCPT), when DSN is offered.
    rcpt_options: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH attempt: the login, the mechanism and whether it succeeded (never the password)."""

    login: str
    success: bool
    tls: bool
    mechanism: str = ""


class _Handler:
    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")  # as Postfix does (RFC 2920)
        if self.server.dsn:
            responses.insert(len(responses) - 1, "250-DSN")  # RFC 3461
        return responses

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        with self.server._lock:
            self.server.transactions += 1
        refusal = self.server._sender_refusal(session, address) if self.server.sender_check == "mail" else None
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        server = self.server
        if server.sender_check == "rcpt":  # Postfix's smtpd_delay_reject: sender restrictions at RCPT
            refusal = server._sender_refusal(session, str(envelope.mail_from))
            if refusal:
                return refusal
        refusal = server.rcpt_refusals.get(address.lower())
        if refusal:
            return refusal
        scripted = server.rcpt_replies.get(address.lower())
        if scripted:
            return scripted.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        server = self.server
        with server._lock:
            action = server.data_script.pop(0) if server.data_script else None
        if callable(action):  # a test's look at the world as the content arrives, before storing
            action(envelope)
            action = None
        if action == "drop":
            # The server read the whole message, then the connection died before any reply.
            server.dropped += 1
            assert smtp.transport is not None
            smtp.transport.close()
            return "451 4.3.0 connection dropped"  # never reaches the client
        if isinstance(action, str):
            return action  # a scripted reply such as "451 4.3.0 Try again later"
        if isinstance(action, tuple) and action[0] == "await_next":
            # Answer only once the client's next command is here (at most action[1] seconds): a
            # client that pipelines across messages (RFC 2920 §3.1) sends it before this reply.
            # What was waiting (or None) goes to server.ahead. aiosmtpd's reader is private: a test hook.
            reader = smtp._reader
            deadline = asyncio.get_running_loop().time() + action[1]
            while not reader._buffer and asyncio.get_running_loop().time() < deadline:  # bounded
                await asyncio.sleep(0.01)
            server.ahead.append(bytes(reader._buffer).split(b"\r\n", 1)[0].decode() if reader._buffer else None)
        if isinstance(action, tuple) and action[0] == "hold":
            # Hold the reply *before* storing: if the client dies meanwhile, nothing was accepted.
            server.holding += 1
            await asyncio.sleep(action[1])
        reply = server._store(envelope, session)
        if isinstance(action, (int, float)):
            await asyncio.sleep(action)  # accepted and stored, but the reply comes late
        return reply

    async def handle_QUIT(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        with self.server._lock:
            self.server.quits += 1
        return "221 Bye"


def _take_parameters(arg: str, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """``arg`` (``FROM:<a> P=V ...``) without the parameters called ``names``, and those."""
    head, bracket, rest = arg.partition(">")
    kept, taken = [], []
    for token in rest.split():
        (taken if token.split("=", 1)[0].upper() in names else kept).append(token)
    return head + bracket + "".join(" " + t for t in kept), taken


def _dsn_problem(parameters: list[str]) -> str | None:
    """What is wrong with these RFC 3461 parameters, or ``None``."""
    for token in parameters:
        name, _, value = token.partition("=")
        name = name.upper()
        if name == "RET" and value.upper() not in ("HDRS", "FULL"):
            return "RET must be HDRS or FULL (RFC 3461 §4.3)"
        if name == "NOTIFY":
            events = value.upper().split(",")
            if not set(events) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or ("NEVER" in events and len(events) > 1):
                return "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1)"
        if name == "ENVID" and (not value or len(value) > 100 or not all(33 <= ord(c) <= 126 for c in value)):
            return "ENVID must be 1 to 100 characters of xtext (RFC 3461 §4.4)"
        if name == "ORCPT" and ";" not in value:
            return "ORCPT must be addr-type;xtext (RFC 3461 §4.2)"
    return None


class _OAuthHandler(_Handler):
    """The handler with SASL XOAUTH2 (checked by ``server.oauth(user, token)``), as Gmail and
    Microsoft 365 answer it: a refused token gets a ``334`` challenge with a JSON error, then
    ``535`` (or the scripted ``server.oauth_refusal``)."""

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        server = self.server
        encoded = args[1] if len(args) > 1 else await smtp.challenge_auth("", encode_to_b64=False)
        try:
            fields = base64.b64decode(encoded).decode().split("\x01")
        except (ValueError, TypeError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode response")
        values = dict(f.split("=", 1) for f in fields if "=" in f)
        user, token = values.get("user", ""), values.get("auth", "").removeprefix("Bearer ")
        ok = bool(server.oauth and server.oauth(user, token))
        session = smtp.session
        assert session is not None
        with server._lock:
            server.auth_attempts.append(AuthAttempt(user, ok, server._encrypted(session), "XOAUTH2"))
        if ok:
            return AuthResult(success=True, auth_data=user)
        if server.oauth_refusal:
            return AuthResult(success=False, handled=False, message=server.oauth_refusal)
        await smtp.challenge_auth(json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}))
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP session, counting closed connections (to check that clients QUIT first)."""

    def __init__(self, owner: LocalSmtpServer, *args: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._live.discard(self)
        self._owner._closed()
        super().connection_lost(exc)

    # RFC 3461 parameters: aiosmtpd refuses any it does not know (555), so with ``dsn`` they are
    # taken off the command, checked, and recorded with the envelope.
    _DSN_MAIL = ("RET", "ENVID")
    _DSN_RCPT = ("NOTIFY", "ORCPT")

    async def _dsn_parameters(self, arg: str, names: tuple[str, ...]) -> tuple[str, list[str]] | None:
        """``arg`` without the DSN parameters ``names``, and those; ``None`` after a 501 for bad ones."""
        if not (self._owner.dsn and arg):
            return arg, []
        arg, taken = _take_parameters(arg, names)
        problem = _dsn_problem(taken)
        if problem:
            await self.push(f"501 5.5.4 {problem}")
            return None
        return arg, taken

    async def smtp_MAIL(self, arg: str) -> None:
        if (parsed := await self._dsn_parameters(arg, self._DSN_MAIL)) is None:
            return
        arg, taken = parsed
        await super().smtp_MAIL(arg)
        if taken and self.envelope is not None and self.envelope.mail_from:
            self.envelope.mail_options.extend(taken)

    async def smtp_RCPT(self, arg: str) -> None:
        if (parsed := await self._dsn_parameters(arg, self._DSN_RCPT)) is None:
            return
        arg, taken = parsed
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        await super().smtp_RCPT(arg)
        if envelope is not None and len(envelope.rcpt_tos) > before:
            per_rcpt = envelope.__dict__.setdefault("dsn_rcpt", [])
            per_rcpt.append((envelope.rcpt_tos[-1], tuple(taken)))

    async def smtp_DATA(self, arg: str) -> None:
        owner = self._owner
        envelope = self.envelope
        if owner.data_without_recipients and envelope is not None and envelope.mail_from and not envelope.rcpt_tos:
            # As some servers do (RFC 2920 §3.1 allows it): 354 even though every RCPT was refused;
            # the client must end the empty transaction with a lone dot. What it sent is recorded.
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            lines: list[bytes] = []
            while (line := await self._reader.readline()) not in (b".\r\n", b""):  # bounded by the client's dot
                lines.append(line)
            owner.empty_contents.append(b"".join(lines))
            self._set_rset_state()
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        await super().smtp_DATA(arg)


class LocalSmtpServer:
    """An in-process aiosmtpd server on 127.0.0.1 (or ::1), port chosen by the OS unless given.

    Args:
        security: ``starttls`` (STARTTLS offered and required before MAIL), ``implicit_tls``
            (TLS from the first byte, RFC 8314) or ``none``.
        users: ``{login: password}`` accepted by AUTH; empty means AUTH is not offered.
        outbox: folder to write each message to as ``<n>-<time>.eml``; ``None`` keeps them in memory only.
        data_size_limit: SIZE advertised and enforced, bytes (RFC 1870); 0 for no limit.
        auth_over_plaintext: offer AUTH without TLS (for testing clients that must refuse it).
        smtputf8: offer SMTPUTF8 (RFC 6531) and take UTF-8 addresses.
        pipelining: offer PIPELINING (RFC 2920), as Postfix does; aiosmtpd reads pipelined
            commands in order.
        senders: ``{login: addresses it may send as}``; with it, another envelope sender is
            refused like Postfix's ``reject_sender_login_mismatch`` does, at RCPT time (as with
            Postfix's default ``smtpd_delay_reject``) or, with ``sender_check="mail"``, at MAIL.
        port: where to listen; 0 (default) lets the OS choose a free port.
        oauth: offer AUTH XOAUTH2 and accept a token when ``oauth(user, token)`` is true.
        dsn: offer DSN (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT are checked and
            recorded (``ReceivedMessage.mail_options`` and ``rcpt_options``).

    Use as a context manager; ``port``, ``ca_pem`` (path of the CA to trust) and ``messages``
    are available while it runs.
    """

    def __init__(
        self,
        *,
        security: Literal["starttls", "implicit_tls", "none"] = "starttls",
        users: dict[str, str] | None = None,
        outbox: Path | None = None,
        host: str = "127.0.0.1",
        data_size_limit: int = 32 * 1024 * 1024,
        auth_over_plaintext: bool = False,
        cert_dir: Path | None = None,
        smtputf8: bool = False,
        senders: dict[str, set[str]] | None = None,
        sender_check: Literal["rcpt", "mail"] = "rcpt",
        port: int = 0,
        pipelining: bool = True,
        dsn: bool = False,
        oauth: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.security = security
        self._users = dict(users or {})
        self.outbox = outbox
        self.host = host
        self.data_size_limit = data_size_limit
        self.auth_over_plaintext = auth_over_plaintext
        self.smtputf8 = smtputf8
        self.pipelining = pipelining
        self.dsn = dsn
        self.oauth = oauth  # XOAUTH2: checks (user, access token)
        self.oauth_refusal: str | None = None  # the final reply to a refused token, instead of Google's
        self.senders = senders
        self.sender_check: Literal["rcpt", "mail"] | None = sender_check if senders is not None else None
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts: list[AuthAttempt] = []
        # Misbehaviour on purpose, for tests: permanent RCPT refusals by address; RCPT replies
        # consumed in order by address; and per DATA, in order: a reply string, "drop" (close
        # without replying, nothing stored), a delay in seconds between storing and replying,
        # ("hold", seconds) to wait before storing, ("await_next", seconds) to reply only once the
        # client's next command has arrived (recorded in ``ahead``), a callable given the envelope
        # before storing, or None to behave.
        self.rcpt_refusals: dict[str, str] = {}
        self.rcpt_replies: dict[str, list[str]] = {}
        self.data_script: list[Any] = []
        self.dropped = 0
        self.holding = 0
        self.ahead: list[str | None] = []  # see data_script's ("await_next", s)
        # DATA with no accepted recipient: 354 (then 554 after the client's lone dot) instead of
        # aiosmtpd's 503; the content received before the dot goes to empty_contents (b"" for a lone dot).
        self.data_without_recipients = False
        self.empty_contents: list[bytes] = []
        self._listen_port = port
        self.sessions_opened = 0
        self.sessions_closed = 0
        self._live: set[SMTP] = set()  # sessions connected now (closed when the server stops)
        self.quits = 0
        self.transactions = 0  # MAIL commands
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
        return f"LocalSmtpServer(host={self.host!r}, port={self.port}, security={self.security!r}, users={sorted(self._users)})"

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
        self.auth_attempts.append(AuthAttempt(login, ok, self._encrypted(session), mechanism))
        # handled=False makes aiosmtpd answer 535 5.7.8 itself on failure.
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _sender_refusal(self, session: Session, sender: str) -> str | None:
        login = session.auth_data if isinstance(session.auth_data, str) else None
        owned = (self.senders or {}).get(login or "", set())
        if sender.lower() in {a.lower() for a in owned}:
            return None
        # Postfix's text for reject_sender_login_mismatch (smtpd_sender_login_maps).
        return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login or '(anonymous)'}"

    def _encrypted(self, session: Session) -> bool:
        # aiosmtpd only records STARTTLS in session.ssl; implicit TLS is encrypted from the start.
        return self.security == "implicit_tls" or bool(session.ssl)

    def _factory(self) -> SMTP:
        self.sessions_opened += 1
        offers_auth = bool(self._users) or self.oauth is not None
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the socket is encrypted.
            warnings.simplefilter("ignore", UserWarning)
            return self._smtp(offers_auth)

    def _closed(self) -> None:
        with self._lock:
            self.sessions_closed += 1

    def _smtp(self, offers_auth: bool) -> SMTP:
        return _CountingSMTP(
            self,
            _OAuthHandler(self) if self.oauth is not None else _Handler(self),
            hostname="mailgem-local",
            ident="mailgem local SMTP (aiosmtpd)",
            data_size_limit=self.data_size_limit,
            tls_context=self._server_ctx if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=self._authenticate if offers_auth else None,
            auth_required=offers_auth,
            # With implicit TLS the socket is already encrypted; aiosmtpd only knows about STARTTLS.
            auth_require_tls=self.security == "starttls" and not self.auth_over_plaintext,
            enable_SMTPUTF8=self.smtputf8,
            loop=self._loop,
        )

    def _store(self, envelope: Envelope, session: Session) -> str:
        data = envelope.original_content or b""
        number = next(self._counter)
        path = None
        if self.outbox is not None:
            self.outbox.mkdir(parents=True, exist_ok=True)
            path = self.outbox / f"{time.strftime('%Y%m%d-%H%M%S')}-{number:04d}.eml"
            path.write_bytes(data)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        with self._lock:
            self.messages.append(ReceivedMessage(str(envelope.mail_from), tuple(envelope.rcpt_tos), data,
                                                 login, self._encrypted(session), path, tuple(envelope.mail_options),
                                                 tuple(envelope.__dict__.get("dsn_rcpt", ()))))
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
            if session.transport is not None:
                session.transport.abort()

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_messages(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived (bounded by ``timeout_s``) and return all."""
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.messages)

    def wait_for_closed_sessions(self, timeout_s: float = 10.0) -> int:
        """Wait until every opened session has closed on the server's side (the client's QUIT
        reply arrives before the server sees the close), bounded by ``timeout_s``; return how many closed."""
        deadline = time.monotonic() + timeout_s
        while self.sessions_closed < self.sessions_opened and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sessions_closed
