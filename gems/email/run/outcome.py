"""What a message's row says of its outcome, and how a run that must stop says so."""

from __future__ import annotations

from mailgem.connections.delivery import Delivery
from mailgem.connections.errors import MailgemError

from .report import DeliveryRow

__all__ = ["MAYBE_DELIVERED_NOTE", "HeldElsewhere", "StopRun", "apply_delivery", "describe_error"]

MAYBE_DELIVERED_NOTE = (" The server may have accepted it (the connection was lost after its content was sent); "
                        "with a ledger, a re-run sends it again with the same Message-ID.")


class HeldElsewhere(MailgemError):
    """Another live run holds this message in the ledger (it is sending it) for longer than this
    run waited."""


class StopRun(MailgemError):
    """``on_error: stop`` and a message failed, or (``fatal``) the ledger could not be written;
    ``rows`` holds every outcome so far."""

    def __init__(self, message: str, rows: list[DeliveryRow], cause: BaseException, *, fatal: bool = False) -> None:
        self.rows = rows
        self.cause = cause
        self.fatal = fatal
        super().__init__(message)


def describe_error(exc: BaseException, doing: str = "building the message") -> str:
    """The reason recorded for a failed message: mailgem's own message, or what was being done
    and the exception's type and text for anything unexpected."""
    if isinstance(exc, MailgemError):
        return str(exc)
    return f"unexpected error while {doing}: {type(exc).__name__}: {exc}"


def apply_delivery(row: DeliveryRow, delivery: Delivery) -> None:
    """Copy what the delivery layer says of a message (status, attempts, the server's reply, the
    last error) into its report row."""
    row.status = delivery.status
    row.attempts = delivery.attempts
    row.connection = delivery.connection
    row.message_id = delivery.message_id
    row.sent_at = delivery.finished_at
    if delivery.result is not None:
        r = delivery.result
        row.accepted = len(r.accepted)
        row.refused = "; ".join(f"{addr}: {why}" for addr, why in r.refused.items())
        row.reply_code, row.enhanced_status, row.size_bytes = r.code, r.enhanced_status, r.size_bytes
    if delivery.error is not None:
        row.error = str(delivery.error) + (MAYBE_DELIVERED_NOTE if delivery.maybe_delivered else "")
        row.error_type = type(delivery.error).__name__
        row.reply_code = getattr(delivery.error, "code", None)
        row.enhanced_status = getattr(delivery.error, "enhanced_status", None)
