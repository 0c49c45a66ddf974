"""Message layouts: the MIME skeleton of a run's messages, built once by the stdlib, filled per
message with stdlib-encoded fragments.

Messages of one run that share a structure (text and/or HTML, no attachments) differ only in
To, Cc, Subject, Message-ID and the two bodies. Building a whole ``EmailMessage`` for each costs
about 0.6 ms, mostly header parsing and folding that gives the same result every time. A
:class:`Layout` asks the stdlib for the message once, with marker values, and keeps its bytes
cut at the markers. Each message then costs only what varies:

* each varying header is parsed and folded by the stdlib's header registry
  (``policy.SMTP.header_factory(...).fold``), exactly as ``as_bytes`` would — except values the
  stdlib writes verbatim on one line (a short printable-ASCII Subject, a dot-atom To or Cc, our
  own Message-IDs), which are written as they are;
* each body is encoded by the stdlib's text content manager (the same choice of 7bit, 8bit,
  quoted-printable or base64 as ``set_content``), with CRLF line ends as the generator writes.

The tests check the bytes against a message built the ordinary way, for ASCII, non-ASCII,
long-line and folded inputs, and fuzz the verbatim headers against the stdlib's folding. Anything a layout cannot represent (attachments, a boundary
appearing in a body) is built the ordinary way instead.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import contentmanager, policy
from email.message import EmailMessage
from typing import Any, cast

from mailgem.connections.headers import PrefoldedHeader, fold_text
from mailgem.connections.identity import SenderIdentity

from .message import build_message

__all__ = ["Layout", "LayoutMessage"]

_POLICY = policy.SMTP
_MAX_LINE: int = _POLICY.max_line_length or 78  # 78 characters a line (RFC 5322 §2.1.1); SMTP policy sets it
_TO, _CC, _FROM = "slot-to@mailgem.invalid", "slot-cc@mailgem.invalid", "slot-from@mailgem.invalid"
_SUBJECT, _MID = "MAILGEMSLOTSUBJECT", "<slot-mid@mailgem.invalid>"
_TEXT, _HTML = "MAILGEMSLOTTEXTBODY", "MAILGEMSLOTHTMLBODY"
_CTE_7BIT = b"Content-Transfer-Encoding: 7bit\r\n"
# Message-IDs from new_message_id(): one short ASCII token, which the stdlib writes unfolded.
_OWN_MESSAGE_ID = re.compile(r"<[0-9a-f]{32}\.mailgem@[A-Za-z0-9.-]{1,200}>\Z")


@functools.lru_cache(maxsize=16)
def _header_class(name: str) -> Any:
    # HeaderRegistry builds a new class on every lookup; one per header name is enough.
    return cast(Any, _POLICY.header_factory)[name]


# Values the stdlib writes verbatim on one line (checked against it by tests/test_layout.py):
# printable-ASCII words with single spaces for Subject, one dot-atom address for To and Cc.
_VERBATIM = {
    "Subject": re.compile(r"[!-~]+(?: [!-~]+)*\Z"),
    "To": re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\Z"),
}
_VERBATIM["Cc"] = _VERBATIM["To"]


def _fold(name: str, value: str) -> bytes:
    """What BytesGenerator writes for a header (``policy.fold_binary`` with the SMTP policy)."""
    plain = _VERBATIM.get(name)
    if plain is not None and len(name) + 2 + len(value) <= _MAX_LINE and "=?" not in value \
            and plain.match(value):
        return f"{name}: {value}\r\n".encode("ascii")  # nothing to encode or fold
    if name == "Subject":
        return fold_text(name, value, _POLICY).encode("ascii", "surrogateescape")  # never loses a space
    return _header_class(name)(name, value).fold(policy=_POLICY).encode("ascii", "surrogateescape")


def _stdlib_encode_text(text: str, charset: str) -> tuple[str, str]:
    # The public route to the same result, should the stdlib's helper ever move.
    part = EmailMessage(policy=_POLICY)
    part.set_content(text, charset=charset)
    cte, payload = str(part["Content-Transfer-Encoding"]), str(part.get_payload())
    if cte == "8bit":  # get_payload() decodes 8bit text; the generator writes its raw bytes
        payload = payload.encode(charset).decode("ascii", "surrogateescape")
    return cte, payload


# set_content's own choice of transfer encoding and encoded payload (a private helper of
# email.contentmanager, stable since Python 3.6; the public route above is the fallback).
_encode_text = getattr(contentmanager, "_encode_text", None)


def _crlf(text: str) -> str:
    """Every line break (CRLF, lone CR, lone LF) as CRLF (RFC 5322 §2.1): ``str.replace`` in C,
    a tenth of a regular expression's time on a 2 KB body."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\r\n")


