"""What one mail transaction's replies mean, read the same way whether its commands went one at a
time or pipelined (RFC 2920): the session sends, this module says what came of it.

* SIZE (RFC 1870) is checked before ``MAIL FROM`` against what the server will count: the
  message as transmitted (dot-stuffed, RFC 5321 §4.5.2) plus :data:`TRACE_HEADROOM_BYTES` for
  the trace fields the server adds before it compares (Postfix 3.7 adds about 1,040 bytes,
  measured). A 552 (or enhanced status 5.3.4) to ``MAIL FROM`` or after ``DATA`` is the same
  :class:`MessageTooLargeError`.
* A refusal that is about the sender (at ``MAIL``, or at ``RCPT`` when the server delays its
  checks) is a :class:`SenderRefusedError`, remembered for the run, not "every recipient refused".
* Recipients refused while others are accepted are a partial success (RFC 5321 §3.3); no
  accepted recipient is a :class:`RecipientsRefusedError` and nothing is sent.
* A connection lost or timed out after the content began is ``maybe_delivered``: the server may
  have accepted the message (RFC 5321 §4.5.3.2.6).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiosmtplib

from .errors import (
    ContentWithheldError,
    MessageTooLargeError,
    RecipientsRefusedError,
    SenderRefusedError,
    SmtpError,
    Where,
    is_sender_refusal,
    parse_enhanced_status,
)
from .translate import from_aiosmtplib
from .memory import ServerMemory
from .model import SmtpConnection

__all__ = ["Outcomes", "RecipientRefusal", "SendResult", "TRACE_HEADROOM_BYTES", "wire_size", "chunk_refusals",
           "combined"]

log = logging.getLogger("mailgem.connections")

# Room for the trace fields a server adds before comparing a message with its SIZE (Received:,
# Return-Path:, Authentication-Results:, ...; Postfix also counts queue-file records).
TRACE_HEADROOM_BYTES = 4096

# RFC 3463 §3.4: 5.3.4 "message too big for system"; RFC 1870 §6.1: 552 to MAIL or after DATA.
_TOO_BIG = "5.3.4"


def wire_size(data: bytes) -> int:
    """Bytes sent after 354 for ``data`` (CRLF line ends): dot-stuffed lines (RFC 5321 §4.5.2)
    and the final ``CRLF.CRLF``."""
    return len(data) + data.count(b"\n.") + data.startswith(b".") + 5


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


def chunk_refusals(exc: SmtpError, recipients: list[str]) -> dict[str, RecipientRefusal]:
    """How ``recipients`` are reported when their transaction failed with ``exc`` while another of
    the same message's was (or may be) accepted: one refusal each, never raised, so what was
    accepted is not sent again. Their own replies when every one was refused; else ``exc``'s
    reply (451 for a transient failure without one, 554 for a permanent one)."""
    if isinstance(exc, RecipientsRefusedError) and exc.recipients:
        return {r: RecipientRefusal(c, m, parse_enhanced_status(m)) for r, (c, m) in exc.recipients.items()}
    code = exc.code if exc.code is not None else (451 if exc.transient else 554)
    refusal = RecipientRefusal(code, exc.server_message or exc.message, exc.enhanced_status)
    return dict.fromkeys(recipients, refusal)


def combined(results: list[SendResult], failures: dict[str, RecipientRefusal], message_id: str | None,
             size_bytes: int) -> SendResult:
    """One message's result from its transactions' ``results`` (in order) and the recipients of
    those that failed (``failures``); code and text are the last accepted transaction's."""
    refused = {r: v for res in results for r, v in res.refused.items()} | failures
    last = results[-1]
    return SendResult(tuple(a for res in results for a in res.accepted), refused, last.code, last.message,
                      last.enhanced_status, message_id, size_bytes)


