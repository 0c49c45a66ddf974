"""What the sends of one run share (:class:`SendContext`), given to :mod:`.sender` by the gem
on the driver and by each Spark Python worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..content.compose import Composer
from .ledger import SendLedger
from .report import DeliveryRow
from .stop import StopSignal

__all__ = ["SendContext"]


@dataclass
class SendContext:
    """What a run's sends share: the composer, ledger, sender domain, policy and progress hook."""

    composer: Composer
    job: str
    run_key: str
    domain: str
    connection: str
    ledger: SendLedger | None = None
    stop_on_error: bool = True
    on_done: Callable[[DeliveryRow], None] = field(default=lambda row: None)
    envelope_ids: bool = False  # each row gets its RFC 3461 ENVID (the connection asks for DSN)
    stop: StopSignal | None = None  # the run's stop signal (also the deliverer's gate)
