"""Pipelined mail transactions (SMTP PIPELINING, RFC 2920) on an authenticated session.

When the server advertises ``PIPELINING``, a message's ``MAIL FROM``, every ``RCPT TO`` and
``DATA`` go out as one group (RFC 2920 §3.1: ``DATA`` may end a group), their replies are read
in order, and the content follows the ``354``. The next message's group follows that content at
once, before the reply to its final dot (RFC 2920 §3.1: "the actual transfer of message content
... [may be] followed by" the next commands), so on a busy session a message costs one round
trip instead of three plus one per recipient.

Why a module of our own: aiosmtplib — which still connects, negotiates TLS, authenticates,
checks the connection and sends to servers without PIPELINING — parses one reply per wait and
drops replies that arrive together, so it cannot read a group's replies. While a session
pipelines, its asyncio transport (TLS included) belongs to a :class:`ReplyReader`, which hands
every reply to the command that asked for it, in the order the commands were written; the
session gives the transport back to aiosmtplib for anything else (NOOP, the sender check, QUIT).
The alternative, a second SMTP client library (or our own) for whole sessions, would mean
connecting, TLS and AUTH twice over; this keeps those in aiosmtplib and adds only the
transaction.

Client rules kept (RFC 2920 §3.1, RFC 5321 §4.1.1.4): every reply is read, in order; a refused
``RCPT`` among accepted ones is a partial success; with no accepted recipient, a ``354`` is
answered with a lone dot so the transaction ends cleanly; a reply that is not an SMTP reply (or
that no command asked for), a 421, a timeout or a cancelled wait ends the session — every
command still waiting for a reply fails as a lost connection and is retried as one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.response import SMTPResponse

__all__ = ["ReplyReader", "send_group", "write_content", "send_line", "GroupReplies", "dot_stuffed", "take_over",
           "give_back"]

_MAX_REPLY_BYTES = 1 << 20


class ReplyReader(asyncio.Protocol):
    """An asyncio protocol that parses every SMTP reply it receives and hands each, in order, to
    the command waiting for it (:meth:`expect` when the command is written, :meth:`replies` to
    wait). Once the session fails (lost, out of step, timed out), every waiting command and every
    later one gets that failure."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # One future per command written and not yet answered, in the order written. A future
        # resolves to its reply, or to None when the session failed (``error`` says why): no
        # exception is left in a future that nobody may read.
        self._waiting: collections.deque[asyncio.Future[SMTPResponse | None]] = collections.deque()
        self.error: aiosmtplib.SMTPException | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.lost = False  # the connection ended while this reader had it
        # Bytes written and not yet sent: they leave together two event-loop steps after the first
        # of them, so a message's content and the next message's group go in one segment
        # (RFC 2920 §3.1), not two (see _flush_next).
        self._outbox: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        try:
            self._parse()
        except aiosmtplib.SMTPException as exc:
            self.abort(exc)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(aiosmtplib.SMTPServerDisconnected(f"connection lost: {exc}" if exc else "connection lost"))

    def _fail(self, exc: aiosmtplib.SMTPException) -> None:
        if self.error is None:
            self.error = exc
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the transport; what is queued before the flush goes out in one write."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush_next)
        self._outbox.append(data)

    def _flush_next(self) -> None:
        # One step later: the borrower that a pool woke when this session was lent writes its
        # group in the step in between, and both leave together.
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if self.error is None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outbox))  # type: ignore[attr-defined]

    def abort(self, exc: aiosmtplib.SMTPException) -> None:
        """End the session: it is out of step with the server (``exc`` says why)."""
        self._outbox.clear()
        self._fail(exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _raise(self) -> None:
        assert self.error is not None
        raise type(self.error)(*self.error.args)  # a fresh exception for each command that fails

    def _parse(self) -> None:
        """Hand every complete reply in the buffer to its command (multi-line: ``250-`` ... ``250 ``)."""
        while True:
            offset, lines, code = 0, [], None
            while True:
                end = self._buffer.find(b"\n", offset)
                if end == -1:
                    if len(self._buffer) > _MAX_REPLY_BYTES:
                        raise aiosmtplib.SMTPServerDisconnected("reply too long: the session is out of sync")
                    return
                line = bytes(self._buffer[offset:end + 1])
                offset = end + 1
                if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                    raise aiosmtplib.SMTPServerDisconnected(f"not an SMTP reply: {line[:60]!r}; the session is out of sync")
                code = int(line[:3])
                lines.append(line[4:].strip(b" \t\r\n"))
                if line[3:4] != b"-":
                    break
            del self._buffer[:offset]
            reply = SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
            if not self._waiting:
                raise aiosmtplib.SMTPServerDisconnected(
                    f"a reply no command asked for: {reply.code} {reply.message[:60]!r}; the session is out of sync")
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def expect(self, count: int) -> list[asyncio.Future[SMTPResponse | None]]:
        """Register ``count`` commands just written; their replies come in this order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self._waiting.extend(futures)
        return futures

    def last_waiting(self) -> asyncio.Future[SMTPResponse | None] | None:
        """The future of the last command written and not yet answered (an earlier message's)."""
        return self._waiting[-1] if self._waiting else None

    def check(self) -> None:
        """Raise the session's failure, if it failed: nothing more may be written."""
        if self.error is not None:
            self._raise()

    async def replies(self, futures: Sequence[asyncio.Future[SMTPResponse | None]], timeout: float) -> list[SMTPResponse]:
        """Wait for the replies to ``futures`` (from :meth:`expect`), at most ``timeout`` seconds
        for the last of them (replies come in order, so the others are in by then).

        Raises:
            aiosmtplib.SMTPReadTimeoutError: no reply in time; the session is ended.
            aiosmtplib.SMTPServerDisconnected: the connection ended or went out of step.
        """
        last = futures[-1]
        if not last.done():
            loop = asyncio.get_running_loop()
            timer = loop.call_later(timeout, self._timed_out, last)
            try:
                await last
            except asyncio.CancelledError:  # the reply would go unread: the session cannot go on
                self.abort(aiosmtplib.SMTPServerDisconnected("the transaction was cancelled midway"))
                raise
            finally:
                timer.cancel()
        out: list[SMTPResponse] = []
        for future in futures:
            reply = future.result()
            if reply is None:
                self._raise()
            out.append(reply)  # type: ignore[arg-type]
        return out

    def _timed_out(self, last: asyncio.Future[SMTPResponse | None]) -> None:
        if not last.done():
            self.abort(aiosmtplib.SMTPReadTimeoutError("timed out waiting for the server's reply"))

    @property
    def in_step(self) -> bool:
        """Every reply owed was read and nothing is left over: the session is in step with the server."""
        return not self._waiting and not self._buffer and not self._outbox and self.error is None


def take_over(client: aiosmtplib.SMTP) -> tuple[ReplyReader, asyncio.BaseProtocol]:
    """Install a :class:`ReplyReader` on ``client``'s transport; the reader and aiosmtplib's own
    protocol, for :func:`give_back`.

    Raises:
        aiosmtplib.SMTPServerDisconnected: the connection is gone.
    """
    transport = client.transport
    if transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    protocol = transport.get_protocol()
    reader = ReplyReader()
    reader.connection_made(transport)
    transport.set_protocol(reader)
    return reader, protocol


def give_back(reader: ReplyReader, protocol: asyncio.BaseProtocol) -> None:
    """Give the transport back to aiosmtplib's ``protocol`` (for NOOP, the sender check, QUIT); a
    session out of step with the server is closed instead (its replies cannot be matched any more)."""
    if reader.transport is None:
        return
    if not reader.in_step:  # whoever still waits on this session learns it now, not at a timeout
        reader.abort(aiosmtplib.SMTPServerDisconnected("the session was closed while out of step"))
    reader.transport.set_protocol(protocol)
    if reader.lost:
        protocol.connection_lost(None)  # aiosmtplib learns what happened meanwhile


def _write(reader: ReplyReader, data: bytes, replies: int) -> list[asyncio.Future[SMTPResponse | None]]:
    reader.check()
    transport = reader.transport
    if transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    reader.send(data)
    return reader.expect(replies)


@dataclass(frozen=True)
class GroupReplies:
    """The replies to one pipelined group: ``MAIL``, each ``RCPT`` (in order), ``DATA``."""

    mail: SMTPResponse
    rcpt: list[SMTPResponse]
    data: SMTPResponse


async def send_group(reader: ReplyReader, *, sender: str, options: Sequence[str], recipients: Sequence[str],
                     encoding: str, timeout: float,
                     rcpt_options: Sequence[Sequence[str]] | None = None) -> GroupReplies:
    """Send ``MAIL FROM``, every ``RCPT TO`` and ``DATA`` in one write; read their replies in order.
    ``rcpt_options``: each recipient's ESMTP parameters (e.g. RFC 3461 ``NOTIFY``), in order.

    Raises:
        ValueError: an address or option holds a line break (nothing is written).
        aiosmtplib.SMTPReadTimeoutError, aiosmtplib.SMTPServerDisconnected: see :meth:`ReplyReader.replies`;
            also when a reply is 421 (the server is closing the session, RFC 5321 §3.8).
    """
    mail = f"MAIL FROM:<{sender}>" + "".join(f" {o}" for o in options)
    params = rcpt_options if rcpt_options is not None else [()] * len(recipients)
    commands = [mail, *(f"RCPT TO:<{r}>" + "".join(f" {o}" for o in p) for r, p in zip(recipients, params, strict=True)),
                "DATA"]
    for command in commands:
        if "\r" in command or "\n" in command:
            raise ValueError("an SMTP command may not contain a line break")
    futures = _write(reader, "".join(c + "\r\n" for c in commands).encode(encoding), len(commands))
    replies = await reader.replies(futures, timeout)
    closing = next((r for r in replies if r.code == 421), None)
    if closing is not None:
        error = aiosmtplib.SMTPServerDisconnected(f"the server is closing the session: {closing.code} {closing.message}")
        reader.abort(error)
        raise error
    return GroupReplies(replies[0], replies[1:-1], replies[-1])


def dot_stuffed(data: bytes) -> bytes:
    """Message content for after ``354``: lines starting with a dot doubled (RFC 5321 §4.5.2),
    CRLF at the end, and the final ``.`` line."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def write_content(reader: ReplyReader, data: bytes | None) -> asyncio.Future[SMTPResponse | None]:
    """After a ``354``: write the content (or, with ``None``, a lone dot that ends an empty
    transaction, RFC 2920 §3.1); return the future of the reply to its final dot (wait for it
    with :meth:`ReplyReader.replies`). Other commands may be written before that reply comes."""
    return _write(reader, dot_stuffed(data) if data is not None else b".\r\n", 1)[0]


async def send_line(reader: ReplyReader, line: bytes, timeout: float) -> SMTPResponse:
    """Write ``line`` (a command with its CRLF) and read its one reply."""
    return (await reader.replies(_write(reader, line, 1), timeout))[0]
