"""The tests' SMTP server: the product's embedded server (mailgem.connections.local_server) with
what only tests need, so none of it ships: scripted faults (refusals, dropped connections, held
or late replies), other servers' behaviour (no PIPELINING, SMTPUTF8, DSN, XOAUTH2, Postfix's
sender checks, AUTH over plaintext, 354 without recipients), counters and waits."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from mailgem.connections.local_server import LocalSmtpServer, ReceivedMessage, _Handler, _Session

__all__ = ["FaultServer", "FaultMessage", "AuthAttempt", "LATE_S", "DATA_TIMEOUT_S"]

# A reply that comes after the client gave up: the server stores the message, then waits far longer
# than the client's data timeout (aiosmtpd cancels the wait when the client closes), so however loaded the machine,
# the reply is late; the data timeout itself leaves normal replies a wide margin.
LATE_S, DATA_TIMEOUT_S = 60.0, 2.0


@dataclass(frozen=True)
class FaultMessage(ReceivedMessage):
    # Each accepted recipient's RCPT TO parameters (RFC 3461 NOTIFY, ORCPT), when DSN is offered.
    rcpt_options: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH attempt: the login, the mechanism and whether it succeeded (never the password)."""

    login: str
    success: bool
    tls: bool
    mechanism: str = ""