class Outcomes:
    """How one session's transactions end (see the module docstring): built once a session, asked
    by both of its paths. ``sender`` is the envelope sender (``MAIL FROM``) as sent."""

    __slots__ = ("connection", "memory", "sender", "where")

    def __init__(self, connection: SmtpConnection, memory: ServerMemory, sender: str) -> None:
        self.connection = connection
        self.memory = memory
        self.sender = sender
        self.where: Where = {"host": connection.host, "port": connection.port}

    def check_size(self, data: bytes, limit: int | None) -> None:
        """Before ``MAIL FROM``: ``data`` against the server's SIZE ``limit`` (bytes; ``None``:
        none advertised, then the connection's ``max_message_bytes``).

        Raises:
            MessageTooLargeError: over the limit; nothing was sent.
        """
        if limit is not None:
            wire = wire_size(data)
            if wire + TRACE_HEADROOM_BYTES > limit:
                raise MessageTooLargeError(
                    f"message is {len(data):,} bytes ({wire:,} as transmitted); with {TRACE_HEADROOM_BYTES:,} "
                    f"bytes of headroom for the trace headers the server adds, it is over the server's SIZE "
                    f"limit (RFC 1870) of {limit:,} bytes; nothing was sent",
                    size_bytes=len(data), limit_bytes=limit, **self.where)
        elif len(data) > self.connection.max_message_bytes:
            cap = self.connection.max_message_bytes
            raise MessageTooLargeError(
                f"message is {len(data):,} bytes, over the connection's max_message_bytes of {cap:,} bytes; "
                "nothing was sent", size_bytes=len(data), limit_bytes=cap, **self.where)

    def too_large(self, code: int, text: str, data: bytes, limit: int | None) -> MessageTooLargeError:
        """The server's reply ``code`` ``text`` refusing ``data`` as too large (``limit``: its SIZE)."""
        stated = f"the server's SIZE is {limit:,} bytes" if limit else "the server advertises no SIZE"
        return MessageTooLargeError(
            f"the server refused the message as too large: it is {len(data):,} bytes ({wire_size(data):,} as "
            f"transmitted) and {stated}; it adds its own trace headers before comparing",
            size_bytes=len(data), limit_bytes=limit, code=code, server_message=text, **self.where)

    def sender_refused(self, code: int, text: str) -> SenderRefusedError:
        """The server refused the envelope sender (reply ``code`` ``text``); a permanent refusal is
        remembered, so no other session of the connection sends ``MAIL FROM`` again."""
        connection = self.connection
        hint = (f"the login {connection.username or '(anonymous)'!s} may not send as <{connection.sender}>: set "
                f"sender_address on connection {connection.name!r} to an address this login owns (a verified "
                "sender at SendGrid, SES or Mailgun); `mailgem connection test` checks it without sending")
        if 400 <= code < 500:
            hint = "a temporary refusal (RFC 5321 §4.2.1): it is retried"
        error = SenderRefusedError(
            f"the server refused the sender <{connection.sender}> of connection {connection.name!r}",
            code=code, server_message=text, hint=hint, **self.where)
        self.memory.remember_refusal(error)
        return error

    def refused_at_mail(self, code: int, text: str, data: bytes, limit: int | None) -> SmtpError:
        """What a refused ``MAIL FROM`` means: too large (552, 5.3.4, RFC 1870 §6.1) or the sender."""
        if code == 552 or parse_enhanced_status(text) == _TOO_BIG:
            return self.too_large(code, text, data, limit)
        return self.sender_refused(code, text)

    def note_rcpt_refusal(self, rcpt: str, code: int, text: str, refused: dict[str, RecipientRefusal]) -> bool:
        """A refused ``RCPT TO`` ``rcpt``: ``True`` when the refusal is about the sender (checked
        late, as Postfix's ``smtpd_delay_reject`` does: see :meth:`sender_refused`), else it is
        noted in ``refused`` and ``False``."""
        if is_sender_refusal(text, self.sender):
            return True
        refused[rcpt] = RecipientRefusal(code, text, parse_enhanced_status(text))
        return False

    def nobody_accepted(self, refused: dict[str, RecipientRefusal]) -> RecipientsRefusedError:
        """Every ``RCPT TO`` was refused (``refused``, in order): nothing is sent."""
        first = next(iter(refused.values()))
        return RecipientsRefusedError("every recipient was refused; nothing was sent",
                                      {r: (v.code, v.message) for r, v in refused.items()},
                                      code=first.code, server_message=first.message, **self.where)

    def withheld(self) -> ContentWithheldError:
        """The caller's gate closed before the content (see :mod:`mailgem.connections.gate`)."""
        return ContentWithheldError("not sent: the run stopped sending before the message's content was written; "
                                    "the server discards the transaction", **self.where)

    def failed(self, exc: BaseException, stage: str, data: bytes, limit: int | None, *,
               ahead: asyncio.Future[aiosmtplib.SMTPResponse | None] | None = None) -> SmtpError:
        """An aiosmtplib (or socket) exception during ``stage`` (``mail``, ``rcpt``, ``data``) as
        a typed error: a 552/5.3.4 to the content is too large; a failure without a reply once
        the content began is ``maybe_delivered``. ``ahead``: on a pipelining session, the final
        reply an earlier message waited for when this one's group was written; a session that
        broke before it came is ``inherited`` (see :class:`SmtpError`)."""
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if stage == "data" and (exc.code == 552 or parse_enhanced_status(exc.message) == _TOO_BIG):
                return self.too_large(exc.code, exc.message, data, limit)
            return from_aiosmtplib(exc, stage=stage, **self.where)
        inherited = stage == "mail" and ahead is not None and (ahead.cancelled() or ahead.result() is None)
        return from_aiosmtplib(exc, stage=stage, maybe_delivered=stage == "data", inherited=inherited, **self.where)

    def sent(self, accepted: list[str], refused: dict[str, RecipientRefusal], reply: aiosmtplib.SMTPResponse,
             message_id: str | None, data: bytes, how: str = "") -> SendResult:
        """The server took the content (``reply`` to its final dot): the message's result."""
        log.debug("message %s accepted by %s:%s for %d recipient(s), %d refused%s",
                  message_id, self.connection.host, self.connection.port, len(accepted), len(refused), how)
        return SendResult(tuple(accepted), refused, reply.code, reply.message, parse_enhanced_status(reply.message),
                          message_id, len(data))
