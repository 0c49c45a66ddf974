"""Messages built but not sent: what ``preview``, ``run --dry-run`` and notebooks show.

:class:`Built` holds one message as it would be sent (the bytes, with the connection's From);
:func:`write_previews` writes each as ``.eml`` (open it in any mail client) and ``.html`` (the
headers, the attachments' names and the HTML part, for a browser).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from mailgem.connections.transport import new_message_id

from ..run.report import DeliveryRow
from ..run.sender import describe_error
from ..run.status import DeliveryStatus
from .unit import SplitNeeded, Unit, split_unit
from .conditions import send_if_skip

if TYPE_CHECKING:
    from mailgem.connections.transport import SmtpTransport

    from .compose import Composer

__all__ = ["Built", "write_previews", "built_messages"]


@dataclass(repr=False)
class Built:
    """One message built but not sent (:meth:`EmailGem.build`).

    Attributes:
        key: the message key, as in the delivery report.
        recipients: ``RCPT TO`` addresses (To, Cc and Bcc).
        message: the message with From, Date and Message-ID set (Bcc is not a header); ``None``
            when it could not be built.
        raw: its bytes as they would be sent (RFC 5322, CRLF line ends); ``size_bytes`` is their length.
        error: why it could not be built, else ``None``.
        skipped: why it would not be sent (``send_if: ... was false``, or for the whole run, key
            ``(run)``, ``skip_if: ... was true``); it is then not built. ``None`` otherwise.
    """

    key: str
    recipients: list[str]
    message: EmailMessage | None
    raw: bytes | None
    error: BaseException | None = None
    skipped: str | None = None

    @property
    def size_bytes(self) -> int:
        return len(self.raw or b"")

    def __repr__(self) -> str:
        return f"Built({self.summary()})"

    @property
    def subject(self) -> str:
        return str(self.message["Subject"]) if self.message is not None else ""

    def html(self) -> str | None:
        """The HTML part, if any."""
        part = self.message.get_body(("html",)) if self.message is not None else None
        return part.get_content() if part is not None else None

    def attachment_names(self) -> list[str]:
        if self.message is None:
            return []
        return [a.get_filename() or "(unnamed)" for a in self.message.iter_attachments()]

    def summary(self) -> str:
        """One line: key, recipients, subject, size and attachments (or the error)."""
        if self.error is not None:
            return f"{self.key}: cannot be built: {describe_error(self.error)}"
        if self.skipped is not None:
            return f"{self.key}: would be skipped ({DeliveryStatus.SKIPPED_BY_RULE}): {self.skipped}"
        attached = f", attachments: {', '.join(self.attachment_names())}" if self.attachment_names() else ""
        return (f"{self.key}: to {', '.join(self.recipients)} | {self.subject!r} | {self.size_bytes:,} bytes"
                f"{attached}")

    def dry_run_row(self, connection: str) -> DeliveryRow:
        """The delivery-report row ``run --dry-run`` writes for this message through ``connection``:
        ``dry_run`` with its recipients, size and Message-ID, ``failed`` with the error, or
        ``skipped_by_rule`` with the condition."""
        if self.error is not None:
            return DeliveryRow(self.key, DeliveryStatus.FAILED, connection=connection, error=str(self.error),
                               error_type=type(self.error).__name__)
        if self.skipped is not None:
            return DeliveryRow(self.key, DeliveryStatus.SKIPPED_BY_RULE, connection=connection, error=self.skipped)
        return DeliveryRow(self.key, DeliveryStatus.DRY_RUN, recipients=", ".join(self.recipients),
                           size_bytes=self.size_bytes,
                           message_id=str(self.message["Message-ID"]) if self.message else None,
                           connection=connection, notes=getattr(self.message, "notes", None) or None)

    def _body_html(self) -> str:
        body = self.html()
        if body is None:
            text = self.message.get_body(("plain",)) if self.message is not None else None
            body = f"<pre>{escape(text.get_content())}</pre>" if text is not None else ""
        return body

    def page(self) -> str:
        """A standalone HTML page: the headers, the attachments' names, then the HTML part (or
        the text part, preformatted)."""
        fields = "".join(f"<tr><th align=left>{escape(name)}</th><td>{escape(str(self.message[name]))}</td></tr>"
                         for name in ("From", "To", "Cc", "Subject", "Date") if self.message and self.message[name])
        attachments = "".join(f"<li>{escape(a)}</li>" for a in self.attachment_names())
        return (f"<!doctype html><meta charset=utf-8><title>{escape(self.subject)}</title>"
                f"<table style='font-family:sans-serif;font-size:13px'>{fields}"
                f"<tr><th align=left>RCPT TO</th><td>{escape(', '.join(self.recipients))}</td></tr></table>"
                + (f"<p style='font-family:sans-serif;font-size:13px'>Attachments:</p><ul>{attachments}</ul>"
                   if attachments else "") + "<hr>" + self._body_html())

    def _repr_html_(self) -> str:
        if self.error is not None:
            return f"<p><b>{escape(self.key)}</b>: cannot be built: {escape(describe_error(self.error))}</p>"
        if self.skipped is not None:
            return f"<p><b>{escape(self.key)}</b>: would be skipped: {escape(self.skipped)}</p>"
        head = (f"<p><b>To:</b> {escape(', '.join(self.recipients))}<br><b>Subject:</b> {escape(self.subject)}"
                f"<br><b>Size:</b> {self.size_bytes:,} bytes"
                + (f"<br><b>Attachments:</b> {escape(', '.join(self.attachment_names()))}" if self.attachment_names()
                   else "") + "</p>")
        body = self._body_html()
        # The message's HTML in a sandboxed frame: its styles stay inside, its scripts never run.
        return head + f'<iframe sandbox srcdoc="{escape(body)}" style="width:100%;height:420px;border:1px solid #ccc"></iframe>'


def _file_stem(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:60] or "message"


def write_previews(built: Iterable[Built], folder: Path) -> Iterator[tuple[Built, Path | None]]:
    """Write each message as ``NNNN-key.eml`` and ``NNNN-key.html`` in ``folder`` (created);
    yield it with its ``.html`` path (``None`` for a message that could not be built)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, b in enumerate(built, 1):
        if b.raw is None:
            yield b, None
            continue
        stem = folder / f"{n:04d}-{_file_stem(b.key)}"
        stem.with_suffix(".eml").write_bytes(b.raw)
        html_path = stem.with_suffix(".html")
        html_path.write_text(b.page(), encoding="utf-8")
        yield b, html_path


def built_messages(composer: Composer, transport: SmtpTransport, work: Iterator[Unit]) -> Iterator[Built]:
    """Each unit of ``work`` built as a real run would (a unit too large is built in parts, a
    message that cannot be built comes with its error, one ``send_if`` skips says so), with a new
    Message-ID, not sent."""
    for unit in work:
        try:
            if (skipped := send_if_skip(composer.props, unit, composer.context(unit))) is not None:
                yield Built(unit.key, [], None, None, skipped=skipped)  # send_if: not built, as in a run
                continue
            message, envelope = composer.compose(unit)
            message["Message-ID"] = new_message_id(transport.domain)
            raw = transport.flatten(message, utf8=transport.needs_smtputf8(envelope.recipients))
            yield Built(unit.key, envelope.recipients, message, raw)
        except SplitNeeded as exc:  # sent in parts, as a real run would
            yield from built_messages(composer, transport, iter(split_unit(unit, exc.parts)))
        except Exception as exc:  # noqa: BLE001 - that message's problem, as in a real run
            yield Built(unit.key, [], None, None, exc)
