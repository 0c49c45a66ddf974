"""What the send ledger holds for one message, as a run reads it."""

from __future__ import annotations

from dataclasses import dataclass

from .status import FINAL, DeliveryStatus

__all__ = ["PriorSend"]


@dataclass(frozen=True)
class PriorSend:
    """What the ledger holds for one message. ``holder``: the live run (host, pid, start) that
    is sending it now, when another run is; ``mine``: this ledger's run is sending it."""

    status: str
    message_id: str | None
    maybe_delivered: bool
    holder: str | None = None
    mine: bool = False

    @property
    def done(self) -> bool:
        """The server accepted it (for some or all recipients)."""
        return self.status in FINAL

    @property
    def possibly_delivered(self) -> bool:
        """The server may hold it: a resend must keep its Message-ID."""
        return self.status == DeliveryStatus.SENDING or self.maybe_delivered
