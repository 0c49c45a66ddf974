"""The ledger's part of a run's send loop: messages looked up a chunk at a time ahead of their build,
and claimed a batch at a time before they start (see :mod:`.ledger`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from ..content.compose import Unit
from .ledger import SendLedger
from .outcome import describe_error
from .pending import Pending
from .rules import RunRules

__all__ = ["claim", "looked_up"]

log = logging.getLogger("mailgem.gems")


def looked_up(units: Iterable[Unit], ledger: SendLedger, rules: RunRules, *, max_units: int,
              max_rows: int) -> Iterator[Unit]:
    """``units``, each chunk of them looked up in the ledger in one query first (a re-run's lookups
    cost one round trip a chunk, not one a message, see :meth:`SendLedger.prefetch`); should that
    fail, :meth:`SendLedger.prior` looks each up alone.

    A chunk holds at most ``max_units`` messages and ``max_rows`` rows (a group's rows are
    copied out of the frame). Once a stop was requested nothing more is looked up: what is left
    is only reported ``not_started``.
    """
    pending = iter(units)
    while True:
        chunk: list[Unit] = []
        rows_ahead = 0
        for unit in pending:
            chunk.append(unit)
            rows_ahead += unit.row_count
            if len(chunk) >= max_units or rows_ahead >= max_rows:
                break
        if not chunk:
            return
        if rules.stopping:
            yield from chunk  # only to be reported not_started: nothing to look up
            continue
        try:
            ledger.prefetch([unit.key for unit in chunk])
        except Exception as exc:  # noqa: BLE001 - prior() asks again, message by message
            log.warning("ledger %s: looking up %d messages at once failed (%s); looking each up alone",
                        ledger.target, len(chunk), describe_error(exc, "reading the ledger"))
        yield from chunk


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
