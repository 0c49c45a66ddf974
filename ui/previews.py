"""The gem dialog's live preview and its "Send a test to me" button.

:func:`build_previews` builds exactly what ``mailgem preview`` builds (the job's Email gem,
:meth:`EmailGem.build`: no secret read, nothing sent) and shows each message as a browser needs
it: headers, the HTML part with its inline images as ``data:`` URIs, the text part, the
attachments, and the delivery-report row ``run --dry-run`` would write for it.

:func:`send_test` sends one message (the first the job builds) to one address only, through the
job's connection, marked ``[test]`` in its subject.

Which fabric: the job's (:func:`mailgem.runner.preflight.check_job`'s ``fabric``), or for the
embedded local server (``--local``, or a job whose connection is ``local``)
:func:`mailgem.fabric.local.local_identity_fabric` for previews (no server is started: a preview
needs only the connection's identity) and a running :func:`mailgem.fabric.local.local_fabric` to
send a test.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

from mailgem.connections.addresses import AddressError, parse_mailbox
from mailgem.connections.errors import MailgemError
from mailgem.connections.sync import run_sync
from mailgem.fabric.model import Fabric
from mailgem.gems.email.content.preview import Built
from mailgem.gems.email.run.outcome import describe_error
from mailgem.runner.job import JobSpec, job_gem

__all__ = [
    "TEST_SUBJECT_PREFIX",
    "PreviewMessage",
    "SendTestResult",
    "TestAddressError",
    "build_previews",
    "send_test",
]

TEST_SUBJECT_PREFIX = "[test] "
# Shown first, in this order, when present; then any other header but MIME's structure.
_SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Auto-Submitted", "Message-ID")
_STRUCTURE_HEADERS = {"mime-version", "content-type", "content-transfer-encoding", "content-disposition", "content-id"}
_CID = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)


class TestAddressError(MailgemError, ValueError):
    """The address to send a test to is not one valid address."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class PreviewMessage:
    """One message of the preview, as the browser shows it.

    Attributes:
        key: the message key, as in the delivery report.
        recipients: ``RCPT TO`` addresses (To, Cc and Bcc).
        headers: ``(name, value)`` pairs: From, To, Cc, Reply-To, Subject, Date, Auto-Submitted,
            Message-ID (those present, in this order), then the other headers (custom ones,
            priority), as decoded text.
        html: the HTML part with each ``cid:`` reference replaced by a ``data:`` URI of the inline
            part it names (a sandboxed iframe shows the chart); ``None`` without an HTML part.
        text: the text/plain part, or ``None``.
        attachments: ``(file name, content type, size in bytes, payload)`` of each attachment,
            the payload decoded (the file as the recipient saves it).
        size_bytes: the message's size as it would be sent (RFC 5322 bytes, CRLF line ends).
        error: why the message could not be built, in one line (as the CLI says it), else ``None``.
        report_row: the delivery-report row ``mailgem run --dry-run`` would write for it
            (:data:`mailgem.gems.email.run.report.REPORT_COLUMNS`; ``status`` ``dry_run`` or ``failed``).
    """

    key: str
    recipients: list[str]
    headers: list[tuple[str, str]]
    html: str | None
    text: str | None
    attachments: list[tuple[str, str, int, bytes]]
    size_bytes: int
    error: str | None
    report_row: dict[str, Any]


@dataclass(frozen=True)
class SendTestResult:
    """What the server said to a test message.

    Attributes:
        code: the reply code to the end of DATA (250 when queued).
        message: the server's reply text (often its queue id).
        recipient: the one envelope recipient.
        subject: the subject sent (starts with ``[test] ``).
        size_bytes: bytes transmitted in DATA.
        message_id: the message's Message-ID.
    """

    code: int
    message: str
    recipient: str
    subject: str
    size_bytes: int
    message_id: str | None


def build_previews(job: JobSpec, frame: Any, fabric: Fabric, connection: str, user: str | None,
                   limit: int = 3, in1: Any = None) -> list[PreviewMessage]:
    """The first ``limit`` messages the job builds from ``frame``, exactly as ``mailgem preview``
    builds them (the job's gem through ``connection``; no secret read, nothing sent).

    Args:
        frame: the job's input (:meth:`~mailgem.ui.frames.FrameCache.frame`), pandas or Spark.
        connection: the connection whose identity the messages carry (``local`` for the
            embedded server, with :func:`~mailgem.fabric.local.local_identity_fabric`).
        limit: at most this many messages.
        in1: the job's second input (:meth:`~mailgem.ui.frames.FrameCache.frames`), if it has one.

    Raises:
        GemValidationError: the properties have errors (the message lists them).
        AccessDeniedError, FabricConfigError: ``user`` may not use the fabric, or it has no
            such connection.
    """
    gem = job_gem(job, fabric, connection, user)
    return [_preview(b, connection) for b in gem.build(frame, limit, in1)]


