"""Send a stream of emails: compose each unit, skip what the ledger says was accepted, deliver
through a :class:`~mailgem.connections.delivery.Deliverer`, record the outcome. Used by the local path
and by every Spark Python worker alike.

A message whose ``send_if`` does not hold is a ``skipped_by_rule`` row, decided before anything
of it is built and before the ledger is asked (:func:`~..content.conditions.send_if_skip`).

One message's problem is that message's failed row: any exception while composing it (a
template error on one row, an invalid address, a value that will not encode, a column the CSV
writer refuses) or sending it is recorded with its reason, and the run goes on, unless
``on_error: stop``: then no message after the failed one starts (messages before it still go
out; "starts" is decided when a session is free for it, before its first byte) and
:class:`StopRun` carries every row so far.

With a ledger, messages are built and claimed (recorded ``sending``) a batch at a time, in one
transaction, before any of them goes out. The claims run in the ledger's thread, a batch ahead:
while one batch is claimed, the one before it starts and the next one is built, so a round trip
to the database never stops the SMTP sessions (:mod:`.ledger_thread`). A message another live
run holds is not sent: it waits, and is looked at again once this run's other messages are
done (see :mod:`.ledger`).

A stop requested on the run's :class:`~.stop.StopSignal` (a scheduler's SIGTERM) starts no
further message and no retry; the messages being written finish and are recorded, and every
message that did not start is a ``not_started`` row with the stop's reason (no exception).

The parts: :class:`SendRun` (one run: build, claim, start, finish, revisit the held ones, end),
:class:`Pending` (a message built and waiting to start), :mod:`.rules` (which message may still
go: each message's :class:`~mailgem.connections.gate.Gate`), :mod:`.outcome` (what a row says).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator

from mailgem.connections.delivery import Deliverer, Delivery
from mailgem.connections.dsn import envelope_id
from mailgem.connections.errors import SmtpError
from mailgem.connections.transport import new_message_id

from ..content.compose import SplitNeeded, Unit, split_unit
from ..content.conditions import send_if_skip
from ..content.layout import LayoutMessage
from .claims import claim_off_loop, looked_up
from .context import SendContext
from .ending import RunEnding
from .ledger import PriorSend
from .outcome import HeldElsewhere, StopRun, apply_delivery, describe_error
from .pending import Pending
from .report import DeliveryRow
from .rules import MessageGate, RunRules
from .status import DeliveryStatus

__all__ = ["HeldElsewhere", "Pending", "SendContext", "SendRun", "StopRun", "describe_error", "send_units"]

log = logging.getLogger("mailgem.gems")

# Messages looked up in the ledger together (one query) before they are built and claimed, and
# the most rows those messages may hold.
PREFETCH_UNITS = 500
PREFETCH_ROWS = 50_000
# With a ledger, the messages claimed together (one transaction): at least as many as are kept in
# flight, and this many when every one is small (no attachment: a few KB); messages with
# attachments, whose size is not bounded, are claimed as many as are kept in flight. Two batches
# are built ahead of the sessions (one being claimed, one being built).
CLAIM_BATCH = 256
# The longest the sender builds messages without letting sessions read replies and write, seconds
# (a yield to the event loop costs about as much as a small message's build: not after each one).
YIELD_EVERY_S = 0.0005

# Outcomes that count as the message's failure (on_error: stop stops after them).
_FAILURES = (DeliveryStatus.FAILED, DeliveryStatus.DEFERRED)
# Asked once a message: an enum member's lookup on its class costs more than the comparison.
_FAILED, _NOT_STARTED = DeliveryStatus.FAILED, DeliveryStatus.NOT_STARTED


async def send_units(units: Iterable[Unit], ctx: SendContext, deliverer: Deliverer, *, concurrency: int) -> list[DeliveryRow]:
    """Send every unit; return one :class:`DeliveryRow` per unit, in order (see :meth:`SendRun.run`)."""
    return await SendRun(ctx, deliverer, concurrency=concurrency).run(units)


class SendRun(RunEnding):
    """One run of :func:`send_units`: its rows, the messages in flight, and the steps a message
    goes through (:meth:`_build`, :meth:`_claim`, :meth:`_start`, :meth:`_send`, :meth:`_finish`),
    then the held ones looked at again (:meth:`_revisit_held`) and the run's end (:meth:`_end`).

    Args:
        ctx: what the run's sends share.
        deliverer: sends each message; asks each message's :class:`~.rules.MessageGate`.
        concurrency: the most messages in flight (see :attr:`Deliverer.in_flight`).

    Use once, in one event loop.
    """

    def __init__(self, ctx: SendContext, deliverer: Deliverer, *, concurrency: int) -> None:
        self.ctx = ctx
        self.deliverer = deliverer
        self.ledger = ctx.ledger
        self.rules = RunRules(ctx.stop, ctx.ledger, ctx.stop_on_error)
        self.rows: list[DeliveryRow] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # With a ledger, messages are claimed a batch at a time, in one transaction, before any of
        # them goes out; without one, each goes out as soon as it is built.
        self._batch_size = concurrency if ctx.ledger is not None else 1
        self._batch: list[Pending] = []
        self._batch_small = True  # every message of the batch is small (see CLAIM_BATCH)
        self._claiming: asyncio.Task[list[Pending] | None] | None = None  # the batch before, being claimed
        # Messages another live run (or this one, in flight) holds: looked at again once this run's
        # other messages are done; each with its row, already in `rows`.
        self._held: list[tuple[Unit, DeliveryRow]] = []
        self._source: Iterator[tuple[Unit, DeliveryRow | None]] = iter(())
        self._parts: deque[Unit] = deque()  # a unit too large for the size limit, split (attachments_over_limit: split)
        self._position = -1
        self._again = False  # looking again at held messages: none of this run's own is in flight any more
        self._give_up_at: float | None = None
        self._next_yield = 0.0

    async def run(self, units: Iterable[Unit]) -> list[DeliveryRow]:
        """Send every unit; return one :class:`DeliveryRow` per unit, in order.

        At most ``concurrency`` messages are in flight. With ``stop_on_error``, no message after
        the first failed one starts; those already writing finish and are recorded, then
        :class:`StopRun` is raised. A ledger that cannot be written stops the run whatever
        ``on_error`` says (no message that has not started starts): without it, a re-run could
        send twice. Messages that never started are not in the rows, except after a stop request
        (``ctx.stop``): then each is a ``not_started`` row with the stop's reason.

        Raises:
            StopRun: see above; its ``rows`` are every outcome so far.
        """
        ledger = self.ledger
        if ledger is not None:  # the limits as they are when the run starts
            units = looked_up(units, ledger, self.rules, max_units=PREFETCH_UNITS, max_rows=PREFETCH_ROWS)
        self._source = ((unit, None) for unit in units)
        while True:
            await self._build_and_start()
            await self._start_the_rest()
            if self._tasks:
                await asyncio.gather(*self._tasks)
            if not await self._revisit_held():
                break
        return self._end()

    # -- building ---------------------------------------------------------------------------------

    def _next(self) -> tuple[Unit, DeliveryRow | None] | None:
        """The next unit to build (a split part first) and its row when it has one (a held one), or ``None``."""
        return (self._parts.popleft(), None) if self._parts else next(self._source, None)

    async def _build_and_start(self) -> None:
        """Build messages and start them a batch at a time, until the units run out or the run stops."""
        rules = self.rules
        while (item := self._next()) is not None:
            unit, row = item
            if rules.stopped_by_request:
                if row is None:
                    self._parts.appendleft(unit)  # reported at the end with the rest not built
                else:
                    self._not_started([row])  # a held message looked at again
                return
            if rules.halted:
                return
            self._position += 1
            pending = self._build(unit, row)
            if pending is None:
                continue
            self._batch.append(pending)
            self._batch_small = self._batch_small and isinstance(pending.message, LayoutMessage)
            if self._batch_full() and not await self._dispatch():
                return
            # Building the next messages (while slots are free) must not hold back a session whose
            # reply just came in: the sessions get the loop at least every YIELD_EVERY_S of building.
            if time.perf_counter() >= self._next_yield:
                await asyncio.sleep(0)
                self._next_yield = time.perf_counter() + YIELD_EVERY_S

    def _build(self, unit: Unit, row: DeliveryRow | None) -> Pending | None:
        """Compose ``unit`` (its row made and added to the rows unless it has one); ``None`` when
        it is not to be sent now: ``send_if`` is false, accepted already, held, split into parts,
        or failed (its row says why)."""
        ctx, ledger = self.ctx, self.ledger
        if row is None:
            row = DeliveryRow(message_key=unit.key, status=_FAILED, connection=ctx.connection)
            self.rows.append(row)
        try:
            context = ctx.composer.context(unit)
            if (skipped := send_if_skip(ctx.composer.props, unit, context)) is not None:
                row.status, row.error = DeliveryStatus.SKIPPED_BY_RULE, skipped  # not built, not in the ledger
                self.ctx.on_done(row)
                return None
            envelope = ctx.composer.envelope(unit, context)
            rhash = envelope.recipients_hash if ledger is not None else ""  # a hash is for the ledger only
            row.recipients = ", ".join(envelope.recipients)
            prior = ledger.prior(unit.key, rhash, live=self._again) if ledger is not None else None
            if prior is not None and self._settled(unit, row, prior):
                return None
            # A new Message-ID for every new message; the old one only for a message the server
            # may already hold (RFC 5322 §3.6.4), so clients de-duplicate that one and nothing else.
            kept = prior.message_id if prior is not None and prior.possibly_delivered else None
            message_id = kept or new_message_id(ctx.domain)
            message = ctx.composer.message(unit, envelope, message_id, context)
            row.notes = getattr(message, "notes", None) or None  # what was changed without failing it
        except SplitNeeded as exc:
            self._drop_unsent([row])
            log.info("message %s: %s; sending it in %d parts", unit.key, exc, exc.parts)
            self._parts.extendleft(reversed(split_unit(unit, exc.parts)))
            return None
        except Exception as exc:  # noqa: BLE001 - one message's problem is that message's failed row
            row.error = describe_error(exc)
            row.error_type = type(exc).__name__
            if isinstance(exc, SmtpError):
                row.reply_code = exc.code
            self.rules.failed(row, exc, self._position)
            self.ctx.on_done(row)
            return None
        return Pending(row, message, envelope.recipients, rhash, message_id, self._position, unit)

    def _settled(self, unit: Unit, row: DeliveryRow, prior: PriorSend) -> bool:
        """What the ledger holds for this message decides it: accepted already (its row says
        so), or held by a live run (kept to look at again); whether it did.

        Raises:
            HeldElsewhere: this run itself sent it earlier (the same key and recipients twice).
        """
        if prior.done:
            assert self.ledger is not None  # a prior send is the ledger's
            row.status, row.message_id = DeliveryStatus.ALREADY_SENT, prior.message_id
            row.error = (f"accepted {'by another run' if self._again else 'in an earlier run'} with run key "
                         f"{self.ctx.run_key!r} (status {prior.status}) via {self.ledger.destination}")
            self.ctx.on_done(row)
            return True
        if prior.mine and self._again:
            raise HeldElsewhere("not sent: the same message (key and recipients) came earlier in this run "
                                "and may have reached the server; it is not sent twice")
        if prior.holder or prior.mine:
            self._held.append((unit, row))  # another live run is sending it, or this run is
            return True
        return False

    # -- claiming and starting --------------------------------------------------------------------

    def _batch_full(self) -> bool:
        """Whether the batch is to be claimed (with a ledger) or started now (see CLAIM_BATCH)."""
        n = len(self._batch)
        return n >= self._batch_size and (self.ledger is None or n >= CLAIM_BATCH or not self._batch_small)

    async def _dispatch(self) -> bool:
        """Without a ledger, start the batch. With one, ask for the batch's claim in the ledger's
        thread and start the batch claimed before it (its claim awaited); False when the run must
        stop."""
        items, self._batch, self._batch_small = self._batch, [], True
        if self.ledger is None:
            return await self._start(items)
        claiming, self._claiming = self._claiming, asyncio.ensure_future(self._claim(items))
        return claiming is None or await self._start_claimed(claiming)

    async def _start_claimed(self, claiming: asyncio.Task[list[Pending] | None]) -> bool:
        """Start what ``claiming`` claimed; False when the ledger could not be written or the run stopped."""
        claimed = await claiming
        return claimed is not None and await self._start(claimed)

    async def _claim(self, items: list[Pending]) -> list[Pending] | None:
        """Claim ``items`` in the ledger (:func:`.claims.claim`, in the ledger's thread): the ones
        claimed (the others are held, to look at again), or ``None`` when the ledger could not
        be written (each row says so, and the run stops)."""
        assert self.ledger is not None
        try:
            claimed, others = await claim_off_loop(self.ledger, items)
        except Exception as exc:  # noqa: BLE001 - without the ledger, a re-run could send twice
            for p in items:
                p.row.error = f"not sent: {describe_error(exc, 'writing the ledger')}"
                self.ctx.on_done(p.row)
            self.rules.broke(items[0].row, exc)
            return None
        self._held.extend((p.unit, p.row) for p in others)
        return claimed

    async def _start(self, items: list[Pending]) -> bool:
        """Start sending each of ``items`` as a slot frees up; False when the run stopped first."""
        rules, ctx = self.rules, self.ctx
        for i, p in enumerate(items):
            await self._slots.acquire()
            if not rules.may_start(p.position):
                # A message before it failed meanwhile, or the ledger did: these never went out. Left
                # out of the report; in the ledger they stay `sending`, so a re-run sends them with
                # this Message-ID.
                self._slots.release()
                keep = p.row if self._says_why_the_ledger_stopped(p.row) else None
                self._not_started([q.row for q in items[i:] if q.row is not keep])
                return False
            p.row.message_id = p.message_id
            if ctx.envelope_ids:
                p.row.envelope_id = envelope_id(ctx.job, ctx.run_key, p.row.message_key)
            task = asyncio.create_task(self._send(p))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _start_the_rest(self) -> None:
        """The batch built when the units ran out or the run stopped: those before a failed
        message still go out, the rest were never recorded or sent; then the batch still being
        claimed (its messages start unless the run stopped: then they never went out, and in
        the ledger they stay ``sending`` with a Message-ID never used)."""
        if self._batch:
            startable = [p for p in self._batch if self.rules.may_start(p.position)]
            self._not_started([p.row for p in self._batch[len(startable):]])
            self._batch = startable
            if startable:
                await self._dispatch()
        claiming, self._claiming = self._claiming, None
        if claiming is not None:
            await self._start_claimed(claiming)

    # -- sending and recording --------------------------------------------------------------------

    async def _send(self, p: Pending) -> None:
        """Deliver one message (its slot taken) and record its outcome; gives the slot back."""
        row = p.row
        started = True
        try:
            # Asked when a session is free for it, before its first byte (tasks wait for sessions).
            delivery = await self.deliverer.send(p.message, p.recipients,
                                                 gate=MessageGate(self.rules, p.position), envelope_id=row.envelope_id)
            if delivery.status == _NOT_STARTED:
                # Stopped before its first byte (or before a retry, once the fence closed): left
                # out of the report like every message after it (a not_started row after a stop
                # request), unless it is the row that says the ledger stopped the run; in the
                # ledger it stays `sending`, so a re-run sends it with this Message-ID.
                started = False
                if not self._says_why_the_ledger_stopped(row):
                    self._not_started([row])
                return
            self._finish(p, delivery)
        except Exception as exc:  # noqa: BLE001 - the ledger, or a bug: recorded, and the run stops
            reason = describe_error(exc, "recording the outcome in the ledger")
            row.error = f"{row.error}; {reason}" if row.error else reason
            self.rules.broke(row, exc)
        finally:
            self._slots.release()
            if started:
                self.ctx.on_done(row)

    def _finish(self, p: Pending, delivery: Delivery) -> None:
        """Record what became of a message that started: its row, the ledger, the run's rules.

        Raises:
            Backend errors of the ledger (the run stops: see :meth:`_send`).
        """
        row, stop = p.row, self.ctx.stop
        apply_delivery(row, delivery)
        if stop is not None and stop.stopping and isinstance(delivery.error, SmtpError) and delivery.error.transient:
            row.error = f"{row.error} Not retried: {stop.reason}."
        if self.ledger is not None:
            self.ledger.finish(row.message_key, p.recipients_hash, status=row.status, attempts=row.attempts,
                               reply_code=row.reply_code, message_id=row.message_id, error=row.error,
                               connection=row.connection, maybe_delivered=delivery.maybe_delivered)
        if row.status in _FAILURES and delivery.error is not None:
            self.rules.failed(row, delivery.error, p.position)

    async def _revisit_held(self) -> bool:
        """Once this run's other messages are done: wait a little, then look at the held messages
        again (True); False when there are none, the run stopped, or it waited long enough
        (another live run is sending them: accepted gives already_sent; refused, or its lease ran
        out because it was killed, sends them from here)."""
        rules, ledger = self.rules, self.ledger
        if not self._held or ledger is None or rules.halted or rules.stopping:
            self._not_started([row for _, row in self._held])  # stopped: never sent here, like every message after
            return False
        wait_s = 3 * ledger.target.lease_s  # its lease lapses within lease_s of its death
        self._give_up_at = self._give_up_at or time.monotonic() + wait_s
        if time.monotonic() >= self._give_up_at:
            for _, row in self._held:
                row.error = (f"not sent: another run still holds it in ledger {ledger.target} after {wait_s:.0f} s "
                             "of waiting; its outcome will be in the ledger: re-run with the same run key to send "
                             "it if that run did not")
                row.error_type = HeldElsewhere.__name__
                rules.failed(row, HeldElsewhere(row.error), self._position)
                self.ctx.on_done(row)
            return False
        await rules.pause(min(1.0, ledger.target.lease_s / 4))
        self._source, self._held, self._again = iter(list(self._held)), [], True
        return True
