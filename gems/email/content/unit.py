"""What one email is made of before it is built: its rows (:class:`Unit`), its recipients
(:class:`Envelope`), and how a unit too large for one message is split into several."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from mailgem.connections.addresses import Mailbox
from mailgem.connections.errors import MailgemError

__all__ = ["Unit", "Envelope", "SplitNeeded", "split_unit", "Part"]


@dataclass(frozen=True)
class Unit:
    """The rows of one email.

    Attributes:
        key: the message key (``report``, ``group:<values>``, ``row:<values or hash>``).
        table: Arrow table of the rows (all of them, or the first ones when ``row_count`` says more).
        row_count: rows this email is about.
        extra: template context added for this email (``group`` or ``row``).
        problem: why this email cannot be built from its data (e.g. a value that is not valid
            text); set, the message fails with it.
        in1: the second input's rows this email carries (``apply(spark, in0, in1)``): all of
            ``in1``, or the slice joined to this email's rows by ``slice_by``; ``None`` without
            a second input. Parts that say ``from: in1`` (attachments, table, sections) use it.
    """

    key: str
    table: pa.Table
    row_count: int
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    in1: pa.Table | None = None


@dataclass(frozen=True)
class Envelope:
    """Header and envelope recipients of one email.

    Attributes:
        to, cc, bcc: mailboxes as written in the headers (IDN domains as A-labels).
        recipients: ``RCPT TO`` addresses (To, Cc and Bcc), de-duplicated, in order.
        smtputf8: an address has a non-ASCII local part: the message needs SMTPUTF8 (RFC 6531).
    """

    to: list[str]
    cc: list[str]
    bcc: list[str]
    recipients: list[str]
    smtputf8: bool

    @classmethod
    def of(cls, to: list[Mailbox], cc: list[Mailbox], bcc: list[Mailbox]) -> Envelope:
        def headers(boxes: list[Mailbox]) -> list[str]:
            return list(dict.fromkeys(b.header for b in boxes))

        every = to + cc + bcc
        return cls(headers(to), headers(cc), headers(bcc), list(dict.fromkeys(b.address for b in every)),
                   any(b.smtputf8 for b in every))

    @functools.cached_property
    def recipients_hash(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.recipients)).encode()).hexdigest()[:16]


class SplitNeeded(MailgemError):
    """Too large for the limit with ``attachments_over_limit: split``: send the unit's rows in
    ``parts`` messages (see :func:`split_unit`)."""

    def __init__(self, message: str, parts: int) -> None:
        self.parts = max(2, parts)
        super().__init__(message)


class Part(NamedTuple):
    """Which part of a split message this is (``part`` in templates): part ``number`` of
    ``parts``, holding rows ``first_row``–``last_row`` (1-based, inclusive) of ``total_rows``."""

    number: int
    parts: int
    first_row: int
    last_row: int
    total_rows: int

    def __str__(self) -> str:
        # ASCII: a body in any charset can hold it.
        return (f"part {self.number} of {self.parts}, rows {self.first_row:,}-{self.last_row:,} of "
                f"{self.total_rows:,}")


def split_unit(unit: Unit, parts: int) -> list[Unit]:
    """``unit``'s rows in ``parts`` consecutive slices, each its own message ``key#part-i-of-n``
    with its :class:`Part` as ``part`` in its template context; each part carries the unit's
    :attr:`Unit.in1` whole (its rows are split by ``in0``'s)."""
    size = math.ceil(unit.table.num_rows / parts)
    slices = [unit.table.slice(i * size, size) for i in range(parts) if i * size < unit.table.num_rows]
    n = len(slices)
    total = unit.table.num_rows
    return [Unit(f"{unit.key}#part-{i}-of-{n}", t, t.num_rows,
                 {**unit.extra, "part": Part(i, n, (i - 1) * size + 1, (i - 1) * size + t.num_rows, total)}, unit.problem,
                 unit.in1)
            for i, t in enumerate(slices, 1)]
