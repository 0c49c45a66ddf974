"""The connection's sender as every message shows it: the From line, the envelope sender
(``MAIL FROM``), a message flattened with them, and its DKIM signature.

From and the envelope sender are always the connection's sender; any From, Sender or
Return-Path on a message is replaced (only the connection says who sends). Nothing here opens a
connection or knows a password: a preview or dry run uses an identity without a session.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

from pydantic import SecretStr

from .addresses import ascii_domain, envelope_address, needs_smtputf8
from .dkim import DkimSigner
from .errors import ConfigError
from .headers import prefolded
from .model import SmtpConnection

__all__ = ["SenderIdentity", "IDENTITY_HEADERS", "new_message_id"]

# Headers that carry the sender's identity; only the connection sets them.
IDENTITY_HEADERS = ("From", "Sender", "Return-Path")


def new_message_id(domain: str) -> str:
    """A new, globally unique Message-ID (RFC 5322 §3.6.4): 128 random bits and ``domain``."""
    return f"<{secrets.token_hex(16)}.mailgem@{domain}>"  # uuid4's object costs more than the random bits


class SenderIdentity:
    """One connection's sender, applied to messages (see the module docstring).

    Args:
        connection: whose ``sender`` and ``sender_name`` are used.
        dkim_key: the DKIM private key resolved from the fabric, when the connection signs.
        signs: ``False`` for previews and dry runs: no key is needed and nothing is signed.

    Raises:
        ConfigError: the connection signs with DKIM and ``dkim_key`` is missing or not a key
            (reported now, before anything is sent; the key is never in the message).
    """

    def __init__(self, connection: SmtpConnection, dkim_key: SecretStr | None = None, *, signs: bool = True) -> None:
        # MAIL FROM and From: a non-ASCII domain as its A-label; a non-ASCII local part needs SMTPUTF8.
        self.envelope_sender, self.sender_smtputf8 = envelope_address(connection.sender)
        # The right-hand side of Message-IDs (RFC 5322 §3.6.4): the sender's domain, in ASCII.
        self.domain = ascii_domain(connection.sender)
        # Parsed once: the stdlib reuses a header object given to it (policy.header_store_parse).
        self._from = prefolded("From", formataddr((connection.sender_name or "", self.envelope_sender)))
        # DKIM: the key (resolved from the fabric) travels; the signer is built where it signs.
        self._dkim = connection.dkim if signs else None
        self._dkim_key = dkim_key
        self._signer: DkimSigner | None = None
        if self._dkim is not None:
            if dkim_key is None:
                raise ConfigError(f"connection {connection.name!r} signs with DKIM but its private key was not "
                                  "resolved: resolve the connection through its fabric")
            self._signer = DkimSigner(self._dkim, dkim_key)  # a bad key is reported now, before sending

    def __repr__(self) -> str:
        return f"SenderIdentity(sender={self.envelope_sender!r}, dkim={self._dkim is not None})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_signer"] = None  # rebuilt from the key where the identity lands (a Spark executor)
        return state

    def needs_smtputf8(self, recipients: Iterable[str]) -> bool:
        """Whether a message from this sender to ``recipients`` needs SMTPUTF8 (RFC 6531)."""
        return self.sender_smtputf8 or needs_smtputf8(recipients)

    def from_line(self, utf8: bool = False) -> bytes:
        """The From header line as transmitted (CRLF-terminated); ``utf8``: in UTF-8 (RFC 6532)."""
        folded = self._from.fold(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
        return folded.encode("utf-8" if utf8 else "ascii", "surrogateescape")

    def flatten(self, message: EmailMessage, *, utf8: bool = False) -> bytes:
        """Set this identity on ``message`` and return its bytes as transmitted.

        From becomes the connection's sender; Sender, Return-Path and Bcc are removed; Date and
        Message-ID are added when missing (RFC 5322 §3.6.1, §3.6.4). ``utf8`` writes UTF-8
        headers (RFC 6532), for messages sent with SMTPUTF8.
        """
        for name in (*IDENTITY_HEADERS, "Bcc"):
            del message[name]
        message["From"] = self._from
        if "Date" not in message:
            message["Date"] = formatdate(localtime=True)
        if "Message-ID" not in message:
            message["Message-ID"] = new_message_id(self.domain)
        return message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature first when the connection signs (RFC 6376), else as it is."""
        if self._dkim is None:
            return data
        if self._signer is None:
            assert self._dkim_key is not None
            self._signer = DkimSigner(self._dkim, self._dkim_key)
        return self._signer.sign(data)
