"""One authenticated SMTP session and its mail transactions (``MAIL FROM``, ``RCPT TO``, ``DATA``).

What the transaction adds to aiosmtplib's commands:

* SIZE (RFC 1870) is checked before ``MAIL FROM`` against what the server will count: the
  message as transmitted (dot-stuffed, RFC 5321 §4.5.2) plus :data:`TRACE_HEADROOM_BYTES` for
  the trace fields the server adds before it compares (Postfix 3.7 adds about 1,040 bytes,
  measured). A 552 after ``DATA`` is the same :class:`MessageTooLargeError`.
* ``BODY=8BITMIME`` (RFC 6152) when the message has 8-bit content and the server offers it;
  ``SMTPUTF8`` (RFC 6531) when an address needs it, or a clear per-message error when the
  server does not offer it (RFC 6531 §3.2).
* A refusal that is about the sender (at ``MAIL``, or at ``RCPT`` when the server delays its
  checks) is a :class:`SenderRefusedError`, not "every recipient refused".
* A connection lost or timed out after the content was sent is marked ``maybe_delivered``: the
  server may have accepted the message (RFC 5321 §4.5.3.2.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from typing import TYPE_CHECKING

import aiosmtplib

from .addresses import envelope_address
from .errors import (
    ContentWithheldError,
    MessageTooLargeError,
    RecipientsRefusedError,
    SenderRefusedError,
    SmtpError,
    SmtpUtf8NotSupportedError,
    from_aiosmtplib,
    is_sender_refusal,
    parse_enhanced_status,
)

from .pipelining import ReplyReader, send_group, send_line, write_content

if TYPE_CHECKING:
    from .gate import Gate
    from .transport import SmtpTransport

__all__ = ["SmtpSession", "SendResult", "RecipientRefusal", "MAX_RCPT_PER_TRANSACTION", "TRACE_HEADROOM_BYTES",
           "envelope_recipients", "wire_size"]

log = logging.getLogger("mailgem.connections")

# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RCPT_PER_TRANSACTION = 100

# Room for the trace fields a server adds before comparing a message with its SIZE (Received:,
# Return-Path:, Authentication-Results:, ...; Postfix also counts queue-file records).
TRACE_HEADROOM_BYTES = 4096

# RFC 3463 §3.4: 5.3.4 "message too big for system"; RFC 1870 §6.1: 552 to MAIL or after DATA.
_TOO_BIG = "5.3.4"


def wire_size(data: bytes) -> int:
    """Bytes sent after 354 for ``data`` (CRLF line ends): dot-stuffed lines (RFC 5321 §4.5.2)
    and the final ``CRLF.CRLF``."""
    return len(data) + data.count(b"\n.") + data.startswith(b".") + 5


def _withheld(where: dict[str, object]) -> ContentWithheldError:
    return ContentWithheldError("not sent: the run stopped sending before the message's content was written; "
                                "the server discards the transaction", **where)  # type: ignore[arg-type]


def _no_parameters(address: str) -> list[str]:
    """No ESMTP parameters for ``RCPT TO`` (no ``dsn`` on the connection)."""
    return []


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
        self._reader: ReplyReader | None = None  # holds the transport while the session pipelines
        self._client_protocol: asyncio.BaseProtocol | None = None

    @property
    def usable(self) -> bool:
        """Whether the connection is still open and in step (a pool discards a session that is not)."""
        if self._reader is not None:
            return self._reader.error is None and not self._reader.lost
        return self._client.is_connected

    def _pipeline(self) -> ReplyReader:
        """The session's :class:`ReplyReader`, installed on its transport on first use."""
        if self._reader is None:
            transport = self._client.transport
            if transport is None or transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            self._client_protocol = transport.get_protocol()
            reader = ReplyReader()
            reader.connection_made(transport)
            transport.set_protocol(reader)
            self._reader = reader
        return self._reader

    def _unpipeline(self) -> None:
        """Give the transport back to aiosmtplib (for NOOP, the sender check, QUIT); a session out
        of step with the server is closed instead (its replies cannot be matched any more)."""
        reader, self._reader = self._reader, None
        if reader is None or reader.transport is None or self._client_protocol is None:
            return
        if not reader.in_step:  # whoever still waits on this session learns it now, not at a timeout
            reader.abort(aiosmtplib.SMTPServerDisconnected("the session was closed while out of step"))
        reader.transport.set_protocol(self._client_protocol)
        if reader.lost:
            self._client_protocol.connection_lost(None)  # aiosmtplib learns what happened meanwhile

    @property
    def size_limit_bytes(self) -> int | None:
        """SIZE advertised by the server (RFC 1870 §4), ``None`` when absent or 0 (no limit)."""
        return self.size_of(self._client)

    @staticmethod
    def size_of(client: aiosmtplib.SMTP) -> int | None:
        """The SIZE ``client``'s server advertised in its last EHLO reply, bytes (``None``: none or 0)."""
        raw = client.esmtp_extensions.get("size", "").strip()
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    @property
    def supports_smtputf8(self) -> bool:
        """Whether the server offers SMTPUTF8 (RFC 6531)."""
        return self._client.supports_extension("smtputf8")

    async def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> SendResult:
        """Send ``message`` to ``recipients`` (default: its To, Cc and Bcc; Bcc is never transmitted).

        Returns:
            a :class:`SendResult`; recipients refused while others are accepted are in ``refused``.

        Raises:
            MessageTooLargeError: larger than the server's SIZE; nothing was sent.
            RecipientsRefusedError: every recipient refused; nothing was sent.
            SmtpError: any other failure, typed (see :mod:`mailgem.connections.errors`).
        """
        rcpts = list(recipients) if recipients is not None else envelope_recipients(message)
        if not rcpts:
            raise RecipientsRefusedError("the message has no recipients", {}, transient=False,
                                         hint="set to, cc or bcc")
        utf8 = self._transport.needs_smtputf8(rcpts)
        data = self._transport.flatten(message, utf8=utf8)  # Bcc was read above, before flatten drops it
        return await self.send_bytes(data, rcpts, message_id=str(message["Message-ID"]), smtputf8=utf8)

    async def send_bytes(self, data: bytes, recipients: Sequence[str], *, message_id: str | None = None,
                         smtputf8: bool = False, lend: Callable[[], None] | None = None,
                         envelope_id: str | None = None, gate: Gate | None = None) -> SendResult:
        """Send an already flattened message (CRLF line endings).

        ``smtputf8``: the message has UTF-8 headers or addresses (RFC 6531/6532).

        ``envelope_id``: the RFC 3461 ``ENVID``, sent when the connection asks for delivery status
        notifications (``dsn``) and the server advertises ``DSN``.

        ``lend``: called once the content is written on a pipelining session, before the reply
        to its final dot: from then on another message's transaction may start on this session
        (its group follows the content, RFC 2920 §3.1). A pool passes its lending hook here.

        ``gate``: its ``may_write()`` is asked once more when the server is ready for the content
        (after the ``354`` on a pipelining session, before ``DATA`` otherwise). ``False`` (the
        caller may no longer send this message, e.g. it was paused past the time its claim on the
        message held) raises :class:`ContentWithheldError`: the content is not written, the
        session is ended without it (pipelined) or reset, and nothing is delivered. Without it, a
        message whose commands went out just before a pause would be written when the process
        resumed, after another run had taken it over. See :mod:`mailgem.connections.gate`.

        More than :data:`MAX_RCPT_PER_TRANSACTION` recipients go in several mail transactions of
        that many (RFC 5321 §4.5.3.1.8: servers need buffer only 100 recipients). A chunk that
        fails after an earlier one was accepted is reported per recipient, not raised, so that
        what was accepted is never sent again.
        """
        data = self._transport.sign(data)  # DKIM on the final bytes (RFC 6376), when the connection signs
        chunks = [list(recipients[i:i + MAX_RCPT_PER_TRANSACTION])
                  for i in range(0, len(recipients), MAX_RCPT_PER_TRANSACTION)]
        if len(chunks) <= 1:
            return await self._transaction(data, list(recipients), message_id, smtputf8, lend, envelope_id, gate)
        results: list[SendResult] = []
        failures: dict[str, RecipientRefusal] = {}
        last_error: SmtpError | None = None
        for i, chunk in enumerate(chunks):
            try:
                results.append(await self._transaction(data, chunk, message_id, smtputf8,
                                                       lend if i == len(chunks) - 1 else None, envelope_id, gate))
            except (MessageTooLargeError, SenderRefusedError, SmtpUtf8NotSupportedError):
                raise  # the same for every chunk
            except SmtpError as exc:
                withheld = isinstance(exc, ContentWithheldError)  # the run stopped: no later chunk goes either
                if isinstance(exc, RecipientsRefusedError) and exc.recipients:
                    failures.update({r: RecipientRefusal(c, m, parse_enhanced_status(m)) for r, (c, m) in exc.recipients.items()})
                else:
                    code = exc.code if exc.code is not None else (451 if exc.transient else 554)
                    failures.update({r: RecipientRefusal(code, exc.server_message or exc.message, exc.enhanced_status)
                                     for rest in (chunks[i:] if withheld else [chunk]) for r in rest})
                last_error = exc
                if withheld:
                    break
        if not results:
            assert last_error is not None
            raise last_error
        refused = {r: v for res in results for r, v in res.refused.items()} | failures
        last = results[-1]
        return SendResult(tuple(a for res in results for a in res.accepted), refused, last.code, last.message,
                          last.enhanced_status, message_id, len(data))

    def _check_size(self, data: bytes, where: dict[str, object]) -> None:
        limit = self.size_limit_bytes
        if limit is not None:
            wire = wire_size(data)
            if wire + TRACE_HEADROOM_BYTES > limit:
                raise MessageTooLargeError(
                    f"message is {len(data):,} bytes ({wire:,} as transmitted); with {TRACE_HEADROOM_BYTES:,} "
                    f"bytes of headroom for the trace headers the server adds, it is over the server's SIZE "
                    f"limit (RFC 1870) of {limit:,} bytes; nothing was sent",
                    size_bytes=len(data), limit_bytes=limit, **where)  # type: ignore[arg-type]
        elif len(data) > self._transport.connection.max_message_bytes:
            cap = self._transport.connection.max_message_bytes
            raise MessageTooLargeError(
                f"message is {len(data):,} bytes, over the connection's max_message_bytes of {cap:,} bytes; "
                "nothing was sent", size_bytes=len(data), limit_bytes=cap, **where)  # type: ignore[arg-type]

    def _too_large(self, exc: aiosmtplib.SMTPResponseException, data: bytes, where: dict[str, object]) -> MessageTooLargeError:
        limit = self.size_limit_bytes
        stated = f"the server's SIZE is {limit:,} bytes" if limit else "the server advertises no SIZE"
        return MessageTooLargeError(
            f"the server refused the message as too large: it is {len(data):,} bytes ({wire_size(data):,} as "
            f"transmitted) and {stated}; it adds its own trace headers before comparing",
            size_bytes=len(data), limit_bytes=limit, code=exc.code, server_message=exc.message, **where)  # type: ignore[arg-type]

    def _sender_refused(self, exc: aiosmtplib.SMTPResponseException, where: dict[str, object]) -> SenderRefusedError:
        connection = self._transport.connection
        hint = (f"the login {connection.username or '(anonymous)'!s} may not send as <{connection.sender}>: set "
                f"sender_address on connection {connection.name!r} to an address this login owns (a verified "
                "sender at SendGrid, SES or Mailgun); `mailgem connection test` checks it without sending")
        if 400 <= exc.code < 500:
            hint = "a temporary refusal (RFC 5321 §4.2.1): it is retried"
        error = SenderRefusedError(
            f"the server refused the sender <{connection.sender}> of connection {connection.name!r}",
            code=exc.code, server_message=exc.message, hint=hint, **where)  # type: ignore[arg-type]
        self._transport.remember_refusal(error)
        return error

    async def _transaction(self, data: bytes, recipients: list[str], message_id: str | None,
                           smtputf8: bool, lend: Callable[[], None] | None = None,
                           envelope_id: str | None = None, gate: Gate | None = None) -> SendResult:
        """One mail transaction: MAIL FROM, RCPT TO each recipient, DATA."""
        transport = self._transport
        transport.raise_if_refused()
        connection = transport.connection
        where: dict[str, object] = {"host": connection.host, "port": connection.port}
        self._check_size(data, where)
        client = self._client
        if smtputf8 and not self.supports_smtputf8:
            wide = [r for r in recipients if envelope_address(r)[1]] or [connection.sender]
            raise SmtpUtf8NotSupportedError(
                f"{', '.join(wide)} has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531 §3.2), and the "
                "server does not offer it; nothing was sent", **where)  # type: ignore[arg-type]
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152: 8-bit content is declared
        if smtputf8:
            options.append("SMTPUTF8")
        encoding = "utf-8" if smtputf8 else "ascii"
        sender = transport.envelope_sender
        rcpt_params: Callable[[str], list[str]] = _no_parameters
        if connection.dsn is not None:
            if client.supports_extension("dsn"):  # RFC 3461 §4: only where advertised
                options += connection.dsn.mail_parameters(envelope_id)
                rcpt_params = connection.dsn.rcpt_parameters
            else:
                transport.warn_once("dsn", f"connection {connection.name}: {connection.host}:{connection.port} does not "
                                           "advertise DSN (RFC 3461), so messages go without delivery status "
                                           "notification requests (dsn is ignored for this server)")
        if connection.pipelining and client.supports_extension("pipelining"):
            return await self._pipelined(data, recipients, message_id, options, encoding, where, lend, rcpt_params, gate)
        stage = "mail"
        accepted: list[str] = []
        refused: dict[str, RecipientRefusal] = {}
        try:
            try:
                await client.mail(sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                await self._reset()
                if exc.code == 552 or parse_enhanced_status(exc.message) == _TOO_BIG:
                    raise self._too_large(exc, data, where) from None
                raise self._sender_refused(exc, where) from None
            stage = "rcpt"
            for rcpt in recipients:
                try:
                    address = envelope_address(rcpt)[0]
                    await client.rcpt(address, options=rcpt_params(address), encoding=encoding)
                    accepted.append(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if is_sender_refusal(exc.message, sender):  # checked late (Postfix smtpd_delay_reject)
                        await self._reset()
                        raise self._sender_refused(exc, where) from None
                    refused[rcpt] = RecipientRefusal(exc.code, exc.message, parse_enhanced_status(exc.message))
            if not accepted:
                await self._reset()
                first = next(iter(refused.values()))
                raise RecipientsRefusedError(
                    "every recipient was refused; nothing was sent",
                    {r: (v.code, v.message) for r, v in refused.items()},
                    code=first.code, server_message=first.message, **where)  # type: ignore[arg-type]
            if gate is not None and not gate.may_write():
                await self._reset()
                raise _withheld(where)
            stage = "data"
            response = await client.data(data, timeout=connection.data_timeout_s)
        except ContentWithheldError:
            raise  # a ConnectionError, but ours: not to be read as the server's
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            if stage == "data" and (exc.code == 552 or parse_enhanced_status(exc.message) == _TOO_BIG):
                raise self._too_large(exc, data, where) from None
            raise from_aiosmtplib(exc, stage=stage, **where) from None  # type: ignore[arg-type]
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = from_aiosmtplib(exc, stage=stage, **where)  # type: ignore[arg-type]
            # After DATA began, a lost connection or a missing reply leaves it open whether the
            # server accepted the message (RFC 5321 §4.5.3.2.6).
            error.maybe_delivered = stage == "data"
            raise error from None
        log.debug("message %s accepted by %s:%s for %d recipient(s), %d refused",
                  message_id, connection.host, connection.port, len(accepted), len(refused))
        return SendResult(tuple(accepted), refused, response.code, response.message,
                          parse_enhanced_status(response.message), message_id, len(data))

    async def _pipelined(self, data: bytes, recipients: list[str], message_id: str | None, options: list[str],
                         encoding: str, where: dict[str, object], lend: Callable[[], None] | None,
                         rcpt_params: Callable[[str], list[str]], gate: Gate | None = None) -> SendResult:
        """The transaction as one pipelined group (RFC 2920, :mod:`mailgem.connections.pipelining`), with
        the same outcomes as the unpipelined path: partial success, sender refusals, SIZE,
        ``maybe_delivered`` once the content was sent. After the content, ``lend`` lets the next
        message start before this one's final reply."""
        connection = self._transport.connection
        sender = self._transport.envelope_sender
        stage = "mail"
        ahead = None  # the reply an earlier message on this session still waits for
        try:
            reader = self._pipeline()
            ahead = reader.last_waiting()
            addresses = [envelope_address(r)[0] for r in recipients]
            replies = await send_group(reader, sender=sender, options=options, recipients=addresses,
                                       encoding=encoding, timeout=connection.timeout_s,
                                       rcpt_options=[rcpt_params(a) for a in addresses])
            accepted: list[str] = []
            refused: dict[str, RecipientRefusal] = {}
            sender_reply = None if 200 <= replies.mail.code < 300 else replies.mail
            if sender_reply is None:
                for rcpt, reply in zip(recipients, replies.rcpt, strict=True):
                    if 200 <= reply.code < 300:
                        accepted.append(rcpt)
                    elif is_sender_refusal(reply.message, sender):  # checked late (smtpd_delay_reject)
                        sender_reply = reply
                    else:
                        refused[rcpt] = RecipientRefusal(reply.code, reply.message, parse_enhanced_status(reply.message))
            if sender_reply is not None or not accepted or replies.data.code != 354:
                if replies.data.code == 354:  # a lone dot ends it (RFC 2920 §3.1)
                    await reader.replies([write_content(reader, None)], connection.timeout_s)
                # RSET keeps the session usable after a refused transaction (RFC 5321 §4.1.1.5).
                await send_line(reader, b"RSET\r\n", connection.timeout_s)
                if sender_reply is not None:
                    refusal = aiosmtplib.SMTPSenderRefused(sender_reply.code, sender_reply.message, sender)
                    if refusal.code == 552 or parse_enhanced_status(refusal.message) == _TOO_BIG:
                        raise self._too_large(refusal, data, where)
                    raise self._sender_refused(refusal, where)
                if not accepted:
                    first = next(iter(refused.values()))
                    raise RecipientsRefusedError(
                        "every recipient was refused; nothing was sent",
                        {r: (v.code, v.message) for r, v in refused.items()},
                        code=first.code, server_message=first.message, **where)  # type: ignore[arg-type]
                raise aiosmtplib.SMTPDataError(replies.data.code, replies.data.message)
            if gate is not None and not gate.may_write():
                # Without the final dot the server discards the transaction; ending the session is
                # safe here: every reply owed on it was read (the earlier message's came first).
                reader.abort(aiosmtplib.SMTPServerDisconnected("the run stopped before the content"))
                raise _withheld(where)
            stage = "data"
            final = write_content(reader, data)
            if lend is not None:
                lend()
            response = (await reader.replies([final], connection.data_timeout_s))[0]
            # No RSET after a refused final dot: the transaction is over either way (RFC 5321
            # §4.1.1.4), and the next message's group may already follow the content.
            if not 200 <= response.code < 300:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
        except SmtpError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if stage == "data" and (exc.code == 552 or parse_enhanced_status(exc.message) == _TOO_BIG):
                raise self._too_large(exc, data, where) from None
            raise from_aiosmtplib(exc, stage=stage, **where) from None  # type: ignore[arg-type]
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = from_aiosmtplib(exc, stage=stage, **where)  # type: ignore[arg-type]
            error.maybe_delivered = stage == "data"  # the content went out; the reply did not come back
            # The session broke before the earlier message's final reply: not this message's doing.
            error.inherited = stage == "mail" and ahead is not None and (ahead.cancelled() or ahead.result() is None)
            raise error from None
        log.debug("message %s accepted by %s:%s for %d recipient(s), %d refused (pipelined)",
                  message_id, connection.host, connection.port, len(accepted), len(refused))
        return SendResult(tuple(accepted), refused, response.code, response.message,
                          parse_enhanced_status(response.message), message_id, len(data))

    async def check_sender(self) -> RecipientRefusal | None:
        """``MAIL FROM`` the sender, ``RCPT TO`` the sender, ``RSET``: nothing is sent.

        Returns:
            ``None`` when both were accepted; the RCPT refusal when it is about the recipient
            (e.g. the sender's mailbox takes no mail), which says nothing against the sender.

        Raises:
            SenderRefusedError: the server refused the sender.
            SmtpError: any other failure.
        """
        connection = self._transport.connection
        where: dict[str, object] = {"host": connection.host, "port": connection.port}
        sender = self._transport.envelope_sender
        encoding = "utf-8" if self._transport.sender_smtputf8 else "ascii"
        options = ["SMTPUTF8"] if self._transport.sender_smtputf8 and self.supports_smtputf8 else []
        self._unpipeline()
        try:
            try:
                await self._client.mail(sender, options=options, encoding=encoding)
                await self._client.rcpt(sender, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                raise self._sender_refused(exc, where) from None
            except aiosmtplib.SMTPRecipientRefused as exc:
                if is_sender_refusal(exc.message, sender, recipient_is_sender=True):
                    raise self._sender_refused(exc, where) from None
                self._transport.sender_verified = True
                return RecipientRefusal(exc.code, exc.message, parse_enhanced_status(exc.message))
            finally:
                await self._reset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise from_aiosmtplib(exc, stage="mail", **where) from None  # type: ignore[arg-type]
        self._transport.sender_verified = True
        return None

    async def _reset(self) -> None:
        # RSET leaves the session usable for the next message; a failure here is not the story.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await self._client.rset()

    async def noop(self) -> int:
        """Send NOOP and return the reply code (250 when the session is healthy)."""
        self._unpipeline()
        return (await self._client.noop()).code

    async def close(self) -> None:
        """QUIT (bounded wait), then close the socket; closing twice is harmless."""
        self._unpipeline()
        await self._transport.quit(self._client)
