"""What became of one message: the status the delivery report, the send ledger and the CLI share."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DeliveryStatus", "DELIVERED", "FINAL"]


class DeliveryStatus(StrEnum):
    """One message's status. A :class:`~enum.StrEnum`: each member equals its value
    (``DeliveryStatus.SENT == "sent"``), which is what the report's ``status`` column, the ledger's
    ``status`` column and ``--json`` hold.

    Report statuses: ``sent`` (every recipient accepted), ``partial`` (some refused), ``failed``,
    ``deferred`` (the connection's daily limit was reached: a re-run sends it), ``not_started``
    (``on_error: stop`` or a stop signal came first: a re-run sends it), ``already_sent`` (the
    ledger has it from an earlier run), ``skipped`` (an empty frame: no message),
    ``skipped_by_rule`` (``send_if`` did not hold for the message, or ``skip_if`` held for the run:
    not built, not sent, not in the ledger, so a re-run evaluates it again), ``dry_run``
    (built, not sent). Ledger only: ``sending`` (claimed, its outcome not yet recorded: a holder
    that died leaves it, and it is retried once its lease lapses).
    """

    SENT = "sent"
    PARTIAL = "partial"
    FAILED = "failed"
    DEFERRED = "deferred"
    NOT_STARTED = "not_started"
    ALREADY_SENT = "already_sent"
    SKIPPED = "skipped"
    SKIPPED_BY_RULE = "skipped_by_rule"
    DRY_RUN = "dry_run"
    SENDING = "sending"


# Statuses of a message the destination has (or had, in an earlier run).
DELIVERED = frozenset({DeliveryStatus.SENT, DeliveryStatus.PARTIAL, DeliveryStatus.ALREADY_SENT})
# Outcomes the ledger records as settled: a re-run does not send these again.
FINAL = frozenset({DeliveryStatus.SENT, DeliveryStatus.PARTIAL})
