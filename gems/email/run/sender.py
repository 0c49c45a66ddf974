"""Send a stream of emails: compose each unit, skip what the ledger says was accepted, deliver
through a :class:`~mailgem.connections.delivery.Deliverer`, record the outcome. Used by the local path
and by every Spark Python worker alike.

One message's problem is that message's failed row: any exception while composing it (a
template error on one row, an invalid address, a value that will not encode, a column the CSV
writer refuses) or sending it is recorded with its reason, and the run goes on, unless
``on_error: stop``: then no message after the failed one starts (messages before it still go
out; "starts" is decided when a session is free for it, before its first byte) and
:class:`StopRun` carries every row so far.

With a ledger, messages are built and claimed (recorded ``sending``) a batch at a time (as many
as are kept in flight), in one transaction, before any of them goes out. A message another live
run holds is not sent: it waits, and is looked at again once this run's other messages are
done (see :mod:`.ledger`).

A stop requested on the run's :class:`~.stop.StopSignal` (a scheduler's SIGTERM) starts no
further message and no retry; the messages being written finish and are recorded, and every
message that did not start is a ``not_started`` row with the stop's reason (no exception).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from mailgem.connections.delivery import Deliverer, Delivery
from mailgem.connections.dsn import envelope_id
from mailgem.connections.errors import MailgemError, SmtpError
from mailgem.connections.gate import OPEN
from mailgem.connections.transport import new_message_id

from ..content.compose import Composer, SplitNeeded, Unit, split_unit
from .ledger import SendLedger
from .report import DeliveryRow
from .stop import StopSignal

__all__ = ["SendContext", "send_units", "StopRun", "describe_error"]

log = logging.getLogger("mailgem.gems")

# Messages looked up in the ledger together (one query) before they are built and claimed, and
# the most rows those messages may hold.
PREFETCH_UNITS = 500
PREFETCH_ROWS = 50_000
# The longest the sender builds messages without letting sessions read replies and write, seconds
# (a yield to the event loop costs about as much as a small message's build: not after each one).
YIELD_EVERY_S = 0.0005

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


class _MessageGate:
    """One message's :class:`~mailgem.connections.gate.Gate`: the run's rules as the delivery layer
    asks them. ``may_start``: the run goes on to this message (no stop requested, the ledger did
    not fail, and with ``on_error: stop`` no earlier message failed); ``may_write``: this run may
    still send at all (its claim in the ledger holds). Waits go through the stop signal."""

    __slots__ = ("_stop", "_proceeds", "_fence")

    def __init__(self, stop: StopSignal | None, proceeds: Callable[[], bool], fence: Callable[[], bool]) -> None:
        self._stop, self._proceeds, self._fence = stop, proceeds, fence

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.stopping

    async def pause(self, seconds: float) -> None:
        await (self._stop.pause(seconds) if self._stop is not None else OPEN.pause(seconds))

    def may_start(self) -> bool:
        return self._proceeds()

    def may_write(self) -> bool:
        return self._fence()


def describe_error(exc: BaseException, doing: str = "building the message") -> str:
    """The reason recorded for a failed message: mailgem's own message, or what was being done
    and the exception's type and text for anything unexpected."""
    if isinstance(exc, MailgemError):
        return str(exc)
    return f"unexpected error while {doing}: {type(exc).__name__}: {exc}"


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
        row.error = str(delivery.error) + (MAYBE_DELIVERED_NOTE if delivery.maybe_delivered else "")
        row.error_type = type(delivery.error).__name__
        row.reply_code = getattr(delivery.error, "code", None)
        row.enhanced_status = getattr(delivery.error, "enhanced_status", None)


