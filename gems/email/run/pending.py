"""A message built and waiting to start (see :class:`~.sender.SendRun`)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from mailgem.connections.delivery import Prepared

from ..content.compose import Unit
from .report import DeliveryRow

__all__ = ["Pending"]


@dataclass(slots=True)
class Pending:
    """A message built and waiting to start.

    Attributes:
        row: its report row (already in the run's rows).
        message: the message (an ``EmailMessage`` or a prepared one, see :class:`~mailgem.connections.delivery.Prepared`).
        recipients: its envelope recipients (RFC 5321 ``RCPT TO``).
        recipients_hash: the ledger's hash of them (``""`` without a ledger).
        message_id: its ``Message-ID`` (RFC 5322 §3.6.4).
        position: its place in the run (``on_error: stop`` stops the messages after a failed one).
        unit: what it was built from (the rows of a message), to build it again when it is held.
    """

    row: DeliveryRow
    message: EmailMessage | Prepared
    recipients: list[str]
    recipients_hash: str
    message_id: str
    position: int
    unit: Unit