class _FaultHandler(_Handler):
    server: FaultServer

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        responses = await super().handle_EHLO(smtp, session, envelope, hostname, responses)
        if not self.server.pipelining:
            responses.remove("250-PIPELINING")
        if self.server.dsn:
            responses.insert(len(responses) - 1, "250-DSN")  # RFC 3461
        return responses

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        with self.server._lock:
            self.server.transactions += 1
        refusal = self.server._sender_refusal(session, address) if self.server.sender_check == "mail" else None
        if refusal:
            return refusal
        return await super().handle_MAIL(smtp, session, envelope, address, options)

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
        return await super().handle_RCPT(smtp, session, envelope, address, options)

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
            # What was waiting (or None) goes to server.ahead. aiosmtpd's reader is private.
            reader = smtp._reader
            deadline = asyncio.get_running_loop().time() + action[1]
            while not reader._buffer and asyncio.get_running_loop().time() < deadline:  # bounded
                await asyncio.sleep(0.01)
            server.ahead.append(bytes(reader._buffer).split(b"\r\n", 1)[0].decode() if reader._buffer else None)
        if isinstance(action, tuple) and action[0] == "hold":
            # Hold the reply *before* storing: if the client dies meanwhile, nothing was accepted.
            with server._lock:
                server.holding += 1
            server._changed()
            await asyncio.sleep(action[1])
        reply = await super().handle_DATA(smtp, session, envelope)
        if isinstance(action, (int, float)):
            await asyncio.sleep(action)  # accepted and stored, but the reply comes late
        return reply

    async def handle_QUIT(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        with self.server._lock:
            self.server.quits += 1
        return await super().handle_QUIT(smtp, session, envelope)


class _OAuthHandler(_FaultHandler):
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


class _FaultSession(_Session):
    """The session, counting closed connections (to check that clients QUIT first), with DSN
    parameters and a 354 to a DATA without recipients when the server is told to."""

    _owner: FaultServer

    def connection_lost(self, exc: Exception | None) -> None:
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


class FaultServer(LocalSmtpServer):
    """The embedded server, plus (keyword arguments):

        smtputf8: offer SMTPUTF8 (RFC 6531) and take UTF-8 addresses.
        pipelining: offer PIPELINING (default, as the product server does) or not.
        senders: ``{login: addresses it may send as}``; with it, another envelope sender is
            refused like Postfix's ``reject_sender_login_mismatch`` does, at RCPT time (as with
            Postfix's default ``smtpd_delay_reject``) or, with ``sender_check="mail"``, at MAIL.
        oauth: offer AUTH XOAUTH2 and accept a token when ``oauth(user, token)`` is true.
        dsn: offer DSN (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT are checked and
            recorded (``mail_options`` and ``FaultMessage.rcpt_options``).
        auth_over_plaintext: offer AUTH without TLS (for clients that must refuse it).

    and, set on the running server: ``rcpt_refusals`` (permanent RCPT refusals by address),
    ``rcpt_replies`` (RCPT replies consumed in order by address), ``data_script`` (per DATA, in
    order: a reply string, "drop" (close without replying, nothing stored), a delay in seconds
    between storing and replying, ("hold", seconds) to wait before storing, ("await_next",
    seconds) to reply only once the client's next command has arrived (recorded in ``ahead``), a
    callable given the envelope before storing, or None to behave), ``data_without_recipients``
    (354 then 554 to a DATA after every RCPT was refused; what came before the dot goes to
    ``empty_contents``) and ``oauth_refusal`` (the final reply to a refused token, instead of
    Google's). It counts ``sessions_opened``, ``sessions_closed``, ``quits``, ``transactions``
    (MAIL commands), ``dropped``, ``holding`` and records ``auth_attempts``.
    """

    handler_class = _FaultHandler
    session_class = _FaultSession

    def __init__(self, *, smtputf8: bool = False, pipelining: bool = True, senders: dict[str, set[str]] | None = None,
                 sender_check: Literal["rcpt", "mail"] = "rcpt", oauth: Callable[[str, str], bool] | None = None,
                 dsn: bool = False, auth_over_plaintext: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.smtputf8 = smtputf8
        self.pipelining = pipelining
        self.senders = senders
        self.sender_check: Literal["rcpt", "mail"] | None = sender_check if senders is not None else None
        self.oauth = oauth
        self.oauth_refusal: str | None = None
        self.dsn = dsn
        self.auth_over_plaintext = auth_over_plaintext
        if oauth is not None:
            self.handler_class = _OAuthHandler
        self.auth_attempts: list[AuthAttempt] = []
        self.rcpt_refusals: dict[str, str] = {}
        self.rcpt_replies: dict[str, list[str]] = {}
        self.data_script: list[Any] = []
        self.dropped = 0
        self.holding = 0
        self.ahead: list[str | None] = []
        self.data_without_recipients = False
        self.empty_contents: list[bytes] = []
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.quits = 0
        self.transactions = 0
        # Notified on every new message, closed session and held reply: waits need no polling.
        self._condition = threading.Condition()

    def _changed(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _smtp_options(self) -> dict[str, Any]:
        options = super()._smtp_options()
        offers_auth = bool(self._users) or self.oauth is not None
        options.update(
            authenticator=self._authenticate if offers_auth else None,
            auth_required=offers_auth,
            auth_require_tls=self.security == "starttls" and not self.auth_over_plaintext,
            enable_SMTPUTF8=self.smtputf8,
        )
        return options

    def _factory(self) -> SMTP:
        with self._lock:
            self.sessions_opened += 1
        return super()._factory()

    def _closed(self) -> None:
        with self._lock:
            self.sessions_closed += 1
        self._changed()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        result = super()._authenticate(server, session, envelope, mechanism, auth_data)
        login = getattr(auth_data, "login", None)
        if login is not None:
            with self._lock:
                self.auth_attempts.append(AuthAttempt(login.decode("utf-8", "replace"), result.success,
                                                      self._encrypted(session), mechanism))
        return result

    def _sender_refusal(self, session: Session, sender: str) -> str | None:
        login = session.auth_data if isinstance(session.auth_data, str) else None
        owned = (self.senders or {}).get(login or "", set())
        if sender.lower() in {a.lower() for a in owned}:
            return None
        # Postfix's text for reject_sender_login_mismatch (smtpd_sender_login_maps).
        return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login or '(anonymous)'}"

    def _received(self, envelope: Envelope, session: Session, data: bytes, path: Path | None) -> FaultMessage:
        base = super()._received(envelope, session, data, path)
        return FaultMessage(**base.__dict__, rcpt_options=tuple(envelope.__dict__.get("dsn_rcpt", ())))

    def _store(self, envelope: Envelope, session: Session) -> str:
        reply = super()._store(envelope, session)
        self._changed()
        return reply

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Wait until ``condition()`` holds, re-checked on each message, closed session and held
        reply (and every 50 ms for anything else), at most ``timeout_s``; return whether it held."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.05))
        return True

    def wait_for_messages(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived (bounded by ``timeout_s``) and return all."""
        self.wait_until(lambda: len(self.messages) >= count, timeout_s)
        return list(self.messages)

    def settled(self, timeout_s: float = 30.0) -> list[ReceivedMessage]:
        """The messages, once every session the server accepted has closed: after that none can
        arrive, so a check that nothing more came needs no sleep. Fails if one is still open after
        ``timeout_s`` (a client that keeps a session is a finding too)."""
        closed = self.wait_until(lambda: self.sessions_closed >= self.sessions_opened, timeout_s)
        assert closed, f"{self.sessions_opened - self.sessions_closed} session(s) still open after {timeout_s} s"
        return list(self.messages)

    def wait_for_closed_sessions(self, timeout_s: float = 10.0) -> int:
        """Wait until every opened session has closed on the server's side (the client's QUIT
        reply arrives before the server sees the close), bounded by ``timeout_s``; return how many closed."""
        self.wait_until(lambda: self.sessions_closed >= self.sessions_opened, timeout_s)
        return self.sessions_closed
