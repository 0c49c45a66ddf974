"""Mailboxes as they go into headers and into ``RCPT TO``: internationalised addresses included.

An address such as ``user@exämple.com`` (ASCII local part, non-ASCII domain) is written with
the domain's IDNA A-label, ``user@xn--exmple-cua.com``, in the header and in the envelope: that
works with every server. An address whose *local part* is not ASCII (``josé@example.org``)
cannot be written in ASCII at all; it needs the server's ``SMTPUTF8`` extension (RFC 6531) and
UTF-8 headers (RFC 6532), and without it the message cannot be sent (RFC 6531 §3.2).

An address without a display name is checked as written; one with a display name is read by
the stdlib's RFC 5322 parser (see :func:`mailbox_parts`); checking and the A-label are
email-validator's (no DNS lookups).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, getaddresses

from email_validator import EmailNotValidError, validate_email

from .address_check import validated
from .errors import MailgemError

__all__ = ["Mailbox", "AddressError", "parse_mailbox", "check_address", "special_domain_allowed", "envelope_address", "needs_smtputf8", "ascii_domain", "envelope_recipients",
           "format_mailbox", "split_address_list", "mailbox_parts", "CONTROL_CHARACTERS"]

# Control characters: never in a header (RFC 5322 §3.2: VCHAR and WSP only); tab is WSP.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class AddressError(MailgemError, ValueError):
    """An address is not valid; the message quotes it and says why."""


@dataclass(frozen=True)
class Mailbox:
    """One mailbox ready to send.

    Attributes:
        header: the form for To/Cc (``Name <local@domain>``), domain as an A-label unless the
            local part needs SMTPUTF8.
        address: the addr-spec for ``RCPT TO``.
        smtputf8: the local part is not ASCII: only a server offering SMTPUTF8 can take it.
    """

    header: str
    address: str
    smtputf8: bool


def format_mailbox(name: str, address: str) -> str:
    """``Name <address>`` for a header, the name quoted when it must be (RFC 5322 §3.4).

    The stdlib's ``formataddr`` when both are ASCII. Otherwise the name is written as a
    quoted-string as it is: ``formataddr`` would hide a non-ASCII name in an RFC 2047 encoded
    word (and refuses non-ASCII addresses); the header's own folding encodes it when the message
    is sent without SMTPUTF8.
    """
    if not name:
        return address
    if name.isascii() and address.isascii():
        return formataddr((name, address))
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{address}>'


# A public suffix under which a special-use or single-label domain passes email-validator's
# syntax checks unchanged (RFC 2606 reserves example.com; it is not itself special-use there).
_NEUTRAL_SUFFIX = ".example.com"


def special_domain_allowed(domain: str, allowed: Iterable[str]) -> bool:
    """Whether ``domain`` is, or is under, one of ``allowed`` (case-insensitive): the domains of
    internal relays (``corp.internal``, ``local``, a single-label host) a connection allows."""
    domain = domain.lower().rstrip(".")
    return any(domain == a or domain.endswith("." + a) for a in allowed)


def check_address(address: str, special_domains: tuple[str, ...] = ()) -> tuple[str, str, bool]:
    """email-validator's check of a bare addr-spec (no DNS lookups): ``(local part, ASCII
    domain, needs SMTPUTF8)``.

    Domains in ``special_domains`` (a connection's ``allowed_special_domains``) skip the
    special-use (RFC 6761: ``.local``, ``.internal``, ``localhost`` …) and single-label rules;
    everything else about them (labels, lengths, IDNA) is still checked.

    Raises:
        EmailNotValidError: email-validator's reason.
    """
    domain = address.rpartition("@")[2]
    if special_domains and special_domain_allowed(domain, special_domains):
        valid = validate_email(address + _NEUTRAL_SUFFIX, check_deliverability=False)
        return valid.local_part, valid.ascii_domain.removesuffix(_NEUTRAL_SUFFIX), bool(valid.smtputf8)
    return validated(address)


def split_address_list(text: str) -> list[str]:
    """The items of a comma-separated address list as written (stripped, empty ones left out).

    Only top-level commas separate: a comma inside a quoted display name (``"Doe, Jane"``), an
    angle-bracketed address or a comment (``(Doe, Jane)``) does not (RFC 5322 §3.4). Nothing
    else is interpreted; each item is parsed by :func:`mailbox_parts`.
    """
    if "," not in text:  # the common case, one address (a column's value per row): nothing to split
        return [text.strip()] if text.strip() else []
    items, start, depth, angle, quoted, escaped = [], 0, 0, False, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"' and not depth:
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char in "<>":
            angle = char == "<"
        elif char == "," and not angle:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def mailbox_parts(item: str) -> tuple[str, str] | None:
    """``(display name, addr-spec)`` of one mailbox as written, or ``None`` when it is not one.

    An item without ``<`` or ``(`` has no display name: it is a bare addr-spec, taken as
    written (``"not an address"`` stays whole, so email-validator says why it is not one; the
    stdlib parser would make it ``not``). Otherwise the stdlib's RFC 5322 parser reads it,
    and its reading counts only when it accounts for the item: one mailbox, whose address is
    written in the item as it was read (``Bob <b@x.com> junk`` is two readings; ``<b @ x.com>``
    is not ``b@x.com`` as written).
    """
    item = item.strip()
    if "<" not in item and "(" not in item:
        return "", item
    parsed = [pair for pair in getaddresses([item]) if any(pair)]
    if len(parsed) != 1 or not parsed[0][1] or parsed[0][1] not in item:
        return None
    return parsed[0]


@functools.lru_cache(maxsize=8192)  # the same recipients recur in every message of a run
def parse_mailbox(item: str, special_domains: tuple[str, ...] = ()) -> Mailbox:
    """Parse ``addr`` or ``Display Name <addr>`` into a :class:`Mailbox`. ``special_domains``:
    see :func:`check_address`.

    Raises:
        AddressError: not exactly one address, or an address email-validator refuses (the
            reason is email-validator's, e.g. a quoted local part or a reserved domain).
    """
    if CONTROL_CHARACTERS.search(item):
        raise AddressError(f"{item!r} contains a control character (a line break, NUL, ...)")
    parts = mailbox_parts(item)
    if parts is None:
        raise AddressError(f"{item.strip()!r} is not one email address: write one address as name@example.com or "
                           "Name <name@example.com>, and separate addresses with commas")
    name, address = parts
    try:
        local_part, ascii_domain_, smtputf8 = check_address(address, special_domains)
    except EmailNotValidError as exc:
        raise AddressError(f"{address!r} is not a valid email address: {exc}{_address_hint(address, str(exc))}") from None
    # Keep the local part as written; only the domain changes (to its A-label) when it must.
    domain = address.rpartition("@")[2]
    if not smtputf8 and not domain.isascii():
        address = f"{local_part}@{ascii_domain_}"
    return Mailbox(format_mailbox(name, address), address, smtputf8)


def _address_hint(address: str, reason: str) -> str:
    """How to fix an address email-validator refused, when the mistake is a common one."""
    if "special-use" in reason or "should have a period" in reason:
        return (" (for an internal relay's domain, list it in the connection's allowed_special_domains, "
                f"e.g. [{address.rpartition('@')[2].rpartition('.')[2].lower()}])")
    name, _, last = address.rpartition(" ")
    if name.strip() and "@" in last and "@" not in name:
        return f" (a display name goes before the address in angle brackets: {name.strip()} <{last}>)"
    if ";" in address:
        return " (separate addresses with commas)"
    return ""


@functools.lru_cache(maxsize=8192)
def envelope_address(address: str) -> tuple[str, bool]:
    """``(address for RCPT TO / MAIL FROM, needs SMTPUTF8)`` of a bare addr-spec.

    ASCII addresses are returned as they are; a non-ASCII domain becomes its A-label. Addresses
    email-validator refuses are returned unchanged (the server will say what it thinks).
    """
    if address.isascii():
        return address, False
    try:
        mailbox = parse_mailbox(address)
    except AddressError:
        return address, True
    return mailbox.address, mailbox.smtputf8


def needs_smtputf8(addresses: Iterable[str]) -> bool:
    """Whether any of these envelope addresses has a non-ASCII local part (RFC 6531)."""
    return any(envelope_address(a)[1] for a in addresses if not a.isascii())


def ascii_domain(address: str) -> str:
    """The domain of ``address`` in ASCII: its IDNA A-label when it is not ASCII.

    Raises:
        AddressError: the domain is not a valid one.
    """
    domain = address.rpartition("@")[2]
    return domain if domain.isascii() else parse_mailbox("postmaster@" + domain).address.rpartition("@")[2]


def envelope_recipients(message: EmailMessage) -> list[str]:
    """Addresses from To, Cc and Bcc (RFC 5322 §3.6.3), de-duplicated, in order."""
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    seen: dict[str, None] = {}
    for _, address in getaddresses(fields):
        if address:
            seen.setdefault(address, None)
    return list(seen)