async def send_units(units: Iterable[Unit], ctx: SendContext, deliverer: Deliverer, *, concurrency: int) -> list[DeliveryRow]:
    """Send every unit; return one :class:`DeliveryRow` per unit, in order.

    At most ``concurrency`` messages are in flight (see :attr:`Deliverer.in_flight`). With
    ``stop_on_error``, no message after the first failed one starts; those already writing
    finish and are recorded, then :class:`StopRun` is raised. A ledger that cannot be written
    stops the run whatever ``on_error`` says (no message that has not started starts): without
    it, a re-run could send twice. Messages that never started are not in the rows, except after
    a stop request (``ctx.stop``): then each is a ``not_started`` row with the stop's reason.
    """
    rows: list[DeliveryRow] = []
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    failure: list[tuple[DeliveryRow, BaseException]] = []
    fatal: list[tuple[DeliveryRow, BaseException]] = []
    ledger = ctx.ledger

    stop_after: int | None = None  # position of the earliest failed message: with stop_on_error, none after it starts

    def failed(row: DeliveryRow, error: BaseException, position: int) -> None:
        nonlocal stop_after
        if not failure:
            failure.append((row, error))
        stop_after = position if stop_after is None else min(stop_after, position)

    def fence() -> bool:
        """Whether this run may still send at all, asked before every attempt (retries too): not
        once the ledger failed or this run's lease in it may have lapsed."""
        return ledger is None or (ledger.failure is None and ledger.lease_held())

    def proceeds(position: int) -> bool:
        """Whether the run goes on to the message at ``position``: not once it must stop (its
        ledger failed, or a stop was requested); with stop_on_error, not when it comes after a
        message that failed (earlier ones go on). The deliverer asks the fence itself."""
        return (not fatal and not stopping()
                and not (ctx.stop_on_error and stop_after is not None and position > stop_after))

    def stopping() -> bool:
        return ctx.stop is not None and ctx.stop.stopping

    def stopped_by_request() -> bool:
        """Whether the run stops because a stop was requested (and its ledger did not fail):
        then every message that did not start is reported, whatever ``on_error`` says."""
        return stopping() and not fatal

    def not_started(unsent: list[DeliveryRow]) -> None:
        """Messages that never started: ``not_started`` rows with the stop's reason after a stop
        request; otherwise left out of the report (in the ledger a claimed one stays
        ``sending``, so a re-run sends it with the Message-ID it never used)."""
        if not stopped_by_request():
            drop_unsent(unsent)
            return
        assert ctx.stop is not None
        for row in unsent:
            row.status, row.error, row.error_type = "not_started", f"not sent: {ctx.stop.reason}", None
            ctx.on_done(row)

    def may_start(position: int) -> bool:
        """Whether the message at ``position`` may still start: the fence is open and the run
        goes on to it."""
        return fence() and proceeds(position)

    async def deliver(row: DeliveryRow, message: object, recipients: list[str], rhash: str, position: int) -> None:
        started = True
        try:
            # Asked when a session is free for it, before its first byte (tasks wait for sessions).
            delivery = await deliverer.send(message, recipients,  # type: ignore[arg-type]
                                            gate=_MessageGate(ctx.stop, lambda: proceeds(position), fence),
                                            envelope_id=row.envelope_id)
            if delivery.status == "not_started":
                # Stopped before its first byte (or before a retry, once the fence closed): left
                # out of the report like every message after it (a not_started row after a stop
                # request), unless it is the row that says the ledger stopped the run; in the
                # ledger it stays `sending`, so a re-run sends it with this Message-ID.
                started = False
                if not says_why_the_ledger_stopped(row):
                    not_started([row])
                return
            _apply(row, delivery)
            if stopping() and delivery.error is not None and delivery.error.transient and ctx.stop is not None:
                row.error = f"{row.error} Not retried: {ctx.stop.reason}."
            if ledger is not None:
                ledger.finish(row.message_key, rhash, status=row.status, attempts=row.attempts,
                              reply_code=row.reply_code, message_id=row.message_id, error=row.error,
                              connection=row.connection, maybe_delivered=delivery.maybe_delivered)
            if row.status in ("failed", "deferred") and delivery.error is not None:
                failed(row, delivery.error, position)
        except Exception as exc:  # noqa: BLE001 - the ledger, or a bug: recorded, and the run stops
            reason = describe_error(exc, "recording the outcome in the ledger")
            row.error = f"{row.error}; {reason}" if row.error else reason
            fatal.append((row, exc))
        finally:
            slots.release()
            if started:
                ctx.on_done(row)

    # With a ledger, messages are claimed a batch at a time, in one transaction, before any of
    # them goes out; without one, each goes out as soon as it is built.
    batch_size = concurrency if ledger is not None else 1
    batch: list[tuple[DeliveryRow, object, list[str], str, str, int, Unit]] = []
    # Messages another live run (or this one, in flight) holds: looked at again once this run's
    # other messages are done; each with its row, already in `rows`.
    held: list[tuple[Unit, DeliveryRow]] = []

    def says_why_the_ledger_stopped(row: DeliveryRow) -> bool:
        """When the ledger failed (or this run's lease in it may have lapsed) and no row says so
        yet, ``row`` (a message that did not go out) says it, "not sent: why"; whether it does."""
        if ledger is None or ledger.failure is None or fatal:
            return False
        row.error = f"not sent: {describe_error(ledger.failure, 'recording outcomes in the ledger')}"
        fatal.append((row, ledger.failure))
        ctx.on_done(row)
        return True

    def drop_unsent(unsent: list[DeliveryRow]) -> None:
        ids = {id(r) for r in unsent}
        rows[:] = [r for r in rows if id(r) not in ids]

    async def dispatch() -> bool:
        """Record the batch in the ledger and start sending it; False when the run must stop."""
        nonlocal batch
        items, batch = batch, []
        if ledger is not None:
            try:
                ledger.check()
                claimed = ledger.begin_many([(row.message_key, rhash, message_id)
                                             for row, _, _, rhash, message_id, _, _ in items])
            except Exception as exc:  # noqa: BLE001 - without the ledger, a re-run could send twice
                for row, *_ in items:
                    row.error = f"not sent: {describe_error(exc, 'writing the ledger')}"
                    ctx.on_done(row)
                fatal.append((items[0][0], exc))
                return False
            if len(claimed) < len(items):
                # Taken by a racing run since prior() looked, or the same message twice in this
                # batch (claimed once): the others are not sent now, but looked at again later.
                kept = []
                for item in items:
                    key = (item[0].message_key, item[3])
                    if key in claimed:
                        claimed.discard(key)
                        kept.append(item)
                    else:
                        held.append((item[6], item[0]))
                items = kept
        for i, (row, message, recipients, rhash, message_id, position, _) in enumerate(items):
            await slots.acquire()
            if not may_start(position):
                # A message before it failed meanwhile, or the ledger did: these never went out. Left
                # out of the report; in the ledger they stay `sending`, so a re-run sends them with
                # this Message-ID.
                slots.release()
                keep = row if says_why_the_ledger_stopped(row) else None
                not_started([r for r, *_ in items[i:] if r is not keep])
                return False
            row.message_id = message_id
            if ctx.envelope_ids:
                row.envelope_id = envelope_id(ctx.job, ctx.run_key, row.message_key)
            task = asyncio.create_task(deliver(row, message, recipients, rhash, position))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return True

    def looked_up(ahead: Iterable[Unit]) -> Iterator[Unit]:
        # With a ledger, each chunk of messages is looked up in one query (a re-run's lookups
        # cost one round trip a chunk, not one a message); should that fail, each is looked up alone.
        assert ledger is not None
        pending = iter(ahead)
        while True:
            # At most PREFETCH_UNITS messages, and at most PREFETCH_ROWS rows held ahead (a group's
            # rows are copied out of the frame).
            chunk: list[Unit] = []
            rows_ahead = 0
            for unit in pending:
                chunk.append(unit)
                rows_ahead += unit.row_count
                if len(chunk) >= PREFETCH_UNITS or rows_ahead >= PREFETCH_ROWS:
                    break
            if not chunk:
                return
            if stopping():
                yield from chunk  # only to be reported not_started: nothing to look up
                continue
            try:
                ledger.prefetch([unit.key for unit in chunk])
            except Exception as exc:  # noqa: BLE001 - prior() asks again, message by message
                log.warning("ledger %s: looking up %d messages at once failed (%s); looking each up alone",
                            ledger.target, len(chunk), describe_error(exc, "reading the ledger"))
            yield from chunk

    source: Iterator[tuple[Unit, DeliveryRow | None]] = (
        (unit, None) for unit in (looked_up(units) if ledger is not None else units))
    parts: deque[Unit] = deque()  # a unit too large for the size limit, split (attachments_over_limit: split)
    position = -1
    again = False  # looking again at held messages: none of this run's own is in flight any more
    give_up_at: float | None = None
    next_yield = 0.0
    while True:
        while (item := (parts.popleft(), None) if parts else next(source, None)) is not None:
            unit, row = item
            if stopped_by_request():
                if row is None:
                    parts.appendleft(unit)  # reported below with the rest not built
                else:
                    not_started([row])  # a held message looked at again
                break
            if fatal or (failure and ctx.stop_on_error):
                break
            position += 1
            if row is None:
                row = DeliveryRow(message_key=unit.key, status="failed", connection=ctx.connection)
                rows.append(row)
            try:
                context = ctx.composer.context(unit)
                envelope = ctx.composer.envelope(unit, context)
                rhash = envelope.recipients_hash if ledger is not None else ""  # a hash is for the ledger only
                row.recipients = ", ".join(envelope.recipients)
                prior = ledger.prior(unit.key, rhash, live=again) if ledger is not None else None
                if prior is not None and prior.done:
                    row.status, row.message_id = "already_sent", prior.message_id
                    row.error = (f"accepted {'by another run' if again else 'in an earlier run'} with run key "
                                 f"{ctx.run_key!r} (status {prior.status}) "
                                 f"via {ledger.destination}")  # type: ignore[union-attr]
                    ctx.on_done(row)
                    continue
                if prior is not None and prior.mine and again:
                    raise HeldElsewhere("not sent: the same message (key and recipients) came earlier in this run "
                                        "and may have reached the server; it is not sent twice")
                if prior is not None and (prior.holder or prior.mine):
                    held.append((unit, row))  # another live run is sending it, or this run is
                    continue
                # A new Message-ID for every new message; the old one only for a message the server
                # may already hold (RFC 5322 §3.6.4), so clients de-duplicate that one and nothing else.
                keep = prior is not None and prior.possibly_delivered and prior.message_id
                message_id = prior.message_id if keep else new_message_id(ctx.domain)
                message = ctx.composer.message(unit, envelope, message_id, context)
                row.notes = getattr(message, "notes", None) or None  # what was changed without failing it
            except SplitNeeded as exc:
                drop_unsent([row])
                log.info("message %s: %s; sending it in %d parts", unit.key, exc, exc.parts)
                parts.extendleft(reversed(split_unit(unit, exc.parts)))
                continue
            except Exception as exc:  # noqa: BLE001 - one message's problem is that message's failed row
                row.error = describe_error(exc)
                row.error_type = type(exc).__name__
                if isinstance(exc, SmtpError):
                    row.reply_code = exc.code
                failed(row, exc, position)
                ctx.on_done(row)
                continue
            batch.append((row, message, envelope.recipients, rhash, message_id, position, unit))
            if len(batch) >= batch_size and not await dispatch():
                break
            # Building the next messages (while slots are free) must not hold back a session whose
            # reply just came in: the sessions get the loop at least every YIELD_EVERY_S of building.
            if time.perf_counter() >= next_yield:
                await asyncio.sleep(0)
                next_yield = time.perf_counter() + YIELD_EVERY_S
        if batch:
            # Built before the run stopped: those before the failed message still go out; the rest
            # were never recorded or sent.
            startable = [item for item in batch if may_start(item[5])]
            not_started([r for r, *_ in batch[len(startable):]])
            batch = startable
            if batch:
                await dispatch()
        if tasks:
            await asyncio.gather(*tasks)
        if not held or ledger is None or fatal or (failure and ctx.stop_on_error) or stopping():
            not_started([row for _, row in held])  # stopped: never sent here, like every message after
            break
        # Messages another live run is sending: wait for its outcome (accepted: already_sent;
        # refused, or its lease ran out because it was killed: sent from here), a bounded time.
        wait_s = 3 * ledger.target.lease_s  # its lease lapses within lease_s of its death
        give_up_at = give_up_at or time.monotonic() + wait_s
        if time.monotonic() >= give_up_at:
            for _, row in held:
                row.error = (f"not sent: another run still holds it in ledger {ledger.target} after {wait_s:.0f} s "
                             "of waiting; its outcome will be in the ledger: re-run with the same run key to send "
                             "it if that run did not")
                row.error_type = HeldElsewhere.__name__
                failed(row, HeldElsewhere(row.error), position)
                ctx.on_done(row)
            break
        pause = ctx.stop.pause if ctx.stop is not None else asyncio.sleep
        await pause(min(1.0, ledger.target.lease_s / 4))
        source, held, again = iter(list(held)), [], True
    if stopped_by_request():
        # Every message not built yet: a row each, so the report says what was not sent.
        unbuilt: list[DeliveryRow] = []
        for unit, row in (*((u, None) for u in parts), *source):
            if row is None:
                row = DeliveryRow(message_key=unit.key, status="not_started", connection=ctx.connection)
                rows.append(row)
            unbuilt.append(row)
        not_started(unbuilt)
    if ledger is not None and not fatal:
        try:
            ledger.flush()
            ledger.check()
        except Exception as exc:  # noqa: BLE001
            row = rows[-1]
            reason = describe_error(exc, "recording outcomes in the ledger")
            row.error = f"{row.error}; {reason}" if row.error else reason
            fatal.append((row, exc))
    if fatal:
        row, cause = fatal[0]
        raise StopRun(f"message {row.message_key}: {row.error}", rows, cause, fatal=True)
    if failure and ctx.stop_on_error and not stopping():
        # After a stop request the report is the story (the caller knows why it stopped): a
        # message the stop kept from its retry must not turn the stop into on_error's.
        row, cause = failure[0]
        raise StopRun(f"message {row.message_key}: {row.error or cause}", rows, cause)
    return rows
