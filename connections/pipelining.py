"""Pipelined mail transactions (SMTP PIPELINING, RFC 2920) on an authenticated session.

When the server advertises ``PIPELINING``, a message's ``MAIL FROM``, every ``RCPT TO`` and
``DATA`` go out as one group (RFC 2920 §3.1: ``DATA`` may end a group), their replies are read
in order, and the content follows the ``354``. A message costs two round trips instead of
three plus one per recipient.

Why a module of our own: aiosmtplib — which still connects, negotiates TLS, authenticates,
checks the connection and sends to servers without PIPELINING — parses one reply per wait and
drops replies that arrive together, so it cannot read a group's replies. For one transaction,
the session's asyncio transport (TLS included) is handed to :class:`ReplyReader`, which keeps
every reply in order, and handed back afterwards. The alternative, a second SMTP client library
(or our own) for whole sessions, would mean connecting, TLS and AUTH twice over; this keeps those
in aiosmtplib and adds only the transaction.

Client rules kept (RFC 2920 §3.1, RFC 5321 §4.1.1.4): every reply is read, in order; a refused
``RCPT`` among accepted ones is a partial success; with no accepted recipient, a ``354`` is
answered with a lone dot so the transaction ends cleanly; a reply that is not an SMTP reply, or
a 421, ends the session — it is reported as a lost connection, and retried as one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.response import SMTPResponse

__all__ = ["ReplyReader", "borrowed_transport", "send_group", "send_content", "send_line", "GroupReplies",
           "dot_stuffed"]

_MAX_REPLY_BYTES = 1 << 20


class ReplyReader(asyncio.Protocol):
    """An asyncio protocol that parses every SMTP reply it receives and hands them out in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.owed = 0  # replies to commands sent and not yet read
        self.lost = False  # the connection ended while this reader had it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        try:
            self._parse()
        except aiosmtplib.SMTPException as exc:
            self._fail(exc)
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(aiosmtplib.SMTPServerDisconnected(f"connection lost: {exc}" if exc else "connection lost"))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> None:
        """Move every complete reply from the buffer to the queue (multi-line: ``250-`` ... ``250 ``)."""
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
            self._replies.append(SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape")))

    async def reply(self, timeout: float) -> SMTPResponse:
        """The next reply, in order.

        Raises:
            aiosmtplib.SMTPReadTimeoutError: none within ``timeout`` seconds.
            aiosmtplib.SMTPServerDisconnected: the connection ended, or the replies are out of sync.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("timed out waiting for the server's reply") from None
            finally:
                self._waiter = None
        self.owed -= 1
        return self._replies.popleft()

    @property
    def in_step(self) -> bool:
        """Every reply owed was read and nothing is left over: the session is in step with the server."""
        return self.owed == 0 and not self._replies and not self._buffer and self._error is None


def _write(transport: asyncio.BaseTransport, data: bytes) -> None:
    if transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    transport.write(data)  # type: ignore[attr-defined]


@contextlib.contextmanager
def borrowed_transport(client: aiosmtplib.SMTP) -> Iterator[tuple[asyncio.BaseTransport, ReplyReader]]:
    """Hand ``client``'s transport to a :class:`ReplyReader` for one transaction, then back.

    A transaction that ends out of step with the server (a reply missing or left over, a
    timeout, an error) closes the transport: the session must not be used again.
    """
    transport = client.transport
    if transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    original = transport.get_protocol()
    reader = ReplyReader()
    reader.connection_made(transport)
    transport.set_protocol(reader)
    try:
        yield transport, reader
    finally:
        transport.set_protocol(original)
        if reader.lost:
            original.connection_lost(None)  # aiosmtplib learns what happened while we had the transport
        elif not reader.in_step and not transport.is_closing():
            transport.close()  # out of step (a reply missing or left over): never reuse this session


@dataclass(frozen=True)
class GroupReplies:
    """The replies to one pipelined group: ``MAIL``, each ``RCPT`` (in order), ``DATA``."""

    mail: SMTPResponse
    rcpt: list[SMTPResponse]
    data: SMTPResponse


async def send_group(transport: asyncio.BaseTransport, reader: ReplyReader, *, sender: str, options: Sequence[str],
                     recipients: Sequence[str], encoding: str, timeout: float) -> GroupReplies:
    """Send ``MAIL FROM``, every ``RCPT TO`` and ``DATA`` in one write; read their replies in order.

    Raises:
        aiosmtplib.SMTPReadTimeoutError, aiosmtplib.SMTPServerDisconnected: see :meth:`ReplyReader.reply`;
            also when a reply is 421 (the server is closing the session, RFC 5321 §3.8).
    """
    mail = f"MAIL FROM:<{sender}>" + "".join(f" {o}" for o in options)
    commands = [mail, *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
    for command in commands:
        if "\r" in command or "\n" in command:
            raise ValueError("an SMTP command may not contain a line break")
    _write(transport, "".join(c + "\r\n" for c in commands).encode(encoding))
    reader.owed += len(commands)
    replies = [await reader.reply(timeout) for _ in commands]
    closing = next((r for r in replies if r.code == 421), None)
    if closing is not None:
        raise aiosmtplib.SMTPServerDisconnected(f"the server is closing the session: {closing.code} {closing.message}")
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


async def send_content(transport: asyncio.BaseTransport, reader: ReplyReader, data: bytes | None,
                       timeout: float) -> SMTPResponse:
    """After a ``354``: the content (or, with ``None``, a lone dot that ends an empty
    transaction, RFC 2920 §3.1) and the server's reply to it."""
    return await send_line(transport, reader, dot_stuffed(data) if data is not None else b".\r\n", timeout)


async def send_line(transport: asyncio.BaseTransport, reader: ReplyReader, line: bytes, timeout: float) -> SMTPResponse:
    """Write ``line`` (a command with its CRLF, or content) and read its one reply."""
    _write(transport, line)
    reader.owed += 1
    return await reader.reply(timeout)
