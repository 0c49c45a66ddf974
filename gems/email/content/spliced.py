"""Large attachments spliced into a message the stdlib built: the same bytes, without pushing
tens of megabytes of base64 through the stdlib's line-by-line generator.

``EmailMessage.as_bytes()`` writes a base64 attachment one 76-character line at a time through
Python code (the content manager encodes 57 bytes per call, the generator splits and rewrites
every line): for a 30 MB gzip CSV that is about a second and several copies of the text. Here the
stdlib builds and flattens the message with a placeholder in each large attachment's place — 57
random bytes, so exactly one base64 line of the stdlib's own encoding — and that line is then
replaced by the attachment's base64 (``base64.encodebytes``: 76-character lines from 57-byte
groups, as the stdlib writes them, RFC 2045 §6.8) with CRLF line ends. Headers, MIME structure,
boundaries and every small part stay the stdlib's; a differential test compares the result
with ``as_bytes()`` of the whole message byte for byte.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgem.connections.identity import SenderIdentity

__all__ = ["SplicedMessage", "SPLICE_MIN_BYTES", "placeholder"]

# Smaller attachments go through the stdlib as they are: splicing pays off on large ones.
SPLICE_MIN_BYTES = 64 * 1024

_LINE_BYTES = 57  # raw bytes per base64 line of 76 characters (the stdlib's and RFC 2045's)


@dataclass(frozen=True)
class _Splice:
    marker: bytes  # the placeholder's base64 line as flattened, CRLF included
    data: bytes  # the attachment's bytes


def placeholder() -> bytes:
    """Bytes to attach in a large attachment's place: random, one base64 line long."""
    return os.urandom(_LINE_BYTES)


def _encoded(data: bytes) -> bytes:
    """``data`` in base64 as the stdlib writes an attachment's body on the wire: 76-character
    lines, each ended by CRLF."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


class SplicedMessage:
    """A message built by the stdlib with placeholders for its large attachments (see the module
    docstring); sent with :meth:`bytes_for`, like :class:`~mailgem.gems.email.content.layout.LayoutMessage`.

    Args:
        message: the message, each large attachment's content being its placeholder.
        splices: ``(placeholder, attachment bytes)`` for each of them.
    """

    def __init__(self, message: EmailMessage, splices: Sequence[tuple[bytes, bytes]]) -> None:
        self.message = message
        self._splices = [_Splice(_encoded(mark), data) for mark, data in splices]

    def __getitem__(self, name: str) -> str | None:
        return self.message[name]

    def __setitem__(self, name: str, value: str) -> None:
        self.message[name] = value

    def bytes_for(self, identity: SenderIdentity, *, utf8: bool = False) -> bytes:
        """The message as transmitted with the connection's ``identity`` (see
        :meth:`mailgem.connections.identity.SenderIdentity.flatten`).

        Raises:
            RuntimeError: a placeholder is not in the flattened message exactly once (a bug:
                the message would otherwise go out without its attachment).
        """
        skeleton = identity.flatten(self.message, utf8=utf8)
        found = []
        for splice in self._splices:
            at = skeleton.find(splice.marker)
            if at < 0 or skeleton.find(splice.marker, at + 1) >= 0:
                raise RuntimeError("an attachment's placeholder is not in the flattened message exactly once")
            found.append((at, splice))
        pieces: list[bytes] = []
        end = 0
        for at, splice in sorted(found, key=lambda f: f[0]):
            pieces += [skeleton[end:at], _encoded(splice.data)]
            end = at + len(splice.marker)
        pieces.append(skeleton[end:])
        return b"".join(pieces)