def _preview(built: Built, connection: str) -> PreviewMessage:
    row = dataclasses.asdict(built.dry_run_row(connection))
    row["status"] = str(row["status"])  # a plain str, as the report frames hold it
    message = built.message
    if message is None:
        return PreviewMessage(built.key, list(built.recipients), [], None, None, [], 0,
                              describe_error(built.error) if built.error is not None else built.skipped or "not built",
                              row)
    plain = message.get_body(("plain",))
    return PreviewMessage(
        key=built.key, recipients=list(built.recipients), headers=_headers(message), html=_html(message),
        text=plain.get_content() if plain is not None else None, attachments=_attachments(message),
        size_bytes=built.size_bytes, error=None, report_row=row)


def _headers(message: EmailMessage) -> list[tuple[str, str]]:
    shown = [(name, str(message[name])) for name in _SHOWN_HEADERS if message[name] is not None]
    named = {name.lower() for name in _SHOWN_HEADERS} | _STRUCTURE_HEADERS
    return shown + [(name, str(value)) for name, value in message.items() if name.lower() not in named]


def _html(message: EmailMessage) -> str | None:
    """The HTML part, its ``cid:`` references replaced by ``data:`` URIs of the parts they name."""
    part = message.get_body(("html",))
    if part is None:
        return None
    html = part.get_content()
    inline = {}
    for p in message.walk():
        cid = p["Content-ID"]
        if cid is not None and not p.is_multipart():
            payload = _decoded(p)
            inline[str(cid).strip().strip("<>")] = (
                f"data:{p.get_content_type()};base64,{base64.b64encode(payload).decode('ascii')}")
    return _CID.sub(lambda m: inline.get(unquote(m.group(1)), m.group(0)), html)


def _attachments(message: EmailMessage) -> list[tuple[str, str, int, bytes]]:
    out = []
    for a in message.iter_attachments():
        payload = _decoded(a)
        out.append((a.get_filename() or "(unnamed)", a.get_content_type(), len(payload), payload))
    return out


def _decoded(part: Any) -> bytes:
    """A leaf part's payload, its transfer encoding undone."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def send_test(job: JobSpec, frame: Any, fabric: Fabric, connection: str, user: str | None,
              address: str, in1: Any = None) -> SendTestResult:
    """Send the first message the job builds to ``address`` only, through ``connection``.

    The message is built as the job builds it (same mode, rows, templates, attachments), with
    its subject prefixed ``[test] `` and every recipient source replaced by ``address``: ``to``
    is ``address``; ``cc``, ``bcc`` and the ``to/cc/bcc_column`` recipients are cleared; no
    ledger. The built envelope is checked before anything is sent: ``RCPT TO`` only ``address``.

    Raises:
        TestAddressError: ``address`` is not one valid address (email-validator, as the gem checks).
        AccessDeniedError, SecretNotFoundError, FabricConfigError: the connection cannot be used
            by ``user`` (the secret is read here).
        MailgemError: the message could not be built (the gem's reason), or its envelope is not
            ``address`` alone (nothing is sent).
        SmtpError: the server refused; its message carries the connection layer's hint (e.g.
            a 535 says to check the username and password secret).
    """
    try:
        mailbox = parse_mailbox(address.strip(), fabric.special_domains(connection))
    except AddressError as exc:
        raise TestAddressError(f"test address: {exc}") from None
    props = job.email.model_copy(update={
        "to": [mailbox.header], "cc": [], "bcc": [], "to_column": None, "cc_column": None, "bcc_column": None,
        "ledger": None, "max_messages": None, "subject": TEST_SUBJECT_PREFIX + job.email.subject,
        "send_if": None, "skip_if": None})  # a test shows the message: the rules would only hide it
    gem = job_gem(job.model_copy(update={"email": props}), fabric, connection, user)
    built = next(gem.build(frame, 1, in1), None)  # with the job's second input, if any
    if built is None:
        raise MailgemError("the job builds no message from this data (is the frame empty?): nothing to test")
    if built.error is not None or built.message is None:
        raise MailgemError(f"the test message could not be built: {describe_error(built.error or ValueError())}")
    if [r.lower() for r in built.recipients] != [mailbox.address.lower()] or built.message["Cc"] is not None:
        raise MailgemError(f"refusing to send the test: its envelope is {built.recipients}, not {mailbox.address} "
                           "alone")
    transport = fabric.transport(connection, user)  # checks access, reads the secret
    result = run_sync(transport.send(built.message, built.recipients))
    return SendTestResult(result.code, result.message, mailbox.address, built.subject, result.size_bytes,
                          result.message_id)
