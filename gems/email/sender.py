"""Send a stream of emails: compose each unit, skip what the ledger says was accepted, deliver
through a :class:`~connections.delivery.Deliverer`, record the outcome. Used by the local path
and by every Spark Python worker alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connections.delivery import Deliverer, Delivery
from connections.errors import MailgemError, SmtpError

from .compose import Composer, Unit, message_id_for
from .ledger import SendLedger
from .report import DeliveryRow

__all__ = ["SendContext", "send_units", "StopRun"]

log = logging.getLogger("mailgem.gems")


class StopRun(MailgemError):
    """``on_error: stop`` and a message failed; ``rows`` holds every outcome so far."""

    def __init__(self, message: str, rows: list[DeliveryRow], cause: BaseException) -> None:
        self.rows = rows
        self.cause = cause
        super().__init__(message)


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


def _apply(row: DeliveryRow, delivery: Delivery) -> None:
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
        row.error = str(delivery.error)
        row.reply_code, row.enhanced_status = delivery.error.code, delivery.error.enhanced_status


async def send_units(units: Iterable[Unit], ctx: SendContext, deliverer: Deliverer, *, concurrency: int) -> list[DeliveryRow]:
    """Send every unit; return one :class:`DeliveryRow` per unit, in order.

    At most ``concurrency`` messages are in flight. With ``stop_on_error``, the first failure
    stops scheduling new messages; those in flight finish and are recorded, then
    :class:`StopRun` is raised.
    """
    rows: list[DeliveryRow] = []
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    failure: list[tuple[DeliveryRow, BaseException]] = []

    def finish(row: DeliveryRow, rhash: str, error: BaseException | None = None) -> None:
        if ctx.ledger is not None:
            ctx.ledger.finish(row.message_key, rhash, status=row.status, attempts=row.attempts,
                              reply_code=row.reply_code, message_id=row.message_id, error=row.error)
        if row.status in ("failed", "deferred") and error is not None and not failure:
            failure.append((row, error))
        ctx.on_done(row)

    async def deliver(row: DeliveryRow, message: object, recipients: list[str], rhash: str) -> None:
        try:
            delivery = await deliverer.send(message, recipients)  # type: ignore[arg-type]
            _apply(row, delivery)
            finish(row, rhash, delivery.error)
        finally:
            slots.release()

    for unit in units:
        if failure and ctx.stop_on_error:
            break
        row = DeliveryRow(message_key=unit.key, status="failed", connection=ctx.connection)
        rows.append(row)
        rhash = ""
        try:
            context = ctx.composer.context(unit)
            envelope = ctx.composer.envelope(unit, context)
            rhash = envelope.recipients_hash
            row.recipients = ", ".join(envelope.recipients)
            if ctx.ledger is not None and (done := ctx.ledger.done(unit.key, rhash)) is not None:
                row.status, row.message_id = "already_sent", done[1]
                row.error = f"accepted in an earlier run with run key {ctx.run_key!r} (status {done[0]})"
                ctx.on_done(row)
                continue
            message_id = message_id_for(ctx.job, ctx.run_key, unit.key, ctx.domain)
            message = ctx.composer.message(unit, envelope, message_id, context)
        except (MailgemError, ValueError) as exc:
            # Bad data for this message only (an invalid address, a template error): record it.
            row.error = str(exc)
            if isinstance(exc, SmtpError):
                row.reply_code = exc.code
            if not failure:
                failure.append((row, exc))
            ctx.on_done(row)
            continue
        row.message_id = message_id
        if ctx.ledger is not None:
            ctx.ledger.begin(unit.key, rhash, row.message_id)
        await slots.acquire()
        task = asyncio.create_task(deliver(row, message, envelope.recipients, rhash))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    if failure and ctx.stop_on_error:
        row, cause = failure[0]
        raise StopRun(f"message {row.message_key}: {cause}", rows, cause)
    return rows
