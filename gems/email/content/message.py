"""Assemble the ``EmailMessage``: multipart/alternative (text + HTML) inside multipart/mixed
when there are attachments (RFC 2046 §5.1), stdlib ``email`` with ``policy.SMTP``.

From, Sender and the envelope sender are not set here: the connection's transport sets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from email import policy
from email.message import EmailMessage

from mailgem.connections.addresses import parse_mailbox
from mailgem.connections.headers import PrefoldedHeader, prefolded, text_header

from .attachments import Attachment
from .file_names import ascii_file_name
from .templates import is_template
from ..properties import EmailProperties

__all__ = ["build_message", "run_headers", "PRIORITY_HEADERS", "AUTOMATED_HEADERS"]

# On every message: a report is machine-made, so auto-responders and out-of-office replies must
# not answer it (RFC 3834 §5); Exchange reads its own header for the same.
AUTOMATED_HEADERS = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}
# X-Priority (1 highest .. 5 lowest) and Importance (RFC 2156 §5.3) are what clients read.
PRIORITY_HEADERS = {
    "high": {"X-Priority": "1 (Highest)", "Importance": "high"},
    "low": {"X-Priority": "5 (Lowest)", "Importance": "low"},
    "normal": {},
}


def run_headers(props: EmailProperties, special_domains: tuple[str, ...] = ()) -> list[PrefoldedHeader]:
    """Headers shared by every message of a run (Reply-To, priority, custom), parsed once.

    Raises:
        ValueError: from the stdlib, for a value it cannot encode safely; ``AddressError`` for
            an invalid Reply-To (both reported by :func:`mailgem.gems.email.validate.validate` first).
    """
    # IDN domains as A-labels, as for recipients (connections.addresses).
    reply_to = [parse_mailbox(item, special_domains).header for item in props.reply_to]
    out = [prefolded("Reply-To", ", ".join(reply_to))] if reply_to else []
    out += [prefolded(name, value) for name, value in AUTOMATED_HEADERS.items()]
    out += [prefolded(name, value) for name, value in PRIORITY_HEADERS[props.priority].items()]
    out += [text_header(name, value) for name, value in props.headers.items() if not is_template(value)]
    return out


def build_message(
    *,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    headers: Sequence[PrefoldedHeader],
    text: str | None,
    html: str | None,
    attachments: Sequence[Attachment],
    charset: str,
) -> EmailMessage:
    """Build the message to ``to`` and ``cc`` (Bcc stays in the envelope only), with ``headers``
    from :func:`run_headers` (validated by :func:`mailgem.gems.email.validate.validate`).

    Raises:
        ValueError: from the stdlib, for a header value it cannot encode safely.
    """
    msg = EmailMessage(policy=policy.SMTP)
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = text_header("Subject", subject)  # the stdlib's folding may drop a space
    for header in headers:
        msg[header.name] = header
    if text is not None:
        msg.set_content(text, charset=charset)
        if html is not None:
            msg.add_alternative(html, subtype="html", charset=charset)
    elif html is not None:
        msg.set_content(html, subtype="html", charset=charset)
    # Every attachment's name twice: RFC 2231 ``filename*=`` in Content-Disposition when it is not
    # ASCII (the stdlib encodes it), and an ASCII ``name=`` in Content-Type, the legacy parameter
    # that clients which do not read RFC 2231 (older Outlook) show instead.
    html_part = msg.get_body(("html",)) if html is not None else None
    for att in attachments:
        if att.content_id is not None and html_part is not None:
            # Inline: the HTML part becomes multipart/related with the image (RFC 2387).
            html_part.add_related(att.data, maintype=att.maintype, subtype=att.subtype, cid=f"<{att.content_id}>",
                                  disposition="inline", filename=att.file_name,
                                  params={"name": ascii_file_name(att.file_name)})
    for att in attachments:
        if att.content_id is None:
            msg.add_attachment(att.data, maintype=att.maintype, subtype=att.subtype, filename=att.file_name,
                               params={"name": ascii_file_name(att.file_name), **dict(att.params)})
    return msg
