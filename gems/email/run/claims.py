"""The ledger's part of a run's send loop: messages looked up a chunk at a time ahead of their build,
and claimed a batch at a time before they start (see :mod:`.ledger`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

from ..content.compose import Unit
from .ledger import Found, SendLedger
from .outcome import describe_error
from .pending import Pending
from .rules import RunRules

__all__ = ["claim", "claim_off_loop", "looked_up"]

log = logging.getLogger("mailgem.gems")


def looked_up(units: Iterable[Unit], ledger: SendLedger, rules: RunRules, *, max_units: int,
              max_rows: int) -> Iterator[Unit]:
    """``units``, each chunk of them looked up in the ledger in one query first (a re-run's lookups
    cost one round trip a chunk, not one a message, see :meth:`SendLedger.lookup`); should that
    fail, :meth:`SendLedger.prior` looks each up alone.

    Each chunk's query runs in the ledger's thread while the chunk before it is sent, so the
    event loop seldom waits for it. A chunk holds at most ``max_units`` messages and ``max_rows``
    rows (a group's rows are copied out of the frame; two chunks are held at a time). Once a stop
    was requested nothing more is looked up: what is left is only reported ``not_started``.
    """
    pending = iter(units)
    chunk, found = _next_chunk(pending, ledger, rules, max_units, max_rows)
    while chunk:
        following, found_next = _next_chunk(pending, ledger, rules, max_units, max_rows)  # asked ahead
        if found is not None:
            try:
                ledger.use_lookup([unit.key for unit in chunk], found.result())
            except Exception as exc:  # noqa: BLE001 - prior() asks again, message by message
                log.warning("ledger %s: looking up %d messages at once failed (%s); looking each up alone",
                            ledger.target, len(chunk), describe_error(exc, "reading the ledger"))
        yield from chunk
        chunk, found = following, found_next


def _next_chunk(pending: Iterator[Unit], ledger: SendLedger, rules: RunRules, max_units: int,
                max_rows: int) -> tuple[list[Unit], Future[Found] | None]:
    """The next chunk of ``pending`` and its look-up, queued in the ledger's thread (``None``
    once a stop was requested: what is left is only reported)."""
    chunk: list[Unit] = []
    rows_ahead = 0
    for unit in pending:
        chunk.append(unit)
        rows_ahead += unit.row_count
        if len(chunk) >= max_units or rows_ahead >= max_rows:
            break
    if not chunk or rules.stopping:
        return chunk, None
    return chunk, ledger.thread.submit(ledger.lookup, [unit.key for unit in chunk])


async def claim_off_loop(ledger: SendLedger, items: list[Pending]) -> tuple[list[Pending], list[Pending]]:
    """:func:`claim` in the ledger's thread (after its queued commits), the event loop going on meanwhile."""
    return await ledger.thread.run(claim, ledger, items)


def claim(ledger: SendLedger, items: list[Pending]) -> tuple[list[Pending], list[Pending]]:
    """Record ``items`` ``sending`` in the ledger, in one transaction (:meth:`SendLedger.begin_many`).

    Returns:
        ``(claimed, others)``, each in the order of ``items``: only the claimed may be sent. The
        others were taken by a racing run since :meth:`SendLedger.prior` looked, or are the same
        message twice in this batch (claimed once): not sent now, but looked at again later.

    Raises:
        The ledger's earlier failure (:meth:`SendLedger.check`), or a backend error: nothing of
        this batch may be sent.
    """
    ledger.check()
    claimed = ledger.begin_many([(p.row.message_key, p.recipients_hash, p.message_id) for p in items])
    if len(claimed) == len(items):
        return items, []
    kept: list[Pending] = []
    others: list[Pending] = []
    for p in items:
        key = (p.row.message_key, p.recipients_hash)
        if key in claimed:
            claimed.discard(key)
            kept.append(p)
        else:
            others.append(p)
    return kept, others
