"""One authenticated SMTP session and its mail transactions (``MAIL FROM``, ``RCPT TO``, ``DATA``).

What the transaction adds to aiosmtplib's commands (what its replies mean is
:mod:`mailgem.connections.outcome`'s, the same for both ways of sending):

* ``BODY=8BITMIME`` (RFC 6152) when the message has 8-bit content and the server offers it;
  ``SMTPUTF8`` (RFC 6531) when an address needs it, or a clear per-message error when the
  server does not offer it (RFC 6531 §3.2).
* ``PIPELINING`` (RFC 2920) when offered and the connection allows it: the commands go as one
  group (:mod:`mailgem.connections.pipelining`); otherwise one at a time through aiosmtplib.
* More than :data:`MAX_RCPT_PER_TRANSACTION` recipients go in several transactions.

A session knows its connection, its sender (:class:`~mailgem.connections.identity.SenderIdentity`)
and what the run learnt of the server (:class:`~mailgem.connections.memory.ServerMemory`); it is
opened by :mod:`mailgem.connections.opening`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING

import aiosmtplib

from .addresses import envelope_address, envelope_recipients
from .errors import (ContentWithheldError, MessageTooLargeError, RecipientsRefusedError, SenderRefusedError, SmtpError,
                     SmtpUtf8NotSupportedError, is_sender_refusal, parse_enhanced_status)
from .identity import SenderIdentity
from .memory import ServerMemory
from .model import SmtpConnection
from .outcome import TRACE_HEADROOM_BYTES, Outcomes, RecipientRefusal, SendResult, chunk_refusals, combined, wire_size
from .pipelining import GroupReplies, ReplyReader, give_back, send_group, send_line, take_over, write_content
from .translate import from_aiosmtplib

if TYPE_CHECKING:
    from .gate import Gate

__all__ = ["SmtpSession", "SendResult", "RecipientRefusal", "MAX_RCPT_PER_TRANSACTION", "TRACE_HEADROOM_BYTES",
           "envelope_recipients", "wire_size", "quit_client"]

# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RCPT_PER_TRANSACTION = 100

QUIT_TIMEOUT_S = 5.0

# ESMTP parameters of one RCPT TO (RFC 3461 NOTIFY, ORCPT), by address.
RcptParameters = Callable[[str], list[str]]


def _no_parameters(address: str) -> list[str]:
    """No ESMTP parameters for ``RCPT TO`` (no ``dsn`` on the connection)."""
    return []


async def quit_client(client: aiosmtplib.SMTP) -> None:
    """QUIT (waiting at most :data:`QUIT_TIMEOUT_S` seconds), then close the socket; never raises
    for a session that is gone already."""
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await asyncio.wait_for(client.quit(), timeout=QUIT_TIMEOUT_S)
    client.close()


class SmtpSession:
    """One connected, secured and authenticated aiosmtplib client, opened by
    :mod:`mailgem.connections.opening` (e.g. through :meth:`SmtpTransport.connect`)."""

    def __init__(self, connection: SmtpConnection, identity: SenderIdentity, memory: ServerMemory,
                 client: aiosmtplib.SMTP, banner: str | None) -> None:
        self.connection = connection
        self.identity = identity
        self.memory = memory
        self._client = client
        self.banner = banner
        self._outcomes = Outcomes(connection, memory, identity.envelope_sender)
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
            self._reader, self._client_protocol = take_over(self._client)
        return self._reader

    def _unpipeline(self) -> None:
        """Give the transport back to aiosmtplib (for NOOP, the sender check, QUIT); see :func:`give_back`."""
        reader, self._reader = self._reader, None
        if reader is not None and self._client_protocol is not None:
            give_back(reader, self._client_protocol)

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
        utf8 = self.identity.needs_smtputf8(rcpts)
        data = self.identity.flatten(message, utf8=utf8)  # Bcc was read above, before flatten drops it
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
        data = self.identity.sign(data)  # DKIM on the final bytes (RFC 6376), when the connection signs
        if len(recipients) <= MAX_RCPT_PER_TRANSACTION:
            return await self._transaction(data, list(recipients), message_id, smtputf8, lend, envelope_id, gate)
        return await self._in_chunks(data, recipients, message_id, smtputf8, lend, envelope_id, gate)

    async def _in_chunks(self, data: bytes, recipients: Sequence[str], message_id: str | None, smtputf8: bool,
                         lend: Callable[[], None] | None, envelope_id: str | None, gate: Gate | None) -> SendResult:
        """Transactions of :data:`MAX_RCPT_PER_TRANSACTION` recipients each (see :meth:`send_bytes`)."""
        chunks = [list(recipients[i:i + MAX_RCPT_PER_TRANSACTION])
                  for i in range(0, len(recipients), MAX_RCPT_PER_TRANSACTION)]
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
                left = [r for rest in (chunks[i:] if withheld else [chunk]) for r in rest]
                failures.update(chunk_refusals(exc, left))
                last_error = exc
                if withheld:
                    break
        if not results:
            assert last_error is not None
            raise last_error
        return combined(results, failures, message_id, len(data))

    async def _transaction(self, data: bytes, recipients: list[str], message_id: str | None,
                           smtputf8: bool, lend: Callable[[], None] | None = None,
                           envelope_id: str | None = None, gate: Gate | None = None) -> SendResult:
        """One mail transaction: MAIL FROM, RCPT TO each recipient, DATA (pipelined when the
        server offers it and the connection allows it). Nothing is sent when a check before
        ``MAIL FROM`` fails (a remembered refusal, SIZE, SMTPUTF8)."""
        self.memory.raise_if_refused()
        limit = self.size_limit_bytes
        self._outcomes.check_size(data, limit)
        if smtputf8 and not self.supports_smtputf8:
            raise self._no_smtputf8(recipients)
        options = self._mail_parameters(data, smtputf8, envelope_id)
        rcpt_params = self._rcpt_parameters()
        encoding = "utf-8" if smtputf8 else "ascii"
        if self.connection.pipelining and self._client.supports_extension("pipelining"):
            return await self._pipelined(data, recipients, message_id, options, encoding, rcpt_params, limit,
                                         lend, gate)
        return await self._plain(data, recipients, message_id, options, encoding, rcpt_params, limit, gate)

    def _no_smtputf8(self, recipients: list[str]) -> SmtpUtf8NotSupportedError:
        wide = [r for r in recipients if envelope_address(r)[1]] or [self.connection.sender]
        return SmtpUtf8NotSupportedError(
            f"{', '.join(wide)} has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531 §3.2), and the "
            "server does not offer it; nothing was sent", **self._outcomes.where)

    def _mail_parameters(self, data: bytes, smtputf8: bool, envelope_id: str | None) -> list[str]:
        """The ESMTP parameters of ``MAIL FROM`` (SIZE, BODY, SMTPUTF8, DSN's RET and ENVID), as
        far as the server offers them."""
        client, connection = self._client, self.connection
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152: 8-bit content is declared
        if smtputf8:
            options.append("SMTPUTF8")
        if connection.dsn is not None:
            if client.supports_extension("dsn"):  # RFC 3461 §4: only where advertised
                options += connection.dsn.mail_parameters(envelope_id)
            else:
                self.memory.warn_once("dsn", f"connection {connection.name}: {connection.host}:{connection.port} does "
                                             "not advertise DSN (RFC 3461), so messages go without delivery status "
                                             "notification requests (dsn is ignored for this server)")
        return options

    def _rcpt_parameters(self) -> RcptParameters:
        """What gives each ``RCPT TO``'s ESMTP parameters (DSN's NOTIFY, RFC 3461 §4.1, where the
        connection asks for it and the server offers DSN)."""
        dsn = self.connection.dsn
        return dsn.rcpt_parameters if dsn is not None and self._client.supports_extension("dsn") else _no_parameters

    async def _plain(self, data: bytes, recipients: list[str], message_id: str | None, options: list[str],
                     encoding: str, rcpt_params: RcptParameters, limit: int | None, gate: Gate | None) -> SendResult:
        """The transaction one command at a time (aiosmtplib); a refused transaction is reset
        (``RSET``) so the session stays usable."""
        client, outcomes = self._client, self._outcomes
        stage = "mail"
        accepted: list[str] = []
        refused: dict[str, RecipientRefusal] = {}
        try:
            try:
                await client.mail(outcomes.sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                await self._reset()
                raise outcomes.refused_at_mail(exc.code, exc.message, data, limit) from None
            stage = "rcpt"
            for rcpt in recipients:
                try:
                    address = envelope_address(rcpt)[0]
                    await client.rcpt(address, options=rcpt_params(address), encoding=encoding)
                    accepted.append(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if outcomes.note_rcpt_refusal(rcpt, exc.code, exc.message, refused):
                        await self._reset()
                        raise outcomes.sender_refused(exc.code, exc.message) from None
            if not accepted:
                await self._reset()
                raise outcomes.nobody_accepted(refused)
            if gate is not None and not gate.may_write():
                await self._reset()
                raise outcomes.withheld()
            stage = "data"
            reply = await client.data(data, timeout=self.connection.data_timeout_s)
        except SmtpError:
            raise  # ours (ContentWithheldError is a ConnectionError, but not the server's)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise outcomes.failed(exc, stage, data, limit) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise outcomes.failed(exc, stage, data, limit) from None
        return outcomes.sent(accepted, refused, reply, message_id, data)

    async def _pipelined(self, data: bytes, recipients: list[str], message_id: str | None, options: list[str],
                         encoding: str, rcpt_params: RcptParameters, limit: int | None,
                         lend: Callable[[], None] | None, gate: Gate | None) -> SendResult:
        """The transaction as one pipelined group (RFC 2920, :mod:`mailgem.connections.pipelining`),
        with the same outcomes as :meth:`_plain`. After the content, ``lend`` lets the next message
        start before this one's final reply."""
        connection, outcomes = self.connection, self._outcomes
        stage = "mail"
        ahead = None  # the reply an earlier message on this session still waits for
        accepted: list[str] = []
        refused: dict[str, RecipientRefusal] = {}
        try:
            reader = self._pipeline()
            ahead = reader.last_waiting()
            addresses = [envelope_address(r)[0] for r in recipients]
            replies = await send_group(reader, sender=outcomes.sender, options=options, recipients=addresses,
                                       encoding=encoding, timeout=connection.timeout_s,
                                       rcpt_options=[rcpt_params(a) for a in addresses])
            sender_reply = self._read_group(replies, recipients, accepted, refused)
            if sender_reply is not None or not accepted or replies.data.code != 354:
                await self._end_group(reader, replies.data.code == 354)
                if sender_reply is not None:
                    raise outcomes.refused_at_mail(sender_reply.code, sender_reply.message, data, limit)
                if not accepted:
                    raise outcomes.nobody_accepted(refused)
                raise aiosmtplib.SMTPDataError(replies.data.code, replies.data.message)
            if gate is not None and not gate.may_write():
                # Without the final dot the server discards the transaction; ending the session is
                # safe here: every reply owed on it was read (the earlier message's came first).
                reader.abort(aiosmtplib.SMTPServerDisconnected("the run stopped before the content"))
                raise outcomes.withheld()
            stage = "data"
            final = write_content(reader, data)
            if lend is not None:
                lend()
            reply = (await reader.replies([final], connection.data_timeout_s))[0]
            # No RSET after a refused final dot: the transaction is over either way (RFC 5321
            # §4.1.1.4), and the next message's group may already follow the content.
            if not 200 <= reply.code < 300:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        except SmtpError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise outcomes.failed(exc, stage, data, limit, ahead=ahead) from None
        return outcomes.sent(accepted, refused, reply, message_id, data, " (pipelined)")

    def _read_group(self, replies: GroupReplies, recipients: list[str], accepted: list[str],
                    refused: dict[str, RecipientRefusal]) -> aiosmtplib.SMTPResponse | None:
        """Sort a group's ``RCPT TO`` replies into ``accepted`` and ``refused``; the reply that
        refused the sender (to ``MAIL FROM``, or to a ``RCPT TO`` when checked late), if any."""
        if not 200 <= replies.mail.code < 300:
            return replies.mail
        sender_reply = None
        for rcpt, reply in zip(recipients, replies.rcpt, strict=True):
            if 200 <= reply.code < 300:
                accepted.append(rcpt)
            elif self._outcomes.note_rcpt_refusal(rcpt, reply.code, reply.message, refused):
                sender_reply = reply
        return sender_reply

    async def _end_group(self, reader: ReplyReader, after_354: bool) -> None:
        """End a pipelined transaction that sends no content: a lone dot after a ``354`` (RFC 2920
        §3.1), then RSET, which keeps the session usable (RFC 5321 §4.1.1.5)."""
        timeout = self.connection.timeout_s
        if after_354:
            await reader.replies([write_content(reader, None)], timeout)
        await send_line(reader, b"RSET\r\n", timeout)

    async def check_sender(self) -> RecipientRefusal | None:
        """``MAIL FROM`` the sender, ``RCPT TO`` the sender, ``RSET``: nothing is sent.

        Returns:
            ``None`` when both were accepted; the RCPT refusal when it is about the recipient
            (e.g. the sender's mailbox takes no mail), which says nothing against the sender.

        Raises:
            SenderRefusedError: the server refused the sender.
            SmtpError: any other failure.
        """
        identity, outcomes = self.identity, self._outcomes
        sender = identity.envelope_sender
        encoding = "utf-8" if identity.sender_smtputf8 else "ascii"
        options = ["SMTPUTF8"] if identity.sender_smtputf8 and self.supports_smtputf8 else []
        self._unpipeline()
        try:
            try:
                await self._client.mail(sender, options=options, encoding=encoding)
                await self._client.rcpt(sender, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                raise outcomes.sender_refused(exc.code, exc.message) from None
            except aiosmtplib.SMTPRecipientRefused as exc:
                if is_sender_refusal(exc.message, sender, recipient_is_sender=True):
                    raise outcomes.sender_refused(exc.code, exc.message) from None
                self.memory.sender_verified = True
                return RecipientRefusal(exc.code, exc.message, parse_enhanced_status(exc.message))
            finally:
                await self._reset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise from_aiosmtplib(exc, stage="mail", **outcomes.where) from None
        self.memory.sender_verified = True
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
        await quit_client(self._client)
