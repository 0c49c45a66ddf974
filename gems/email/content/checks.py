"""What a built message is checked against: the errors that fail one message (a recipient, a
part that cannot be built), the charset its text must fit, and its size as transmitted."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from mailgem.connections.errors import MailgemError

from .attachments import Attachment

__all__ = ["RecipientError", "MessageBuildError", "encodable", "estimated_size"]


class RecipientError(MailgemError, ValueError):
    """A recipient taken from data (a column or a template) is not a valid address."""


def estimated_size(subject: str, text: str | None, html: str | None, attachments: list[Attachment]) -> int:
    """Bytes a message takes as transmitted, a little over the truth: attachments in base64
    (4/3, plus CRLF every 76 characters), bodies as UTF-8 (quoted-printable or base64 at most
    4/3 more), and 4 KB of headers and MIME boundaries."""
    base64 = sum(math.ceil(len(a.data) / 3) * 4 * 78 // 76 for a in attachments)
    # ASCII bodies go as they are (7bit, CRLF per line); others in quoted-printable or base64.
    bodies = sum(len(b) + b.count("\n") if b.isascii() else len(b.encode()) * 4 // 3 for b in (text, html) if b)
    return base64 + bodies + len(subject.encode()) + 4096


class MessageBuildError(MailgemError, ValueError):
    """One message could not be built; the message names the part (``subject``,
    ``attachments[0]``, a column) and why. Only that message fails."""


def encodable(part: str, value: str, charset: str, table: pa.Table) -> None:
    """Raise :class:`MessageBuildError` naming ``part`` (and the column the character came from)
    when ``value`` cannot be written in ``charset``."""
    try:
        value.encode(charset)
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        columns = [name for name, column in zip(table.column_names, table.columns, strict=True)
                   if pa.types.is_string(column.type) and pc.any(pc.match_substring(column, char)).as_py()]
        origin = f" (from column {', '.join(map(repr, columns))})" if columns else ""
        fix = "set the connection's charset to utf-8" if charset.lower().replace("_", "-") != "utf-8" else \
            "remove it from the data or the template"
        raise MessageBuildError(f"{part}: character {char!r} (U+{ord(char):04X}){origin} cannot be written in "
                                f"{charset}: {fix}") from None