def _encode_body(text: str, charset: str) -> tuple[bytes, bytes]:
    """``(Content-Transfer-Encoding line, body bytes)`` as ``set_content`` + ``as_bytes`` give them."""
    cte, payload = _encode_text(text, charset, None, _POLICY) if _encode_text else _stdlib_encode_text(text, charset)
    body = _crlf(payload).encode("ascii", "surrogateescape")
    return f"Content-Transfer-Encoding: {cte}\r\n".encode("ascii"), body


@dataclass(frozen=True)
class Layout:
    """A skeleton cut into literal byte segments and named slots (``str`` items)."""

    segments: tuple[bytes | str, ...]
    boundary: str | None
    charset: str

    @classmethod
    def build(cls, *, headers: Sequence[PrefoldedHeader], charset: str, has_cc: bool, has_text: bool,
              has_html: bool) -> Layout:
        """Derive the layout from the stdlib's output for marker values.

        Raises:
            ValueError: the skeleton could not be cut (a stdlib behaviour this code does not know).
        """
        msg = build_message(to=[_TO], cc=[_CC] if has_cc else [], subject=_SUBJECT, headers=headers,
                            text=_TEXT if has_text else None, html=_HTML if has_html else None,
                            attachments=[], charset=charset)
        msg["Message-ID"] = _MID  # set by the sender, then From by the transport: the same order
        msg["From"] = _FROM
        boundary = None
        if msg.is_multipart():
            boundary = f"=_mailgem_{uuid.uuid4().hex}"
            msg.set_boundary(boundary)
        raw = msg.as_bytes(policy=_POLICY)
        cuts: list[tuple[int, int, str]] = []

        def line(prefix: bytes, marker: str, slot: str) -> None:
            start = raw.index(prefix + marker.encode())
            cuts.append((start, raw.index(b"\r\n", start) + 2, slot))

        line(b"To: ", _TO, "to")
        if has_cc:
            line(b"Cc: ", _CC, "cc")
        line(b"Subject: ", _SUBJECT, "subject")
        line(b"From: ", _FROM, "from")
        line(b"Message-ID: ", _MID, "message_id")
        search_from = 0
        for marker, slot in ((_TEXT, "text"), (_HTML, "html")):
            if slot == "text" and not has_text or slot == "html" and not has_html:
                continue
            body = raw.index(marker.encode() + b"\r\n")
            # The part's Content-Transfer-Encoding line is the last one before its body.
            cte = raw.rindex(_CTE_7BIT, search_from, body)
            cuts.append((cte, cte + len(_CTE_7BIT), f"{slot}_cte"))
            cuts.append((body, body + len(marker) + 2, f"{slot}_body"))
            search_from = body
        cuts.sort()
        segments: list[bytes | str] = []
        position = 0
        for start, end, slot in cuts:
            if start < position:
                raise ValueError("overlapping layout slots")
            segments.append(raw[position:start])
            segments.append(slot)
            position = end
        segments.append(raw[position:])
        return cls(tuple(s for s in segments if s != b""), boundary, charset)

    def fill(self, *, to: Sequence[str], cc: Sequence[str], subject: str, message_id: str, text: str | None,
             html: str | None) -> LayoutMessage | None:
        """Per-message fragments, or ``None`` when this message needs the ordinary path."""
        mid = (f"Message-ID: {message_id}\r\n".encode() if _OWN_MESSAGE_ID.match(message_id)
               else _fold("Message-ID", message_id))
        values: dict[str, bytes] = {"to": _fold("To", ", ".join(to)), "subject": _fold("Subject", subject),
                                    "message_id": mid}
        if cc:
            values["cc"] = _fold("Cc", ", ".join(cc))
        for slot, body in (("text", text), ("html", html)):
            if body is not None:
                values[f"{slot}_cte"], values[f"{slot}_body"] = _encode_body(body, self.charset)
                if self.boundary is not None and self.boundary.encode() in values[f"{slot}_body"]:
                    return None
        needed = {s for s in self.segments if isinstance(s, str)} - {"from"}
        if needed != set(values):
            return None
        return LayoutMessage(self, values, message_id)


class LayoutMessage:
    """One message from a :class:`Layout`; the connection's sender identity supplies the From line."""

    # What was changed in the data to build it (see Composer.message): nothing, as a message
    # without attachments changes nothing.
    notes: str | None = None

    def __init__(self, layout: Layout, values: dict[str, bytes], message_id: str) -> None:
        self.layout = layout
        self.values = values
        self.message_id = message_id

    def __getitem__(self, name: str) -> str | None:
        return self.message_id if name.lower() == "message-id" else None

    def bytes_for(self, identity: SenderIdentity, *, utf8: bool = False) -> bytes:
        """The message as transmitted with ``identity`` (a connection's sender, in From; ``utf8``:
        From in UTF-8 (RFC 6532), for a sender whose local part is not ASCII)."""
        values = dict(self.values, **{"from": identity.from_line(utf8)})
        return b"".join(s if isinstance(s, bytes) else values[s] for s in self.layout.segments)
