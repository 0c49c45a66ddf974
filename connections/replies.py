"""Reading an SMTP server's reply text: the enhanced status code it starts with (RFC 3463), and
whether a refusal is about the envelope sender rather than the recipient.
"""

from __future__ import annotations

import re

__all__ = ["parse_enhanced_status", "is_sender_refusal"]

# RFC 3463 §2: class.subject.detail, class in {2,4,5}; servers put it first in the reply text.
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def parse_enhanced_status(text: str | None) -> str | None:
    """Return the RFC 3463 enhanced status code (e.g. ``"5.7.8"``) at the start of a reply text."""
    if not text:
        return None
    match = _ENHANCED_STATUS.match(text)
    return match.group(1) if match else None


# Enhanced status codes about the sender (RFC 3463 §3.2: 5.1.7 bad sender's mailbox syntax,
# 5.1.8 bad sender's system address) and reply texts servers use for a refused sender.
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8", "4.1.7", "4.1.8"})
_SENDER_TEXT = re.compile(r"sender address rejected|not owned by (auth )?user|sender (is )?not (allowed|authori[sz]ed)", re.I)


def is_sender_refusal(text: str | None, sender: str, *, recipient_is_sender: bool = False) -> bool:
    """Whether a ``MAIL``/``RCPT`` refusal is about the envelope sender, not the recipient.

    True for enhanced status 5.1.7/5.1.8 (RFC 3463 §3.2), for reply texts such as Postfix's
    ``Sender address rejected: not owned by user``, and for 5.7.1 ("delivery not authorized")
    when the reply names the sender — unless ``recipient_is_sender`` (the sender check's
    ``RCPT TO`` the sender itself), where naming the address says nothing about which role it
    was refused in (``554 5.7.1 <a@x>: Relay access denied`` is about the recipient).
    """
    text = text or ""
    if "recipient address rejected" in text.lower():
        return False
    status = parse_enhanced_status(text)
    if status in _SENDER_STATUSES or _SENDER_TEXT.search(text):
        return True
    if recipient_is_sender:
        return False
    return status in ("5.7.1", "4.7.1") and f"<{sender.lower()}>" in text.lower()
